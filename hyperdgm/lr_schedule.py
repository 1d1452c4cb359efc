"""Per-task learning-rate schedules of a method's optimizers: the split CIFAR schedules of hypercl.

``method.lr_schedule`` is ``none``, ``step`` or ``plateau``, or a mapping ``{name: ..., <param>: ...}``
that overrides the defaults below (their one home). Both schedules are the two of the Keras CIFAR-10
ResNet example that the hypercl paper cites (appendix C) and its code applies per task to the
hypernetwork's and the task embedding's optimizers (``cifar/train.py``):

* ``step`` (hypercl ``--lambda_lr_scheduler``): the lr of epoch ``e`` (0-based) is the base lr times
  ``factors[i]`` for the last milestone ``milestones[i] < e`` (Keras: ``if epoch > 180 ... elif epoch > 80``).
* ``plateau`` (hypercl ``--plateau_lr_scheduler``): the lr times ``factor`` (not below ``min_lr``)
  once ``patience`` evaluations in a row did not improve the current task's accuracy (Keras's
  meaning of patience; torch's ``ReduceLROnPlateau`` waits ``patience + 1``, so hypercl's torch
  call with 5 reduces after 6: ``patience: 6`` here). hypercl feeds it *test* accuracy (a FIXME in
  its code; the Keras example validates on the test set too); here it reads the task's validation
  split (``benchmark.val_size``) and nothing else.

hypercl's README runs both flags at once, but its ``LambdaLR`` sets ``lr = base * factor(epoch)`` right
after the plateau scheduler in the same iteration, so a plateau reduction never reaches a step: the
code's effective schedule is ``step``. Hence one schedule or the other here, not both.

A schedule starts afresh with every task (hypercl builds new schedulers per task) and first puts
every parameter group back at its base lr, so an optimizer kept across tasks does not carry the last
task's decay. The trainer calls :meth:`LRSchedule.epoch_end` after each full epoch but the last.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

#: Parameters of each schedule, the Keras example's / hypercl's values (the only home of these defaults).
DEFAULTS: dict[str, dict[str, Any]] = {
    "none": {},
    "step": {"milestones": [80, 120, 160, 180], "factors": [0.1, 1e-2, 1e-3, 0.5e-3]},
    # factor sqrt(0.1), patience 5, min_lr 0.5e-6, cooldown 0: the Keras example; threshold (relative): torch's
    # default, as hypercl
    "plateau": {"factor": math.sqrt(0.1), "patience": 5, "min_lr": 0.5e-6, "cooldown": 0, "threshold": 1e-4},
}


#: The one error line for a plateau schedule without a validation split.
PLATEAU_NEEDS_VAL = ("method.lr_schedule=plateau follows validation accuracy: set benchmark.val_size > 0 "
                     "(it never reads the test set)")


def parse(spec: str | Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``(name, parameters)`` of a ``method.lr_schedule`` value; one clear ``ValueError`` for a bad one."""
    if spec is None:
        return "none", {}
    given = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = given.pop("name", None)
    if name not in DEFAULTS:
        raise ValueError(f"method.lr_schedule name must be one of {', '.join(DEFAULTS)}, got {name!r}")
    unknown = sorted(set(given) - set(DEFAULTS[name]))
    if unknown:
        known = ", ".join(DEFAULTS[name]) or "none"
        raise ValueError(f"method.lr_schedule={name}: unknown parameter(s) {', '.join(unknown)} (known: {known})")
    params = {**DEFAULTS[name], **given}
    if name == "step" and (len(params["milestones"]) != len(params["factors"])
                           or list(params["milestones"]) != sorted(params["milestones"])):
        raise ValueError("method.lr_schedule=step needs as many factors as milestones, milestones ascending")
    if name == "plateau" and not (0 < float(params["factor"]) < 1 and int(params["patience"]) >= 1):
        raise ValueError("method.lr_schedule=plateau needs 0 < factor < 1 and patience >= 1")
    return name, params


def step_factor(epoch: int, milestones: Sequence[int], factors: Sequence[float]) -> float:
    """The step schedule's lr factor in (0-based) ``epoch``: the factor of the last milestone it is past."""
    out = 1.0
    for m, f in zip(milestones, factors):
        if epoch > m:
            out = float(f)
    return out


class LRSchedule:
    """One task's learning-rate schedule over a method's optimizers (see the module docstring)."""

    def __init__(self, spec: str | Mapping[str, Any] | None = None) -> None:
        self.name, self.params = parse(spec)
        self._schedulers: list[Any] = []
        self._optimizers: list[torch.optim.Optimizer] = []

    @property
    def active(self) -> bool:
        return self.name != "none"

    @property
    def needs_validation(self) -> bool:
        """Whether :meth:`epoch_end` needs the task's validation accuracy (``plateau``)."""
        return self.name == "plateau"

    def start(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """A fresh schedule for the task about to be trained, every group back at its base lr."""
        if not self.active:
            return
        self._optimizers = list(optimizers)
        for opt in self._optimizers:
            for group in opt.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"])
        p = self.params
        if self.name == "step":
            factor = lambda e: step_factor(e, p["milestones"], p["factors"])  # noqa: E731
            self._schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in self._optimizers]
        else:
            self._schedulers = [
                torch.optim.lr_scheduler.ReduceLROnPlateau(
                    o, mode="max", factor=float(p["factor"]), patience=int(p["patience"]) - 1,  # torch waits one more
                    min_lr=float(p["min_lr"]), cooldown=int(p["cooldown"]), threshold=float(p["threshold"]))
                for o in self._optimizers]

    def epoch_end(self, val_acc: float | None = None) -> None:
        """After a full epoch: the next epoch's lr (``plateau``: from the task's validation accuracy)."""
        if not self.active:
            return
        if self.needs_validation and val_acc is None:
            raise ValueError("the plateau schedule follows validation accuracy; none was given")
        for s in self._schedulers:
            if self.needs_validation:
                s.step(val_acc)
            else:
                s.step()

    @property
    def lrs(self) -> list[float]:
        """The current lr of each scheduled optimizer (its first parameter group)."""
        return [float(o.param_groups[0]["lr"]) for o in self._optimizers]
