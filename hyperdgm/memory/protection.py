"""Protections: where a generator's weights come from and how they are kept across tasks.

A :class:`Protection` owns the weights of the memory's weightless *body* (VAE decoder / GAN
generator) and hands them out per task through :meth:`Protection.weights`. The memory calls, per
task: :meth:`begin_task`; per step: :meth:`replay` (extra training data), :meth:`penalty` (after
the task loss' backward, with an optional Adam lookahead ``delta`` of :meth:`lookahead_parameters`),
:meth:`after_backward` (before the optimizer steps); then :meth:`end_task`.

Implementations: ``hnet`` (hypernetwork + output regulariser), ``replay`` (DGR-style self-replay
from a frozen copy), ``none``. Future ones plug into the same slot: ``alignment`` (a
:meth:`penalty` against a frozen copy via ``memory.decode``), ``dgm_w``/``dgm_a`` (masked own
weights in :meth:`weights`, gradient masking in :meth:`after_backward`, binarise/expand in
:meth:`end_task`). Register new ones with :func:`register_protection`.

Protections are ``nn.Module`` s (parameters move and save with the memory); non-parameter state
(regulariser targets, frozen copies) travels as ``extra_state`` (plain dicts of tensors).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from hypnettorch.hnets import ChunkedHMLP

from ..hnet import OutputRegularizer, WeightGenerator

if TYPE_CHECKING:  # pragma: no cover
    from .memory import GenerativeMemory

__all__ = ["Protection", "OwnWeights", "NoProtection", "ReplayProtection", "HnetProtection",
           "PROTECTIONS", "register_protection", "build_protection"]

Blocks = list[tuple[int, int]]  # (task id, number of samples), batch rows ordered by block


def _init_(p: Tensor) -> None:
    """hypercl init: Xavier-uniform for matrices / kernels, zeros for vectors."""
    if p.dim() >= 2:
        nn.init.xavier_uniform_(p)
    else:
        nn.init.zeros_(p)


def _zero(ref: Tensor) -> Tensor:
    return torch.zeros((), device=ref.device, dtype=ref.dtype)


class Protection(nn.Module):
    """Base class: the weights of a generator body and what guards them across tasks.

    ``shared_weights``: :meth:`weights` returns the same tensors for every task (the body is told
    the task only by its one-hot condition), so the memory may run mixed-task batches at once.
    ``lookahead``: the memory passes ``delta = adam_lookahead(gen_opt, lookahead_parameters())``
    to :meth:`penalty`.
    """

    name: ClassVar[str] = "base"
    shared_weights: ClassVar[bool] = True

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.lookahead = False

    # -- storage ---------------------------------------------------------------------------
    def setup(self, shapes: Sequence[Sequence[int]]) -> None:
        """Create storage for a body whose weights have ``shapes`` (called once by the memory)."""
        raise NotImplementedError

    def grow(self, n_tasks: int) -> None:
        """Make room for ``n_tasks`` tasks (e.g. embeddings) before loading a checkpoint."""

    def weights(self, task_ids: Sequence[int], *, delta: Sequence[Tensor] | None = None) -> list[list[Tensor]]:
        """Body weights for each of ``task_ids`` (one list of tensors per entry)."""
        raise NotImplementedError

    def theta_parameters(self) -> list[nn.Parameter]:
        """Shared parameters optimised by the generator optimizer (lr ``lr`` / ``gan.lr_g``)."""
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
        """Extra numbers kept to protect (targets, frozen copies)."""
        return 0

    # -- lifecycle -------------------------------------------------------------------------
    def begin_task(self, memory: "GenerativeMemory", task_id: int) -> None:
        """Snapshot / targets / frozen copy before ``task_id`` is trained."""

    def replay(self, memory: "GenerativeMemory", task_id: int, n: int) -> tuple[Tensor, Blocks, float] | None:
        """Extra real-like data ``(x, blocks, weight)``: the step loss becomes ``(1-w) L_cur + w L_replay``."""
        return None

    def has_penalty(self, task_id: int) -> bool:
        """Whether :meth:`penalty` is non-zero now (lets the memory skip lookahead and a backward)."""
        return False

    def penalty(self, memory: "GenerativeMemory", task_id: int, *, delta: Sequence[Tensor] | None = None) -> Tensor:
        """0-dim loss added (own backward) after the task loss' backward."""
        return _zero(self.theta_parameters()[0])

    def after_backward(self, memory: "GenerativeMemory") -> None:
        """Called after all backward passes of a step, before the optimizers step."""

    def end_task(self, memory: "GenerativeMemory", task_id: int) -> None:
        """Called after the last step of ``task_id``."""


class OwnWeights(Protection):
    """The body has its own weights (shared by all tasks, conditioned on the task one-hot)."""

    def setup(self, shapes: Sequence[Sequence[int]]) -> None:
        self.params = nn.ParameterList([nn.Parameter(torch.empty(*s)) for s in shapes])
        for p in self.params:
            _init_(p.data)

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

    At ``begin_task(t)`` a frozen copy of the weights is taken; each step also trains on ``n``
    samples of tasks ``0..t-1`` drawn from that copy (split evenly, remainder rotating), weighted
    ``(t)/(t+1)`` against ``1/(t+1)`` for the current data (0-based ``t``; GMvandeVen's ``1/task``).
    """

    name = "replay"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.frozen: list[Tensor] | None = None
        self.n_past = 0
        self._rot = 0

    @torch.no_grad()
    def begin_task(self, memory: "GenerativeMemory", task_id: int) -> None:
        self.n_past = int(task_id)
        self.frozen = [p.detach().clone() for p in self.params] if task_id > 0 else None

    @torch.no_grad()
    def replay(self, memory: "GenerativeMemory", task_id: int, n: int) -> tuple[Tensor, Blocks, float] | None:
        t = self.n_past
        if t == 0 or self.frozen is None:
            return None
        base, rem = divmod(int(n), t)
        extra = {(self._rot + i) % t for i in range(rem)}
        self._rot = (self._rot + rem) % t
        blocks = [(j, base + (j in extra)) for j in range(t)]
        blocks = [(j, c) for j, c in blocks if c > 0]
        x = memory.generate(blocks, weights=[self.frozen] * len(blocks))
        return x, blocks, t / (t + 1)

    def stored_numel(self) -> int:
        return 0 if self.frozen is None else sum(f.numel() for f in self.frozen)

    def get_extra_state(self) -> dict[str, Any]:
        return {"n_past": self.n_past, "frozen": None if self.frozen is None else [f.clone() for f in self.frozen]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.n_past = int(state["n_past"])
        fr = state["frozen"]
        dev = self.params[0].device
        self.frozen = None if fr is None else [f.to(dev) for f in fr]


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

    def setup(self, shapes: Sequence[Sequence[int]]) -> None:
        self.gen = WeightGenerator([list(s) for s in shapes], **self._hcfg)
        params = self.gen.hnet_parameters()
        if isinstance(self.gen.hnet, ChunkedHMLP):
            params = params[:-1]  # chunk embeddings (last) keep their N(0, 1) init
        with torch.no_grad():
            for p in params:
                _init_(p)

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

    def begin_task(self, memory: "GenerativeMemory", task_id: int) -> None:
        self.grow(task_id + 1)
        self.reg.begin_task(self.gen, current_task=task_id)

    def has_penalty(self, task_id: int) -> bool:
        return self.reg.n_past > 0 and self.reg.beta > 0

    def penalty(self, memory: "GenerativeMemory", task_id: int, *, delta: Sequence[Tensor] | None = None) -> Tensor:
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


PROTECTIONS: dict[str, type[Protection]] = {}


def register_protection(cls: type[Protection]) -> type[Protection]:
    """Class decorator / function adding ``cls`` to :data:`PROTECTIONS` under ``cls.name``."""
    PROTECTIONS[cls.name] = cls
    return cls


for _cls in (HnetProtection, ReplayProtection, NoProtection):
    register_protection(_cls)


def build_protection(name: str, cfg: Mapping[str, Any]) -> Protection:
    """Instantiate the protection ``name`` (its ``setup`` is called by the memory)."""
    try:
        cls = PROTECTIONS[name]
    except KeyError:
        raise ValueError(f"unknown protection {name!r} (choose from {', '.join(sorted(PROTECTIONS))})") from None
    return cls(cfg)
