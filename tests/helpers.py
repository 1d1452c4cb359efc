"""Config helpers for the tests: the real Hydra config, shrunk to a few seconds of work."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parents[1] / "conf")

QUICK = [
    "benchmark.n_tasks=3",
    "benchmark.train_limit=600",
    "benchmark.test_limit=300",
    "benchmark.net.hidden=[64]",
    "trainer.iters_per_task=60",
    "trainer.batch_size=64",
    "trainer.log_every=20",
    "trainer.progress=false",
    "threads=1",
]


def quick_cfg(data_root: Path, tmp_path: Path, *overrides: str):
    """Compose conf/ with the quick settings, a tmp MLflow store and the real data root."""
    store = [] if "tracking=none" in overrides else [
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_root={tmp_path}/mlartifacts",
        "tracking.maps=false",  # t-SNE after every task costs seconds; tests/test_maps.py and test_tracking turn it on
    ]
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("config", overrides=[*QUICK, f"data_root={data_root}", *store, *overrides])


def train_directly(method, bench, iters: int, batch_size: int = 64, seed: int = 0) -> list[list[dict]]:
    """Run ``method`` through every task of ``bench`` as the trainer does, without it; the losses of every step."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for task in bench.tasks:
        method.plan_task(iters, batch_size)
        method.begin_task(task)
        losses = []
        for _ in range(iters):
            idx = torch.randint(len(task.train), (batch_size,), generator=g)
            x, y = task.batch("train", idx)
            losses.append({k: float(v) for k, v in method.step(x, y, task.id).items()})
        method.end_task(task)
        out.append(losses)
    return out


def assert_resume_equals_uninterrupted(data_root: Path, tmp_path: Path, *overrides: str) -> None:
    """A run stopped after 2 tasks and resumed from its directory gives the accuracy matrix of the
    uninterrupted run."""
    import numpy as np
    from omegaconf import OmegaConf

    from hyperdgm.experiment import run_experiment

    full = run_experiment(quick_cfg(data_root, tmp_path, *overrides), tmp_path / "full")
    part_dir = tmp_path / "part"
    cfg = quick_cfg(data_root, tmp_path, *overrides, "trainer.stop_after=2")
    (part_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, part_dir / ".hydra" / "config.yaml")
    run_experiment(cfg, part_dir)
    cfg.resume = str(part_dir)
    cfg.trainer.stop_after = None
    resumed = run_experiment(cfg, tmp_path / "elsewhere")
    np.testing.assert_array_equal(resumed.R, full.R)


def stop_group(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a server started in its own session (it and its workers), SIGKILL after ``timeout`` s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
