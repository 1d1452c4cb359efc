"""Replay alignment (Wu et al., "Memory Replay GANs", NeurIPS 2018): ``memory.protection=alignment``.

While task ``t`` trains, the generator's outputs for the conditions (classes) of tasks ``0..t-1``
are pulled towards those of its snapshot (the generator as task ``t`` began) on the *same* noise
and condition::

    L_RA = lambda * (1/c) * sum_{i < c} 1/2 || G_snapshot(z_i, i) - G(z_i, i) ||^2

``c``: the conditions learned before the task; ``z_i``: ``floor(n_noise / c)`` noise vectors per
condition (at least one), fresh each step; the norm is a plain sum over samples and pixels (TF's
``l2_loss``) on the ``[-1, 1]`` image scale of the official code (``WuChenshen/MeRGAN``,
``mergan.py`` RA_loss_fn with REDUCE_BATCH). The penalty runs in the memory's hook sequence, so it
adds to whatever loss the replay model trains the generator with. ``replay: true`` also trains on
the snapshot's samples (MeRGAN-JTR's replay, as ``protection=replay``), so RA + JTR is a config choice.

Any generator the memory builds can take it: a class-conditioned one aligns per class, a
task-conditioned one per task, an unconditional one on its single constant condition. The
snapshot is taken by the memory when the task begins, so a resumed run (checkpoints are written
between tasks) rebuilds the same one.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .protection import Blocks, ReplayProtection, register_protection

__all__ = ["AlignmentProtection", "ALIGNMENT_DEFAULTS", "alignment_distance"]

#: memory.alignment: MeRGAN's MNIST lambda_RA (SVHN: 1e-2) and its 64 shared noise vectors per step
ALIGNMENT_DEFAULTS: dict[str, Any] = {"lambda": 1e-3, "n_noise": 64, "replay": False}


def alignment_distance(old: Tensor, new: Tensor) -> Tensor:
    """``1/2 sum (old - new)^2`` over samples and pixels on the ``[-1, 1]`` scale, for images in ``[0, 1]``
    (the official code's ``tf.nn.l2_loss`` of its ``tanh`` outputs: ``2 x - 1`` doubles differences)."""
    return 0.5 * (2.0 * (old - new)).pow(2).sum()


@register_protection
class AlignmentProtection(ReplayProtection):
    """Own weights (shared by all tasks) kept by replay alignment to the snapshot (MeRGAN-RA)."""

    name = "alignment"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        b = {**ALIGNMENT_DEFAULTS, **dict(cfg.get("alignment") or {})}
        unknown = set(b) - set(ALIGNMENT_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown memory.alignment keys {sorted(unknown)} (known: {sorted(ALIGNMENT_DEFAULTS)})")
        lam, n = b["lambda"], b["n_noise"]
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam >= 0:
            raise ValueError(f"memory.alignment.lambda must be a number >= 0, got {lam!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"memory.alignment.n_noise must be an integer >= 1, got {n!r}")
        if not isinstance(b["replay"], bool):
            raise ValueError(f"memory.alignment.replay must be true or false, got {b['replay']!r}")
        self.lam, self.n_noise, self.self_replay = float(lam), int(n), b["replay"]

    def has_penalty(self) -> bool:
        return self.lam > 0 and self.n_past > 0 and self.view.snapshot is not None

    def past_conditions(self) -> list[tuple[int, int]]:
        """``(task, condition)`` of every distinct condition learned before the current task, in order."""
        view, seen, out = self.view, set(), []
        for t in range(self.n_past):
            for k in ([t] if view.condition == "task" else view.task_classes[t]):
                if k not in seen:
                    seen.add(k)
                    out.append((t, int(k)))
        return out

    def alignment_batch(self) -> tuple[Blocks, Tensor, int]:
        """Blocks ``(task, rows)``, the condition of every row and ``c``: ``floor(n_noise / c)`` rows (at
        least one) for each of the ``c`` past conditions, grouped by task."""
        past = self.past_conditions()
        c = len(past)
        per = max(1, self.n_noise // c)
        blocks: Blocks = []
        conds: list[int] = []
        for t, k in past:
            if blocks and blocks[-1][0] == t:
                blocks[-1] = (t, blocks[-1][1] + per)
            else:
                blocks.append((t, per))
            conds += [k] * per
        return blocks, torch.tensor(conds, dtype=torch.long, device=self.view.device), c

    def penalty(self, *, delta: Sequence[Tensor] | None = None) -> Tensor:
        """``lambda / c * sum_i 1/2 ||G_snapshot(z_i, i) - G(z_i, i)||^2`` on fresh shared noise."""
        view, snap = self.view, self.view.snapshot
        if not self.has_penalty():
            return torch.zeros((), device=view.device)
        blocks, cond, c = self.alignment_batch()
        z = torch.randn(cond.shape[0], view.latent_dim, device=view.device)
        with torch.no_grad():
            old = view.generate(blocks, weights=snap.for_tasks([t for t, _ in blocks]), cond=cond, z=z)
        new = view.generate(blocks, cond=cond, z=z)
        return (self.lam / c) * alignment_distance(old, new)
