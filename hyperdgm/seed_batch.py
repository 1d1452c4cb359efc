"""Several seeds of one experiment in one process (``seeds=[0,1,2]``), task by task in lockstep.

Each seed is a whole run of its own: its trainer, method, benchmark, run dir (``<run dir>/seed_<s>``),
checkpoints and MLflow run (nested under one parent run). Every seed is seeded exactly as a run alone
(the same initialisation, task embeddings and batches), so its numbers equal a separate run's up to
float round-off. Where the method can stack its seeds (:meth:`~hyperdgm.methods.base.Method.stack_seeds`:
HNET and HNET+ENT with an MLP target) one batched step trains every seed at once; otherwise the seeds
train one after another, task by task, and the log says why.

A seed's ``time/task`` is its share of the stacked training (the task's wall time over the seeds
trained together); the tag ``seed_batch`` says how many seeds shared it.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import torch

from .errors import ConfigError
from .profiling import region
from .trainer import Result, TaskLoop, Trainer

log = logging.getLogger(__name__)

__all__ = ["stack_reason", "fit_seeds"]


def stack_reason(trainers: Sequence[Trainer]) -> str | None:
    """Why these seeds cannot train as one batched learner (None: they can)."""
    if len(trainers) < 2:
        return "a single seed"
    why = trainers[0].method.seed_stack_unsupported()
    if why:
        return why
    t0 = trainers[0]
    if any(tr.device != t0.device or tr.precision != t0.precision for tr in trainers):
        return "the seeds run on different devices or precisions"
    if any(tr.benchmark.n_tasks != t0.benchmark.n_tasks or tr.end_task_id != t0.end_task_id for tr in trainers):
        return "the seeds' benchmarks differ in length"
    return None


def fit_seeds(trainers: Sequence[Trainer]) -> list[Result]:
    """Train every seed's trainer over the benchmark's tasks (each from its own ``start_task``, resumed
    seeds included); returns each seed's :class:`~hyperdgm.trainer.Result`."""
    trainers = list(trainers)
    if not trainers:
        raise ConfigError("seeds: no seed to train")
    why = stack_reason(trainers)
    if why is None:
        log.info("seed batch: %d seeds trained as one batched learner", len(trainers))
    else:
        log.info("seed batch: seeds train one after another (%s)", why)
    first = min(tr.start_task for tr in trainers)
    for t in range(first, trainers[0].end_task_id):
        active = [tr for tr in trainers if tr.start_task <= t]
        if why is None and len(active) > 1:
            seconds = _train_stacked(active, t)
            for tr in active:
                tr.after_task(tr.benchmark.tasks[t], seconds)
        else:
            for tr in active:
                tr.fit_task(tr.benchmark.tasks[t])
    return [tr.end_fit() for tr in trainers]


def _train_stacked(trainers: list[Trainer], task_id: int) -> float:
    """Task ``task_id`` of every seed in batched steps; returns each seed's share of the wall time."""
    t0 = time.perf_counter()
    # seeds and begins each as a run alone; one progress bar for the stack
    loops = [TaskLoop(tr, tr.benchmark.tasks[task_id], progress=tr.cfg.progress and i == 0,
                      label=f" ({len(trainers)} seeds)") for i, tr in enumerate(trainers)]
    iters = {lp.iters for lp in loops}
    if len(iters) != 1:
        raise ConfigError(f"seeds: the seeds' task {task_id + 1} has different numbers of steps {sorted(iters)}")
    stack = trainers[0].method.stack_seeds([tr.method for tr in trainers], task_id)
    autocast = loops[0].autocast
    for _ in range(loops[0].iters):
        batches = [lp.next_batch() for lp in loops]
        x = torch.stack([b[0] for b in batches])
        y = torch.stack([b[1] for b in batches])
        with autocast, region("step"):
            losses = stack.step(x, y)
        for s, lp in enumerate(loops):
            lp.after_step({k: v[s] for k, v in losses.items()})
    stack.finish()
    for lp in loops:
        lp.close()
    return (time.perf_counter() - t0) / len(trainers)
