"""Compose one run from a config: benchmark -> tasks -> trainer(method) -> metrics -> tracker.

:func:`run_experiment` is what ``python -m hyperdgm.run`` calls; it works without Hydra too
(pass an ``OmegaConf`` config and a run dir).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from .data.benchmarks import build_benchmark
from .methods import build_method
from .scenarios import make_scenario
from .tracking import build_tracker
from .trainer import Result, Trainer

log = logging.getLogger(__name__)

_BENCH_KEYS = ("n_tasks", "class_order", "val_size", "pad", "normalize", "augment", "train_limit", "test_limit")


def resolve_device(name: str | None) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def method_config(cfg: DictConfig) -> dict[str, Any]:
    """The method's config with the benchmark's target net filled in where the method sets none."""
    m = OmegaConf.to_container(cfg.method, resolve=True)
    if not m.get("net"):
        m["net"] = OmegaConf.to_container(cfg.benchmark.net, resolve=True)
    return m


def run_experiment(cfg: DictConfig, run_dir: str | Path) -> Result:
    """Train and evaluate one configured run; tracks it and checkpoints under ``run_dir``."""
    run_dir = Path(run_dir)
    resuming = bool(cfg.get("resume"))
    if resuming:
        resume_dir = Path(str(cfg.resume)).expanduser().resolve()
        saved = resume_dir / ".hydra" / "config.yaml"
        if not saved.exists():
            raise FileNotFoundError(f"cannot resume: {saved} not found (resume= must be a previous run dir)")
        stop_after = cfg.trainer.get("stop_after")
        cfg = OmegaConf.load(saved)
        cfg.trainer.stop_after = stop_after  # the resuming command decides where to stop
        run_dir = resume_dir
        log.info("resuming %s with its saved config", resume_dir)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    if cfg.get("deterministic"):
        # Bit-identical reruns and resumes on GPUs too (slower kernels where torch has alternatives).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    device = resolve_device(cfg.get("device", "auto"))
    seed = int(cfg.seed)

    bcfg = cfg.benchmark
    kwargs = {k: bcfg.get(k) for k in _BENCH_KEYS if bcfg.get(k) is not None}
    if "class_order" in kwargs:
        kwargs["class_order"] = list(kwargs["class_order"])
    bench = build_benchmark(bcfg.name, cfg.data_root, seed=seed, **kwargs).to(device)
    scenario = make_scenario(cfg.scenario.name, bench.n_classes_per_task)
    method = build_method(method_config(cfg))
    scenario.check(method.name, method.scenarios)  # before any tracking or training

    tracker = build_tracker(OmegaConf.to_container(cfg.tracking, resolve=True) if cfg.get("tracking") else None)
    trainer = Trainer(method, bench, scenario, tracker=tracker, cfg=OmegaConf.to_container(cfg.trainer, resolve=True),
                      run_dir=run_dir, seed=seed, device=device)
    run_id = None
    if resuming:
        ckpt = Trainer.latest_checkpoint(run_dir)
        if ckpt is None:
            log.warning("no checkpoint in %s: starting from the first task", run_dir)
        else:
            trainer.load_checkpoint(ckpt)
            run_id = torch.load(ckpt, map_location="cpu", weights_only=True).get("run_id")

    params = OmegaConf.to_container(cfg, resolve=True)
    tracker.start(experiment=bench.name, run_name=str(cfg.get("run_name") or method.name), params=params, run_id=run_id)
    try:
        tracker.set_tags({"method": method.name, "scenario": scenario.name, "benchmark": bench.name,
                          "device": str(device), "run_dir": str(run_dir)})
        counts = method.param_counts()
        tracker.log_metrics({f"params/{k}": float(v) for k, v in counts.items()})
        if run_id is None:
            tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        log.info("%s on %s (%s), %d tasks, device %s, params %s", method.name, bench.name, scenario.name,
                 bench.n_tasks, device, counts)
        result = trainer.fit()
    except BaseException as err:
        tracker.finish(error=err)
        raise
    tracker.finish()
    return result
