"""Online EWC and SI on a generator: ``memory.protection=ewc|si``.

The generator keeps its own weights (shared by all tasks, told the task by its condition) and
:mod:`hyperdgm.regularizers`' hook guards them inside the memory's hook sequence; the settings
come from the memory's ``ewc`` / ``si`` block (``lambda``, ``gamma``, ``fisher_n`` / ``c``,
``epsilon``) plus ``replay``: also train on the generator's own samples from the snapshot (DGR's
self-replay, as ``protection=replay``), so replay + EWC / SI is a config choice.

EWC's Fisher on a generator is the empirical Fisher of the replay model's own per-sample loss on
the task's training data (batch size 1): the VAE's negative ELBO. A GAN has no per-sample
likelihood, so ``ewc`` refuses ``memory.model=gan|acgan`` (``si`` needs none and takes any model).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..regularizers import EWC_DEFAULTS, SI_DEFAULTS, block_config, build_regularizers, empirical_fisher
from .memory import DEFAULT_CFG
from .protection import ParamMeta, ReplayProtection, register_protection

__all__ = ["EWCProtection", "SIProtection"]

# The memory config's blocks for these protections (memory_config refuses keys it does not know).
DEFAULT_CFG.setdefault("ewc", {**EWC_DEFAULTS, "replay": False})
DEFAULT_CFG.setdefault("si", {**SI_DEFAULTS, "replay": False})


class _Consolidation(ReplayProtection):
    """Own weights guarded by one quadratic-penalty hook; self-replay from the snapshot if ``replay``."""

    block: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]]

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        b = block_config(f"memory.{self.block}", {**self.defaults, "replay": False}, cfg.get(self.block))
        self.self_replay = bool(b.pop("replay"))
        self._block = b
        self._model = str(cfg.get("model", "vae"))
        if self.block == "ewc" and self._model != "vae":
            raise ValueError(f"memory.protection=ewc needs a per-sample likelihood: memory.model=vae, not {self._model!r}")

    def _setup(self, meta: Sequence[ParamMeta]) -> None:
        super()._setup(meta)
        (self.reg,) = build_regularizers({self.block: self._block}, list(self.params), self.generator_fisher,
                                         where="memory")

    def begin_task(self, task_id: int) -> None:
        super().begin_task(task_id)
        self.reg.begin_task()

    def has_penalty(self) -> bool:
        return self.reg.has_penalty()

    def penalty(self, *, delta: Sequence[Tensor] | None = None) -> Tensor:
        return self.reg.penalty()

    def after_step(self) -> None:
        self.reg.after_step()

    def end_task(self, task_id: int, data: Any = None) -> None:
        self.reg.end_task(task_id, data)

    def stored_numel(self) -> int:
        return self.reg.stored_numel() + (super().stored_numel() if self.self_replay else 0)

    def generator_fisher(self, task: Any, n_max: int | None = None) -> tuple[list[Tensor], int]:
        """Summed squared gradients of the VAE loss of each training sample (batch size 1) w.r.t. the decoder."""
        view = self.view
        model = getattr(view, "model", None)
        if model is None or not hasattr(model, "terms"):
            raise ValueError("memory.protection=ewc: the memory's replay model has no per-sample loss")
        from .spaces import PixelSpace

        # what the memory models: its replay space's view of the data (the classifier's features in latent
        # replay), else the [0, 1] pixels
        space = getattr(view, "space", None) or PixelSpace(task, view.device)
        n = len(task.train) if n_max is None else min(int(n_max), len(task.train))
        classes = getattr(view, "task_classes", None)

        def losses():
            for i in range(n):
                x, y = task.batch("train", torch.tensor([i], device=view.device))
                if getattr(view, "condition", "task") == "class":
                    ks = classes[task.id]  # one entry for an unconditional memory (its constant condition)
                    cond = torch.tensor(ks, device=view.device)[y if len(ks) > 1 else torch.zeros_like(y)]
                else:
                    cond = torch.full((1,), int(task.id), dtype=torch.long, device=view.device)
                yield model.terms(view, space.to_memory(x), cond, [(int(task.id), 1)])[0]

        return empirical_fisher(list(self.params), losses())


@register_protection
class EWCProtection(_Consolidation):
    """Online EWC on the generator's weights."""

    name = "ewc"
    block = "ewc"
    defaults = EWC_DEFAULTS


@register_protection
class SIProtection(_Consolidation):
    """SI on the generator's weights."""

    name = "si"
    block = "si"
    defaults = SI_DEFAULTS

