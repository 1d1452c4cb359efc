"""The reproduction table, built from runs: ``python -m hyperdgm.report reproduction``.

One row per paper number in ``paper_numbers.yaml`` (preset x scenario): the finished test-split runs of
that preset and scenario in the store (their ``preset`` tag, or a run name that starts with the preset),
one per seed (the newest), as mean +- sample std of ``final.acc_avg`` over the seeds; the paper's
number and the gap to it (within one std when ``|ours - paper|`` is at most the larger of the two stds);
the command that makes the runs; the mean wall time per run; the machines and dates they ran on. A row
with no runs says why (the table's ``note``, else "no runs in the store"); a row with fewer than
``--seeds`` seeds says how many it has. The table is regenerated from the store, never typed.
"""
from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PAPER_NUMBERS", "paper_rows", "run_preset", "reproduction_rows", "markdown"]

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
METRIC = "final.acc_avg"


def paper_rows(path: Path = PAPER_NUMBERS) -> list[dict[str, Any]]:
    """Every paper number, with the paper it comes from under ``paper``."""
    data = yaml.safe_load(path.read_text())
    return [{**row, "paper": paper} for paper, rows in data.items() for row in rows]


def run_preset(run: Any) -> str | None:
    """The preset a run was made from: its ``preset`` tag, else the first word of its name
    (``splitmnist_hnet_ent seed=1``; runs without a preset are named ``<method>-<benchmark>-<scenario>``)."""
    tags = run.data.tags
    if tags.get("preset"):
        return tags["preset"]
    name = (run.info.run_name or "").split(" ")[0]
    return name if name and "-" not in name else None


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


def reproduction_rows(runs: Sequence[Any], seeds: int = 3, table: Sequence[Mapping[str, Any]] | None = None
                      ) -> list[dict[str, Any]]:
    """The table's rows from finished runs (MLflow ``Run`` objects) and the paper numbers."""
    by_key: dict[tuple[str, str], dict[str, Any]] = defaultdict(dict)  # (preset, scenario) -> seed -> newest run
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        t = r.data.tags
        if r.info.status != "FINISHED" or t.get("eval_split", "test") != "test" or METRIC not in r.data.metrics:
            continue
        preset = run_preset(r)
        if preset is None:
            continue
        by_key[(preset, t.get("scenario", ""))][r.data.params.get("seed", "?")] = r
    out = []
    for p in table if table is not None else paper_rows():
        got = list(by_key.get((p["preset"], p["scenario"]), {}).values())
        row = {"row": p["row"], "preset": p["preset"], "scenario": p["scenario"],
               "paper": f"{p['mean']:.2f}" + (f" ± {p['sd']:.2f}" if p.get("sd") is not None else ""),
               "command": command(p["preset"], p["scenario"], seeds), "seeds": len(got)}
        if not got:
            row.update(ours="-", gap="-", wall="-", machine="-", date="-",
                       status=p.get("note") or "no runs in the store")
            out.append(row)
            continue
        accs = [float(r.data.metrics[METRIC]) for r in got]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        # a seed trained in a batch of seeds (seeds=[...]) shared its run's wall time with the others: its share
        walls = [(r.info.end_time - r.info.start_time) / 1000 / max(1, int(r.data.tags.get("seed_batch.size", 1)))
                 for r in got if r.info.end_time and r.info.start_time]
        dates = sorted({dt.datetime.fromtimestamp(r.info.start_time / 1000, dt.timezone.utc).date().isoformat()
                        for r in got})
        machines, loads = _machines([r.data.tags.get("machine", "not recorded") for r in got])
        mean = statistics.fmean(accs)
        row.update(ours=f"{mean:.2f} ± {sd:.2f}", mean=mean, sd=sd, gap=gap_text(mean, sd, p["mean"], p.get("sd")),
                   wall=f"{statistics.fmean(walls):.0f} s" if walls else "-",
                   machine="; ".join(machines) + (f", load {min(loads):.1f}-{max(loads):.1f}" if loads else ""),
                   date=" to ".join(dict.fromkeys([dates[0], dates[-1]])),
                   status="" if len(got) >= seeds else f"{len(got)} of {seeds} seeds")
        out.append(row)
    return out


def markdown(rows: Sequence[Mapping[str, Any]], uri: str, seeds: int) -> str:
    """``docs/RESULTS.md``: the rows as a Markdown table, with how it was made."""
    numeric = ["ours (mean ± std)", "seeds", "paper", "ours − paper", "wall / run"]  # right-aligned
    head = ["paper row", "preset", "scenario", *numeric, "machine", "date", "note", "command"]
    lines = [
        "# Reproduction table",
        "",
        f"Generated by `python -m hyperdgm.report reproduction --uri {uri}` from the runs in that store; do not",
        "edit by hand. Final test accuracy (%) after the last task, mean ± sample std over seeds "
        f"(the newest finished run per seed; {seeds} wanted). The paper columns are the papers' own numbers",
        "(`hyperdgm/paper_numbers.yaml`); a gap is within 1 std when it is at most the larger of our std over",
        "seeds and the paper's. The command is the preset's; runs may add where-to-run overrides",
        "(`threads=`, `tracking.uri=`). Wall time is the whole run (training and evaluation) on the machine named",
        "(a seed trained with others in one batched learner, `seeds=[...]`, counts its share of their wall time),",
        "with the range of the load averages the runs started at (other jobs shared the machine).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if h in numeric else "---" for h in head) + "|",
    ]
    for r in rows:
        cells = [r["row"], f"`{r['preset']}`", r["scenario"].upper(), r["ours"], str(r["seeds"]), r["paper"], r["gap"],
                 r["wall"], r["machine"], r["date"], r["status"], f"`{r['command']}`"]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"
