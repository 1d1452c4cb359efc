"""Faults, interruptions and bad input: never a silent wrong result, a run left RUNNING or a traceback.

Command-line checks run ``python -m hyperdgm.run`` in subprocesses on tiny configs; bad-input runs
(which stop within the start-up) run two at a time.
"""
from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperdgm.data.readers import DataError, read_cifar10, read_cifar100
from hyperdgm.errors import ConfigError, DivergenceError
from hyperdgm.experiment import run_experiment
from hyperdgm.rundir import RunDir

from .helpers import QUICK, quick_cfg

REPO = Path(__file__).resolve().parents[1]
TINY = [*QUICK, "benchmark.n_tasks=2", "benchmark.train_limit=200", "benchmark.test_limit=100",
        "trainer.iters_per_task=20", "trainer.log_every=10", "method=finetune", "scenario=cl1"]


def _cmd(data_root: Path, run_dir: Path, *args: str, store: Path | None = None) -> list[str]:
    tracking = ["tracking=none"] if store is None else [f"tracking.uri=sqlite:///{store}/mlflow.db",
                                                        f"tracking.artifact_root={store}/art"]
    if any(a.startswith("tracking") for a in args):
        tracking = []
    return [sys.executable, "-m", "hyperdgm.run", *TINY, f"data_root={data_root}", *tracking,
            f"hydra.run.dir={run_dir}", *args]


def cli(data_root: Path, run_dir: Path, *args: str, store: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(data_root, run_dir, *args, store=store), cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a run that stopped on an expected failure."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def _runs(store: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name("split_mnist")
    return client.search_runs([exp.experiment_id]) if exp else []


def _ckpts(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))


# -- data files --------------------------------------------------------------------------------------
class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_crafted_cifar_pickle_is_refused(tmp_path, tiny_cifar100):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    marker = tmp_path / "pwned"
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Exploit(marker)}, f)
    with pytest.raises(DataError, match=r"test_batch: not a genuine CIFAR pickle.*refused global (posix|nt)\.system"):
        read_cifar10(tmp_path, train=False, cache=False)
    assert not marker.exists()
    # genuine layouts still load, whatever pickle protocol wrote them
    for proto in (2, 5):
        with open(d / "test_batch", "wb") as f:
            pickle.dump({b"data": np.ones((2, 3072), np.uint8), b"labels": [0, 1], b"batch_label": b"t"}, f,
                        protocol=proto)
        x, y = read_cifar10(tmp_path, train=False, cache=False)
        assert x.shape == (2, 3, 32, 32) and y.tolist() == [0, 1]
    x, _ = read_cifar100(tiny_cifar100.root, train=False, cache=False)
    assert torch.equal(x.reshape(len(x), -1), torch.from_numpy(tiny_cifar100.test.data))


# -- divergence -----------------------------------------------------------------------------------------
def test_divergence_stops_the_run_failed_without_checkpoint(data_root, tmp_path):
    proc = cli(data_root, tmp_path / "r", "method.lr=1e30", store=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "diverged in task 1/2 at step 10/20" in last and "non-finite loss" in last
    assert "Traceback" not in proc.stderr
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["error"]
    assert _ckpts(tmp_path / "r") == []


def test_non_finite_weights_stop_the_run_without_loss_sync(data_root, tmp_path):
    """With no periodic sync (log_every=0), the state check after each task catches NaN weights."""
    cfg = quick_cfg(data_root, tmp_path, "method=finetune", "method.lr=1e30", "trainer.log_every=0", "tracking=none")
    with pytest.raises(DivergenceError, match=r"task 1/3: non-finite values in \S+ after training"):
        run_experiment(cfg, tmp_path / "r")
    assert _ckpts(tmp_path / "r") == []


# -- checkpoints: foreign, corrupt ------------------------------------------------------------------------
def _quick(data_root, tmp_path, *over):
    return quick_cfg(data_root, tmp_path, "method=finetune", "scenario=cl1", "tracking=none", *over)


def test_foreign_checkpoint_refused(data_root, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_experiment(_quick(data_root, tmp_path, "trainer.stop_after=1"), a)
    run_experiment(_quick(data_root, tmp_path, "trainer.stop_after=1"), b)  # same config, another run
    for name in ("task_000.pt", "task_000.pt.sha256"):
        shutil.copy(b / "checkpoints" / name, a / "checkpoints" / name)
    cfg = _quick(data_root, tmp_path, f"resume={a}")
    with pytest.raises(ConfigError, match=r"task_000.pt belongs to another run \(run_key"):
        run_experiment(cfg, tmp_path / "elsewhere")
    # a new run refuses a directory that holds another run
    with pytest.raises(ConfigError, match="holds another run's checkpoints"):
        run_experiment(_quick(data_root, tmp_path), b)


def test_corrupt_checkpoints_fall_back_to_the_newest_intact_one(data_root, tmp_path, caplog):
    full = run_experiment(_quick(data_root, tmp_path), tmp_path / "full")
    part = tmp_path / "part"
    run_experiment(_quick(data_root, tmp_path, "trainer.stop_after=2"), part)
    ck = part / "checkpoints"
    data = bytearray((ck / "task_001.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a tensor: torch alone would load it
    (ck / "task_001.pt").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="hyperdgm.trainer"):
        resumed = run_experiment(_quick(data_root, tmp_path, f"resume={part}"), tmp_path / "x")
    assert "task_001.pt: sha256 does not match" in caplog.text and "falling back to task_000.pt" in caplog.text
    np.testing.assert_array_equal(resumed.R, full.R)

    caplog.clear()
    (ck / "task_002.pt").write_bytes((ck / "task_002.pt").read_bytes()[:1000])  # truncated
    with caplog.at_level(logging.WARNING, logger="hyperdgm.trainer"):
        resumed = run_experiment(_quick(data_root, tmp_path, f"resume={part}"), tmp_path / "x")
    assert "task_002.pt: sha256 does not match" in caplog.text and "falling back to task_001.pt" in caplog.text
    np.testing.assert_array_equal(resumed.R, full.R)


def test_full_disk_refused_up_front_and_a_failed_write_names_the_file(data_root, tmp_path, monkeypatch):
    from hyperdgm.errors import CheckpointError

    monkeypatch.setattr("hyperdgm.config_check.shutil.disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(ConfigError, match=r"run dir .*: 0 MiB free, a checkpoint needs about \d+ MiB"):
        run_experiment(_quick(data_root, tmp_path), tmp_path / "a")
    monkeypatch.undo()

    class FullDisk:
        """``os`` for the checkpoint writer, as on a disk that fills up during the run."""

        def __getattr__(self, name):
            return getattr(os, name)

        def fsync(self, fd):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".pt.tmp"):
                raise OSError(errno.ENOSPC, "No space left on device")
            os.fsync(fd)

    monkeypatch.setattr("hyperdgm.rundir.os", FullDisk())
    with pytest.raises(CheckpointError, match=r"cannot write checkpoint .*b/checkpoints/task_000.pt: No space left"):
        run_experiment(_quick(data_root, tmp_path), tmp_path / "b")
    assert list((tmp_path / "b" / "checkpoints").iterdir()) == []  # no partial file, no orphan digest


# -- signals --------------------------------------------------------------------------------------------
def test_sigterm_marks_killed_and_resume_continues_the_same_run(data_root, tmp_path):
    run_dir = tmp_path / "r"
    slow = ["trainer.iters_per_task=800", "trainer.log_every=400"]
    proc = subprocess.Popen(_cmd(data_root, run_dir, *slow, store=tmp_path), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "mlflow_run_id").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # as early as possible: before the first checkpoint
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].endswith(f"continue with: python -m hyperdgm.run resume={run_dir}")
    (run,) = _runs(tmp_path)
    assert run.info.status == "KILLED"
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert run.info.run_id == run_id

    done = cli(data_root, tmp_path / "resumer", *slow, f"resume={run_dir}", "threads=1", store=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = _runs(tmp_path)
    assert run.info.run_id == run_id and run.info.status == "FINISHED" and "final.acc_avg" in run.data.metrics
    assert _ckpts(run_dir) == ["task_000.pt", "task_001.pt"]


# -- MLflow store ---------------------------------------------------------------------------------------
def test_two_runs_on_a_fresh_store_both_finish(data_root, tmp_path):
    procs = [subprocess.Popen(_cmd(data_root, tmp_path / f"r{i}", store=tmp_path), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(e[-1500:] for e in errs)
    runs = _runs(tmp_path)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)


# -- bad input: exit 2 and one line, before any work ----------------------------------------------------------
def _fake_mnist(root: Path) -> Path:
    d = root / "MNIST" / "raw"
    d.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (d / name).write_bytes(b"\x00\x00\x08\x03\x00\x00\xea\x60")  # a header and nothing else
    return root


def test_bad_input_gives_exit_2_and_one_line(data_root, tmp_path):
    used = tmp_path / "used"
    run_experiment(quick_cfg(data_root, tmp_path, *TINY[len(QUICK):], "tracking=none", "trainer.stop_after=1"), used)
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "checkpoints").write_text("not a directory")
    (tmp_path / "afile").write_text("")
    busy = RunDir(tmp_path / "busy")
    busy.lock()  # a live run holds this directory
    nowhere = tmp_path / "no-data"
    cases = {
        "trainer.batch_size must be an integer >= 1, got 0": ["trainer.batch_size=0"],
        "trainer.iters_per_task must be an integer >= 1, got 0": ["trainer.iters_per_task=0"],
        "unknown config key trainer.iter ": ["+trainer.iter=5"],
        "trainer.precision must be fp32, bf16 or auto, got 'fp16'": ["trainer.precision=fp16"],
        "method 'hnet' does not support scenario 'cl3'": ["method=hnet", "scenario=cl3", f"data_root={nowhere}"],
        "truncated IDX header": [f"data_root={_fake_mnist(tmp_path / 'bad-data')}"],
        f"{blocked / 'checkpoints'} is not writable": [],
        f"tracking store directory {tmp_path / 'afile'} is not writable": [
            "tracking=mlflow", f"tracking.uri=sqlite:///{tmp_path}/afile/mlflow.db"],
        "refusing to change method.lr (resume may change only device": [f"resume={used}", "method.lr=0.5"],
        f"run dir {used} holds another run's checkpoints": [],
        f"run dir {busy.path} is in use by another run (pid {os.getpid()})": [],
    }
    dirs = {f"{blocked / 'checkpoints'} is not writable": blocked, f"run dir {used} holds another run's checkpoints": used,
            f"run dir {busy.path} is in use by another run (pid {os.getpid()})": busy.path}
    if not torch.cuda.is_available():
        cases["device=cuda but CUDA is not available here"] = ["device=cuda"]

    def run(item):
        i, (expect, args) = item
        return expect, cli(data_root, dirs.get(expect, tmp_path / f"run{i}"), *args)

    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(run, enumerate(cases.items())))
    finally:
        busy.unlock()
    for expect, proc in results:
        assert proc.returncode == 2, (expect, proc.stderr[-2000:])
        line = one_line(proc)
        assert line.startswith("error: ") and expect in line, (expect, line)
    assert _ckpts(used) == ["task_000.pt"]  # the refused runs left it as it was


@pytest.mark.parametrize("override, message", [
    ("trainer.iters_per_task=-5", "trainer.iters_per_task must be an integer >= 1, got -5"),
    ("trainer.epochs=0", "trainer.epochs must be null or a number > 0, got 0"),
    ("trainer.progress=maybe", "trainer.progress must be true or false, got 'maybe'"),
    ("+seed_list=3", "unknown config key seed_list "),
    ("+benchmark.n_task=3", "unknown config key benchmark.n_task "),
    ("scenario.name=cl4", "scenario.name='cl4' is not one of cl1, cl2, cl3, cil"),
    ("device=gpu", "device='gpu' is not a device"),
])
def test_config_is_validated_before_any_work(data_root, tmp_path, override, message):
    cfg = quick_cfg(data_root, tmp_path, "tracking=none", override)
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "r")
    assert message in str(err.value)
    assert not (tmp_path / "r").exists()


def test_resume_takes_safe_overrides_and_refuses_the_rest(data_root, tmp_path):
    from hyperdgm.config_check import resume_config

    saved = quick_cfg(data_root, tmp_path, "method=finetune", "trainer.stop_after=1")
    over = ["threads=2", "device=cpu", "trainer.progress=true", "tracking=none", "benchmark.n_tasks=3"]
    cmd = quick_cfg(data_root, tmp_path, *over)  # default method (hnet_r): not overridden, so not used
    out = resume_config(saved, cmd, over)
    assert (out.threads, out.device, out.trainer.progress, out.tracking.backend) == (2, "cpu", True, "none")
    assert out.method.name == "finetune" and out.trainer.stop_after is None and out.benchmark.n_tasks == 3
    for bad in (["method.lr=0.5"], ["benchmark.n_tasks=2"], ["seed=1"], ["+trainer.iter=5"], ["method=joint"]):
        with pytest.raises(ConfigError, match="refusing to change"):
            resume_config(saved, quick_cfg(data_root, tmp_path, *bad), bad)


def test_resume_auto_accepts_keys_added_after_the_run_at_null(data_root, tmp_path):
    """A run saved before a config key existed (``fork``) still continues with ``resume=auto`` (whole config
    compared); a non-null value for that key is still a change."""
    from omegaconf import open_dict

    from hyperdgm.config_check import config_hash, resume_config

    saved = quick_cfg(data_root, tmp_path, "tracking=none")
    with open_dict(saved):
        del saved["fork"]
    out = resume_config(saved, quick_cfg(data_root, tmp_path, "tracking=none"), None)
    assert out.get("fork") is None and config_hash(out) == config_hash(saved)  # the run's identity still matches
    with pytest.raises(ConfigError, match="refusing to change fork"):
        resume_config(saved, quick_cfg(data_root, tmp_path, "tracking=none", f"fork={tmp_path}"), None)
    with pytest.raises(ConfigError, match="refusing to change seed"):
        resume_config(saved, quick_cfg(data_root, tmp_path, "tracking=none", "seed=3"), None)


def test_signals_raise_interrupted():
    from hyperdgm.errors import Interrupted
    from hyperdgm.experiment import signals_as_interrupts

    before = signal.getsignal(signal.SIGTERM)
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        with pytest.raises(Interrupted) as err, signals_as_interrupts():
            os.kill(os.getpid(), sig)
            time.sleep(5)
        assert err.value.exit_code == code
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
