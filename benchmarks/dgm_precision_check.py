"""Does bf16 cost DGM its first digit? The short DGM test's run, in one precision and seed, as one JSON line.

    python benchmarks/dgm_precision_check.py dgm_a bf16 0      # protection, precision (fp32 | bf16 | auto), seed

Two digits of class-incremental MNIST, 150 steps each, half-width generator and critic: the configuration of
``tests/test_dgm.py::test_short_class_incremental_mnist_far_above_finetune`` (which pins fp32). Prints the first
digit's accuracy after the second (``old``), the second's (``new``), ``a_n`` and the wall seconds. One torch
thread; the data root from ``HYPERDGM_DATA`` (default ``../shared/data``). Results: benchmarks/RESULTS.md (DGM).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from hyperdgm.experiment import run_experiment

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16", "auto")


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("dgm_w", "dgm_a") or argv[1] not in PRECISIONS or not argv[2].isdigit():
        print(f"usage: python {Path(__file__).name} dgm_w|dgm_a {'|'.join(PRECISIONS)} SEED", file=sys.stderr)
        return 2
    protection, precision, seed = argv[0], argv[1], int(argv[2])
    torch.set_num_threads(1)
    data = os.environ.get("HYPERDGM_DATA", str(ROOT.parent / "shared" / "data"))
    over = ["benchmark=cil_mnist", "scenario=cil", "method=dgm", "benchmark.pad=32", "tracking=none", "threads=1",
            "trainer.progress=false", "trainer.checkpoint=false", f"data_root={data}", f"seed={seed}",
            "benchmark.n_tasks=2", "benchmark.net.hidden=[64]", "trainer.log_every=20", "benchmark.train_limit=600",
            "benchmark.test_limit=300", "trainer.iters_per_task=150",
            "trainer.batch_size=64", f"method.memory.protection={protection}", "method.memory.ngf=8",
            "method.memory.acgan.ndf=16", "method.memory.acgan.d_norm=none", f"trainer.precision={precision}"]
    if protection == "dgm_a":
        over += ["method.memory.dgm.smax=100000", "method.memory.dgm.lamb=0.01"]
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
            cfg = compose("config", overrides=over)
        t0 = time.perf_counter()
        r = run_experiment(cfg, Path(tmp) / "run")
    print(json.dumps({"protection": protection, "precision": precision, "seed": seed, "old": round(float(r.R[1, 0]), 2),
                      "new": round(float(r.R[1, 1]), 2), "a_n": round(float(r.summary["a_n"]), 2),
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
