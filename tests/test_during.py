"""The "during" accuracy of methods that infer the task is logged as not comparable (acc_during_optimistic).

The hypercl paper gives "during" for CL1 only: in CL2 / CL3 "task inference ... only is measurable after
training on all tasks" (appendix D). Right after task j such a method infers among the j + 1 tasks seen so far.
"""
from __future__ import annotations

import pytest
import torch

from hyperdgm import metrics
from hyperdgm.data.benchmarks import build_benchmark
from hyperdgm.experiment import run_experiment
from hyperdgm.methods import build_method
from hyperdgm.scenarios import make_scenario

from .helpers import quick_cfg

SMALL = {"net": {"arch": "mlp", "hidden": [8]}, "hnet": {"chunk_size": 500, "hidden": [5]},
         "memory": {"enc_hidden": [8], "dec_hidden": [8], "latent_dim": 4, "cond_dim": 3,
                    "hnet": {"chunk_size": 500, "hidden": [5]}}, "tir": {"hidden": [8]}}


@pytest.mark.parametrize("method,scenario,infers", [
    ("hnet", "cl1", False), ("hnet", "cl2", True), ("hnet_ent", "cl2", True), ("hnet_ent", "cl3", True),
    ("hnet_tir", "cl2", True), ("hnet_tir", "cl3", True), ("hnet_r", "cl3", False), ("finetune", "cl3", False),
    ("replay_ub", "cl2", False)])
def test_which_methods_infer_the_task(method, scenario, infers, data_root):
    bench = build_benchmark("split_mnist", data_root, n_tasks=3, train_limit=8, test_limit=8)
    m = build_method({"name": method, **SMALL})
    m.setup(bench, make_scenario(scenario, bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    assert m.infers_task() is infers


def test_summary_names_the_inferred_diagonal_apart():
    R = torch.tensor([[99.0, float("nan")], [80.0, 90.0]]).numpy()
    plain, inferred = metrics.summary(R), metrics.summary(R, task_inferred=True)
    assert plain["acc_during"] == inferred[metrics.DURING_INFERRED] == pytest.approx(94.5)
    assert "acc_during" not in inferred and metrics.DURING_INFERRED not in plain
    assert {k: v for k, v in inferred.items() if k != metrics.DURING_INFERRED} == {
        k: v for k, v in plain.items() if k != "acc_during"}


def test_inferring_run_logs_no_during_accuracy(data_root, tmp_path):
    """hnet_ent CL3: MLflow has acc_during_optimistic (per task and final), never acc_during; R[0, 0] is the
    accuracy with the one task seen (inference among one task: the given-task accuracy)."""
    from mlflow.tracking import MlflowClient

    common = ["benchmark.n_tasks=2", "trainer.iters_per_task=30", "trainer.checkpoint=false",
              "method.hnet.chunk_size=4000", "method.hnet.hidden=[10]"]
    ent = run_experiment(quick_cfg(data_root, tmp_path, "method=hnet_ent", "scenario=cl3", *common), tmp_path / "e")
    given = run_experiment(quick_cfg(data_root, tmp_path, "method=hnet", "scenario=cl1", "tracking=none", *common,
                                     "trainer.stop_after=1"), tmp_path / "g")
    assert ent.R[0, 0] == given.R[0, 0]  # the same seed and task: the first task's inference is trivial
    assert metrics.DURING_INFERRED in ent.summary and "acc_during" not in ent.summary
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("split_mnist").experiment_id])[0]
    m = run.data.metrics
    assert m["final.acc_during_optimistic"] == pytest.approx(ent.summary[metrics.DURING_INFERRED])
    assert "final.acc_during" not in m and "acc_during" not in m
    assert [h.step for h in client.get_metric_history(run.info.run_id, "acc_during_optimistic")] == [0, 1]
