"""launcher=ray for real: a local Ray head on 127.0.0.1 and a 4-job sweep into an ``mlflow server``.

Needs the extra ``ray`` (``pip install -e .[ray]``; never in ``dev``): skipped without it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")

from .helpers import stop_group  # noqa: E402
from .test_sweep import TINY, _free_port, hyperdgm_run, mlflow_server  # noqa: E402,F401  (a fixture)


@pytest.fixture
def ray_head(tmp_path):
    """``ray start --head --block`` on 127.0.0.1 in its own session; its address; stopped after."""
    port = _free_port()
    # Ray binds a Linux node to its outward address unless told this is no cluster (then: loopback)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    log = open(tmp_path / "ray.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while "--block" not in (tmp_path / "ray.log").read_text() or "started" not in (tmp_path / "ray.log").read_text():
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("ray head did not start:\n" + (tmp_path / "ray.log").read_text()[-2000:])
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(proc, 10)  # the head stops its processes (its own session)
        log.close()


def test_ray_sweep_lands_in_the_server(tmp_path, data_root, ray_head, mlflow_server):
    from mlflow.tracking import MlflowClient

    uri, _ = mlflow_server
    sweep = tmp_path / "sweep"
    # the jobs run in Ray's workers (cwd: the head's): an absolute data root, as conf/local gives one
    proc = hyperdgm_run(tmp_path, data_root, "--multirun", "launcher=ray", "method=finetune", "scenario=cl1,cl3",
                        "seed=1,2", *TINY, f"data_root={data_root}", f"tracking.uri={uri}", f"hydra.sweep.dir={sweep}",
                        env={"RAY_ADDRESS": ray_head, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("split_mnist").experiment_id])
    jobs = [r for r in runs if "sweep.parent" not in r.data.tags]
    assert len(jobs) == 4 and all(r.info.status == "FINISHED" for r in jobs)
    assert sorted(r.data.tags["sweep.job"] for r in jobs) == ["0", "1", "2", "3"]
    assert len({r.data.tags["mlflow.parentRunId"] for r in jobs}) == 1
    assert len([p for p in sweep.iterdir() if p.is_dir()]) == 4
