"""The hypernetwork-size sweep preset and ``python -m hyperdgm.report`` on a store of a few tiny runs."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from hyperdgm import config_check as cc
from hyperdgm import report
from hyperdgm.experiment import _build, method_config, run_experiment
from hyperdgm.methods import build_method
from hyperdgm.naming import size_metrics
from hyperdgm.rundir import RunDir

from .helpers import CONF, quick_cfg

TINY = ["method=hnet", "scenario=cl1", "benchmark.n_tasks=2", "benchmark.train_limit=100", "benchmark.test_limit=50",
        "trainer.iters_per_task=5", "trainer.log_every=5", "trainer.checkpoint=false"]


def test_size_sweep_spans_compression(data_root, tmp_path):
    """sweep=hnet_size: both benchmarks, five points; the smallest compresses strongly, the largest
    is bigger than the classifier it generates, on both target nets."""
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("config", overrides=["sweep=hnet_size"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params.experiment == "splitmnist_hnet,pmnist_hnet" and params.hnet_size == "xs,s,m,l,xl"
    for exp in ("splitmnist_hnet", "pmnist_hnet"):
        ratios = []
        for size in ("xs", "xl"):
            with initialize_config_dir(config_dir=CONF, version_base=None):
                c = compose("config", overrides=[f"experiment={exp}", f"hnet_size={size}", f"data_root={data_root}",
                                                 "tracking=none", "benchmark.train_limit=20", "benchmark.test_limit=20"])
            method = _build(cc.validate(c), RunDir(tmp_path), build_method(method_config(c)), torch.device("cpu")).method
            ratios.append(size_metrics(method)["ratio.classifier_hnet"])
        assert ratios[0] < 0.1 and ratios[1] > 1, (exp, ratios)


@pytest.fixture(scope="module")
def store(data_root, tmp_path_factory):
    """Three hnet sizes, one of them twice (seeds 1, 2), two runs in one sweep; a finetune run (no hnet)."""
    tmp = tmp_path_factory.mktemp("report")
    runs = [("xs", 1, "S"), ("xs", 2, "S"), ("s", 1, None), ("xl", 1, None)]
    for i, (size, seed, sweep) in enumerate(runs):
        cfg = quick_cfg(data_root, tmp, *TINY, f"hnet_size={size}", f"seed={seed}")
        run_experiment(cfg, tmp / f"run{i}", tags={"sweep": sweep} if sweep else None)
    run_experiment(quick_cfg(data_root, tmp, *TINY, "method=finetune"), tmp / "ft")
    return tmp


def test_report_plots_accuracy_against_ratio(store, capsys):
    uri = f"sqlite:///{store}/mlflow.db"
    report.main(["--uri", uri, "--out", str(store / "out")])
    rows = list(csv.DictReader(open(store / "out" / "accuracy_vs_compression.csv")))
    assert [r["hidden"] for r in rows] == ["[10, 10]", "[10, 10]", "[50, 50]"]  # xs, s, xl by ratio
    assert [r["chunk_size"] for r in rows] == ["2000", "8000", "78000"]
    assert [int(r["runs"]) for r in rows] == [2, 1, 1]  # the two seeds of xs averaged; finetune has no ratio
    ratio = [float(r["ratio.classifier_hnet"]) for r in rows]
    assert ratio == sorted(ratio) and ratio[0] < 1 < ratio[-1]
    for r in rows:
        assert float(r["ratio.classifier_hnet"]) == pytest.approx(float(r["size.classifier_hnet"]) /
                                                                 float(r["size.classifier"]), abs=1e-4)
        assert 0 <= float(r["final.acc_avg.mean"]) <= 100
    assert float(rows[0]["final.acc_avg.std"]) >= 0 and float(rows[1]["final.acc_avg.std"]) == 0
    png = store / "out" / "accuracy_vs_compression.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["benchmark", "method", "scenario"] and len(out) == 4


def test_report_of_one_sweep(store):
    rows = report.report(f"sqlite:///{store}/mlflow.db", store / "sweep_out", sweep="S")
    assert [(r["hidden"], r["runs"]) for r in rows] == [("[10, 10]", 2)]


def test_report_refuses_nothing_to_show(store, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        report.main(["--uri", f"sqlite:///{store}/mlflow.db", "--ratio", "generator_hnet", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: no finished runs with metrics ratio.generator_hnet and final.acc_avg in sqlite:///{store}/mlflow.db"
    with pytest.raises(SystemExit):
        report.main(["--uri", f"sqlite:///{tmp_path}/none.db"])
    assert "no tracking store at" in capsys.readouterr().err and not (tmp_path / "none.db").exists()
