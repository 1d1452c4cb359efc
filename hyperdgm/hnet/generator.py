"""Task-conditioned (chunked) hypernetwork generating all weights of one or several target nets.

Re-implements the hypernetwork of von Oswald et al., "Continual learning with hypernetworks"
(ICLR 2020) on top of hypnettorch's ``HMLP`` / ``ChunkedHMLP``. The task embeddings are kept
here (a growing ``nn.ParameterList``) and fed to the hypnettorch net through ``cond_input``;
chunk embeddings are unconditional and therefore shared by all tasks.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypnettorch.hnets import HMLP, ChunkedHMLP
from hypnettorch.mnets.mnet_interface import MainNetInterface

__all__ = ["WeightGenerator"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
_FORMAT = "hyperdgm.WeightGenerator"

Shape = list[int]


def _is_shape(x: Any) -> bool:
    return isinstance(x, (list, tuple, torch.Size)) and all(
        isinstance(d, int) and not isinstance(d, bool) for d in x
    )


def _target_spec(target: Any) -> tuple[list[Shape], list[str] | None]:
    """Shapes (and parameter names for plain modules) of one target."""
    if isinstance(target, MainNetInterface):
        shapes = target.hyper_shapes_learned
        if shapes is None:
            shapes = target.param_shapes
        return [list(map(int, s)) for s in shapes], None
    if isinstance(target, nn.Module):
        named = list(target.named_parameters())
        if not named:
            raise ValueError("target module has no parameters")
        return [list(p.shape) for _, p in named], [n for n, _ in named]
    if isinstance(target, (list, tuple)) and len(target) > 0 and all(_is_shape(s) for s in target):
        return [list(map(int, s)) for s in target], None
    raise TypeError(f"unsupported target: {type(target).__name__}")


def _buffer_templates(target: Any) -> list[tuple[str, Tensor]]:
    """A plain module's buffers (e.g. BN running statistics) as they are now: each task's copies start from them."""
    if isinstance(target, nn.Module) and not isinstance(target, MainNetInterface):
        return [(n, b.detach().clone().cpu()) for n, b in target.named_buffers()]
    return []


class _BufferSet(nn.Module):
    """One task's copies of one target module's buffers, registered as ``b0, b1, ...`` (in ``named_buffers()`` order)."""

    def __init__(self, tensors: Sequence[Tensor]) -> None:
        super().__init__()
        for j, t in enumerate(tensors):
            self.register_buffer(f"b{j}", t)


def _split_targets(targets: Any) -> list[Any]:
    """Normalise ``targets`` (single target or list of targets) to a list of targets."""
    if isinstance(targets, (MainNetInterface, nn.Module)):
        return [targets]
    if isinstance(targets, (list, tuple)) and len(targets) > 0:
        if all(_is_shape(s) for s in targets):  # one target given as list of shapes
            return [targets]
        return list(targets)
    raise TypeError("targets must be a target or a non-empty list of targets")


class WeightGenerator(nn.Module):
    """Task-conditioned (chunked) hypernetwork that generates every parameter of one or several target nets.

    Args:
        targets: one target or a list of targets. A target is a hypnettorch ``MainNetInterface``
            built with ``no_weights=True`` (its ``hyper_shapes_learned``/``param_shapes`` are
            used), a plain ``nn.Module`` (shapes of ``named_parameters()``, in order; run it with
            :meth:`functional`), or a list of shapes.
        task_emb_size: size of each task embedding (``cond_input`` of the hypnettorch net).
        chunk_size: outputs per chunk; ``None`` or ``0`` gives a full (unchunked) ``HMLP``.
        chunk_emb_size: size of the (task-shared) chunk embeddings.
        hidden: hidden layer sizes of the hypernetwork.
        activation: ``relu`` | ``elu`` | ``sigmoid`` | ``tanh``.
        emb_init_std: task embeddings are drawn from ``N(0, emb_init_std**2)``.
        n_tasks: number of task embeddings to create right away.
        use_bias: biases in the hypernetwork layers.
        per_task_buffers: keep one copy per task of a plain module target's buffers (BN running
            statistics cannot be generated; as the paper checkpoints them per task). Each task's copy
            starts from the module's buffers as they are when the generator is built. ``False``:
            :meth:`functional` uses (and updates) the module's own buffers, shared by all tasks.
    """

    def __init__(
        self,
        targets: Any,
        *,
        task_emb_size: int = 32,
        chunk_size: int | None = 4000,
        chunk_emb_size: int = 32,
        hidden: Sequence[int] = (100, 100),
        activation: str = "relu",
        emb_init_std: float = 1.0,
        n_tasks: int = 0,
        use_bias: bool = True,
        per_task_buffers: bool = True,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}")
        if task_emb_size <= 0:
            raise ValueError("task_emb_size must be positive")
        specs = [_target_spec(t) for t in _split_targets(targets)]
        self._target_shapes: list[list[Shape]] = [s for s, _ in specs]
        self._target_names: list[list[str] | None] = [n for _, n in specs]
        self._single = len(specs) == 1
        self._config: dict[str, Any] = dict(
            task_emb_size=int(task_emb_size),
            chunk_size=int(chunk_size) if chunk_size else None,
            chunk_emb_size=int(chunk_emb_size),
            hidden=[int(h) for h in hidden],
            activation=str(activation),
            emb_init_std=float(emb_init_std),
            use_bias=bool(use_bias),
            per_task_buffers=bool(per_task_buffers),
        )
        targets_list = _split_targets(targets)
        self._buffer_templates: list[list[tuple[str, Tensor]]] = [
            _buffer_templates(t) if per_task_buffers else [] for t in targets_list]
        all_shapes = [s for shapes in self._target_shapes for s in shapes]
        self._sizes = [math.prod(s) for s in all_shapes]
        self._target_sizes = [sum(math.prod(s) for s in shapes) for shapes in self._target_shapes]
        self.n_target_params = sum(self._sizes)
        common = dict(
            cond_in_size=int(task_emb_size), layers=[int(h) for h in hidden], verbose=False,
            activation_fn=_ACTIVATIONS[activation](), use_bias=bool(use_bias),
            no_uncond_weights=False, no_cond_weights=True, num_cond_embs=0,
        )
        if chunk_size:
            self.hnet = ChunkedHMLP(all_shapes, chunk_size=int(chunk_size),
                                    chunk_emb_size=int(chunk_emb_size), uncond_in_size=0, **common)
        else:
            self.hnet = HMLP(all_shapes, uncond_in_size=0, **common)
        self._init_weights()
        self._store_output_weight_transposed()
        self.task_embs = nn.ParameterList()
        self.task_buffers = nn.ModuleList()  # per task: one _BufferSet per target (empty without buffers)
        for _ in range(int(n_tasks)):
            self.add_task()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """As the reference code: Xavier-uniform weight matrices, zero biases, chunk embeddings N(0, 1).

        hypnettorch's default (PyTorch's Linear init) makes the generated weights an order of magnitude
        larger than a sensible target-net initialisation.
        """
        params = list(self.hnet.internal_params)
        cemb = getattr(self.hnet, "_cemb_shape", None)  # ChunkedHMLP keeps its chunk embeddings last
        chunk_embs = {id(params[-1])} if cemb is not None and list(params[-1].shape) == list(cemb) else set()
        for p in params:
            if id(p) in chunk_embs:
                nn.init.normal_(p, 0.0, 1.0)
            elif p.dim() >= 2:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)

    @torch.no_grad()
    def _store_output_weight_transposed(self) -> None:
        """Store the output layer's weight ``[chunk_size, H]`` as its transpose, a contiguous ``[H, chunk_size]``
        parameter; :meth:`output_layer` hands out the ``[chunk_size, H]`` view (same values, column-major).

        Its products have one dimension of the chunk size and one of ~10: in this layout ``F.linear``'s
        forward + backward took 6.0 against 11.1 ms on a CPU (split MNIST, 12 chunks of 42,000), and the
        output regularizer reads ``W^T`` without a copy. The parameter itself is contiguous because the
        fused Adam copies a non-contiguous one in and out at every step (0.34 against 1.02 ms per step for
        split MNIST's hypernetwork, 0.9 against 3.4 ms for permuted MNIST's, 2 threads). A state dict in
        hypnettorch's layout (``[chunk_size, H]``, older checkpoints) loads into it.
        """
        i = self._layout()["weights"][-1]
        p = self.hnet.internal_params[i]
        self._out_t = p.dim() == 2 and p.shape[0] > p.shape[1]
        if not self._out_t:
            return
        new = nn.Parameter(p.detach().T.contiguous(), requires_grad=p.requires_grad)
        for mod in self.hnet.modules():  # ChunkedHMLP lists its inner HMLP's parameters again
            for name, q in list(mod._parameters.items()):
                if q is p:
                    mod._parameters[name] = new
        keys = [n for n, q in self.named_parameters(remove_duplicate=False) if q is new]
        shape = tuple(new.shape)

        def transpose_old_layout(module, state_dict, prefix, *args) -> None:
            for key in keys:
                t = state_dict.get(prefix + key)
                if isinstance(t, Tensor) and t.dim() == 2 and tuple(t.shape) == shape[::-1]:
                    state_dict[prefix + key] = t.T

        self._register_load_state_dict_pre_hook(transpose_old_layout, with_module=True)

    def as_output_weight(self, t: Tensor) -> Tensor:
        """The output layer's weight ``[..., chunk_size, H]`` from a tensor in its parameter's stored form (the
        parameter itself, a ``delta`` entry, a seed-stacked copy): a view, no copy."""
        return t.mT if self._out_t else t

    def hypnettorch_weights(self, delta: Sequence[Tensor] | None = None) -> list[Tensor]:
        """:meth:`hnet_parameters` (shifted by ``delta``) in hypnettorch's shapes, for ``self.hnet.forward(weights=...)``
        (its own forward would read the transposed output weight)."""
        params = self.hnet_parameters()
        out = list(params) if delta is None else [p + d for p, d in zip(params, delta)]
        i = self._layout()["weights"][-1]
        out[i] = self.as_output_weight(out[i])
        return out

    # ------------------------------------------------------------------ tasks
    @property
    def n_tasks(self) -> int:
        """Number of task embeddings."""
        return len(self.task_embs)

    @property
    def task_emb_size(self) -> int:
        return self._config["task_emb_size"]

    @property
    def target_shapes(self) -> list[list[Shape]]:
        """Per-target list of generated parameter shapes."""
        return [list(map(list, s)) for s in self._target_shapes]

    def add_task(self) -> int:
        """Append a new task embedding ~ N(0, emb_init_std) and return its id."""
        ref = next(self.hnet.parameters())
        emb = torch.randn(self.task_emb_size, device=ref.device, dtype=ref.dtype)
        self.task_embs.append(nn.Parameter(emb * self._config["emb_init_std"]))
        self.task_buffers.append(nn.ModuleList(
            _BufferSet([b.clone().to(ref.device) for _, b in tpl]) for tpl in self._buffer_templates))
        return len(self.task_embs) - 1

    def task_buffers_of(self, task_id: int, target_index: int = 0) -> dict[str, Tensor]:
        """Task ``task_id``'s copies of target ``target_index``'s buffers by the module's buffer names ({} if none)."""
        tpl = self._buffer_templates[target_index]
        if not tpl:
            return {}
        if not 0 <= task_id < self.n_tasks:
            raise IndexError(f"task id {task_id} out of range (n_tasks={self.n_tasks})")
        bufs = self.task_buffers[task_id][target_index]
        return {name: getattr(bufs, f"b{j}") for j, (name, _) in enumerate(tpl)}

    def task_embedding(self, i: int) -> nn.Parameter:
        """The embedding parameter of task ``i``."""
        return self.task_embs[i]

    def hnet_parameters(self) -> list[nn.Parameter]:
        """Hypernetwork weights incl. chunk embeddings (no task embeddings); order used by ``delta``.

        hypnettorch's order and shapes, except the output layer's weight, stored transposed
        (:meth:`as_output_weight`, :meth:`hypnettorch_weights`)."""
        return list(self.hnet.internal_params)

    # --------------------------------------------------------------- forward
    def _embeddings(self, task_ids: Sequence[int] | Tensor) -> Tensor:
        if isinstance(task_ids, Tensor):
            if self.n_tasks == 0:
                raise IndexError("no task embeddings")
            all_embs = torch.stack(list(self.task_embs))
            return all_embs.index_select(0, task_ids.reshape(-1).to(all_embs.device, torch.long))
        ids = [int(i) for i in task_ids]
        for i in ids:
            if not 0 <= i < self.n_tasks:
                raise IndexError(f"task id {i} out of range (n_tasks={self.n_tasks})")
        return torch.stack([self.task_embs[i] for i in ids])

    def flat(
        self,
        task_ids: Sequence[int] | Tensor | None,
        *,
        delta: Sequence[Tensor] | None = None,
        embeddings: Tensor | None = None,
        params: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Flattened generated weights ``[n, n_target_params]`` of several tasks in one batched call.

        Args:
            task_ids: tasks whose stored embeddings are used (ignored if ``embeddings`` is given).
            delta: one tensor per entry of :meth:`hnet_parameters`; the hypernetwork is evaluated
                at ``theta + delta`` (lookahead).
            embeddings: ``[n, task_emb_size]`` (or 1-D) embeddings overriding the stored ones.
            params: tensors standing in for :meth:`hnet_parameters` (a functional call: e.g. one seed's
                slice of stacked parameters under ``torch.func.vmap``).
        """
        if embeddings is not None:
            cond = embeddings.reshape(-1, self.task_emb_size)
        else:
            if task_ids is None:
                raise ValueError("either task_ids or embeddings is required")
            cond = self._embeddings(task_ids)
        # Generated weights and regularizer targets stay fp32 under a bf16 autocast of the target nets.
        with torch.autocast(device_type=cond.device.type, enabled=False):
            hidden = self.hidden_features(cond.float(), delta=delta, params=params)
            weight, bias = self.output_layer(delta, params=params)
            out = F.linear(hidden, weight, bias)  # [n, chunks, chunk_size]
        return out.reshape(out.shape[0], -1)[:, : self.n_target_params]

    # ------------------------------------------------- functional hypernetwork
    def _layout(self) -> dict[str, Any]:
        """Where the layers live in :meth:`hnet_parameters` (hypnettorch's ``param_shapes_meta`` order)."""
        lay = self.__dict__.get("_layout_cache")
        if lay is not None:
            return lay
        hnet = self.hnet
        mlp = hnet._hnet if isinstance(hnet, ChunkedHMLP) else hnet
        if mlp._use_batch_norm or mlp._dropout_rate != -1 or mlp._use_spectral_norm:
            raise NotImplementedError("batch norm / dropout / spectral norm hypernetworks are not supported")
        weights: list[int] = []
        biases: list[int] = []
        chunk_embs = None
        for i, meta in enumerate(hnet.param_shapes_meta):
            if meta["name"] == "weight":
                weights.append(i)
            elif meta["name"] == "bias":
                biases.append(i)
            elif meta["name"] == "embedding":
                chunk_embs = i
            else:
                raise NotImplementedError(f"unexpected hypernetwork parameter {meta['name']}")
        if biases and len(biases) != len(weights):
            raise NotImplementedError("hypernetwork with biases on some layers only")
        chunked = isinstance(hnet, ChunkedHMLP)
        lay = dict(
            weights=weights, biases=biases or [None] * len(weights), chunk_embs=chunk_embs,
            act=mlp._act_fn, n_chunks=int(hnet.num_chunks) if chunked else 1,
            chunk_size=int(hnet._chunk_size) if chunked else self.n_target_params,
        )
        self.__dict__["_layout_cache"] = lay
        return lay

    def chunk_layout(self) -> tuple[int, int, int]:
        """``(n_chunks, chunk_size, rows used of the last chunk)`` of the hypernetwork output."""
        lay = self._layout()
        j, c = lay["n_chunks"], lay["chunk_size"]
        return j, c, self.n_target_params - (j - 1) * c

    def _shifted(self, delta: Sequence[Tensor] | None, i: int | None,
                 params: Sequence[Tensor] | None = None) -> Tensor | None:
        if i is None:
            return None
        p = (self.hnet.internal_params if params is None else params)[i]
        return p if delta is None else p + delta[i]

    def hidden_features(self, cond: Tensor, *, delta: Sequence[Tensor] | None = None,
                        params: Sequence[Tensor] | None = None) -> Tensor:
        """Input of the (linear) output layer, ``[n, n_chunks, H]``, for task embeddings ``cond`` ``[n, E]``.

        Same operations as hypnettorch's ``ChunkedHMLP``/``HMLP`` forward: input ``[chunk_emb, task_emb]``
        (unconditional first), ``linear -> activation`` per hidden layer; the output layer is
        :meth:`output_layer`. ``delta`` shifts the parameters (one entry per :meth:`hnet_parameters`);
        ``params`` stands in for them.
        """
        lay = self._layout()
        if delta is not None and len(delta) != len(self.hnet.internal_params):
            raise ValueError(f"delta has {len(delta)} entries, expected {len(self.hnet.internal_params)}")
        n, j = cond.shape[0], lay["n_chunks"]
        if lay["chunk_embs"] is not None:
            cemb = self._shifted(delta, lay["chunk_embs"], params)
            h = torch.cat([cemb.expand(n, j, cemb.shape[1]), cond[:, None, :].expand(n, j, cond.shape[1])], dim=2)
        else:
            h = cond[:, None, :]
        act = lay["act"]
        for wi, bi in zip(lay["weights"][:-1], lay["biases"][:-1]):
            h = F.linear(h, self._shifted(delta, wi, params), self._shifted(delta, bi, params))
            if act is not None:
                h = act(h)
        return h

    def output_layer(self, delta: Sequence[Tensor] | None = None,
                     params: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Weight ``[chunk_size, H]`` and bias (``None`` without biases) of the linear output layer, shifted by
        ``delta`` (``params`` standing in for :meth:`hnet_parameters`)."""
        lay = self._layout()
        weight = self._shifted(delta, lay["weights"][-1], params)
        return self.as_output_weight(weight), self._shifted(delta, lay["biases"][-1], params)

    def split(self, flat_row: Tensor) -> list[Tensor] | list[list[Tensor]]:
        """Unflatten one row of :meth:`flat` into per-target lists of tensors (a single list if one target)."""
        flat_row = flat_row.reshape(-1)
        chunks = torch.split(flat_row, self._sizes)
        out: list[list[Tensor]] = []
        k = 0
        for shapes in self._target_shapes:
            out.append([chunks[k + j].view(s) for j, s in enumerate(shapes)])
            k += len(shapes)
        return out[0] if self._single else out

    def forward(self, task_id: int) -> list[Tensor] | list[list[Tensor]]:
        """Generated weights of task ``task_id`` (list per target if several targets)."""
        return self.split(self.flat([task_id]).reshape(-1))  # a view: its backward copies nothing (``[0]`` would)

    def functional(self, module: nn.Module, task_id: int, *args: Any, weights: Sequence[Tensor] | None = None,
                   target_index: int = 0, **kwargs: Any) -> Any:
        """Run a plain ``nn.Module`` with generated weights via ``torch.func.functional_call``.

        The module's own parameters are ignored (replaced by generated ones, matched in
        ``named_parameters()`` order). Its buffers (e.g. BN running stats) are task ``task_id``'s
        copies kept by the generator (``per_task_buffers``; updated in place in train mode), so
        training one task never moves another task's statistics. ``weights`` (a list of tensors
        for this target) skips the hypernetwork call.
        """
        if weights is None:
            gen = self.forward(task_id)
            weights = gen if self._single else gen[target_index]
        names = [n for n, _ in module.named_parameters()]
        if len(names) != len(weights):
            raise ValueError(f"module has {len(names)} parameters, got {len(weights)} generated tensors")
        tensors = dict(zip(names, weights))
        bufs = self.task_buffers_of(task_id, target_index)
        if bufs:
            own = [n for n, _ in module.named_buffers()]
            if own != list(bufs):
                raise ValueError(f"module buffers {own} do not match the target's {list(bufs)}")
            tensors.update(bufs)
        return torch.func.functional_call(module, tensors, args, kwargs, strict=False)

    # ---------------------------------------------------------------- misc
    def param_counts(self) -> dict[str, float]:
        """Parameter counts and compression ratios (``hnet``/``target``, ``(hnet+task_embeddings)``/``target``)."""
        hnet = sum(p.numel() for p in self.hnet_parameters())
        embs = sum(p.numel() for p in self.task_embs)
        target = self.n_target_params
        return {
            "hnet": hnet,
            "task_embeddings": embs,
            "target": target,
            "per_target": list(self._target_sizes),
            "compression_ratio": hnet / target,
            "compression_ratio_with_embeddings": (hnet + embs) / target,
        }

    def frozen_copy(self) -> "WeightGenerator":
        """Deep copy with ``requires_grad=False`` everywhere, in eval mode (e.g. online regularisation targets)."""
        c = copy.deepcopy(self)
        for p in c.parameters():
            p.grad = None
            p.requires_grad_(False)
        return c.eval()

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed description + state_dict (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "format": _FORMAT,
            "version": 1,
            "kwargs": dict(self._config),
            "target_shapes": self.target_shapes,
            "target_names": [None if n is None else list(n) for n in self._target_names],
            "n_tasks": self.n_tasks,
            "buffer_templates": [[(n, b.clone()) for n, b in tpl] for tpl in self._buffer_templates],
            "state_dict": {k: v.detach().clone() for k, v in self.state_dict().items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], map_location: Any = None) -> "WeightGenerator":
        """Rebuild a generator from :meth:`to_dict` output."""
        if d.get("format") != _FORMAT:
            raise ValueError("not a WeightGenerator checkpoint")
        shapes = d["target_shapes"]
        gen = cls(shapes if len(shapes) > 1 else shapes[0], n_tasks=0, **d["kwargs"])
        gen._target_names = [None if n is None else list(n) for n in d["target_names"]]
        tpl = d.get("buffer_templates") or [[] for _ in shapes]
        gen._buffer_templates = [[(str(n), b) for n, b in t] for t in tpl]
        for _ in range(int(d["n_tasks"])):  # embeddings and buffers are then overwritten by the state_dict
            gen.add_task()
        gen.load_state_dict(d["state_dict"])
        if isinstance(map_location, (str, torch.device)):
            gen.to(map_location)
        return gen

    def save(self, path: str) -> None:
        """Save to ``path`` (torch.save of a plain dict). Shapes and config are stored: ``load`` needs nothing else."""
        torch.save(self.to_dict(), path)

    @classmethod
    def load(cls, path: str, map_location: Any = None) -> "WeightGenerator":
        """Load a generator written by :meth:`save` (``weights_only=True``)."""
        d = torch.load(path, map_location=map_location, weights_only=True)
        return cls.from_dict(d, map_location=map_location)
