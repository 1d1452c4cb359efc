"""The trainer end to end on a small real MNIST slice: accuracy matrix, MLflow run, artifacts, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hyperdgm.experiment import run_experiment
from hyperdgm.methods import METHODS, register
from hyperdgm.methods.baselines import Finetune
from hyperdgm.scenarios import ScenarioError

from .helpers import quick_cfg


def _client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def test_finetune_forgets_joint_does_not_and_mlflow_has_it(data_root, tmp_path):
    ft = run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", "scenario=cl3"), tmp_path / "ft")
    jt = run_experiment(quick_cfg(data_root, tmp_path, "method=joint", "scenario=cl3"), tmp_path / "jt")
    # R is lower-triangular with NaN above the diagonal
    assert np.isnan(ft.R[0, 1]) and not np.isnan(ft.R[2, 0])
    # catastrophic forgetting in CL3: after task 3 the old tasks are (almost) never predicted
    assert ft.R[2, 0] < 20 and ft.R[2, 1] < 20 and ft.R[2, 2] > 90
    assert ft.summary["forgetting"] > 60
    assert jt.summary["acc_avg"] > 85 and jt.summary["acc_avg"] > ft.summary["acc_avg"] + 40

    client = _client(tmp_path)
    exp = client.get_experiment_by_name("split_mnist")
    runs = client.search_runs([exp.experiment_id])
    assert {r.data.tags["method"] for r in runs} == {"finetune", "joint"}
    run = next(r for r in runs if r.data.tags["method"] == "finetune")
    assert run.info.status == "FINISHED"
    assert run.data.params["method.name"] == "finetune"
    assert run.data.params["trainer.iters_per_task"] == "60"
    m = run.data.metrics
    assert m["final.acc_avg"] == pytest.approx(ft.summary["acc_avg"])
    assert m["size.trainable"] == m["size.classifier"] == 784 * 64 + 64 + 64 * 6 + 6
    hist = client.get_metric_history(run.info.run_id, "acc_avg")
    assert [h.step for h in hist] == [0, 1, 2]
    assert len(client.get_metric_history(run.info.run_id, "train.loss")) == 9  # 3 tasks x 60 it / 20
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "accuracy_matrix.csv", "accuracy_matrix.png"} <= arts
    csv = (tmp_path / "ft" / "accuracy_matrix.csv").read_text().splitlines()
    assert csv[0] == "after_task,task_0,task_1,task_2" and len(csv) == 4
    assert sorted(p.name for p in (tmp_path / "ft" / "checkpoints").glob("*.pt")) == [
        "task_000.pt", "task_001.pt", "task_002.pt"]
    ck = torch.load(tmp_path / "ft" / "checkpoints" / "task_002.pt", weights_only=True)
    assert ck["task"] == 2 and torch.allclose(ck["R"].double(), torch.from_numpy(ft.R), equal_nan=True)


def test_cl1_multihead_keeps_more_than_cl3(data_root, tmp_path):
    cl1 = run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", "scenario=cl1", "tracking=none"), tmp_path / "a")
    cl3 = run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", "scenario=cl3", "tracking=none"), tmp_path / "b")
    assert cl1.summary["acc_avg"] > cl3.summary["acc_avg"] + 20


def test_crashed_run_is_marked_failed(data_root, tmp_path):
    class Exploding(Finetune):
        name = "exploding"

        def end_task(self, task):
            if task.id == 1:
                raise RuntimeError("boom at task 2")

    register(Exploding)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", "method.name=exploding"), tmp_path / "x")
    finally:
        METHODS.pop("exploding")
    run = _client(tmp_path).search_runs([_client(tmp_path).get_experiment_by_name("split_mnist").experiment_id])[0]
    assert run.info.status == "FAILED"
    assert "boom at task 2" in run.data.tags["error"]
    # the first task finished and was checkpointed before the crash
    assert (tmp_path / "x" / "checkpoints" / "task_000.pt").exists()


def test_unsupported_scenario_refused_before_training(data_root, tmp_path):
    class OnlyCL1(Finetune):
        name = "only_cl1"
        scenarios = frozenset({"cl1"})

    register(OnlyCL1)
    try:
        with pytest.raises(ScenarioError, match="only_cl1.*cl3"):
            run_experiment(quick_cfg(data_root, tmp_path, "method.name=only_cl1", "scenario=cl3"), tmp_path / "y")
    finally:
        METHODS.pop("only_cl1")
    assert not (tmp_path / "mlflow.db").exists() or not _client(tmp_path).search_runs(
        [e.experiment_id for e in _client(tmp_path).search_experiments()])



def test_eval_split_val_scores_the_validation_split(data_root, tmp_path):
    """trainer.eval_split=val fills R from each task's validation split, carved from its training data."""
    from hyperdgm import config_check
    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.errors import ConfigError
    from hyperdgm.methods import build_method
    from hyperdgm.scenarios import make_scenario
    from hyperdgm.trainer import Trainer

    bench = build_benchmark("split_mnist", data_root, n_tasks=2, val_size=100, train_limit=300, test_limit=50)
    m = build_method({"name": "finetune", "net": {"arch": "mlp", "hidden": [32]}})
    tr = Trainer(m, bench, make_scenario("cl1", bench.n_classes_per_task), seed=0,
                 cfg={"iters_per_task": 40, "batch_size": 32, "progress": False, "checkpoint": False,
                      "eval_split": "val"})
    res = tr.fit()
    assert tr.test_sizes == [100, 100]
    with torch.no_grad():
        m.eval()
        x, y = bench.tasks[0].batch("val")
        acc = 100.0 * (m.predict(x, 0).argmax(1) == y).float().mean().item()
    assert res.R[1, 0] == pytest.approx(acc) and res.R[1, 0] > 80  # chance: 50
    with pytest.raises(ConfigError, match="val_size"):
        Trainer(m, build_benchmark("split_mnist", data_root, n_tasks=2, train_limit=10, test_limit=10),
                make_scenario("cl1", [2, 2]), cfg={"eval_split": "val", "progress": False})
    with pytest.raises(ConfigError, match="val_size"):
        config_check.validate(quick_cfg(data_root, tmp_path, "trainer.eval_split=val"))
    with pytest.raises(ConfigError, match="eval_split"):
        config_check.validate(quick_cfg(data_root, tmp_path, "trainer.eval_split=train"))
    config_check.validate(quick_cfg(data_root, tmp_path, "trainer.eval_split=val", "benchmark.val_size=50"))


def test_training_steps_of_tasks_of_other_lengths_never_overlap(data_root, tmp_path):
    """train/* steps continue from the iterations of all earlier tasks (split MNIST's tasks differ in size)."""
    over = ["method=finetune", "scenario=cl3", "benchmark.train_limit=null", "benchmark.n_tasks=2",
            "trainer.epochs=0.05", "trainer.batch_size=32", "trainer.log_every=1"]
    r = run_experiment(quick_cfg(data_root, tmp_path, *over), tmp_path / "ft")
    hist = _client(tmp_path).get_metric_history(r.run_id, "train.loss")
    from hyperdgm.data.benchmarks import build_benchmark

    sizes = [len(t.train) for t in build_benchmark("split_mnist", data_root, n_tasks=2).tasks]
    iters = [int(np.ceil(0.05 * n / 32)) for n in sizes]
    assert iters[0] != iters[1]
    assert sorted(h.step for h in hist) == list(range(1, sum(iters) + 1))


def test_a_class_incremental_run_logs_its_a_n(tmp_path, caplog):
    """A cil run's task and final lines name A_n (the pooled accuracy, weighted by test sizes), as logged to the
    tracker; other scenarios' lines do not."""
    from hyperdgm.metrics import a_n

    over = ("benchmark=cil_synthetic", "benchmark.n_tasks=3", "method=replay_ub", "scenario=cil", "tracking=none",
            "trainer.iters_per_task=30", "trainer.batch_size=16", "benchmark.net.hidden=[16]",
            "trainer.checkpoint=false")
    with caplog.at_level("INFO", logger="hyperdgm"):
        r = run_experiment(quick_cfg(tmp_path, tmp_path, *over), tmp_path / "cil")
    final = next(m for m in caplog.messages if "final:" in m)
    assert r.summary["a_n"] == pytest.approx(a_n(r.R, [100, 100, 100]))
    assert f", A_n {r.summary['a_n']:.2f}," in final
    assert sum("A_n" in m for m in caplog.messages if "done in" in m) == 3
    caplog.clear()
    with caplog.at_level("INFO", logger="hyperdgm"):
        run_experiment(quick_cfg(tmp_path, tmp_path, *over[:3], "scenario=cl3", *over[4:]), tmp_path / "cl3")
    assert not any("A_n" in m for m in caplog.messages)
