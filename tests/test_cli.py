"""The command line through a subprocess: a run, resume equality, refusal of bad input, multirun."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import QUICK

REPO = Path(__file__).resolve().parents[1]


def cli(tmp_path: Path, data_root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYPERDGM_DATA": str(data_root)}
    flags = [a for a in args if a.startswith("--")]
    args = tuple(a for a in args if not a.startswith("--"))
    cmd = [sys.executable, "-m", "hyperdgm.run", *flags, *QUICK, "trainer.progress=false",
           f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art",
           "tracking.maps=false", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return proc


def test_resume_reaches_the_same_numbers(data_root, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    cli(tmp_path, data_root, f"hydra.run.dir={full}")
    cli(tmp_path, data_root, f"hydra.run.dir={part}", "trainer.stop_after=2")
    assert sorted(p.name for p in (part / "checkpoints").glob("*.pt")) == ["task_000.pt", "task_001.pt"]
    assert not (part / "accuracy_matrix.csv").exists()
    first = (part / "run.log").read_text()
    cli(tmp_path, data_root, f"hydra.run.dir={tmp_path / 'resumer'}", f"resume={part}")
    assert (part / "checkpoints" / "task_002.pt").exists()
    assert (part / "accuracy_matrix.csv").read_text() == (full / "accuracy_matrix.csv").read_text()
    # the run's log goes on where it stopped; the dir Hydra made for the resuming command is gone
    log = (part / "run.log").read_text()
    assert log.startswith(first) and f"resuming {part.resolve()}" in log[len(first):] and "final:" in log
    assert "task 3/3 done" in log and "task 1/3 done" not in log[len(first):]
    assert not (tmp_path / "resumer").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("split_mnist").experiment_id])
    assert len(runs) == 2  # the resumed run continued its own MLflow run
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.metrics["final.acc_avg"] for r in runs}) == 1


def test_bad_input_is_one_clear_line(data_root, tmp_path):
    proc = cli(tmp_path, data_root, f"hydra.run.dir={tmp_path}/r", "scenario=cl2", "benchmark=cil_mnist",
               check=False)
    assert proc.returncode == 2
    assert "cl2 needs at least 2 classes per task" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = cli(tmp_path, "/nonexistent/data", f"hydra.run.dir={tmp_path}/r2", check=False)
    assert proc.returncode == 2 and "MNIST not found" in proc.stdout + proc.stderr and "train-images-idx3-ubyte" in proc.stdout + proc.stderr


def test_multirun_sweeps_methods(data_root, tmp_path):
    cli(tmp_path, data_root, "--multirun", "method=finetune,joint", "benchmark.n_tasks=2",
        f"hydra.sweep.dir={tmp_path}/sweep")
    assert len(list((tmp_path / "sweep").glob("*/accuracy_matrix.csv"))) == 2
