"""Few-task repro of DGM's weak later-class generators (benchmarks/RESULTS.md, DGM section).

    python benchmarks/dgm_two_task_repro.py dgm_w                  # the official expansion draw N(0, 0.02)
    python benchmarks/dgm_two_task_repro.py dgm_w expand_std=0.1   # the presets' draw
    python benchmarks/dgm_two_task_repro.py none
    python benchmarks/dgm_two_task_repro.py dgm_a tasks=3 ngf=20 smax=1e5 lamb=0.01 init=normal expand_init=xavier
Digits 0 then 1 (``tasks=N``: the first N digits) of class-incremental MNIST with the short preset's schedule (20 epochs, bf16, critic
without batch norm, 900 validation images held out); ``key=value`` arguments set ``memory.dgm`` keys.
Prints the accuracy matrix and, per digit, the fraction of generated pixels near 0 or 1 (< 0.1 or
> 0.9; real MNIST digits: ~0.95, noisy strokes lower), and writes ``dgm_repro_<protection>.png`` (two
rows per digit, fixed noise), and the masks' capacity per task (reserved / reused / free). ~5 min
per task on 1 thread. ``ngf=`` sets ``memory.ngf``; ``epochs=`` the schedule.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf

from hyperdgm.data import build_benchmark
from hyperdgm.methods import build_method
from hyperdgm.scenarios import make_scenario
from hyperdgm.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main(protection: str = "dgm_w", *over: str) -> None:
    torch.set_num_threads(1)
    data = os.environ.get("HYPERDGM_DATA", str(ROOT.parent / "shared" / "data"))
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "method" / "dgm.yaml"))
    cfg["memory"]["acgan"]["d_norm"] = "none"
    cfg["memory"]["protection"] = protection
    n_tasks, epochs = 2, 20
    for kv in over:
        k, v = kv.split("=", 1)
        if k == "tasks":
            n_tasks = int(v)
        elif k == "epochs":
            epochs = int(v)
        elif k == "ngf":
            cfg["memory"]["ngf"] = int(v)
        else:
            cfg["memory"]["dgm"][k] = yaml.safe_load(v)
    bench = build_benchmark("cil_mnist", data, n_tasks=n_tasks, test_limit=500, pad=32, val_size=900)
    method = build_method(cfg)
    trainer = Trainer(method, bench, make_scenario("cil", bench.n_classes_per_task),
                      cfg={"epochs": epochs, "batch_size": 64, "progress": False, "checkpoint": False, "precision": "auto"})
    print("R", trainer.fit().R.tolist())
    with torch.no_grad():
        z = torch.randn(16, method.memory.latent_dim)
        xs = torch.cat([method.memory.sample(t, 16, z=z, cond=torch.full((16,), t)) for t in range(n_tasks)])
    sharp = [round(float(((x < 0.1) | (x > 0.9)).float().mean()), 3) for x in xs.split(16)]
    print("pixels near 0 or 1 per digit", sharp)
    for h in getattr(method.memory.protection, "history", []):
        print("capacity", {k: v for k, v in h.items() if k != "total"})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(f"dgm_repro_{protection}_{os.getpid()}.png", xs.view(2 * n_tasks, 8, 32, 32).permute(0, 2, 1, 3).reshape(64 * n_tasks, 256).numpy(),
               cmap="gray")


if __name__ == "__main__":
    main(*sys.argv[1:])
