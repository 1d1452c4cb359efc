"""Sweeps beyond one process: launcher presets, threads per job, this machine's conf/local, resume on
another node, a parallel (joblib) sweep into a real ``mlflow server``, the SLURM job script."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hyperdgm.errors import ConfigError
from hyperdgm.launch import auto_resume, job_id, local_overrides, parallel_jobs, threads_for_job

from .helpers import CONF, QUICK, stop_group

REPO = Path(__file__).resolve().parents[1]
TINY = ["benchmark.n_tasks=2", "benchmark.train_limit=200", "benchmark.test_limit=100", "benchmark.net.hidden=[32]",
        "trainer.iters_per_task=10", "trainer.log_every=10", "trainer.progress=false", "threads=1"]
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def hyperdgm_run(tmp: Path, data_root: Path | str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m hyperdgm.run`` in the repo (flags such as --multirun first), output captured."""
    flags = [a for a in args if a.startswith("--")]
    rest = [a for a in args if not a.startswith("--")]
    cmd = [sys.executable, "-m", "hyperdgm.run", *flags, *rest]
    env = {**os.environ, "HYPERDGM_DATA": str(data_root), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


# -- presets and settings per job --------------------------------------------------------------------
def test_launcher_presets_compose():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        basic = compose("config", return_hydra_config=True)
        joblib = compose("config", overrides=["launcher=joblib", "hydra.launcher.n_jobs=2"], return_hydra_config=True)
        slurm = compose("config", overrides=["launcher=slurm"], return_hydra_config=True)
    assert basic.hydra.launcher._target_.endswith("BasicLauncher") and basic.resume is None
    assert joblib.hydra.launcher._target_ == JOBLIB and joblib.hydra.launcher.n_jobs == 2
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.resume == "auto"
    assert slurm.hydra.launcher.max_num_timeout > 0  # a preempted job is requeued
    subdir = OmegaConf.to_container(slurm.hydra.sweep)["subdir"]  # unresolved: job num and id exist in a job
    assert "${seed}" in subdir and "${hyperdgm.job_id:}" in subdir and "${hydra.job.num}" in subdir


def test_threads_never_exceed_cores():
    assert parallel_jobs({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}) == 1
    assert parallel_jobs({"_target_": JOBLIB, "n_jobs": -1}, n_cores=8) == 8
    assert parallel_jobs({"_target_": JOBLIB, "n_jobs": 3}, n_cores=8) == 3
    assert threads_for_job(None, 3, n_cores=8) == 2  # cores // jobs
    assert threads_for_job(2, 4, n_cores=8) == 2
    assert threads_for_job(None, 1, n_cores=8) is None  # one job: torch's default, as before
    with pytest.raises(ConfigError, match="2 parallel jobs x 3 threads need 6 cores, this machine has 4"):
        threads_for_job(3, 2, n_cores=4)
    with pytest.raises(ConfigError, match="9 parallel jobs x 1 threads"):
        threads_for_job(None, 9, n_cores=8)


def test_job_id_names_the_scheduler_job(monkeypatch):
    for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(k, raising=False)
    assert job_id() == f"pid{os.getpid()}"
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    assert job_id() == "777"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "700")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert job_id() == "700_3"


def test_too_many_threads_refused_before_any_job(tmp_path, data_root):
    proc = hyperdgm_run(tmp_path, data_root, "--multirun", "launcher=joblib", "hydra.launcher.n_jobs=2",
                        f"threads={os.cpu_count()}", "seed=1,2", f"hydra.sweep.dir={tmp_path}/sweep",
                        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: 2 parallel jobs x" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "sweep").glob("*/run.json"))


def _conf_with_local(tmp: Path, **values: str) -> Path:
    """A copy of conf/ with ``local/default.yaml`` setting ``values`` (dotted keys)."""
    conf = tmp / "conf"
    shutil.copytree(CONF, conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    node = OmegaConf.from_dotlist([f"{k}={v}" for k, v in values.items()])
    (conf / "local" / "default.yaml").write_text("# @package _global_\n" + OmegaConf.to_yaml(node))
    return conf


def test_local_config_sets_this_machines_paths(tmp_path):
    conf = _conf_with_local(tmp_path, data_root="/node/data", **{"tracking.uri": "http://127.0.0.1:5999"})
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose("config")
        cli = compose("config", overrides=["data_root=/cli"])
    assert (cfg.data_root, cfg.tracking.uri) == ("/node/data", "http://127.0.0.1:5999")
    assert cli.data_root == "/cli"  # the command line still wins
    assert local_overrides("default", [CONF, conf]) == ["data_root=/node/data", "tracking.uri=http://127.0.0.1:5999"]
    assert local_overrides("default", [tmp_path / "nowhere"]) == []
    assert auto_resume("auto", tmp_path) is None and auto_resume(None, tmp_path) is None
    assert "conf/local/" in (REPO / ".gitignore").read_text().split()


def test_requeued_job_resumes_on_another_node_with_its_paths(tmp_path, data_root):
    """A job stopped after task 1 (preempted) and run again in its run dir (as SLURM requeues it) on a
    node whose conf/local names another data root (node A's does not exist there) continues after task 1."""
    run_dir = tmp_path / "run"
    node_a, node_b = tmp_path / "data_a", tmp_path / "data_b"
    node_a.symlink_to(data_root)
    node_b.symlink_to(data_root)
    common = ["resume=auto", "method=finetune", "scenario=cl1", *TINY, f"hydra.run.dir={run_dir}",
              "tracking=none"]  # the tracking URI comes from conf/local as the data root does (test above)
    a = hyperdgm_run(tmp_path, "/nowhere", f"--config-dir={_conf_with_local(tmp_path / 'a', data_root=node_a)}",
                     *common, "trainer.stop_after=1")
    assert a.returncode == 0, a.stderr[-2000:]
    assert [p.name for p in (run_dir / "checkpoints").glob("*.pt")] == ["task_000.pt"]
    node_a.unlink()
    b = hyperdgm_run(tmp_path, "/nowhere", f"--config-dir={_conf_with_local(tmp_path / 'b', data_root=node_b)}",
                     *common)
    assert b.returncode == 0, b.stderr[-2000:]
    assert "resuming" in (run_dir / "run.log").read_text()
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == ["task_000.pt", "task_001.pt"]
    assert (run_dir / "accuracy_matrix.csv").exists()


# -- a parallel sweep into a tracking server ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` on 127.0.0.1 with a sqlite backend in tmp; its URI; torn down after."""
    port = _free_port()
    art = tmp_path / "server_artifacts"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
           "--artifacts-destination", str(art), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = open(tmp_path / "server.log", "w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job workers (8 processes)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("mlflow server did not start:\n" + (tmp_path / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        yield uri, art
    finally:
        stop_group(proc, 5)  # the server and its workers (its own session)
        log.close()


def test_joblib_sweep_lands_in_the_server(tmp_path, data_root, mlflow_server):
    from mlflow.tracking import MlflowClient

    from hyperdgm.tracking import MLflowTracker

    uri, art = mlflow_server
    sweep = tmp_path / "sweep"
    proc = hyperdgm_run(tmp_path, data_root, "--multirun", "launcher=joblib", "hydra.launcher.n_jobs=2",
                        "method=finetune", "scenario=cl1,cl3", "seed=1,2", *TINY, f"tracking.uri={uri}",
                        f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("split_mnist")
    runs = client.search_runs([exp.experiment_id])
    jobs = [r for r in runs if "sweep.parent" not in r.data.tags]
    (parent,) = [r for r in runs if "sweep.parent" in r.data.tags]
    assert len(jobs) == 4 and all(r.info.status == "FINISHED" for r in jobs)
    assert sorted(r.data.tags["sweep.job"] for r in jobs) == ["0", "1", "2", "3"]
    assert {r.data.tags["sweep"] for r in jobs} == {str(sweep)} and parent.data.tags["sweep"] == str(sweep)
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert {(r.data.params["scenario.name"], r.data.params["seed"]) for r in jobs} == \
        {("cl1", "1"), ("cl1", "2"), ("cl3", "1"), ("cl3", "2")}
    # artifacts where the server says (proxied into its --artifacts-destination)
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in jobs)
    assert len(list(art.rglob("accuracy_matrix.csv"))) == 4
    assert "summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    dirs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(dirs) == 4 and all(f"_seed{s}_pid" in d for d, s in zip(dirs, "1212"))
    table = proc.stdout[proc.stdout.index(f"sweep {sweep}"):].splitlines()
    assert table[1].split()[:4] == ["job", "benchmark", "scenario.name", "seed"]
    assert [line.split()[0] for line in table[2:6]] == ["0", "1", "2", "3"] and "FINISHED" in table[2]
    assert (sweep / "summary.csv").read_text().count("\n") == 5

    # two jobs that both find no experiment: the second creation is no error
    t1, t2 = MLflowTracker(uri), MLflowTracker(uri)
    t1._mlflow.set_tracking_uri(uri)
    t1._create_experiment("raced")
    t2._create_experiment("raced")
    assert client.get_experiment_by_name("raced") is not None


# -- SLURM ----------------------------------------------------------------------------------------------
def test_slurm_job_script(tmp_path, data_root):
    """The SLURM preset through the real submitit launcher; a stand-in ``sbatch`` keeps the job script."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = f'#!/bin/sh\ncp "$1" {tmp_path}/job.sh\necho "sbatch: not on a cluster" >&2\nexit 1\n'
    (bin_dir / "sbatch").write_text(sbatch)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    sweep = tmp_path / "sweep"
    proc = hyperdgm_run(tmp_path, data_root, "--multirun", "launcher=slurm", "hydra.launcher.partition=gpu",
                        "hydra.launcher.gpus_per_node=1", "seed=1,2,3", f"hydra.sweep.dir={sweep}",
                        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert proc.returncode != 0  # nothing was submitted
    script = (tmp_path / "job.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --cpus-per-task=4", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=240", "#SBATCH --mem=16GB", "#SBATCH --array=0-2%3", "#SBATCH --signal=USR2@120",
                 "#SBATCH --job-name=hyperdgm", f"#SBATCH --output={sweep}/.submitit/%A_%a/%A_%a_0_log.out"):
        assert line in script.splitlines(), (line, script)
    assert script.rstrip().endswith(f"{sys.executable} -u -m submitit.core._submit {sweep}/.submitit/%j")
