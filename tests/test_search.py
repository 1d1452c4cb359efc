"""search=optuna for real: trials scored on validation accuracy, the best one written and in the store.

Needs the extra ``search`` (hydra-optuna-sweeper): skipped without it.
"""
from __future__ import annotations

import pytest
import yaml

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

from .test_sweep import TINY, hyperdgm_run  # noqa: E402


def test_optuna_search_on_validation_accuracy(tmp_path, data_root):
    from mlflow.tracking import MlflowClient

    sweep = tmp_path / "sweep"
    proc = hyperdgm_run(tmp_path, data_root, "--multirun", "search=optuna", "hydra.sweeper.n_trials=3",
                        "method=finetune", "scenario=cl1", *TINY, "benchmark.train_limit=300", "benchmark.val_size=100",
                        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = [r for r in client.search_runs(["1"]) if "sweep.parent" not in r.data.tags]
    assert len(runs) == 3 and {r.data.tags["eval_split"] for r in runs} == {"val"}  # the test split never read
    assert len({r.data.params["method.lr"] for r in runs}) == 3
    assert {r.data.params["benchmark.val_size"] for r in runs} == {"100"}
    top = max(r.data.metrics["final.acc_avg"] for r in runs)
    assert best["best_value"] == pytest.approx(top)
    lrs = {float(r.data.params["method.lr"]) for r in runs if r.data.metrics["final.acc_avg"] == top}
    assert any(abs(best["best_params"]["method.lr"] - lr) < 1e-6 * lr for lr in lrs)
