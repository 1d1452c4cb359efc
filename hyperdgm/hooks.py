"""The one hook sequence for everything that protects weights during a training step.

Written once and used by the methods (the hypernetwork classifier) and the generative memory
(whatever protects the generator)::

    task loss.backward()
    for hook: penalty (with an optional Adam lookahead of its parameters) -> its own backward
    for hook: after_backward      (gradient masks, HAT's embedding compensation)
    every optimizer: step
    for hook: after_step          (SI's path integral, clamps)

and, once a task ends, ``end_task(task_id, data)`` with the task's data (EWC's Fisher,
binarising masks, growth). A learner holds a list of hooks; combinations come from config.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from .hnet import adam_lookahead
from .profiling import region

__all__ = ["WeightHook", "protected_step"]


class WeightHook:
    """Base class of anything that guards weights inside :func:`protected_step`.

    ``lookahead``: :func:`protected_step` passes ``delta`` = the detached change the optimizer
    would apply to :meth:`lookahead_parameters` now (von Oswald et al.'s Eq. 2 lookahead).
    """

    lookahead: bool = False

    def has_penalty(self) -> bool:
        """Whether :meth:`penalty` is non-zero now (lets the step skip a lookahead and a backward)."""
        return False

    def lookahead_parameters(self) -> Sequence[Tensor]:
        return []

    def penalty(self, *, delta: Sequence[Tensor] | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_backward(self) -> None:
        """After every backward of the step, before the optimizers step."""

    def after_step(self) -> None:
        """After the optimizers stepped."""

    def end_task(self, task_id: int, data: Any = None) -> None:
        """After the task's last step; ``data`` is the task (its training split), where the caller has it."""


def _owner(optimizers: Sequence[torch.optim.Optimizer], p: Tensor) -> torch.optim.Optimizer:
    for o in optimizers:
        if any(q is p for g in o.param_groups for q in g["params"]):
            return o
    raise ValueError("a hook's lookahead parameter is not managed by any of the step's optimizers")


def protected_step(loss: Tensor | None, optimizers: Iterable[torch.optim.Optimizer],
                   hooks: Iterable[WeightHook] = ()) -> Tensor | None:
    """Backward ``loss``, run the hooks' penalties and gradient hooks, step every optimizer.

    Returns the sum of the penalties (detached), or ``None`` when no hook had one. The caller zeroes
    the gradients before computing ``loss``. No host synchronisation.
    """
    opts = list(optimizers)
    hooks = list(hooks)
    if loss is not None:
        with region("backward"):
            loss.backward()
    total: Tensor | None = None
    for h in hooks:
        if not h.has_penalty():
            continue
        with region(f"penalty:{type(h).__name__}"):
            delta = None
            if h.lookahead:
                params = list(h.lookahead_parameters())
                delta = adam_lookahead(_owner(opts, params[0]), params) if params else None
            pen = h.penalty(delta=delta)
            pen.backward()
        total = pen.detach() if total is None else total + pen.detach()
    with region("hooks"):
        for h in hooks:
            h.after_backward()
    with region("optimizer"):
        for o in opts:
            o.step()
    with region("hooks"):
        for h in hooks:
            h.after_step()
    return total
