"""``fork=``: a new run started from another run's checkpoint, with its own config from there on."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from hyperdgm.errors import ConfigError
from hyperdgm.experiment import run_experiment

from .helpers import quick_cfg

RUN = ["method=finetune", "scenario=cl1", "benchmark.train_limit=200", "benchmark.test_limit=100",
       "trainer.iters_per_task=20"]


def _run(data_root, tmp_path, name, *over):
    return run_experiment(quick_cfg(data_root, tmp_path, *RUN, *over), tmp_path / name)


def test_fork_continues_where_its_source_stopped(data_root, tmp_path):
    full = _run(data_root, tmp_path, "full")
    _run(data_root, tmp_path, "part", "trainer.stop_after=1")
    same = _run(data_root, tmp_path, "same", f"fork={tmp_path / 'part'}")  # a run dir: its newest checkpoint
    assert np.array_equal(full.R, same.R, equal_nan=True)  # nothing changed: the uninterrupted numbers

    other = _run(data_root, tmp_path, "lr", f"fork={tmp_path / 'part' / 'checkpoints' / 'task_000.pt'}",
                 "method.lr=0.02")
    assert other.R[0, 0] == full.R[0, 0]  # task 1 is the source's
    assert not np.array_equal(other.R[1:], full.R[1:], equal_nan=True)  # tasks 2-3 trained with the new lr

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(other.run_id)
    assert run.data.tags["forked_from"].endswith("task_000.pt")
    from hyperdgm.reproduction import run_record

    assert run_record(run) is None  # a fork never stands for a preset's run in the reproduction table


def test_a_fork_stopped_before_its_own_first_task_resumes_from_the_fork(data_root, tmp_path):
    _run(data_root, tmp_path, "part", "trainer.stop_after=1")
    fork = [f"fork={tmp_path / 'part'}", "method.lr=0.02"]
    whole = _run(data_root, tmp_path, "whole", *fork)
    scratch = _run(data_root, tmp_path, "scratch", "method.lr=0.02")
    assert not np.array_equal(scratch.R, whole.R, equal_nan=True)  # starting over would show
    cfg = quick_cfg(data_root, tmp_path, *RUN, *fork, "trainer.stop_after=2")
    run_experiment(cfg, tmp_path / "fork")
    shutil.rmtree(tmp_path / "fork" / "checkpoints")  # as if stopped before its task 2 was checkpointed
    cfg.resume, cfg.trainer.stop_after = str(tmp_path / "fork"), None
    resumed = run_experiment(cfg, tmp_path / "x")
    assert np.array_equal(whole.R, resumed.R, equal_nan=True)


def test_bad_forks_refused(data_root, tmp_path):
    _run(data_root, tmp_path, "part", "trainer.stop_after=1")
    with pytest.raises(ConfigError, match="no such checkpoint"):
        _run(data_root, tmp_path, "a", f"fork={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="is for method_name='finetune'"):
        _run(data_root, tmp_path, "b", f"fork={tmp_path / 'part'}", "method=joint")
    with pytest.raises(ConfigError, match="does not fit this run's config"):
        _run(data_root, tmp_path, "c", f"fork={tmp_path / 'part'}", "benchmark.net.hidden=[32]")
    for other in ("seed=7", "benchmark.train_limit=150"):  # other permutations / samples: other tasks
        with pytest.raises(ConfigError, match="trained on other tasks"):
            _run(data_root, tmp_path, "f", f"fork={tmp_path / 'part'}", other)
    with pytest.raises(ConfigError, match="run of 3 tasks, this one has 2"):
        _run(data_root, tmp_path, "d", f"fork={tmp_path / 'part'}", "benchmark.n_tasks=2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no checkpoint in"):
        _run(data_root, tmp_path, "e", f"fork={tmp_path / 'empty'}")
