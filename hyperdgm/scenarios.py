"""Continual-learning scenarios: what the labels, heads and test-time task identity are.

* ``cl1``  task identity given at test time; one output head per task (multi-head).
* ``cl2``  task identity neither given nor needed; one shared head of classes-per-task outputs.
* ``cl3``  task identity not given and must be inferred; plain methods use one head over every
  class seen so far.
* ``cil``  class-incremental: like ``cl3`` (one head over every class seen so far) and reports
  A_n, the accuracy over the pooled test data of all classes seen.

Methods receive *local* labels (position of the class within its task) and map them with
:meth:`Scenario.target`; a plain classifier slices its logits with :meth:`Scenario.head`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor


class ScenarioError(ValueError):
    """A method/benchmark/scenario combination that cannot work."""


@dataclass(frozen=True)
class Scenario:
    name: str
    task_id_given: bool
    shared_head: bool
    classes_per_task: tuple[int, ...]

    @property
    def offsets(self) -> tuple[int, ...]:
        out, acc = [], 0
        for k in self.classes_per_task:
            out.append(acc)
            acc += k
        return tuple(out)

    @property
    def n_tasks(self) -> int:
        return len(self.classes_per_task)

    @property
    def one_class_first_task(self) -> bool:
        """The first task has a single class: a cross-entropy over it is 0 whatever the weights, so training
        on that task alone moves nothing in the classifier."""
        return self.classes_per_task[0] < 2

    def n_outputs(self) -> int:
        """Width of a single plain classifier's output layer in this scenario."""
        if self.shared_head:
            return max(self.classes_per_task)
        return sum(self.classes_per_task)

    def n_seen_classes(self, n_seen_tasks: int) -> int:
        return sum(self.classes_per_task[:n_seen_tasks])

    def head(self, logits: Tensor, task_id: int | None, n_seen_tasks: int) -> Tensor:
        """Slice a plain classifier's full output to the logits this scenario scores.

        ``task_id`` is the task the batch comes from (training, or CL1 testing); it is ignored
        where the scenario does not use it.
        """
        if self.shared_head:
            return logits
        if self.task_id_given:
            if task_id is None:
                raise ScenarioError(f"scenario {self.name} needs the task id")
            o = self.offsets[task_id]
            return logits[:, o : o + self.classes_per_task[task_id]]
        return logits[:, : self.n_seen_classes(n_seen_tasks)]

    def target(self, y_local: Tensor, task_id: int) -> Tensor:
        """Map local labels of task ``task_id`` to the labels of :meth:`head`'s logits."""
        if self.shared_head or self.task_id_given:
            return y_local
        return y_local + self.offsets[task_id]

    def check(self, method_name: str, supported: Iterable[str]) -> None:
        """Refuse, before training, a method that does not support this scenario."""
        supported = sorted(supported)
        if self.name not in supported:
            raise ScenarioError(
                f"method '{method_name}' does not support scenario '{self.name}' "
                f"(it supports: {', '.join(supported)})"
            )
        if self.shared_head and len(set(self.classes_per_task)) != 1:
            raise ScenarioError(
                f"scenario cl2 needs the same number of classes in every task, got {list(self.classes_per_task)}"
            )
        if self.shared_head and self.one_class_first_task:
            raise ScenarioError("scenario cl2 needs at least 2 classes per task (use cil for one class per task)")


SCENARIOS = ("cl1", "cl2", "cl3", "cil")


def make_scenario(name: str, classes_per_task: Sequence[int]) -> Scenario:
    """Build a scenario for a benchmark whose tasks have ``classes_per_task`` classes."""
    name = name.lower()
    if name not in SCENARIOS:
        raise ScenarioError(f"unknown scenario '{name}' (choose from {', '.join(SCENARIOS)})")
    return Scenario(
        name=name,
        task_id_given=name == "cl1",
        shared_head=name == "cl2",
        classes_per_task=tuple(int(k) for k in classes_per_task),
    )


def accuracy(logits: Tensor, target: Tensor) -> Tensor:
    """Fraction of correct argmax predictions, as a 0-dim tensor (no host sync)."""
    return (logits.argmax(dim=1) == target).float().mean()


__all__ = ["Scenario", "ScenarioError", "SCENARIOS", "make_scenario", "accuracy"]
