"""Task inference rules shared by methods that must find the task themselves (CL2 / CL3)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Shannon entropy of ``softmax(logits / T)`` along the last dimension."""
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def infer_by_entropy(per_task_logits: Sequence[Tensor], temperature: float = 1.0) -> Tensor:
    """Index of the task whose head is most confident (lowest entropy), per sample.

    ``per_task_logits[e]`` is ``[B, k_e]``: the input run through task ``e``'s weights and head.
    """
    h = torch.stack([entropy(l, temperature) for l in per_task_logits])  # [T, B]
    return h.argmin(0)


def assemble(per_task_logits: Sequence[Tensor], task_ids: Tensor, offsets: Sequence[int] | None,
             n_classes: int | None = None) -> Tensor:
    """Logits of each sample's inferred task in the scenario's label space.

    With ``offsets`` (CL3 / class-IL): ``[B, n_classes]``, the inferred task's block filled and every
    other entry ``-inf`` (so a wrong task guess is a wrong answer). Without (CL2): ``[B, k]``, the
    inferred task's shared-head logits.
    """
    first = per_task_logits[0]
    if offsets is None:
        stacked = torch.stack(list(per_task_logits))  # [T, B, k]
        return stacked[task_ids, torch.arange(first.shape[0], device=first.device)]
    n = n_classes if n_classes is not None else offsets[len(per_task_logits) - 1] + per_task_logits[-1].shape[1]
    out = first.new_full((first.shape[0], n), float("-inf"))
    for e, logits in enumerate(per_task_logits):
        o, k = offsets[e], logits.shape[1]
        out[:, o : o + k] = torch.where((task_ids == e)[:, None], logits, out[:, o : o + k])
    return out
