"""The "during" accuracy of methods that infer the task is logged as not comparable (acc_during_optimistic).

The hypercl paper gives "during" for CL1 only: in CL2 / CL3 "task inference ... only is measurable after
training on all tasks" (appendix D). Right after task j such a method infers among the j + 1 tasks seen so far.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hyperdgm import metrics
from hyperdgm.data.benchmarks import Benchmark, Task, TaskData, build_benchmark
from hyperdgm.experiment import run_experiment
from hyperdgm.methods import build_method
from hyperdgm.methods.base import Method
from hyperdgm.scenarios import make_scenario
from hyperdgm.trainer import Trainer

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
    # CL3: a sample whose task is inferred wrong is classified wrong, so no task scores above its inference
    assert (ent.R[1] <= ent.TI[1] + 1e-9).all() and ent.TI[0, 0] == 100.0, (ent.R, ent.TI)
    assert ent.summary[metrics.TASK_INFERENCE] == pytest.approx(np.mean(ent.TI[1]))
    assert np.isnan(given.TI).all() and metrics.TASK_INFERENCE not in given.summary
    assert metrics.DURING_INFERRED in ent.summary and "acc_during" not in ent.summary
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("split_mnist").experiment_id])[0]
    m = run.data.metrics
    assert m["final.acc_during_optimistic"] == pytest.approx(ent.summary[metrics.DURING_INFERRED])
    assert "final.acc_during" not in m and "acc_during" not in m
    assert m["final.acc_task_inference"] == pytest.approx(ent.summary[metrics.TASK_INFERENCE])
    assert m["acc_task_inference.task_1"] == pytest.approx(ent.TI[1, 1])
    assert [h.step for h in client.get_metric_history(run.info.run_id, "acc_during_optimistic")] == [0, 1]


def test_summary_averages_task_inference_over_the_tasks_seen():
    R = np.array([[99.0, np.nan], [80.0, 90.0]])
    TI = np.array([[100.0, np.nan], [70.0, 95.0]])
    s = metrics.summary(R, [100, 300], TI=TI)
    assert s[metrics.TASK_INFERENCE] == pytest.approx((70 + 95) / 2)  # per task, as acc_avg (and hypercl)
    assert metrics.summary(R, TI=TI, after=0)[metrics.TASK_INFERENCE] == 100.0
    assert metrics.TASK_INFERENCE not in metrics.summary(R, [100, 300], TI=np.full((2, 2), np.nan))


class _Guesser(Method):
    """Infers task 0 for test pixels below 3 and task 1 above; right about the class iff right about the task."""

    name = "guesser"
    scenarios = frozenset({"cl2"})

    def __init__(self) -> None:
        super().__init__({})
        self.w = nn.Parameter(torch.zeros(1))

    def infers_task(self) -> bool:
        return True

    def step(self, x, y, task_id):
        return {"loss": torch.zeros(())}

    @torch.no_grad()
    def predict(self, x, task_id=None):
        return self.predict_with_task(x, task_id)[0]

    @torch.no_grad()
    def predict_with_task(self, x, task_id=None):
        pix = (x[:, 0, 0, 0] * 255).round().long()
        inferred = (pix >= 3).long()
        right = inferred == pix // 10  # the true task is the pixel's tens digit (test pixels 0-9, 10-19)
        return torch.stack([right.float(), (~right).float()], 1), inferred  # every label is 0

    def param_counts(self):
        return {"trainable": 1, "target": 1, "compression_ratio": 1.0}


def test_trainer_scores_each_tasks_inference_from_the_predicting_pass():
    def task(t):
        x = (10 * t + torch.arange(10)).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()
        data = TaskData(x, torch.zeros(10, dtype=torch.long), torch.arange(10))
        return Task(id=t, name=f"t{t}", classes=[2 * t, 2 * t + 1], train=data, val=None, test=data,
                    input_shape=(1, 2, 2), permutation=None, dataset="mnist", normalize="unit", pad=None,
                    augment=False)

    bench = Benchmark(name="scripted", tasks=[task(0), task(1)], n_classes_per_task=[2, 2], seed=0)
    res = Trainer(_Guesser(), bench, make_scenario("cl2", [2, 2]), seed=0,
                  cfg={"iters_per_task": 1, "batch_size": 5, "eval_batch_size": 4, "progress": False,
                       "checkpoint": False}).fit()
    assert res.TI[0, 0] == 30.0 and res.TI[1, 0] == 30.0 and res.TI[1, 1] == 100.0  # pixels 0-2 of task 0
    assert res.R[1, 0] == 30.0 and res.summary[metrics.TASK_INFERENCE] == pytest.approx(65.0)
