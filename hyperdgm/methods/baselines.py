"""Bounds every method is compared against: ``finetune`` (no protection) and ``joint`` (all data so far)."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import ClassifierMethod


class Finetune(ClassifierMethod):
    """Trains the classifier on each task in turn with nothing against forgetting: the lower bound."""

    name = "finetune"

    def step(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x, y, task_id)
        out = {"loss": loss.detach()}
        self.regularized_step(loss, out)
        return out


class Joint(ClassifierMethod):
    """Trains on the data of every task seen so far (balanced across tasks): the upper bound.

    Each step draws the same number of samples from every seen task (the current batch for the
    current task, fresh random indices for the others), so no host sync is needed.
    """

    name = "joint"

    def step(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        n = self.n_seen
        per = max(1, x.shape[0] // n)
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x[:per], y[:per], task_id) / n
        for t in range(n):
            if t == task_id:
                continue
            task = self.benchmark.tasks[t]
            idx = torch.randint(len(task.train), (per,), generator=self.rng, device=self.rng.device)
            xt, yt = task.batch("train", idx, train_aug=True, generator=self.rng)
            loss = loss + self.loss(xt, yt, t) / n
        out = {"loss": loss.detach()}
        self.regularized_step(loss, out)
        return out
