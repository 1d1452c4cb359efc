"""One process, alternated blocks: a replay preset's training step on split MNIST (the classifier with replay and the
generator's own step, task 2 of 5) with one detail switched, ms per step.

``python benchmarks/replay_step_ab.py merged``  the classifier's and the VAE's passes over current + replayed rows
                                                merged, and DGR's generator on the classifier's draw (A), against
                                                separate passes and a draw of the generator's own (B);
``python benchmarks/replay_step_ab.py bf16``    bf16 autocast (A) against fp32 (B), as ``trainer.precision``.
``--preset`` (default ``splitmnist_dgr``), ``--threads N`` (default 2), ``--blocks B`` (default 6) of ``--steps S``
(default 40). Needs ``HYPERDGM_DATA`` (MNIST). Results in docs/PERFORMANCE.md.
"""
import argparse
import contextlib
import os
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hyperdgm.experiment import benchmark_of, method_config
from hyperdgm.memory.bodies import MLPBody
from hyperdgm.methods import build_method
from hyperdgm.nets import TargetNet
from hyperdgm.scenarios import make_scenario

ap = argparse.ArgumentParser()
ap.add_argument("switch", choices=["merged", "bf16"])
ap.add_argument("--preset", default="splitmnist_dgr")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--blocks", type=int, default=6)
ap.add_argument("--steps", type=int, default=40)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base=None):
    cfg = compose(config_name="config", overrides=[f"experiment={args.preset}"])
c = OmegaConf.to_container(cfg, resolve=True)
bench = benchmark_of(c, os.environ["HYPERDGM_DATA"])
m = build_method(method_config(cfg))
m.setup(bench, make_scenario(cfg.scenario.name, bench.n_classes_per_task), torch.device("cpu"),
        torch.Generator().manual_seed(0))
g = torch.Generator().manual_seed(0)


def batch(task):
    return task.batch("train", torch.randint(len(task.train), (cfg.trainer.batch_size,), generator=g))


for task in bench.tasks[:2]:  # two tasks learned briefly: task 2 replays both
    m.plan_task(20, cfg.trainer.batch_size)
    m.begin_task(task)
    for _ in range(20):
        m.step(*batch(task), task.id)
    m.end_task(task)
task = bench.tasks[2]
m.plan_task(10 ** 6, cfg.trainer.batch_size)
m.begin_task(task)
draw = m.draw_replay


@contextlib.contextmanager
def variant(a: bool):
    """A: the code as it is (merged / bf16); B: the switched-off detail."""
    saved = MLPBody.rows_independent, TargetNet.has_bn_stats, m.draw_replay
    if args.switch == "merged" and not a:
        MLPBody.rows_independent = False
        TargetNet.has_bn_stats = property(lambda self: True)
        m.draw_replay = lambda t: (*draw(t)[:2], None)
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if args.switch == "bf16" and a else contextlib.nullcontext()
    try:
        with cast:
            yield
    finally:
        MLPBody.rows_independent, TargetNet.has_bn_stats, m.draw_replay = saved


times = {True: [], False: []}
for b in range(args.blocks + 1):
    for a in (True, False):
        with variant(a):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                m.step(*batch(task), task.id)
            dt = (time.perf_counter() - t0) / args.steps * 1e3
        if b:  # the first round warms up
            times[a].append(dt)
med = {a: statistics.median(v) for a, v in times.items()}
print(f"{args.preset} {args.switch}, {args.threads} threads, {args.blocks} blocks of {args.steps} steps: "
      f"A {med[True]:.2f} ms ({min(times[True]):.2f}-{max(times[True]):.2f}), "
      f"B {med[False]:.2f} ms ({min(times[False]):.2f}-{max(times[False]):.2f}), A/B {med[True] / med[False]:.3f}")
