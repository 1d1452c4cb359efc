"""The one training loop: any method, any benchmark, any scenario.

It knows nothing of hypernetworks, masks or replay: it feeds batches of the current task to
``method.step``, evaluates every seen task after each task into the accuracy matrix ``R``,
checkpoints, and hands the numbers to the tracker. A non-finite loss (seen at the periodic host
sync) or non-finite method state (its ``state_dict`` after each task, the checkpoint state before it
is written) stops the run with a :class:`~hyperdgm.errors.DivergenceError`: no numbers and no
checkpoint from a diverged net.
Checkpoints carry the run's identity and a digest (:mod:`hyperdgm.rundir`); loading verifies both
and falls back to the newest intact checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .errors import CheckpointError, ConfigError, DivergenceError
from .lr_schedule import PLATEAU_NEEDS_VAL
from .methods.base import Method
from .rundir import CorruptCheckpoint, checkpoint_files, read_checkpoint, write_checkpoint
from .scenarios import Scenario
from .naming import size_metrics
from .hnet import fused
from .precision import resolve_precision
from .profiling import region
from .maps import log_maps
from .tracking import Tracker, accuracy_matrix_artifacts, log_accuracy_matrix_image, task_labels

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2
#: Keys of a checkpoint that tie it to its run (see :meth:`Trainer.load_checkpoint`).
IDENTITY_KEYS = ("run_key", "config_hash", "seed")


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
    precision: str = "fp32"  # fp32 | bf16 | auto (bf16 autocast where native; hypernetwork outputs stay fp32)
    eval_split: str = "test"  # test: report | val: the per-task validation split carved from training data (selection)
    fuse: str = "auto"  # auto: large elementwise updates compiled into one loop (hyperdgm.hnet.fused) | off

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> "TrainerConfig":
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown trainer key(s) {', '.join(unknown)} "
                              f"(known: {', '.join(cls.__dataclass_fields__)})")
        return cls(**cfg)


@dataclass
class Result:
    R: np.ndarray
    summary: dict[str, float]
    task_times: list[float]
    param_counts: dict[str, float]
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    TI: np.ndarray | None = None  # task-inference accuracies shaped like R (NaN where the task was given)


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every floating tensor in a nested state (dicts, lists, tuples), with its dotted path."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield prefix or "value", obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def first_non_finite(state: Any) -> str | None:
    """Path of the first floating tensor in ``state`` holding a NaN or inf (one host sync per device)."""
    items = [(k, t) for k, t in _tensors(state) if t.numel()]
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(items):
        by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        ok = torch.stack([torch.isfinite(items[i][1].detach()).all() for i in idx]).cpu()
        if not bool(ok.all()):
            return items[idx[int((~ok).nonzero()[0])]][0]
    return None


def _during_text(summary: Mapping[str, float]) -> str:
    if "acc_during" in summary:
        return f"during {summary['acc_during']:.2f}"
    return f"during (task inferred among the tasks seen so far, optimistic) {summary[metrics.DURING_INFERRED]:.2f}"


def _task_inference_text(summary: Mapping[str, float]) -> str:
    if metrics.TASK_INFERENCE not in summary:
        return ""
    return f", task inferred right {summary[metrics.TASK_INFERENCE]:.2f}"


def _a_n_text(summary: Mapping[str, float], scenario: str) -> str:
    """Class-incremental runs name their headline metric: A_n, the accuracy over the pooled test data seen."""
    return f", A_n {summary['a_n']:.2f}" if scenario == "cil" and "a_n" in summary else ""


def task_seed(seed: int, task_id: int) -> int:
    """Seed of everything random inside task ``task_id``: resume reproduces the same numbers."""
    return int(seed) * 1009 + 7919 * (task_id + 1)


class TaskLoop:
    """One task's training loop around a trainer: seeding, ``begin_task``, the seeded batches, logging,
    the epoch's lr schedule, ``end_task``. Iterating yields ``(x, y)``; the caller steps the method
    and hands the losses to :meth:`after_step` (the seed batch steps several methods at once)."""

    def __init__(self, trainer: "Trainer", task: Any, *, progress: bool | None = None, label: str = "") -> None:
        self.trainer, self.task = trainer, task
        seed = task_seed(trainer.seed, task.id)
        torch.manual_seed(seed)
        trainer.rng.manual_seed(seed)
        m = trainer.method
        m.train()
        self.n, self.bs = len(task.train), min(trainer.cfg.batch_size, len(task.train))
        self.iters = trainer.n_iters(task)
        m.plan_task(self.iters, self.bs)  # schedules inside a method (e.g. DGM's annealing) need the task's length
        with region("begin_task"):
            m.begin_task(task)
        self.schedule = m.lr_schedule
        self.schedule.start(m.scheduled_optimizers())
        self.per_epoch = math.ceil(self.n / self.bs)  # hypercl's iterations per epoch
        self.perm: torch.Tensor | None = None
        self.pos = self.n
        self.it = 0
        show = trainer.cfg.progress if progress is None else progress
        self.bar = tqdm(total=self.iters, desc=f"task {task.id + 1}/{trainer.benchmark.n_tasks}{label}",
                        disable=not show, mininterval=1.0, leave=False)
        # train/* steps count the iterations of all earlier tasks (tasks of other lengths never overlap)
        self.base_step = sum(trainer.n_iters(t) for t in trainer.benchmark.tasks[: task.id])
        m.step_base = self.base_step
        self.autocast = trainer.autocast()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while self.it < self.iters:
            yield self.next_batch()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next seeded training batch (a fresh permutation each epoch, no per-sample Python)."""
        tr = self.trainer
        if self.pos + self.bs > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=tr.rng, device=tr.device), 0
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        with region("data"):
            return self.task.batch("train", idx, train_aug=True, generator=tr.rng)

    def after_step(self, losses: Mapping[str, torch.Tensor]) -> None:
        tr, it = self.trainer, self.it + 1
        self.it = it
        self.bar.update(1)
        if tr.cfg.log_every and it % tr.cfg.log_every == 0:
            vals = {k: float(v) for k, v in losses.items()}  # the only host sync, every log_every steps
            tr._check_losses(vals, self.task.id, it, self.iters)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in vals.items()}, refresh=False)
            tr.tracker.log_metrics({f"train/{k}": v for k, v in vals.items()}, step=self.base_step + it)
        if self.schedule.active and it % self.per_epoch == 0 and it < self.iters:
            tr._end_epoch(self.task, self.base_step + it)

    def close(self) -> None:
        self.bar.close()
        with region("end_task"):
            self.trainer.method.end_task(self.task)


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
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.benchmark = benchmark
        self.scenario = scenario
        self.tracker = tracker or Tracker()
        self.cfg = cfg if isinstance(cfg, TrainerConfig) else TrainerConfig.from_mapping(cfg)
        self.run_dir = Path(run_dir) if run_dir else None
        self.seed = seed
        self.identity = dict(identity or {})  # run_key, config_hash: written into every checkpoint
        self.label = ""  # before its log lines ("seed 3: " in a seeds= run)
        self.device = torch.device(device)
        self.rng = torch.Generator(device=self.device)
        try:
            self.precision = resolve_precision(self.cfg.precision, self.device)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        if str(self.cfg.precision).lower() == "auto":
            log.info("trainer.precision=auto: %s on %s", self.precision, self.device)
        try:
            fused.set_mode(self.cfg.fuse)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        n = benchmark.n_tasks
        self.R = metrics.new_matrix(n)
        self.TI = metrics.new_matrix(n)  # task-inference accuracy (%), where the method infers the task
        self.task_times: list[float] = []
        if self.cfg.eval_split not in ("test", "val"):
            raise ConfigError(f"trainer.eval_split must be test or val, got {self.cfg.eval_split!r}")
        if self.cfg.eval_split == "val" and any(t.val is None for t in benchmark.tasks):
            raise ConfigError("trainer.eval_split=val needs a validation split: set benchmark.val_size > 0")
        if method.lr_schedule.needs_validation and any(t.val is None for t in benchmark.tasks):
            raise ConfigError(PLATEAU_NEEDS_VAL)
        # sizes of the evaluated split (they weigh A_n); the name stays for the metrics' callers
        self.test_sizes = [len(t.split(self.cfg.eval_split)) for t in benchmark.tasks]
        self.start_task = 0
        scenario.check(method.name, method.scenarios)
        torch.manual_seed(seed)
        self.rng.manual_seed(seed)
        method.run_dir = self.run_dir  # where a method may cache what it derives from the data (an evaluator)
        method.setup(benchmark, scenario, self.device, self.rng)

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def ckpt_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir else None

    def save_checkpoint(self, task_id: int) -> Path | None:
        """Write the state after ``task_id`` (finite only) with its digest; durable and atomic."""
        if not (self.cfg.checkpoint and self.ckpt_dir):
            return None
        path = self.ckpt_dir / f"task_{task_id:03d}.pt"
        state = {
            "format": CHECKPOINT_FORMAT,
            "task": task_id,
            "method_name": self.method.name,
            "benchmark": self.benchmark.name,
            "scenario": self.scenario.name,
            **self.identity,
            "seed": self.seed,
            "data": self.benchmark.digest,  # the tasks themselves: a fork= on other tasks is refused
            "R": torch.from_numpy(self.R.copy()),
            "TI": torch.from_numpy(self.TI.copy()),
            "task_times": list(self.task_times),
            "run_id": self.tracker.run_id,
            "method": self.method.checkpoint_state(),
        }
        self.check_finite(state["method"], task_id, "before writing its checkpoint")
        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            write_checkpoint(path, state)
        except OSError as err:
            raise CheckpointError(f"cannot write checkpoint {path}: {err.strerror or err}") from err
        return path

    @staticmethod
    def latest_checkpoint(run_dir: str | Path) -> Path | None:
        """The newest checkpoint file (unverified; :meth:`load_latest` verifies and falls back)."""
        files = checkpoint_files(Path(run_dir))
        return files[-1] if files else None

    def check_identity(self, state: Mapping[str, Any], path: Path, *, fork: bool = False) -> None:
        """Refuse a checkpoint of another run, method, benchmark or scenario (``fork``: of another
        method, benchmark or scenario only: a fork is a new run started from another run's state)."""
        for key, mine in (("method_name", self.method.name), ("benchmark", self.benchmark.name),
                          ("scenario", self.scenario.name)):
            if state.get(key) != mine:
                raise ConfigError(f"checkpoint {path} is for {key}={state.get(key)!r}, not {mine!r}")
        if fork:
            if tuple(state["R"].shape) != (self.benchmark.n_tasks,) * 2:
                raise ConfigError(f"fork={path} is a run of {state['R'].shape[0]} tasks, this one has "
                                  f"{self.benchmark.n_tasks}")
            # the tasks must be the source's (permutations, class order and splits follow seed and config)
            digest = self.benchmark.digest
            if state.get("data", digest) != digest or ("data" not in state and state.get("seed") != self.seed):
                raise ConfigError(f"fork={path} was trained on other tasks than this run's (the benchmark's config or "
                                  f"the seed differs: permutations, class order and splits follow them)")
            return
        expect = {"seed": self.seed, **self.identity}
        for key in IDENTITY_KEYS:
            if key in expect and state.get(key) != expect[key]:
                raise ConfigError(f"checkpoint {path} belongs to another run ({key} {state.get(key)!r}, "
                                  f"this run {expect[key]!r}); refusing to resume from it")

    def load_checkpoint(self, path: str | Path, state: Mapping[str, Any] | None = None, *, fork: bool = False) -> int:
        """Restore the state after a finished task (verified); returns the next task to train.
        ``fork``: the checkpoint is another run's (``fork=``), whose config may differ from this one's."""
        path = Path(path)
        if state is None:
            try:
                state = read_checkpoint(path, self.device)
            except CorruptCheckpoint as err:
                raise ConfigError(str(err)) from err
        self.check_identity(state, path, fork=fork)
        if fork and int(state["task"]) + 1 >= self.benchmark.n_tasks:
            raise ConfigError(f"fork={path} is after the last task ({int(state['task']) + 1} of "
                              f"{self.benchmark.n_tasks}): nothing left to train from it")
        try:
            self.method.load_checkpoint_state(state["method"])
        except (RuntimeError, KeyError, ValueError) as err:
            if not fork:
                raise
            raise ConfigError(f"fork={path}: its state does not fit this run's config (a changed architecture?): "
                              f"{str(err).splitlines()[0]}") from err
        self.R = state["R"].cpu().numpy().copy()
        # a checkpoint written before task inference was scored has no TI: unknown, not zero
        self.TI = state["TI"].cpu().numpy().copy() if "TI" in state else metrics.new_matrix(self.R.shape[0])
        self.task_times = list(state["task_times"])
        self.start_task = int(state["task"]) + 1
        log.info("%s from %s: continuing at task %d", "forked" if fork else "resumed", path, self.start_task)
        return self.start_task

    def load_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """Load the newest intact checkpoint, warning about each damaged newer one; None if none is left."""
        files = checkpoint_files(self.run_dir) if self.run_dir else []
        for i, path in enumerate(reversed(files)):
            try:
                state = read_checkpoint(path, self.device)
            except CorruptCheckpoint as err:
                older = files[-2 - i].name if i + 2 <= len(files) else "the first task"
                log.warning("checkpoint damaged, falling back to %s: %s", older, err)
                continue
            self.load_checkpoint(path, state)
            return path, state
        return None

    def check_finite(self, state: Any, task_id: int, when: str) -> None:
        """Raise :class:`DivergenceError` when any floating tensor of ``state`` is NaN or inf."""
        bad = first_non_finite(state)
        if bad is not None:
            raise DivergenceError(f"training diverged in task {task_id + 1}/{self.benchmark.n_tasks}: "
                                  f"non-finite values in {bad} {when}; no checkpoint written for this task")

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, upto: int) -> tuple[list[float], list[float]]:
        """Accuracy (%) on the ``eval_split`` of tasks ``0..upto`` in the scenario's terms, and per task the
        share (%) of its samples whose task the method inferred right (NaN where it does not infer it)."""
        self.method.eval()
        scores = [self._scores(task, self.cfg.eval_split) for task in self.benchmark.tasks[: upto + 1]]
        self.method.train()
        return [a for a, _ in scores], [t for _, t in scores]

    @torch.no_grad()
    def validation_accuracy(self, task: Any) -> float:
        """Accuracy (%) on ``task``'s validation split during its training; every module goes back to its
        own mode afterwards (a replay method's teacher stays in eval mode)."""
        modes = [(mod, mod.training) for mod in self.method.modules()]
        self.method.eval()
        try:
            return self._scores(task, "val")[0]
        finally:
            for mod, training in modes:
                mod.train(training)

    def _scores(self, task: Any, split: str) -> tuple[float, float]:
        """``(accuracy, task-inference accuracy)`` in % on ``task``'s ``split`` (the second NaN when the
        method was given the task or does not infer it)."""
        n = len(task.split(split))
        correct = torch.zeros((), device=self.device)
        task_right = torch.zeros((), device=self.device)
        inferring = False
        given = task.id if self.scenario.task_id_given else None
        for s in range(0, n, self.cfg.eval_batch_size):
            idx = torch.arange(s, min(n, s + self.cfg.eval_batch_size), device=self.device)
            x, y = task.batch(split, idx)
            logits, inferred = self.method.predict_with_task(x, given)
            correct += (logits.argmax(1) == self.scenario.target(y, task.id)).sum()
            if inferred is not None:
                inferring = True
                task_right += (inferred == task.id).sum()
        return 100.0 * correct.item() / n, (100.0 * task_right.item() / n if inferring else float("nan"))

    # -- training ------------------------------------------------------------------------
    def n_iters(self, task: Any) -> int:
        if self.cfg.epochs:
            return int(math.ceil(self.cfg.epochs * len(task.train) / self.cfg.batch_size))
        return int(self.cfg.iters_per_task)

    def autocast(self):
        """Mixed precision context for training steps (``trainer.precision``, resolved by :mod:`.precision`)."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_task(self, task: Any) -> None:
        loop = TaskLoop(self, task)
        m = self.method
        for x, y in loop:
            with loop.autocast, region("step"):
                losses = m.step(x, y, task.id)
            loop.after_step(losses)
        loop.close()

    def _end_epoch(self, task: Any, step: int) -> None:
        """Step the method's lr schedule after an epoch; ``plateau`` reads the task's *validation* accuracy."""
        schedule = self.method.lr_schedule
        row: dict[str, float] = {}
        val_acc = None
        if schedule.needs_validation:
            val_acc = self.validation_accuracy(task)
            row["train/val_acc"] = val_acc
        schedule.epoch_end(val_acc)
        row["train/lr"] = schedule.lrs[0]
        self.tracker.log_metrics(row, step=step)

    def _check_losses(self, vals: Mapping[str, float], task_id: int, step: int, iters: int) -> None:
        bad = {k: v for k, v in vals.items() if not math.isfinite(v)}
        if bad:
            raise DivergenceError(
                f"training diverged in task {task_id + 1}/{self.benchmark.n_tasks} at step {step}/{iters}: "
                f"non-finite loss ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
                "no checkpoint written for this task")

    def fit(self) -> Result:
        for task in self.benchmark.tasks[self.start_task : self.end_task_id]:
            self.fit_task(task)
        return self.end_fit()

    def fit_task(self, task: Any) -> None:
        """Train ``task``, then evaluate, log and checkpoint it (:meth:`after_task`)."""
        t0 = time.perf_counter()
        self.train_task(task)
        self.after_task(task, time.perf_counter() - t0)

    @property
    def end_task_id(self) -> int:
        """One past the last task this run trains (``trainer.stop_after`` may stop it early)."""
        n = self.benchmark.n_tasks
        return n if not self.cfg.stop_after else min(n, int(self.cfg.stop_after))

    def after_task(self, task: Any, seconds: float) -> None:
        """Once ``task`` is trained (in ``seconds``): check, evaluate every seen task, log, checkpoint."""
        bench = self.benchmark
        self.check_finite(self.method.state_dict(), task.id, "after training")
        self.task_times.append(seconds)
        with region("evaluate"):
            accs, tis = self.evaluate(task.id)
        self.R[task.id, : task.id + 1] = accs
        self.TI[task.id, : task.id + 1] = tis
        s = self.summary(after=task.id)
        log.info(
            "%stask %d/%d done in %.1fs: acc %s | avg %.2f %s forgetting %.2f%s%s", self.label,
            task.id + 1, bench.n_tasks, self.task_times[-1], " ".join(f"{a:.2f}" for a in accs),
            s["acc_avg"], _during_text(s), s["forgetting"], _task_inference_text(s), _a_n_text(s, self.scenario.name),
        )
        row = {f"acc/task_{j}": a for j, a in enumerate(accs)}
        row.update({f"acc_task_inference/task_{j}": t for j, t in enumerate(tis) if not math.isnan(t)})
        row.update(s)
        row["time/task"] = self.task_times[-1]
        self.tracker.log_metrics(row, step=task.id)
        with region("artifacts"):
            if self.tracker.run_id is not None:  # no figure drawn for tracking=none
                log_accuracy_matrix_image(self.R, task.id, self.tracker, task_labels(bench.tasks))
                if self.tracker.maps:
                    log_maps(self.method, self.tracker, bench.tasks, task.id, self.seed)
            self.method.log_artifacts(self.tracker, task)
        with region("checkpoint"):
            self.save_checkpoint(task.id)

    def end_fit(self) -> Result:
        """The result once every task up to :attr:`end_task_id` is trained."""
        end = self.end_task_id
        if end < self.benchmark.n_tasks:
            log.info("stopped after task %d of %d as asked; continue with resume=%s", end, self.benchmark.n_tasks,
                     self.run_dir)
            return Result(self.R, self.summary(after=end - 1), list(self.task_times),
                          self.method.param_counts(), self.tracker.run_id, {"stopped": True}, self.TI)
        return self.finish()

    def summary(self, after: int | None = None) -> dict[str, float]:
        """The scalar metrics after task ``after`` (default: the last); a method that infers the task gets
        its mean diagonal under :data:`~hyperdgm.metrics.DURING_INFERRED`."""
        return metrics.summary(self.R, self.test_sizes, after=after, task_inferred=self.method.infers_task(),
                               TI=self.TI)

    def finish(self) -> Result:
        summary = self.summary()
        counts = self.method.param_counts()
        final = {f"final/{k}": v for k, v in summary.items()}
        final["time/total"] = float(sum(self.task_times))
        final.update(size_metrics(self.method))  # again at the end: a growing generator (DGM) changed them
        self.tracker.log_metrics(final)
        names = task_labels(self.benchmark.tasks)
        out = self.run_dir if self.run_dir else None
        accuracy_matrix_artifacts(self.R, names, self.tracker, out)
        log.info(
            "%sfinal: avg acc %.2f%%, %s, forgetting %.2f, BWT %.2f%s%s, %.1fs; params %s", self.label,
            summary["acc_avg"], _during_text(summary), summary["forgetting"], summary["bwt"],
            _task_inference_text(summary), _a_n_text(summary, self.scenario.name),
            final["time/total"], {k: (round(v, 4) if isinstance(v, float) else v) for k, v in counts.items()},
        )
        return Result(self.R, summary, list(self.task_times), counts, self.tracker.run_id, TI=self.TI)
