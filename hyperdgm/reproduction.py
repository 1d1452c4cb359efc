"""The reproduction table, built from runs: ``python -m hyperdgm.report reproduction``.

Runs live in MLflow stores, and a store is scratch (``runs/`` is not committed, a machine's disk does
not outlive its session). So the table is built from a committed ledger of run records,
``benchmarks/reproduction/runs.jsonl``: one line per finished test-split run (its run id, preset,
scenario, seed, ``final.acc_avg``, training seconds, machine and start time), appended from a store with
``--uri`` and never typed. A row of the table is one paper number in ``paper_numbers.yaml`` (preset x
scenario): the newest record per seed, as mean +- sample std over the seeds; the paper's number and the gap
to it (within one std when ``|ours - paper|`` is at most the larger of the two stds); the command that makes
the runs; the mean training time per run; the machines and dates. A row with no records says why (the
table's ``note``, else "no runs recorded"); one with fewer than ``--seeds`` seeds says how many it has.

A ``"kind": "summary"`` record stands for runs whose store was lost before they were recorded one by one:
their mean, std, seed count, wall time and machine as an earlier table printed them, and where that was
(``source``). A row uses it only while no per-run record of its preset and scenario exists.
"""
from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .naming import name_changes_preset

__all__ = ["PAPER_NUMBERS", "LEDGER", "paper_rows", "run_preset", "run_record", "merge_records", "record_runs",
           "read_ledger", "write_ledger", "reproduction_rows", "markdown"]

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
LEDGER = Path("benchmarks/reproduction/runs.jsonl")  # relative to the repository root, where the report runs
METRIC = "final.acc_avg"
TRAIN_TIME = "time.total"  # the sum of the tasks' training seconds (a batched seed's share); survives a resume


def paper_rows(path: Path = PAPER_NUMBERS) -> list[dict[str, Any]]:
    """Every paper number, with the paper it comes from under ``paper``."""
    data = yaml.safe_load(path.read_text())
    return [{**row, "paper": paper} for paper, rows in data.items() for row in rows]


def run_preset(run: Any) -> str | None:
    """The preset a run was made from: its ``preset`` tag, else the first word of its name
    (``splitmnist_hnet_ent seed=1``; runs without a preset are named ``<method>-<benchmark>-<scenario>``)."""
    tags = run.data.tags
    name = run.info.run_name or ""
    if tags.get("preset.changes") or ("preset.changes" not in tags and name_changes_preset(name)):
        return None  # the command changed the preset (trainer.precision=bf16, fewer iterations, ...): not its run
    if tags.get("preset"):
        return tags["preset"]
    first = name.split(" ")[0]
    return first if first and "-" not in first else None


def run_record(run: Any, note: str | None = None) -> dict[str, Any] | None:
    """A finished test-split run (MLflow ``Run``) as a ledger record; None for a run the table never shows
    (unfinished, a validation run, no final accuracy, no preset, a fork of another run).

    Its time is the training time it logged (``time.total``), not the span from its start to its end: a run
    resumed the next day did not train overnight, and a seed trained in a batch logs its own share. ``note``: what
    the table should say about the run (e.g. that the machine was shared), kept with its record."""
    t, m = run.data.tags, run.data.metrics
    preset = run_preset(run)
    if (run.info.status != "FINISHED" or t.get("eval_split", "test") != "test" or METRIC not in m or preset is None
            or t.get("forked_from")):  # a fork (fork=) did not train its first tasks: not a run of the preset
        return None
    start = dt.datetime.fromtimestamp((run.info.start_time or 0) / 1000, dt.timezone.utc)
    return {"run_id": run.info.run_id, "preset": preset, "scenario": t.get("scenario", ""), "seed": str(run.data.params.get("seed", "?")),
            "acc": round(float(m[METRIC]), 4),
            "train_s": round(float(m[TRAIN_TIME]), 1) if TRAIN_TIME in m else None,
            "machine": t.get("machine", "not recorded"), "start": start.isoformat(timespec="seconds"),
            **({"note": note} if note else {})}


def merge_records(old: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The ledger with ``new`` records added (a run already in it is replaced by its newer record, which keeps
    the older one's note unless it brings its own)."""
    by_id: dict[str, dict[str, Any]] = {}
    summaries = []
    for r in [*old, *(n for n in new if n is not None)]:
        if r.get("kind") == "summary":
            summaries.append(dict(r))
        else:
            old_note = by_id.get(r["run_id"], {}).get("note")
            by_id[r["run_id"]] = {**r, **({"note": old_note} if old_note and not r.get("note") else {})}
    runs = sorted(by_id.values(), key=lambda r: (r["preset"], r["scenario"], r["start"], r["seed"]))
    return summaries + runs


def record_runs(records: Sequence[Mapping[str, Any]], runs: Iterable[Any], note: str | None = None
                ) -> tuple[list[dict[str, Any]], int]:
    """The ledger ``records`` with a store's ``runs`` recorded (:func:`run_record`), and how many runs that was.
    ``note`` goes to the runs recorded for the first time; runs already in the ledger keep theirs."""
    known = {r.get("run_id") for r in records}
    new = [r for r in (run_record(run, None if run.info.run_id in known else note) for run in runs) if r is not None]
    return merge_records(records, new), len(new)


def read_ledger(path: Path) -> list[dict[str, Any]]:
    """The records in ``path`` (none when it does not exist); a malformed line raises ValueError naming it."""
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{i}: not a JSON record ({err.msg})") from None
    return out


def write_ledger(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    """One JSON record per line, written whole then renamed over ``path`` (never a half-written ledger)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in records))
    tmp.replace(path)


def _machines(tags: Sequence[str]) -> tuple[list[str], list[float]]:
    """Distinct machines (without the load each run started at) and those loads."""
    names, loads = [], []
    for t in tags:
        head, sep, load = t.rpartition(", load ")
        try:
            loads.append(float(load))
            t = head
        except ValueError:
            pass
        if t not in names:
            names.append(t)
    return sorted(names), loads


def command(preset: str, scenario: str, seeds: int) -> str:
    scen = "" if preset.endswith(f"_{scenario}") else f" scenario={scenario}"
    return f"python -m hyperdgm.run experiment={preset}{scen} seeds=[{','.join(str(s) for s in range(seeds))}]"


def gap_text(mean: float, sd: float, paper_mean: float, paper_sd: float | None) -> str:
    """``ours - paper`` and whether it lies within one std (the larger of ours over seeds and the paper's)."""
    gap = mean - paper_mean
    tol = max(sd, paper_sd or 0.0)
    within = round(abs(gap), 2) <= round(tol, 2)  # as the table prints them
    return f"{gap:+.2f} ({'within' if within else 'outside'} 1 std)"


def _status(n: int, seeds: int, *notes: str) -> str:
    """A row's note: how many seeds it lacks, then what its runs say."""
    return "; ".join(x for x in ["" if n >= seeds else f"{n} of {seeds} seeds", *notes] if x)


def _from_runs(got: Sequence[Mapping[str, Any]], seeds: int) -> dict[str, Any]:
    accs = [float(r["acc"]) for r in got]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    times = [float(r["train_s"]) for r in got if r.get("train_s") is not None]
    dates = sorted(r["start"][:10] for r in got)
    machines, loads = _machines([r.get("machine", "not recorded") for r in got])
    # each clause once: seeds recorded at different times often share one ("1 thread beside ...")
    notes = list(dict.fromkeys(c for r in got if r.get("note") for c in r["note"].split("; ")))
    return {"mean": statistics.fmean(accs), "sd": sd, "seeds": len(got),
            "time": f"{statistics.fmean(times):.0f} s" if times else "-",
            "machine": "; ".join(machines) + (f", load {min(loads):.1f}-{max(loads):.1f}" if loads else ""),
            "date": " to ".join(dict.fromkeys([dates[0], dates[-1]])),
            "status": _status(len(got), seeds, *notes)}


def _from_summary(s: Mapping[str, Any], seeds: int) -> dict[str, Any]:
    n = int(s["n"])
    time = f"{s['wall_s']:.0f} s (whole run)" if s.get("wall_s") is not None else "-"
    status = _status(n, seeds, s.get("note", ""), f"runs' store lost: figures from {s['source']}")
    return {"mean": float(s["mean"]), "sd": float(s["sd"]), "seeds": n, "time": time, "machine": s["machine"],
            "date": s["date"], "status": status}


def reproduction_rows(records: Sequence[Mapping[str, Any]], seeds: int = 3,
                      table: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The table's rows from ledger records (:func:`run_record`, or summaries) and the paper numbers."""
    by_key: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = defaultdict(dict)  # (preset, scen) -> seed -> newest
    summary: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in sorted(records, key=lambda r: r.get("start", "")):
        if r.get("kind") == "summary":
            summary[(r["preset"], r["scenario"])] = r
        else:
            by_key[(r["preset"], r["scenario"])][str(r["seed"])] = r
    out = []
    for p in table if table is not None else paper_rows():
        key = (p["preset"], p["scenario"])
        row: dict[str, Any] = {
            "row": p["row"], "preset": p["preset"], "scenario": p["scenario"],
            "paper": f"{p['mean']:.2f}" + (f" ± {p['sd']:.2f}" if p.get("sd") is not None else ""),
            "command": command(p["preset"], p["scenario"], seeds)}
        if by_key.get(key):
            row.update(_from_runs(list(by_key[key].values()), seeds))
        elif key in summary:
            row.update(_from_summary(summary[key], seeds))
        else:
            row.update(ours="-", gap="-", time="-", machine="-", date="-", seeds=0,
                       status=p.get("note") or "no runs recorded")
            out.append(row)
            continue
        row.update(ours=f"{row['mean']:.2f} ± {row['sd']:.2f}",
                   gap=gap_text(row["mean"], row["sd"], p["mean"], p.get("sd")))
        out.append(row)
    return out


def markdown(rows: Sequence[Mapping[str, Any]], ledger: str, seeds: int) -> str:
    """``docs/RESULTS.md``: the rows as a Markdown table, with how it was made."""
    numeric = ["ours (mean ± std)", "seeds", "paper", "ours − paper", "training / run"]  # right-aligned
    head = ["paper row", "preset", "scenario", *numeric, "machine", "date", "note", "command"]
    lines = [
        "# Reproduction table",
        "",
        f"Generated by `python -m hyperdgm.report reproduction` from the run records in `{ledger}` (added",
        "from a run store with `--uri`); do not edit by hand. Final test accuracy (%) after the last task, mean ±",
        f"sample std over seeds (the newest finished run per seed; {seeds} wanted). The paper columns are the",
        "papers' own numbers (`hyperdgm/paper_numbers.yaml`); a gap is within 1 std when it is at most the larger",
        "of our std over seeds and the paper's. The command is the preset's; runs may add where-to-run overrides",
        "(`threads=`, `tracking.uri=`). Training / run is the mean over seeds of a run's training seconds (its",
        "tasks' training, evaluation excluded; a resumed run counts only the time it ran; a seed trained with",
        "others in one batched learner, `seeds=[...]`, its share), on the machine named, with the range of the",
        "load averages the runs started at (other jobs shared the machine). A row marked \"(whole run)\" comes",
        "from an earlier table whose runs' store was lost: its time is the whole run's wall time.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if h in numeric else "---" for h in head) + "|",
    ]
    for r in rows:
        cells = [r["row"], f"`{r['preset']}`", r["scenario"].upper(), r["ours"], str(r["seeds"]), r["paper"], r["gap"],
                 r["time"], r["machine"], r["date"], r["status"], f"`{r['command']}`"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"
