"""Compose one run from a config: benchmark -> tasks -> trainer(method) -> metrics -> tracker.

:func:`run_experiment` is what ``python -m hyperdgm.run`` calls; it works without Hydra too
(pass an ``OmegaConf`` config and a run dir).

Order of work: validate the whole config, the device and the method / scenario pair; take the run
dir's lock and tie it to this run; check the run dir and tracking store are writable; then load the
data, open the MLflow run (its id goes into the run dir at once) and train. SIGINT / SIGTERM during
a run raise :class:`~hyperdgm.errors.Interrupted`: the MLflow run is marked KILLED and the
finished tasks' checkpoints stay for ``resume=``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from . import config_check as cc
from .config_check import resolve_device
from .data.benchmarks import benchmark_datasets, build_benchmark
from .data.download import ensure as ensure_data
from .data.readers import DataError
from .errors import ConfigError, Interrupted
from .machine import describe
from .methods import build_method
from .naming import run_name, size_metrics
from .rundir import CHECKPOINT_DIR, CONFIG_FILE, RunDir
from .scenarios import ScenarioError, make_scenario
from .tracking import build_tracker, defer_interrupt
from .trainer import Result, Trainer

log = logging.getLogger(__name__)

_BENCH_KEYS = ("n_tasks", "class_order", "val_size", "pad", "normalize", "augment", "train_limit", "test_limit",
               "first_unpermuted")


def benchmark_of(c: Mapping[str, Any], data_root: str | None = None) -> Any:
    """The run's benchmark from its resolved config (on the CPU; ``data_root`` overrides the config's)."""
    bcfg = c["benchmark"]
    kwargs = {k: bcfg.get(k) for k in _BENCH_KEYS if bcfg.get(k) is not None}
    return build_benchmark(bcfg["name"], data_root or c["data_root"], seed=int(c["seed"]), **kwargs)


def method_config(cfg: DictConfig) -> dict[str, Any]:
    """The method's config with the benchmark's target net filled in where the method sets none."""
    m = OmegaConf.to_container(cfg.method, resolve=True)
    if not m.get("net"):
        m["net"] = OmegaConf.to_container(cfg.benchmark.net, resolve=True)
    return m


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (once; later ones are ignored
    while the run winds down: marks the MLflow run, releases the lock)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if not fired:
            fired.append(signum)
            if not defer_interrupt(signum):  # never in the middle of a write to the tracking store
                raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def load_resume_config(cfg: DictConfig, overrides: Sequence[str] | None) -> tuple[DictConfig, Path]:
    """The saved config of ``cfg.resume`` with the command's safe overrides; refuses the rest."""
    resume_dir = Path(str(cfg.resume)).expanduser().resolve()
    saved = resume_dir / CONFIG_FILE
    if not saved.exists():
        raise ConfigError(f"cannot resume: {saved} not found (resume= must be a previous run dir)")
    out = cc.resume_config(OmegaConf.load(saved), cfg, overrides)
    log.info("resuming %s with its saved config", resume_dir)
    return out, resume_dir


def _check_claim(rd: RunDir, cfg: DictConfig, resuming: bool) -> dict[str, Any] | None:
    """The locked run dir must be free (a new run) or this run's (resume: its identity)."""
    if not resuming:
        if rd.holds_a_run():
            raise ConfigError(f"run dir {rd.path} holds another run's checkpoints or identity; continue it with "
                              f"resume={rd.path} or give this run its own hydra.run.dir")
        return None
    digest = cc.config_hash(cfg)
    ident = rd.identity()
    if ident is None:
        raise ConfigError(f"cannot resume: {rd.path / 'run.json'} not found (not a run dir of this version)")
    if ident.get("config_hash") != digest or ident.get("seed") != int(cfg.seed):
        raise ConfigError(f"cannot resume: {rd.path / CONFIG_FILE} no longer matches {rd.path / 'run.json'} "
                          "(the saved config was edited)")
    return ident


def _preflight(cfg: DictConfig, rd: RunDir) -> None:
    """Writable run dir and tracking store, before the data loads."""
    cc.check_writable_dir(rd.path, "run dir")
    if cfg.trainer.get("checkpoint", True):
        cc.check_writable_dir(rd.path / "checkpoints", "checkpoint dir")
    if cfg.get("tracking"):
        cc.check_tracking_store(OmegaConf.to_container(cfg.tracking, resolve=True))


def _state_bytes(state: Any) -> int:
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_bytes(v) for v in state)
    return 0


@contextlib.contextmanager
def bad_input() -> Iterator[None]:
    """Before training, a ``ValueError`` or missing file is bad input: re-raise it as a :class:`ConfigError`."""
    try:
        yield
    except (ConfigError, ScenarioError, DataError):
        raise
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from err


def run_experiment(cfg: DictConfig, run_dir: str | Path, overrides: Sequence[str] | None = None,
                   tags: Mapping[str, str] | None = None) -> Result:
    """Train and evaluate one configured run; tracks it and checkpoints under ``run_dir``.

    ``overrides`` are the command line's (``resume=`` checks them, the run name shows them); in code,
    leave it ``None``. ``tags`` are added to the MLflow run's (a sweep job's ``sweep`` tags).
    """
    with signals_as_interrupts():
        return _run(cfg, Path(run_dir), overrides, dict(tags or {}))


def _run(cfg: DictConfig, run_dir: Path, overrides: Sequence[str] | None, tags: dict[str, str]) -> Result:
    resuming = bool(cfg.get("resume"))
    with bad_input():
        if resuming:
            cfg, run_dir = load_resume_config(cfg, overrides)
        c = cc.validate(cfg)
        device = resolve_device(c.get("device", "auto"))
        method = build_method(method_config(cfg))
        cc.check_method_scenario(method, c)  # before the data loads
    if c.get("seeds") is not None:
        return _run_seeds(cfg, c, run_dir, device, resuming, overrides, tags)
    rd = RunDir(run_dir)
    rd.lock()
    try:
        with bad_input():
            identity = _check_claim(rd, cfg, resuming)
            _preflight(cfg, rd)
            trainer = _build(c, rd, method, device)
            fork = fork_checkpoint(cfg.get("fork"))
            if fork is not None:
                tags.setdefault("forked_from", str(fork))
                if not resuming:  # checked and loaded before the run dir is claimed: a refused fork leaves it free
                    trainer.load_checkpoint(fork, fork=True)
            if identity is None:  # the data loaded: tie the run dir to this new run
                identity = rd.create_identity(int(c["seed"]), cc.config_hash(cfg), OmegaConf.to_yaml(cfg))
            trainer.identity = {k: identity[k] for k in ("run_key", "config_hash")}
            if resuming and trainer.load_latest() is None:
                if fork is not None:  # a fork stopped before its first own task: from the fork point again
                    trainer.load_checkpoint(fork, fork=True)
                else:
                    log.warning("no intact checkpoint in %s: starting from the first task", rd.path)
        return _track_and_fit(cfg, c, rd, trainer, rd.mlflow_run_id() if resuming else None, overrides, tags)
    finally:
        rd.unlock()


def fork_checkpoint(fork: Any) -> Path | None:
    """The checkpoint ``fork=`` names: a ``task_NNN.pt`` file, or a run dir's newest checkpoint."""
    if fork is None:
        return None
    path = Path(str(fork)).expanduser().resolve()
    if path.is_dir():
        newest = Trainer.latest_checkpoint(path)
        if newest is None:
            raise ConfigError(f"fork={fork}: no checkpoint in {path / CHECKPOINT_DIR}")
        return newest
    return path


def _deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` without its import of ``torch._inductor``
    (1.5 s of every run's start, measured on 1 thread): the flag alone. ``hnet.fused`` passes it on to the
    compiler before it compiles."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:  # another torch: the public call
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        setter(True, warn_only=True)


def _build(c: dict[str, Any], rd: RunDir, method: Any, device: torch.device) -> Trainer:
    """Torch settings, the data, the scenario and the trainer (the method set up on them)."""
    if c.get("threads"):
        torch.set_num_threads(int(c["threads"]))
    if c.get("deterministic"):
        # Bit-identical reruns and resumes on GPUs too (slower kernels where torch has alternatives).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        _deterministic_algorithms()
        torch.backends.cudnn.benchmark = False
    seed = int(c["seed"])
    if c.get("download"):  # fetch a missing data set with torchvision (extra `vision`) before reading it
        for ds in benchmark_datasets(c["benchmark"]["name"]):
            ensure_data(ds, c["data_root"])
    bench = benchmark_of(c).to(device)
    scenario = make_scenario(c["scenario"]["name"], bench.n_classes_per_task)
    scenario.check(method.name, method.scenarios)
    trainer = Trainer(method, bench, scenario, tracker=build_tracker(c.get("tracking")), cfg=c["trainer"],
                      run_dir=rd.path, seed=seed, device=device)
    if trainer.cfg.checkpoint:
        need = 2 * _state_bytes(method.state_dict()) + (16 << 20)
        cc.check_free_space(rd.path, need, "run dir")
    return trainer


def _start_tracking(cfg: DictConfig, c: dict[str, Any], rd: RunDir, trainer: Trainer, run_id: str | None,
                    overrides: Sequence[str] | None = None, tags: Mapping[str, str] | None = None) -> None:
    """Open (or continue) the run's MLflow run: identity tags, sizes, config and data set."""
    tracker, method, bench, scenario = trainer.tracker, trainer.method, trainer.benchmark, trainer.scenario
    name = str(c.get("run_name") or run_name(c, overrides))
    tracker.start(experiment=bench.name, run_name=name, params=c, run_id=run_id)
    rd.save_mlflow_run_id(tracker.run_id)  # from the start: any resume continues this MLflow run
    tracker.set_tags({"method": method.name, "scenario": scenario.name, "benchmark": bench.name,
                      "device": str(trainer.device), "machine": describe(trainer.device), "run_dir": str(rd.path),
                      "eval_split": trainer.cfg.eval_split,  # val runs select, test runs report
                      **(tags or {})})
    counts = method.param_counts()
    tracker.log_metrics(size_metrics(method))  # at the start too: a crashed run still says how big it was
    if run_id is None:
        tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        tracker.log_benchmark(bench, c["data_root"])
    log.info("%s on %s (%s), %d tasks, device %s, params %s", method.name, bench.name, scenario.name,
             bench.n_tasks, trainer.device, counts)


def _track_and_fit(cfg: DictConfig, c: dict[str, Any], rd: RunDir, trainer: Trainer, run_id: str | None,
                   overrides: Sequence[str] | None = None, tags: Mapping[str, str] | None = None) -> Result:
    """Open (or continue) the MLflow run, train, and end the run FINISHED, FAILED or KILLED."""
    tracker = trainer.tracker
    try:
        _start_tracking(cfg, c, rd, trainer, run_id, overrides, tags)
        result = trainer.fit()
    except BaseException as err:
        tracker.finish(error=err)
        raise
    tracker.finish()
    return result


# -- several seeds in one process ---------------------------------------------------------------
def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """One seed's own config in a ``seeds=`` run: ``seed`` set, ``seeds`` cleared (a plain run's config)."""
    out = cfg.copy()
    with open_dict(out):
        out.seed = int(seed)
        out.seeds = None
        out.resume = None
    return out


def _run_seeds(cfg: DictConfig, c: dict[str, Any], run_dir: Path, device: torch.device, resuming: bool,
               overrides: Sequence[str] | None, tags: dict[str, str]) -> Result:
    """``seeds=[...]``: every seed a whole run of its own in ``<run dir>/seed_<s>``, trained together
    (:mod:`hyperdgm.seed_batch`); one parent MLflow run holds the seeds' runs. ``resume=`` of the run dir
    continues every seed from its last checkpoint. Returns the first seed's result, its summary the
    seeds' mean (what a sweeper optimises)."""
    seeds = [int(s) for s in c["seeds"]]
    top = RunDir(run_dir)
    dirs = [RunDir(run_dir / f"seed_{s}") for s in seeds]
    top.lock()
    trainers: list[Trainer] = []
    configs: list[tuple[DictConfig, dict[str, Any]]] = []  # each seed's config, validated
    try:
        with bad_input():
            _check_claim(top, cfg, resuming)
            if not resuming:
                top.create_identity(int(c["seed"]), cc.config_hash(cfg), OmegaConf.to_yaml(cfg))
            for s, rd in zip(seeds, dirs):
                scfg = seed_config(cfg, s)
                sc = cc.validate(scfg)
                configs.append((scfg, sc))
                rd.lock()
                ident = _check_claim(rd, scfg, resuming)
                _preflight(scfg, rd)
                trainer = _build(sc, rd, build_method(method_config(scfg)), device)
                if ident is None:
                    ident = rd.create_identity(s, cc.config_hash(scfg), OmegaConf.to_yaml(scfg))
                trainer.identity = {k: ident[k] for k in ("run_key", "config_hash")}
                trainer.label = f"seed {s}: "
                if resuming and trainer.load_latest() is None:
                    log.warning("no intact checkpoint in %s: seed %d starts from the first task", rd.path, s)
                trainers.append(trainer)
        return _track_and_fit_seeds(c, top, dirs, trainers, configs, resuming, overrides, tags)
    finally:
        for rd in (*dirs, top):
            rd.unlock()


def _track_and_fit_seeds(c: dict[str, Any], top: RunDir, dirs: Sequence[RunDir], trainers: Sequence[Trainer],
                         configs: Sequence[tuple[DictConfig, dict[str, Any]]], resuming: bool,
                         overrides: Sequence[str] | None, tags: dict[str, str]) -> Result:
    from .seed_batch import fit_seeds, stack_reason
    from .sweep import PARENT_TAG

    parent = trainers[0].tracker.spawn()
    bench = trainers[0].benchmark
    why = stack_reason(trainers)
    batch_tag = (f"{len(trainers)} seeds trained as one batched learner; time/task is each seed's share"
                 if why is None else f"seeds trained one after another ({why})")
    opened: list[Any] = []
    try:
        name = str(c.get("run_name") or run_name(c, overrides))
        parent.start(experiment=bench.name, run_name=f"{name} seeds={','.join(map(str, c['seeds']))}", params=c,
                     run_id=top.mlflow_run_id() if resuming else None,
                     tags={"seeds": ",".join(map(str, c["seeds"])), "seed_batch": batch_tag,
                           PARENT_TAG: "true", **tags})  # reports and reproduction tables read the seeds' runs
        top.save_mlflow_run_id(parent.run_id)
        opened.append(parent)
        for tr, rd, (scfg, sc) in zip(trainers, dirs, configs):
            _start_tracking(scfg, sc, rd, tr, rd.mlflow_run_id() if resuming else None,
                            [*(overrides or []), f"seed={tr.seed}"],
                            {**tags, "mlflow.parentRunId": str(parent.run_id), "seed_batch": batch_tag,
                             # the seeds' runs all span the whole process: reports count each seed its share
                             "seed_batch.size": str(len(trainers))})
            opened.append(tr.tracker)
        results = fit_seeds(trainers)
    except BaseException as err:
        for t in reversed(opened):
            t.finish(error=err)
        raise
    mean = {k: float(sum(r.summary[k] for r in results) / len(results)) for k in results[0].summary}
    if not any(r.extra.get("stopped") for r in results):  # the seeds' mean on the parent (the runs table's row)
        parent.log_metrics({f"final/{k}": v for k, v in mean.items()})
    for t in reversed(opened):
        t.finish()
    first = results[0]
    return Result(first.R, mean, first.task_times, first.param_counts, parent.run_id,
                  {"seeds": {tr.seed: r for tr, r in zip(trainers, results)}}, first.TI)
