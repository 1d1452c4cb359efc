"""Accuracy matrices of short runs of the landed methods, to check that a refactor changes no number.

    python benchmarks/fingerprint_runs.py --out before.json          # on the old commit
    python benchmarks/fingerprint_runs.py --out after.json --compare before.json

Each run is the test suite's quick configuration (3 split-MNIST tasks, 60 steps, 1 thread) on the real
data under $HYPERDGM_DATA (or ../shared/data); ``--compare`` prints IDENTICAL or the differing rows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

RUNS = {
    "hnet_r": ["method=hnet_r"],
    "dgr": ["method=dgr"],
    "hnet_tir": ["method=hnet_tir"],
    "hnet_r_gan": ["method=hnet_r", "method.memory.model=gan"],
    "hnet_r_none": ["method=hnet_r", "method.memory.protection=none"],
    "hnet_cl1": ["method=hnet", "scenario=cl1"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--compare", default=None)
    ap.add_argument("--only", default=None, help="comma-separated subset of " + ", ".join(RUNS))
    args = ap.parse_args()
    from helpers import quick_cfg  # noqa: E402  (tests/helpers.py: the suite's quick settings)

    from hyperdgm.experiment import run_experiment

    data = Path(os.environ.get("HYPERDGM_DATA", ROOT.parent / "shared" / "data"))
    names = args.only.split(",") if args.only else list(RUNS)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            ov = RUNS[name]
            scen = [] if any(o.startswith("scenario=") for o in ov) else ["scenario=cl3"]
            cfg = quick_cfg(data, Path(tmp) / name, "tracking=none", *scen, *ov)
            out[name] = run_experiment(cfg, Path(tmp) / name).R.tolist()
    Path(args.out).write_text(json.dumps(out))
    if args.compare:
        ref = json.loads(Path(args.compare).read_text())
        for name in names:
            same = json.dumps(ref.get(name)) == json.dumps(out[name])  # NaN-safe
            print(name, "IDENTICAL" if same else f"DIFF {ref.get(name)} vs {out[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
