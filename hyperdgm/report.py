"""Accuracy against compression ratio, from the tracking store: a plot and a table.

Every finished run with ``ratio.<component>`` (default ``classifier_hnet``: hypernetwork / generated
classifier) and the accuracy metric is one point; runs differing only in the seed are averaged (mean
and standard deviation over seeds). One series per benchmark, method and scenario. The sweep preset
that fills a store for it: ``--multirun sweep=hnet_size``.

    python -m hyperdgm.report [--uri sqlite:///runs/mlflow.db] [--sweep <sweep dir>] [--out <dir>]
    python -m hyperdgm.report reproduction [--uri ...] [--ledger ...] [--seeds 3] [--out docs/RESULTS.md]

The second form records a store's finished runs in the committed ledger
(``benchmarks/reproduction/runs.jsonl``) and writes the reproduction table from it
(:mod:`.reproduction`): every paper number against the mean +- std over seeds of its preset's runs.

writes ``accuracy_vs_compression.png`` and ``accuracy_vs_compression.csv`` to ``--out`` (default: the
sweep dir, else ``runs/report``) and prints the table.
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .sweep import PARENT_TAG, SWEEP_TAG, format_table

log = logging.getLogger("hyperdgm.report")

#: The hypernetwork's size params shown per row where the runs have them (conf/hnet_size/ sets them).
SIZE_PARAMS = ("method.hnet.hidden", "method.hnet.chunk_size", "method.hnet.chunk_emb_size", "method.hnet.task_emb_size")
SERIES = ("benchmark", "method", "scenario")
NAME = "accuracy_vs_compression"


class ReportError(ValueError):
    """Nothing to report, or a store that is not there."""


def find_runs(client: Any, ratio: str, metric: str, sweep: str | None = None) -> list[Any]:
    """Finished job runs (no sweep parents) with both metrics, in every experiment."""
    exps = [e.experiment_id for e in client.search_experiments()]
    where = f"metrics.`ratio.{ratio}` >= 0 and metrics.`{metric}` >= 0 and attributes.status = 'FINISHED'"
    if sweep:
        where += f" and tags.`{SWEEP_TAG}` = '{sweep}'"
    runs = client.search_runs(exps, filter_string=where, max_results=5000) if exps else []
    return [r for r in runs if PARENT_TAG not in r.data.tags]


def table_rows(runs: Sequence[Any], ratio: str, metric: str) -> list[dict[str, Any]]:
    """One row per configuration (runs equal but for the seed averaged), by series then ratio."""
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for r in runs:
        t, p, m = r.data.tags, r.data.params, r.data.metrics
        key = (t.get("benchmark", ""), t.get("method", ""), t.get("scenario", ""), m.get(f"size.{ratio}"),
               *(p.get(k, "") for k in SIZE_PARAMS))
        groups[key].append(r)
    rows = []
    for key, rs in groups.items():
        accs = np.array([r.data.metrics[metric] for r in rs], dtype=float)
        m = rs[0].data.metrics
        row = dict(zip(SERIES, key[:3]))
        row.update({k.rsplit(".", 1)[-1]: v for k, v in zip(SIZE_PARAMS, key[4:])})
        row.update({f"size.{ratio}": m.get(f"size.{ratio}"), "size.classifier": m.get("size.classifier"),
                    f"ratio.{ratio}": m[f"ratio.{ratio}"], f"{metric}.mean": float(accs.mean()),
                    f"{metric}.std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0, "runs": len(rs)})
        rows.append(row)
    return sorted(rows, key=lambda r: (*(r[k] for k in SERIES), r[f"ratio.{ratio}"]))


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def plot(rows: Sequence[dict[str, Any]], ratio: str, metric: str, path: Path) -> None:
    """Accuracy (mean, error bar: std over seeds) against the ratio on a log axis, one line per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[tuple(r[k] for k in SERIES)].append(r)
    for key, rs in series.items():
        x = [r[f"ratio.{ratio}"] for r in rs]
        ax.errorbar(x, [r[f"{metric}.mean"] for r in rs], yerr=[r[f"{metric}.std"] for r in rs], marker="o",
                    capsize=3, label=" ".join(k for k in key if k))
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.text(1.0, 0.02, " no compression", color="grey", transform=ax.get_xaxis_transform(), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"compression ratio (ratio.{ratio}: hypernetwork / generated weights)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def store_uri(uri: str) -> str:
    """``uri`` with a sqlite path made absolute; a sqlite store that does not exist is a ReportError."""
    from .config_check import sqlite_path
    from .tracking import _abs_sqlite

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ReportError(f"no tracking store at {db}")
    return _abs_sqlite(uri)


def report(uri: str, out: Path, sweep: str | None = None, ratio: str = "classifier_hnet",
           metric: str = "final.acc_avg") -> list[dict[str, Any]]:
    """Write the plot and the CSV into ``out``; return the table's rows."""
    from mlflow.tracking import MlflowClient

    from .tracking import store_lock

    uri = store_uri(uri)
    with store_lock(uri):
        runs = find_runs(MlflowClient(tracking_uri=uri), ratio, metric, sweep)
    if not runs:
        where = f" of sweep {sweep}" if sweep else ""
        raise ReportError(f"no finished runs{where} with metrics ratio.{ratio} and {metric} in {uri}")
    rows = table_rows(runs, ratio, metric)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / f"{NAME}.csv")
    plot(rows, ratio, metric, out / f"{NAME}.png")
    return rows


def reproduction_main(argv: Sequence[str]) -> None:
    """``python -m hyperdgm.report reproduction``: record a store's runs in the ledger, then write
    docs/RESULTS.md from the ledger (see :mod:`.reproduction`)."""
    from .reproduction import LEDGER, markdown, read_ledger, record_runs, reproduction_rows, write_ledger

    p = argparse.ArgumentParser(prog="python -m hyperdgm.report reproduction",
                                description="the reproduction table (mean +- std over seeds against the papers)")
    p.add_argument("--uri", help="a tracking store (sqlite:/// or http://) whose finished runs to record first")
    p.add_argument("--ledger", default=str(LEDGER), help="the committed run records the table is built from")
    p.add_argument("--note", help="what the table should say about the runs recorded for the first time now "
                                  "(e.g. a shared machine); runs already in the ledger keep theirs")
    p.add_argument("--seeds", type=int, default=3, help="seeds a row needs to count as reproduced")
    p.add_argument("--out", default="docs/RESULTS.md")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ledger = Path(a.ledger)
    try:
        records = read_ledger(ledger)
        if a.uri:
            runs = _finished_runs(store_uri(a.uri))
            merged, n_new = record_runs(records, runs, a.note)
            write_ledger(ledger, merged)
            log.info("recorded %d runs of %s in %s (%d records)", n_new, a.uri, ledger, len(merged))
            records = merged
        elif not records:
            raise ReportError(f"no run records in {ledger}; record a store's runs with --uri sqlite:///...")
    except (ReportError, ValueError) as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    rows = reproduction_rows(records, a.seeds)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows, a.ledger, a.seeds))
    keys = ("row", "scenario", "ours", "seeds", "paper", "gap", "time", "status")
    print(format_table([{k: str(r[k]) for k in keys} for r in rows]))
    log.info("wrote %s (%d of %d rows with runs)", out, sum(1 for r in rows if r["seeds"]), len(rows))


def _finished_runs(uri: str) -> list[Any]:
    """The store's finished runs, seed runs only (a seed batch's parent run is not a result)."""
    from mlflow.tracking import MlflowClient

    from .tracking import store_lock

    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(exps, filter_string="attributes.status = 'FINISHED'", max_results=50000) if exps else []
    return [r for r in runs if PARENT_TAG not in r.data.tags]


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["reproduction"]:
        reproduction_main(argv[1:])
        return
    p = argparse.ArgumentParser(prog="python -m hyperdgm.report", description=__doc__.splitlines()[0])
    p.add_argument("--uri", default="sqlite:///runs/mlflow.db", help="tracking URI (sqlite:/// or http://)")
    p.add_argument("--sweep", help="only the runs of this sweep dir (their 'sweep' tag)")
    p.add_argument("--ratio", default="classifier_hnet", help="the component: ratio.<this> (e.g. generator_hnet)")
    p.add_argument("--metric", default="final.acc_avg")
    p.add_argument("--out", help="output dir (default: the sweep dir, else runs/report)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sweep = str(Path(a.sweep).resolve()) if a.sweep else None
    out = Path(a.out or sweep or "runs/report")
    try:
        rows = report(a.uri, out, sweep, a.ratio, a.metric)
    except ReportError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    shown = [{k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in r.items()} for r in rows]
    print(format_table(shown))
    log.info("wrote %s and %s", out / f"{NAME}.png", out / f"{NAME}.csv")


if __name__ == "__main__":
    main()
