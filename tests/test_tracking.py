"""What a user sees in MLflow: searchable metric names, sizes per component, rounded params.

One tiny run (2 tasks, a few iterations) into a tmp sqlite store, queried with MLflow's client.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperdgm import config_check as cc
from hyperdgm.experiment import _build, method_config, run_experiment
from hyperdgm.methods import build_method
from hyperdgm.naming import metric_key, metric_value, param_value, run_name, size_metrics
from hyperdgm.rundir import RunDir

from .helpers import quick_cfg

TINY = ["benchmark.n_tasks=2", "benchmark.train_limit=200", "benchmark.test_limit=100", "trainer.iters_per_task=5",
        "trainer.log_every=5"]


@pytest.fixture(scope="module")
def tracked(data_root, tmp_path_factory):
    """An hnet_r run (replay grids, a generator hypernetwork) and the client of its store."""
    from mlflow.tracking import MlflowClient

    tmp = tmp_path_factory.mktemp("store")
    over = ["method=hnet_r", "method.lr=0.0049999999999", *TINY]
    cfg = quick_cfg(data_root, tmp, *over, "tracking.artifact_root=null", "tracking.maps=true")  # the defaults
    # the command line as Hydra hands it over (the run name shows it); quick_cfg's settings aside
    result = run_experiment(cfg, tmp / "run", overrides=[*over[:2], "benchmark.n_tasks=2", f"tracking.uri={tmp}"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    return client, client.get_run(result.run_id), tmp


def test_metric_names_search_as_typed(tracked):
    client, run, _ = tracked
    assert not [k for k in run.data.metrics if "/" in k]
    for name in ("final.acc_avg", "acc.task_0", "train.loss", "size.generator_hnet", "ratio.generator_hnet"):
        hits = client.search_runs([run.info.experiment_id], filter_string=f"metrics.{name} >= 0")
        assert [r.info.run_id for r in hits] == [run.info.run_id], name
    assert [h.step for h in client.get_metric_history(run.info.run_id, "acc.task_0")] == [0, 1]


def test_metric_key_refuses_search_prefixes():
    assert metric_key("final/acc_avg") == "final.acc_avg"
    assert metric_key("train/memory/kl") == "train.memory.kl"
    with pytest.raises(ValueError, match="params"):
        metric_key("params/compression_ratio")


def test_params_rounded(tracked):
    _, run, _ = tracked
    assert run.data.params["method.lr"] == "0.005"
    assert run.data.params["trainer.iters_per_task"] == "5"
    acc = run.data.metrics["final.acc_avg"]
    assert acc == float(f"{acc:.7g}") and metric_value(np.float32(99.12)) == 99.12
    assert param_value(1e8) == "1e+08" and param_value(100000.0) == "100000" and param_value([0.1 + 0.2, 3]) == "[0.3, 3]"


def _method(data_root: Path, tmp_path: Path, *over: str):
    """A method set up on its (tiny) benchmark, as the trainer holds it before training."""
    cfg = quick_cfg(data_root, tmp_path, "tracking=none", "trainer.checkpoint=false", *TINY[:3], *over)
    return _build(cc.validate(cfg), RunDir(tmp_path), build_method(method_config(cfg)), torch.device("cpu")).method


def test_sizes_per_component(data_root, tmp_path, tracked):
    hnet = size_metrics(_method(data_root, tmp_path / "a", "method=hnet", "scenario=cl1"))
    g = _method(data_root, tmp_path / "b", "method=hnet", "scenario=cl1").gen.param_counts()
    assert hnet["size.classifier"] == g["target"] and hnet["size.classifier_hnet"] == g["hnet"]
    assert hnet["ratio.classifier_hnet"] == round(g["hnet"] / g["target"], 4)
    assert not [k for k in hnet if "generator" in k or "masks" in k]

    m = tracked[1].data.metrics  # hnet_r: a plain classifier, a hypernetwork-protected generator
    assert "size.classifier_hnet" not in m and m["size.classifier"] > 0
    assert m["ratio.generator_hnet"] == round(m["size.generator_hnet"] / m["size.generator"], 4)

    dgm = size_metrics(_method(data_root, tmp_path / "c", "benchmark=cil_mnist", "scenario=cil", "method=dgm",
                               "benchmark.pad=32", "method.memory.ngf=4", "method.memory.acgan.ndf=8"))
    assert {"size.masks", "ratio.masks", "size.generator", "size.discriminator"} <= set(dgm)
    assert not [k for k in dgm if "hnet" in k]
    assert all(re.fullmatch(r"(size|ratio)\.[a-z_]+", k) for k in [*hnet, *m, *dgm] if k[:4] in ("size", "rati"))


def test_run_name_says_what_differs(tracked):
    assert tracked[1].info.run_name == "hnet_r-split_mnist-cl3 lr=0.005 n_tasks=2"
    c = {"method": {"name": "hnet"}, "benchmark": {"name": "split_mnist"}, "scenario": {"name": "cl1"}}
    assert run_name(c, None) == "hnet-split_mnist-cl1"
    assert run_name(c, ["experiment=splitmnist_hnet", "scenario=cl2", "seed=3", "data_root=/d", "device=cpu",
                        "+method.ewc.lambda=100", "hydra.run.dir=x"]) == "splitmnist_hnet scenario=cl2 seed=3 lambda=100"
    # a leaf two keys share keeps enough of its path to tell them apart
    assert run_name(c, ["method=hnet", "method.net.hidden=[10]", "benchmark.net.hidden=[20]", "~trainer.stop_after"]) \
        == "hnet-split_mnist-cl1 method.net.hidden=[10] benchmark.net.hidden=[20] ~stop_after"
    assert len(run_name(c, [f"seed={i}" for i in range(100)])) == 100


def test_artifacts_beside_the_store(tracked, tmp_path):
    _, run, tmp = tracked
    assert run.info.artifact_uri.startswith((tmp / "mlartifacts").as_uri() + "/")
    assert (tmp / "mlartifacts").is_dir() and not (Path.cwd() / "mlartifacts").exists()
    from hyperdgm.tracking import artifact_root_for

    assert artifact_root_for(f"sqlite:///{tmp_path}/a/m.db", "art") == tmp_path / "a" / "art"
    assert artifact_root_for(f"sqlite:///{tmp_path}/a/m.db", "/x/y") == Path("/x/y")
    assert artifact_root_for("http://127.0.0.1:5000") is None


def test_benchmark_is_the_dataset_input(tracked, data_root):
    _, run, _ = tracked
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == "split_mnist" and len(inp.dataset.digest) == 16
    assert str(Path(data_root).resolve()) in inp.dataset.source
    tags = {t.key: t.value for t in inp.tags}
    assert tags["mlflow.data.context"] == "training" and tags["n_tasks"] == "2" and tags["n_train"] == "400"


def _image_steps(client, run_id: str) -> dict[str, list[int]]:
    """``{key: steps}`` of the stepped images (MLflow names them ``images/<key>+step+<n>+...png``)."""
    out: dict[str, list[int]] = {}
    for a in client.list_artifacts(run_id, "images"):
        m = re.fullmatch(r"images/(.+)\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png", a.path)
        if m:
            out.setdefault(m.group(1), []).append(int(m.group(2)))
    return {k: sorted(v) for k, v in out.items()}


def test_images_stepped_by_task(tracked):
    client, run, _ = tracked
    # the memory learns only task 0 of two (the last task needs no replay): one task embedding, no embedding map
    assert _image_steps(client, run.info.run_id) == {"accuracy_matrix": [0, 1], "replay": [0, 1], "replay_map": [0, 1]}
    assert run.data.tags["mlflow.loggedImages"] == "True"
    assert {"accuracy_matrix.csv", "accuracy_matrix.png", "forgetting_curves.png"} <= \
        {a.path for a in client.list_artifacts(run.info.run_id)}


def test_ui_opens_the_runs_table(tracked, caplog):
    from hyperdgm import ui

    client, run, tmp = tracked
    uri = f"sqlite:///{tmp}/mlflow.db"
    urls = ui.runs_urls(uri, "http://127.0.0.1:5000")
    assert urls == {"split_mnist": f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs"
                                   "?workflowType=machine_learning&viewStateShareKey=hyperdgm"}
    view = json.loads(client.get_experiment(run.info.experiment_id).tags["mlflow.sharedViewState.hyperdgm"])
    assert {"metrics.`final.acc_avg`", "metrics.`ratio.generator_hnet`", "params.`method.name`"} <= set(view["selectedColumns"])
    assert "metrics.`ratio.classifier_hnet`" not in view["selectedColumns"]  # no run has it
    assert (view["orderByKey"], view["orderByAsc"]) == ("metrics.`final.acc_avg`", False)
    cmd = ui.ui_command(uri, "127.0.0.1", 5001)
    assert cmd[cmd.index("--backend-store-uri") + 1] == uri
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(tmp / "mlartifacts")
    with caplog.at_level("INFO", logger="hyperdgm.ui"):
        ui.main(["--uri", uri, "--print-only"])
    assert urls["split_mnist"] in caplog.text
    with pytest.raises(SystemExit):
        ui.main(["--uri", "http://127.0.0.1:5000", "--print-only"])


def test_installed_ui_reads_the_workflow_type_from_the_address():
    """The address ``make ui`` prints works only while the UI bundle reads ``workflowType`` from it."""
    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    main = next(js.glob("main.*.js")).read_text(errors="replace")
    assert 'e.MACHINE_LEARNING="machine_learning"' in main and 'get("workflowType")' in main
    assert '"viewStateShareKey"' in main and '"mlflow.sharedViewState."' in main


def test_an_interrupt_during_a_store_write_waits_for_the_write_to_end():
    """SIGINT / SIGTERM inside a write to the store (a cut-short sqlite write leaves it locked) is raised after it."""
    import signal

    from hyperdgm.errors import Interrupted
    from hyperdgm.tracking import defer_interrupt, store_write

    written = []
    with pytest.raises(Interrupted, match="SIGTERM"):
        with store_write():
            with store_write():  # nested writes: raised once the outermost ends
                assert defer_interrupt(signal.SIGTERM)
                written.append("inner")
            written.append("outer")
    assert written == ["inner", "outer"]
    assert not defer_interrupt(signal.SIGTERM)  # outside a write the handler raises at once
