"""The one training loop: any method, any benchmark, any scenario.

It knows nothing of hypernetworks, masks or replay: it feeds batches of the current task to
``method.step``, evaluates every seen task after each task into the accuracy matrix ``R``,
checkpoints, and hands the numbers to the tracker.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .methods.base import Method
from .scenarios import Scenario
from .tracking import Tracker, accuracy_matrix_artifacts

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class TrainerConfig:
    iters_per_task: int = 2000
    epochs: float | None = None  # if set, overrides iters_per_task: epochs over the task's training set
    batch_size: int = 128
    eval_batch_size: int = 1000
    log_every: int = 200
    progress: bool = True
    checkpoint: bool = True
    stop_after: int | None = None  # stop (checkpointed) after this many tasks; `resume=` continues
    precision: str = "fp32"  # fp32 | bf16 (autocast of the nets' matmuls; hypernetwork outputs stay fp32)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> "TrainerConfig":
        cfg = dict(cfg or {})
        known = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        return cls(**known)


@dataclass
class Result:
    R: np.ndarray
    summary: dict[str, float]
    task_times: list[float]
    param_counts: dict[str, float]
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def task_seed(seed: int, task_id: int) -> int:
    """Seed of everything random inside task ``task_id``: resume reproduces the same numbers."""
    return int(seed) * 1009 + 7919 * (task_id + 1)


class Trainer:
    def __init__(
        self,
        method: Method,
        benchmark: Any,
        scenario: Scenario,
        *,
        tracker: Tracker | None = None,
        cfg: TrainerConfig | Mapping[str, Any] | None = None,
        run_dir: str | Path | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.method = method
        self.benchmark = benchmark
        self.scenario = scenario
        self.tracker = tracker or Tracker()
        self.cfg = cfg if isinstance(cfg, TrainerConfig) else TrainerConfig.from_mapping(cfg)
        self.run_dir = Path(run_dir) if run_dir else None
        self.seed = seed
        self.device = torch.device(device)
        self.rng = torch.Generator(device=self.device)
        n = benchmark.n_tasks
        self.R = metrics.new_matrix(n)
        self.task_times: list[float] = []
        self.test_sizes = [len(t.test) for t in benchmark.tasks]
        self.start_task = 0
        scenario.check(method.name, method.scenarios)
        torch.manual_seed(seed)
        self.rng.manual_seed(seed)
        method.setup(benchmark, scenario, self.device, self.rng)

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir else None

    def save_checkpoint(self, task_id: int) -> Path | None:
        if not (self.cfg.checkpoint and self.ckpt_dir):
            return None
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"task_{task_id:03d}.pt"
        state = {
            "format": CHECKPOINT_FORMAT,
            "task": task_id,
            "method_name": self.method.name,
            "benchmark": self.benchmark.name,
            "scenario": self.scenario.name,
            "seed": self.seed,
            "R": torch.from_numpy(self.R.copy()),
            "task_times": list(self.task_times),
            "run_id": self.tracker.run_id,
            "method": self.method.checkpoint_state(),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)  # never leave a half-written checkpoint behind
        return path

    @staticmethod
    def latest_checkpoint(run_dir: str | Path) -> Path | None:
        files = sorted((Path(run_dir) / "checkpoints").glob("task_*.pt"))
        return files[-1] if files else None

    def load_checkpoint(self, path: str | Path) -> int:
        """Restore the state after a finished task; returns the next task to train."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        for key, mine in (("method_name", self.method.name), ("benchmark", self.benchmark.name),
                          ("scenario", self.scenario.name)):
            if state[key] != mine:
                raise ValueError(f"checkpoint {path} is for {key}={state[key]!r}, not {mine!r}")
        self.method.load_checkpoint_state(state["method"])
        self.R = state["R"].cpu().numpy().copy()
        self.task_times = list(state["task_times"])
        self.start_task = int(state["task"]) + 1
        log.info("resumed from %s: continuing at task %d", path, self.start_task)
        return self.start_task

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, upto: int) -> list[float]:
        """Test accuracy (%) on tasks ``0..upto`` in the scenario's terms."""
        self.method.eval()
        accs = []
        for task in self.benchmark.tasks[: upto + 1]:
            n = len(task.test)
            correct = torch.zeros((), device=self.device)
            for s in range(0, n, self.cfg.eval_batch_size):
                idx = torch.arange(s, min(n, s + self.cfg.eval_batch_size), device=self.device)
                x, y = task.batch("test", idx)
                given = task.id if self.scenario.task_id_given else None
                logits = self.method.predict(x, given)
                correct += (logits.argmax(1) == self.scenario.target(y, task.id)).sum()
            accs.append(100.0 * correct.item() / n)
        self.method.train()
        return accs

    # -- training ------------------------------------------------------------------------
    def n_iters(self, task: Any) -> int:
        if self.cfg.epochs:
            return int(math.ceil(self.cfg.epochs * len(task.train) / self.cfg.batch_size))
        return int(self.cfg.iters_per_task)

    def autocast(self):
        """Mixed precision context for training steps (``trainer.precision``)."""
        p = str(self.cfg.precision).lower()
        if p in ("fp32", "float32", "32"):
            return contextlib.nullcontext()
        if p in ("bf16", "bfloat16"):
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        raise ValueError(f"trainer.precision must be fp32 or bf16, got {self.cfg.precision!r}")

    def train_task(self, task: Any) -> None:
        seed = task_seed(self.seed, task.id)
        torch.manual_seed(seed)
        self.rng.manual_seed(seed)
        m = self.method
        m.train()
        n, bs = len(task.train), min(self.cfg.batch_size, len(task.train))
        iters = self.n_iters(task)
        m.plan_task(iters, bs)  # schedules inside a method (e.g. DGM's annealing) need the task's length
        m.begin_task(task)
        perm, pos = None, n
        bar = tqdm(range(iters), desc=f"task {task.id + 1}/{self.benchmark.n_tasks}", disable=not self.cfg.progress,
                   mininterval=1.0, leave=False)
        base_step = task.id * iters
        autocast = self.autocast()
        for it in bar:
            if pos + bs > n:  # a new epoch: fresh seeded permutation, no per-sample Python
                perm, pos = torch.randperm(n, generator=self.rng, device=self.device), 0
            idx = perm[pos : pos + bs]
            pos += bs
            x, y = task.batch("train", idx, train_aug=True, generator=self.rng)
            with autocast:
                losses = m.step(x, y, task.id)
            if self.cfg.log_every and (it + 1) % self.cfg.log_every == 0:
                vals = {k: float(v) for k, v in losses.items()}  # the only host sync, every log_every steps
                bar.set_postfix({k: f"{v:.4f}" for k, v in vals.items()}, refresh=False)
                self.tracker.log_metrics({f"train/{k}": v for k, v in vals.items()}, step=base_step + it + 1)
        bar.close()
        m.end_task(task)

    def fit(self) -> Result:
        bench = self.benchmark
        end = bench.n_tasks if not self.cfg.stop_after else min(bench.n_tasks, int(self.cfg.stop_after))
        for task in bench.tasks[self.start_task : end]:
            t0 = time.perf_counter()
            self.train_task(task)
            self.task_times.append(time.perf_counter() - t0)
            accs = self.evaluate(task.id)
            self.R[task.id, : task.id + 1] = accs
            s = metrics.summary(self.R, self.test_sizes, after=task.id)
            log.info(
                "task %d/%d done in %.1fs: acc %s | avg %.2f during %.2f forgetting %.2f",
                task.id + 1, bench.n_tasks, self.task_times[-1], " ".join(f"{a:.2f}" for a in accs),
                s["acc_avg"], s["acc_during"], s["forgetting"],
            )
            row = {f"acc/task_{j}": a for j, a in enumerate(accs)}
            row.update(s)
            row["time/task"] = self.task_times[-1]
            self.tracker.log_metrics(row, step=task.id)
            self.method.log_artifacts(self.tracker, task)
            self.save_checkpoint(task.id)
        if end < bench.n_tasks:
            log.info("stopped after task %d of %d as asked; continue with resume=%s", end, bench.n_tasks, self.run_dir)
            return Result(self.R, metrics.summary(self.R, self.test_sizes, after=end - 1), list(self.task_times),
                          self.method.param_counts(), self.tracker.run_id, {"stopped": True})
        return self.finish()

    def finish(self) -> Result:
        summary = metrics.summary(self.R, self.test_sizes)
        counts = self.method.param_counts()
        final = {f"final/{k}": v for k, v in summary.items()}
        final["time/total"] = float(sum(self.task_times))
        final.update({f"params/{k}": float(v) for k, v in counts.items()})
        self.tracker.log_metrics(final)
        names = [t.name for t in self.benchmark.tasks]
        out = self.run_dir if self.run_dir else None
        accuracy_matrix_artifacts(self.R, names, self.tracker, out)
        log.info(
            "final: avg acc %.2f%%, during %.2f%%, forgetting %.2f, BWT %.2f, %.1fs; params %s",
            summary["acc_avg"], summary["acc_during"], summary["forgetting"], summary["bwt"],
            final["time/total"], {k: (round(v, 4) if isinstance(v, float) else v) for k, v in counts.items()},
        )
        return Result(self.R, summary, list(self.task_times), counts, self.tracker.run_id)
