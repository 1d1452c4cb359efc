"""Continual-learning metrics computed from the accuracy matrix.

``R[i, j]`` is the test accuracy (in %) on task ``j`` after training task ``i``; entries with
``j > i`` are NaN (not yet seen).

A method that infers the task (HNET+ENT, HNET+TIR in CL2 / CL3) scores ``R[j, j]`` inferring among
the ``j + 1`` tasks seen so far (among one after the first task), so the mean of the diagonal is
optimistic and is not the hypercl paper's "during" accuracy: the paper gives "during" for CL1 only,
since in CL2 / CL3 "task inference ... only is measurable after training on all tasks" (appendix D,
and "-" for P100-CL2/CL3). :func:`summary` logs it for such methods as :data:`DURING_INFERRED`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


#: Mean over the tasks seen so far of the share (%) of a task's evaluated samples whose task the method
#: inferred right (methods that infer the task: HNET+ENT, HNET+TIR in CL2 / CL3; hypercl's "task inference
#: accuracy").
TASK_INFERENCE = "acc_task_inference"
#: The name of the mean diagonal when the method infers the task (not comparable with a "during" accuracy).
DURING_INFERRED = "acc_during_optimistic"


def new_matrix(n_tasks: int) -> np.ndarray:
    """An all-NaN accuracy matrix for ``n_tasks`` tasks."""
    return np.full((n_tasks, n_tasks), np.nan)


def average_accuracy(R: np.ndarray, after: int | None = None) -> float:
    """Mean accuracy over tasks ``0..after`` measured after training task ``after`` (default: last)."""
    i = R.shape[0] - 1 if after is None else after
    return float(np.mean(R[i, : i + 1]))


def during_accuracy(R: np.ndarray, upto: int | None = None) -> float:
    """Mean of the diagonal: accuracy on each task right after it was learned."""
    i = R.shape[0] - 1 if upto is None else upto
    return float(np.mean(np.diag(R)[: i + 1]))


def forgetting(R: np.ndarray, after: int | None = None) -> float:
    """Mean over old tasks of (best earlier accuracy - accuracy now) (Chaudhry et al., 2018)."""
    i = R.shape[0] - 1 if after is None else after
    if i == 0:
        return 0.0
    return float(np.mean([np.max(R[j:i, j]) - R[i, j] for j in range(i)]))


def backward_transfer(R: np.ndarray, after: int | None = None) -> float:
    """Mean over old tasks of (accuracy now - accuracy right after learning it) (Lopez-Paz & Ranzato, 2017)."""
    i = R.shape[0] - 1 if after is None else after
    if i == 0:
        return 0.0
    return float(np.mean([R[i, j] - R[j, j] for j in range(i)]))


def a_n(R: np.ndarray, test_sizes: Sequence[int], after: int | None = None) -> float:
    """Class-incremental A_n: accuracy over the pooled test data of every class seen so far.

    With one class per task this is the test-size-weighted mean of row ``after``.
    """
    i = R.shape[0] - 1 if after is None else after
    w = np.asarray(test_sizes[: i + 1], dtype=float)
    return float(np.sum(R[i, : i + 1] * w) / np.sum(w))


def summary(R: np.ndarray, test_sizes: Sequence[int] | None = None, after: int | None = None, *,
            task_inferred: bool = False, TI: np.ndarray | None = None) -> dict[str, float]:
    """All scalar metrics after task ``after`` (default: the last row); ``task_inferred``: the method
    infers the task, its mean diagonal is named :data:`DURING_INFERRED` instead of ``acc_during``.
    ``TI``: task-inference accuracies shaped like ``R`` (NaN where the task was given); a complete row
    adds :data:`TASK_INFERENCE`, its mean over the tasks seen (as ``acc_avg``, and hypercl's
    ``acc_task_infer_mean``)."""
    out = {
        "acc_avg": average_accuracy(R, after),
        DURING_INFERRED if task_inferred else "acc_during": during_accuracy(R, after),
        "forgetting": forgetting(R, after),
        "bwt": backward_transfer(R, after),
    }
    if test_sizes is not None:
        out["a_n"] = a_n(R, test_sizes, after)
    if TI is not None:
        i = TI.shape[0] - 1 if after is None else after
        if np.isfinite(TI[i, : i + 1]).all():
            out[TASK_INFERENCE] = average_accuracy(TI, after)
    return out
