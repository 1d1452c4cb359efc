"""A multirun as one group: its runs' table, a parent run per experiment, a check before it starts.

Every job of ``--multirun`` tags its MLflow run ``sweep=<sweep dir>`` and ``sweep.job=<n>``
(``hyperdgm.run``). At the end of the multirun, :class:`SweepCallback` (a Hydra callback, wired in
``conf/config.yaml``) nests the sweep's runs under one parent run per experiment (the UI shows them
folded under it), writes ``<sweep dir>/summary.csv``, logs it on each parent and prints the table.
Before any job starts it refuses a parallel launcher asking for more threads than this machine has.
The table of any sweep, also one still running or cut short:

    python -m hyperdgm.sweep <sweep dir> --uri sqlite:///runs/mlflow.db
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

log = logging.getLogger(__name__)

SWEEP_TAG = "sweep"
JOB_TAG = "sweep.job"
PARENT_TAG = "sweep.parent"
#: The table's metric columns (hyperdgm.naming's names), where some run of the sweep has them.
METRICS = ("final.acc_avg", "final.acc_during", "final.forgetting", "final.a_n", "ratio.classifier_hnet",
           "ratio.generator_hnet", "ratio.shared_hnet", "size.trainable", "time.total")


def sweep_runs(client: Any, sweep: str) -> list[Any]:
    """The job runs tagged with this sweep, in every experiment, by job number."""
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"tags.`{SWEEP_TAG}` = '{sweep}'", max_results=5000)
    runs = [r for r in runs if PARENT_TAG not in r.data.tags]
    return sorted(runs, key=lambda r: int(r.data.tags.get(JOB_TAG, "0")))


def varying_params(runs: Sequence[Any], exclude: Sequence[str] = ("resume", "threads", "device")) -> list[str]:
    """The params whose values differ between the runs (what the sweep varied), in key order."""
    keys = sorted({k for r in runs for k in r.data.params} - set(exclude))
    return [k for k in keys if len({r.data.params.get(k) for r in runs}) > 1]


def summary_rows(runs: Sequence[Any]) -> list[dict[str, str]]:
    """One row per run: job, benchmark, the params the sweep varied, status and the metrics of
    :data:`METRICS` some run has."""
    params = varying_params(runs)
    cols = [m for m in METRICS if any(m in r.data.metrics for r in runs)]
    rows = []
    for r in runs:
        row = {"job": r.data.tags.get(JOB_TAG, ""), "benchmark": r.data.tags.get("benchmark", "")}
        row.update({k: r.data.params.get(k, "") for k in params})
        row["status"] = r.info.status
        for m in cols:
            v = r.data.metrics.get(m)
            row[m] = "" if v is None else f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, str]]) -> str:
    """A plain text table with a header, columns padded."""
    if not rows:
        return "(no runs)"
    keys = list(rows[0])
    width = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(width[k]) for k in keys)]
    lines += ["  ".join(r[k].ljust(width[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def to_csv(rows: Sequence[dict[str, str]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def group_under_parents(client: Any, sweep: str, runs: Sequence[Any], summary_csv: Path | None) -> dict[str, str]:
    """One parent run per experiment (``sweep <dir name>``), each job run nested under it (the
    ``mlflow.parentRunId`` tag); returns ``{experiment id: parent run id}``."""
    parents: dict[str, str] = {}
    for r in runs:
        exp = r.info.experiment_id
        if exp not in parents:
            parent = client.create_run(exp, run_name=f"sweep {Path(sweep).name}",
                                       tags={SWEEP_TAG: sweep, PARENT_TAG: "true"})
            if summary_csv is not None:
                client.log_artifact(parent.info.run_id, str(summary_csv))
            client.set_terminated(parent.info.run_id)
            parents[exp] = parent.info.run_id
        client.set_tag(r.info.run_id, "mlflow.parentRunId", parents[exp])
    return parents


def summarize(uri: str, sweep: str, out_dir: Path | None = None, nest: bool = False) -> str:
    """The sweep's table (and ``summary.csv`` in ``out_dir``, parent runs with ``nest``)."""
    from mlflow.tracking import MlflowClient

    from .tracking import _abs_sqlite, store_lock

    uri = _abs_sqlite(uri)
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        runs = sweep_runs(client, sweep)
    rows = summary_rows(runs)
    csv_path = None
    if out_dir is not None and rows:
        csv_path = Path(out_dir) / "summary.csv"
        csv_path.write_text(to_csv(rows))
    if nest and runs:
        group_under_parents(client, sweep, runs, csv_path)
    return format_table(rows)


def check_launcher(config: DictConfig) -> None:
    """Refuse, before any job starts, parallel jobs that need more threads than this machine's cores."""
    from .launch import parallel_jobs, threads_for_job

    launcher = {k: OmegaConf.select(config, f"hydra.launcher.{k}") for k in ("_target_", "n_jobs")}
    threads_for_job(config.get("threads"), parallel_jobs(launcher))


class SweepCallback(Callback):
    """Hydra callback: checks the launcher before a multirun, summarizes and groups it after."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_launcher(config)
        except ConfigError as err:
            sys.stderr.write(f"error: {err}\n")
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tracking = config.get("tracking") or {}
        if tracking.get("backend", "mlflow") != "mlflow":
            return
        sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        try:
            table = summarize(str(tracking.uri), str(sweep_dir), out_dir=sweep_dir, nest=True)
        except Exception as err:  # the jobs' results stand; only their summary failed
            log.warning("sweep summary failed (%s: %s); try python -m hyperdgm.sweep %s", type(err).__name__, err,
                        sweep_dir)
            return
        print(f"\nsweep {sweep_dir} ({tracking.uri}):\n{table}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hyperdgm.sweep", description="Print the table of a sweep's runs.")
    p.add_argument("sweep_dir", help="the multirun's sweep dir (its runs carry it as their 'sweep' tag)")
    p.add_argument("--uri", default="sqlite:///runs/mlflow.db", help="tracking URI (sqlite:/// or http://)")
    a = p.parse_args(argv)
    sweep = str(Path(a.sweep_dir).resolve())
    print(summarize(a.uri, sweep))


if __name__ == "__main__":
    main()
