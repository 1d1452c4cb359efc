"""``make ui``: the MLflow UI over a sqlite store, entered at each experiment's runs table.

MLflow 3 opens an experiment in its GenAI view (traces, sessions); the experiment tag
``mlflow.experimentKind`` no longer decides that. The UI reads the view from the page address
(``?workflowType=machine_learning``, checked in the installed UI bundle, mlflow 3.17), so this
prints one such address per experiment and then starts ``mlflow ui`` with an explicit
``sqlite:///`` URI, its artifacts beside the store. The address also names a shared view (the
UI's own "share" mechanism: an experiment tag ``mlflow.sharedViewState.<key>`` holding the view as
JSON) that shows accuracy, forgetting, sizes and ratios as columns, sorted by final accuracy;
without it every metric and param hides behind "Columns".

    python -m hyperdgm.ui [--uri sqlite:///runs/mlflow.db] [--host 127.0.0.1] [--port 5000] [--print-only]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence

from .tracking import _abs_sqlite, artifact_root_for, store_lock

log = logging.getLogger("hyperdgm.ui")

#: The query that opens an experiment on its runs table (the model-training workflow).
RUNS_VIEW = "workflowType=machine_learning"
#: The shared view's key, and the experiment tag the UI reads it from.
VIEW_KEY = "hyperdgm"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
#: The runs table's columns, in order, where some run of the experiment has them (hyperdgm.naming's names).
PARAM_COLUMNS = ("method.name", "scenario.name", "seed")
METRIC_COLUMNS = ("final.acc_avg", "final.forgetting", "size.trainable", "ratio.classifier_hnet",
                  "ratio.generator_hnet", "ratio.shared_hnet", "ratio.masks", "time.total")
SORT_BY = "final.acc_avg"


def runs_view(metric_keys: set[str]) -> dict[str, object]:
    """The UI state of the runs table (column keys as the UI writes them: ``metrics.`final.acc_avg```)."""
    cols = ["attributes.`Dataset`"]
    cols += [f"params.`{k}`" for k in PARAM_COLUMNS]
    cols += [f"metrics.`{k}`" for k in METRIC_COLUMNS if k in metric_keys]
    view: dict[str, object] = {"selectedColumns": cols}
    if SORT_BY in metric_keys:
        view.update(orderByKey=f"metrics.`{SORT_BY}`", orderByAsc=False)
    return view


def runs_urls(uri: str, base: str) -> dict[str, str]:
    """``{experiment name: runs-table address}`` for every experiment with runs in the store; sets
    each one's shared view (:func:`runs_view`)."""
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exps = client.search_experiments()
    out = {}
    for e in sorted(exps, key=lambda e: e.name):
        runs = client.search_runs([e.experiment_id], max_results=1000)
        if not runs:
            continue  # e.g. MLflow's own Default experiment
        keys = {k for r in runs for k in r.data.metrics}
        client.set_experiment_tag(e.experiment_id, VIEW_TAG, json.dumps(runs_view(keys)))  # refreshed each time
        out[e.name] = f"{base}/#/experiments/{e.experiment_id}/runs?{RUNS_VIEW}&viewStateShareKey={VIEW_KEY}"
    return out


def ui_command(uri: str, host: str, port: int) -> list[str]:
    """``mlflow ui`` on ``uri``; uploads through the server land beside the store too."""
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    root = artifact_root_for(uri)
    if root is not None:
        cmd += ["--artifacts-destination", str(root)]
    return cmd


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hyperdgm.ui", description=__doc__.splitlines()[0])
    p.add_argument("--uri", default="sqlite:///runs/mlflow.db", help="a sqlite:/// tracking URI (relative: to the cwd)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--print-only", action="store_true", help="print the addresses and the command, start nothing")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not a.uri.startswith("sqlite:///"):
        p.error(f"--uri must be sqlite:///<file> (got {a.uri}); a tracking server has its own UI")
    uri = _abs_sqlite(a.uri)
    base = f"http://{a.host}:{a.port}"
    urls = runs_urls(uri, base)
    for name, url in urls.items():
        log.info("%-20s %s", name, url)
    if not urls:
        log.info("no runs in %s yet: %s/#/experiments?%s", uri, base, RUNS_VIEW)
    cmd = ui_command(uri, a.host, a.port)
    log.info("%s", " ".join(cmd))
    if not a.print_only:
        os.execv(cmd[0], cmd)  # the server takes this process over: Ctrl-C stops it


if __name__ == "__main__":
    main()
