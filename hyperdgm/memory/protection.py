"""Protections: where a generator's weights come from and how they are kept across tasks.

A :class:`Protection` owns the weights of the memory's weightless *body* (VAE decoder / GAN
generator), declared by the body's :attr:`~.bodies.Body.param_meta`, and hands them out per task
through :meth:`Protection.weights`. It is a :class:`~hyperdgm.hooks.WeightHook`: the memory runs
the one hook sequence (penalty -> lookahead -> backward -> after_backward -> step -> after_step)
with it. Per task: :meth:`begin_task`; per step: :meth:`replay` (extra training data),
:meth:`penalty`, :meth:`after_backward`, :meth:`after_step`; then :meth:`end_task` (with the
task's data) and :meth:`new_widths` (growth: the memory widens the body, then calls
:meth:`expand`).

A protection sees the memory through a narrow :class:`GeneratorView` (generate with given weights,
the snapshot of the generator as the task began, the step schedule), never its internals.

Implementations: ``hnet`` (hypernetwork + output regulariser), ``replay`` (DGR-style self-replay
from the snapshot), ``none``, DGM's ``dgm_w`` / ``dgm_a`` (:mod:`.dgm`), MeRGAN's replay
``alignment`` (:mod:`.alignment`) and ``ewc`` / ``si`` (:mod:`.consolidation`). Register new ones
with :func:`register_protection`.

Protections are ``nn.Module`` s (parameters move and save with the memory); non-parameter state
(regulariser targets, masks) travels as ``extra_state`` (plain dicts of tensors).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from hypnettorch.hnets import ChunkedHMLP

from ..hnet import OutputRegularizer, WeightGenerator
from ..hooks import WeightHook
from .bodies import Body, ParamMeta

__all__ = ["GivenReplay", "Protection", "OwnWeights", "NoProtection", "ReplayProtection", "HnetProtection", "SharedHnetProtection",
           "GeneratorView",
           "Snapshot", "PROTECTIONS", "register_protection", "build_protection", "Blocks", "ReplayData"]

Blocks = list[tuple[int, int]]  # (task id, number of samples), batch rows ordered by block
ReplayData = tuple[Tensor, Tensor, Blocks, float]  # images, conditions, blocks, weight of the replay loss
GivenReplay = tuple[Tensor, Tensor, Blocks]  # a learner's replayed samples (the memory's space), conditions, blocks


def _init_(p: Tensor, meta: ParamMeta | None = None) -> None:
    """hypercl init: Xavier-uniform for matrices / kernels, zeros for vectors; ``meta.init`` overrides."""
    if meta is not None and meta.init is not None:
        if meta.init not in ("ones", "zeros"):
            raise ValueError(f"{meta.name}: unknown init {meta.init!r}")
        nn.init.ones_(p) if meta.init == "ones" else nn.init.zeros_(p)
    elif p.dim() >= 2:
        nn.init.xavier_uniform_(p)
    else:
        nn.init.zeros_(p)


def _zero(ref: Tensor) -> Tensor:
    return torch.zeros((), device=ref.device, dtype=ref.dtype)


class Snapshot:
    """The generator's weights as they were when the current task began (detached copies).

    ``shared``: one set of weights for every task; else one set per earlier task ``0..t-1``.
    """

    def __init__(self, weights: list[list[Tensor]], shared: bool) -> None:
        self.weights = weights
        self.shared = shared

    def covers(self, task_ids: Sequence[int]) -> bool:
        return self.shared or all(0 <= t < len(self.weights) for t in task_ids)

    def for_tasks(self, task_ids: Sequence[int]) -> list[list[Tensor]]:
        return [self.weights[0]] * len(task_ids) if self.shared else [self.weights[int(t)] for t in task_ids]


class GeneratorView(Protocol):
    """What a protection may use of the memory."""

    device: torch.device
    latent_dim: int
    snapshot: Snapshot | None
    condition: str                  # "class" | "task": what the generator's condition is
    task_classes: list[list[int]]   # the classes (conditions, for condition=class) of every task

    def generate(self, blocks: Blocks, *, weights: Sequence[Sequence[Tensor]] | None = None,
                 cond: Tensor | None = None, z: Tensor | None = None,
                 generator: torch.Generator | None = None, batch_stats: bool = False) -> Tensor: ...

    def conditions(self, blocks: Blocks, generator: torch.Generator | None = None) -> Tensor: ...

    def progress(self) -> tuple[int, float, int]: ...


class Protection(nn.Module, WeightHook):
    """Base class: the weights of a generator body and what guards them across tasks.

    ``shared_weights``: :meth:`weights` returns the same tensors for every task (the body is told
    the task only by its condition), so the memory may run mixed-task batches at once.
    ``lookahead``: the hook sequence passes ``delta`` = the Adam lookahead of
    :meth:`lookahead_parameters` to :meth:`penalty`.
    ``needs_schedule``: the protection follows the task's progress (DGM's annealing), so the memory's
    ``begin_task`` must be told the task's schedule.
    ``self_replay``: :meth:`replay` trains the generator on its own samples of earlier conditions too.
    """

    name: ClassVar[str] = "base"
    shared_weights: ClassVar[bool] = True
    needs_schedule: ClassVar[bool] = False
    self_replay: bool = False

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        nn.Module.__init__(self)
        self.lookahead = False
        self.current_task: int | None = None

    @property
    def view(self) -> GeneratorView:
        v = self.__dict__.get("_view")
        if v is None:
            raise RuntimeError(f"protection {self.name} is not attached to a memory")
        return v

    # -- storage ---------------------------------------------------------------------------
    def setup(self, body: Body, view: GeneratorView) -> None:
        """Create storage for ``body``'s declared weights (called once by the memory)."""
        self.__dict__["_view"] = view  # a plain reference: not a submodule of the protection
        self.meta: list[ParamMeta] = body.param_meta
        self._setup(self.meta)

    def _setup(self, meta: Sequence[ParamMeta]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def grow(self, n_tasks: int) -> None:
        """Make room for ``n_tasks`` tasks (e.g. embeddings) before loading a checkpoint."""

    def new_widths(self, body: Body) -> list[int] | None:
        """After :meth:`end_task`: the body's new hidden widths, or ``None`` to keep them."""
        return None

    def expand(self, old: Sequence[ParamMeta], new: Sequence[ParamMeta]) -> None:
        """The body grew from ``old`` to ``new`` shapes: widen the storage (old values kept)."""
        if [m.shape for m in old] != [m.shape for m in new]:
            raise NotImplementedError(f"protection {self.name} cannot follow a growing body")

    def weights(self, task_ids: Sequence[int], *, delta: Sequence[Tensor] | None = None) -> list[list[Tensor]]:
        """Body weights for each of ``task_ids`` (one list of tensors per entry)."""
        raise NotImplementedError

    def theta_parameters(self) -> list[nn.Parameter]:
        """Shared parameters optimised by the generator optimizer (lr ``lr`` / the GAN's ``lr_g``)."""
        raise NotImplementedError

    def task_parameters(self, task_id: int) -> list[nn.Parameter]:
        """Per-task parameters trained only while ``task_id`` is learned (own optimizer, lr ``emb_lr``)."""
        return []

    def lookahead_parameters(self) -> list[nn.Parameter]:
        return self.theta_parameters()

    def trainable_numel(self) -> int:
        """Numbers the memory learns and keeps for the generator."""
        return sum(p.numel() for p in self.parameters())

    def stored_numel(self) -> int:
        """Extra numbers kept to protect (targets, masks)."""
        return 0

    # -- lifecycle -------------------------------------------------------------------------
    def begin_task(self, task_id: int) -> None:
        """Targets / fresh embeddings before ``task_id`` is trained."""
        self.current_task = int(task_id)

    def replay(self, task_id: int, n: int, given: GivenReplay | None = None) -> ReplayData | None:
        """Extra real-like data: the step loss becomes ``(1-w) L_cur + w L_replay``. ``given``: samples of earlier
        tasks a learner replayed from the same snapshot this step, which a self-replaying protection trains on
        instead of drawing ``n`` of its own."""
        return None

    def penalty(self, *, delta: Sequence[Tensor] | None = None) -> Tensor:
        return _zero(self.theta_parameters()[0])

    def stats(self) -> dict[str, float]:
        """Numbers to log after a task (capacity, sparsity); plain floats."""
        return {}


class OwnWeights(Protection):
    """The body has its own weights (shared by all tasks, conditioned on the task one-hot)."""

    def _setup(self, meta: Sequence[ParamMeta]) -> None:
        self.params = nn.ParameterList([nn.Parameter(torch.empty(*m.shape)) for m in meta])
        for p, m in zip(self.params, meta):
            _init_(p.data, m)

    def weights(self, task_ids: Sequence[int], *, delta: Sequence[Tensor] | None = None) -> list[list[Tensor]]:
        w = list(self.params) if delta is None else [p + d for p, d in zip(self.params, delta)]
        return [w for _ in task_ids]

    def theta_parameters(self) -> list[nn.Parameter]:
        return list(self.params)


class NoProtection(OwnWeights):
    """Nothing against forgetting (fine-tuning of a task-conditioned generator)."""

    name = "none"


class ReplayProtection(OwnWeights):
    """Deep generative replay (Shin et al. 2017), conditional.

    Each step also trains on ``n`` samples of tasks ``0..t-1`` drawn from the memory's snapshot
    (the generator as task ``t`` began; split evenly, remainder rotating), weighted ``t/(t+1)``
    against ``1/(t+1)`` for the current data (0-based ``t``; GMvandeVen's ``1/task``).
    """

    name = "replay"
    self_replay = True  # subclasses that replay only on request set it per instance

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.n_past = 0
        self._rot = 0

    def begin_task(self, task_id: int) -> None:
        super().begin_task(task_id)
        self.n_past = int(task_id)

    @torch.no_grad()
    def replay(self, task_id: int, n: int, given: GivenReplay | None = None) -> ReplayData | None:
        t, snap = self.n_past, self.view.snapshot
        if not self.self_replay or t == 0 or snap is None:
            return None
        if given is not None:
            x, cond, blocks = given
            if any(not 0 <= j < t for j, _ in blocks) or sum(c for _, c in blocks) != x.shape[0]:
                raise ValueError(f"a given replay must hold samples of tasks 0..{t - 1} in its blocks, got {blocks}")
            return x, cond, list(blocks), t / (t + 1)
        base, rem = divmod(int(n), t)
        extra = {(self._rot + i) % t for i in range(rem)}
        self._rot = (self._rot + rem) % t
        blocks = [(j, base + (j in extra)) for j in range(t)]
        blocks = [(j, c) for j, c in blocks if c > 0]
        cond = self.view.conditions(blocks)
        x = self.view.generate(blocks, weights=snap.for_tasks([j for j, _ in blocks]), cond=cond)
        return x, cond, blocks, t / (t + 1)

    def stored_numel(self) -> int:
        return sum(p.numel() for p in self.params) if self.n_past > 0 else 0  # the snapshot it replays from

    def get_extra_state(self) -> dict[str, Any]:
        return {"n_past": self.n_past, "rot": self._rot}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.n_past = int(state["n_past"])
        self._rot = int(state.get("rot", 0))


class HnetProtection(Protection):
    """Body weights generated by a :class:`WeightGenerator` from a learned task embedding.

    Protected by :class:`OutputRegularizer` (``beta``, ``tasks_per_step``, ``online_targets``) with
    an Adam lookahead (``lookahead``), von Oswald et al. 2020. Hypernet init as in hypercl:
    Xavier-uniform weights, zero biases, chunk and task embeddings ~ N(0, 1).
    """

    name = "hnet"
    shared_weights = False

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        h = dict(cfg.get("hnet", {}))
        self._hcfg = dict(
            task_emb_size=int(h.get("task_emb_size", 96)), chunk_size=h.get("chunk_size", 50000),
            chunk_emb_size=int(h.get("chunk_emb_size", 96)), hidden=list(h.get("hidden", [10, 10])),
            activation=str(h.get("activation", "elu")), emb_init_std=float(h.get("emb_init_std", 1.0)),
        )
        self.lookahead = bool(cfg.get("lookahead", True))
        self.reg = OutputRegularizer(float(cfg.get("beta", 0.01)), tasks_per_step=cfg.get("tasks_per_step"),
                                     online_targets=bool(cfg.get("online_targets", False)), lookahead=self.lookahead)

    def _setup(self, meta: Sequence[ParamMeta]) -> None:
        self.gen = WeightGenerator([list(m.shape) for m in meta], **self._hcfg)
        params = self.gen.hypnettorch_weights()  # hypnettorch's shapes (views): the output weight drawn [N, H]
        if isinstance(self.gen.hnet, ChunkedHMLP):
            params = params[:-1]  # chunk embeddings (last) keep their N(0, 1) init
        with torch.no_grad():
            for p in params:
                # drawn row-major and copied in: the same values whatever layout the generator stores p in
                fresh = torch.empty(p.shape, dtype=p.dtype, device=p.device)
                _init_(fresh)
                p.copy_(fresh)

    def grow(self, n_tasks: int) -> None:
        while self.gen.n_tasks < n_tasks:
            self.gen.add_task()

    def weights(self, task_ids: Sequence[int], *, delta: Sequence[Tensor] | None = None) -> list[list[Tensor]]:
        flat = self.gen.flat(list(task_ids), delta=delta)  # one batched hypernetwork call
        return [self.gen.split(row) for row in flat]

    def theta_parameters(self) -> list[nn.Parameter]:
        return self.gen.hnet_parameters()

    def task_parameters(self, task_id: int) -> list[nn.Parameter]:
        return [self.gen.task_embedding(task_id)]

    def stored_numel(self) -> int:
        if self.reg.targets is not None:
            return self.reg.targets.numel()
        return 0 if self.reg.frozen is None else sum(p.numel() for p in self.reg.frozen.hnet_parameters())

    def begin_task(self, task_id: int) -> None:
        super().begin_task(task_id)
        self.grow(task_id + 1)
        self.reg.begin_task(self.gen, current_task=task_id)

    def has_penalty(self) -> bool:
        return self.reg.active

    def penalty(self, *, delta: Sequence[Tensor] | None = None) -> Tensor:
        return self.reg.penalty(self.gen, delta=delta)

    def get_extra_state(self) -> dict[str, Any]:
        return self.reg.state_dict()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.reg.load_state_dict(state)
        dev = self.gen.hnet_parameters()[0].device
        if self.reg.targets is not None:
            self.reg.targets = self.reg.targets.to(dev)
        if self.reg.frozen is not None:
            self.reg.frozen.to(dev)


class SharedHnetProtection(HnetProtection):
    """The body's weights come from a learner's own :class:`WeightGenerator`, which generates the
    learner's net and this body together (one hypernetwork, one task embedding per task, one output
    regularizer over every generated weight).

    Built like any protection, then :meth:`attach` hands it the shared generator, the index of the
    body among its targets and the learner's regularizer. The generator and its checkpointed state
    belong to the learner; each generator step of the memory is regularized with the same penalty
    (with its own Adam lookahead), so no update of the shared weights is unprotected.
    """

    name = "hnet_shared"

    def _setup(self, meta: Sequence[ParamMeta]) -> None:
        self.shapes = [list(m.shape) for m in meta]

    def attach(self, gen: WeightGenerator, target: int, reg: OutputRegularizer) -> None:
        if gen.target_shapes[target] != self.shapes:
            raise ValueError(f"shared hypernetwork target {target} has shapes {gen.target_shapes[target]}, "
                             f"the generator body needs {self.shapes}")
        self.__dict__["gen"] = gen  # plain references: the learner owns (and saves) them
        self.__dict__["reg"] = reg
        self.target = int(target)

    @property
    def attached(self) -> bool:
        return "gen" in self.__dict__

    def theta_parameters(self) -> list[nn.Parameter]:
        if not self.attached:
            raise RuntimeError("hnet_shared: attach() the learner's hypernetwork first")
        return self.gen.hnet_parameters()

    def grow(self, n_tasks: int) -> None:
        if self.gen.n_tasks < n_tasks:
            raise RuntimeError(f"hnet_shared: the learner's hypernetwork has {self.gen.n_tasks} task embeddings, "
                               f"{n_tasks} needed")

    def begin_task(self, task_id: int) -> None:
        Protection.begin_task(self, task_id)  # the learner already took the regularizer's targets
        self.grow(task_id + 1)

    def weights(self, task_ids: Sequence[int], *, delta: Sequence[Tensor] | None = None) -> list[list[Tensor]]:
        flat = self.gen.flat(list(task_ids), delta=delta)
        return [self.gen.split(row)[self.target] for row in flat]

    def trainable_numel(self) -> int:
        return 0  # counted once, by the learner that owns the hypernetwork

    def stored_numel(self) -> int:
        return 0

    def get_extra_state(self) -> dict[str, Any]:
        return {}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pass


PROTECTIONS: dict[str, type[Protection]] = {}


def register_protection(cls: type[Protection]) -> type[Protection]:
    """Class decorator / function adding ``cls`` to :data:`PROTECTIONS` under ``cls.name``."""
    PROTECTIONS[cls.name] = cls
    return cls


for _cls in (HnetProtection, SharedHnetProtection, ReplayProtection, NoProtection):
    register_protection(_cls)


def build_protection(name: str, cfg: Mapping[str, Any]) -> Protection:
    """Instantiate the protection ``name`` (its ``setup`` is called by the memory)."""
    from . import alignment, dgm  # noqa: F401  (registers alignment, dgm_w / dgm_a)

    try:
        cls = PROTECTIONS[name]
    except KeyError:
        raise ValueError(f"unknown protection {name!r} (choose from {', '.join(sorted(PROTECTIONS))})") from None
    return cls(cfg)
