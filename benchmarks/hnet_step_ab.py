"""One process, alternated blocks: the split MNIST CL1 HNET training step (4 past tasks, the lookahead, fused Adam,
the trainer's target net) with one detail switched, ms per step.

``python benchmarks/hnet_step_ab.py grams``     the Gram products split over the threads, or one plain ``mm``;
``python benchmarks/hnet_step_ab.py nan_fill``  deterministic mode without, or with, torch's NaN fill of ``empty``.
``--threads N`` (default 2), ``--blocks B`` (default 6) of ``--steps S`` (default 60). Results in docs/PERFORMANCE.md.
"""
import argparse
import time

import torch
import torch.nn.functional as F

from hyperdgm.hnet import OutputRegularizer, WeightGenerator, adam_lookahead
from hyperdgm.hnet import regularizer as R
from hyperdgm.nets import TargetNet

ap = argparse.ArgumentParser()
ap.add_argument("switch", choices=["grams", "nan_fill"])
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--blocks", type=int, default=6)
ap.add_argument("--steps", type=int, default=60)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.use_deterministic_algorithms(True, warn_only=True)
torch.manual_seed(0)
net = TargetNet("mlp", (1, 28, 28), 10, hidden=(400, 400), act="relu", no_weights=True)
gen = WeightGenerator(net.net, task_emb_size=96, chunk_size=42000, chunk_emb_size=96, hidden=(10, 10), n_tasks=4)
reg = OutputRegularizer(0.05, lookahead=True)
reg.begin_task(gen)
t = gen.add_task()
opt = torch.optim.Adam(gen.hnet_parameters(), lr=1e-3, fused=True)
emb_opt = torch.optim.Adam([gen.task_embedding(t)], lr=1e-3, fused=True)
x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))


def step() -> None:
    opt.zero_grad(set_to_none=True)
    emb_opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x, gen(t), condition=t), y).backward()
    reg.penalty(gen, delta=adam_lookahead(opt, gen.hnet_parameters())).backward()
    opt.step()
    emb_opt.step()


split = R._grams


def plain(db, ab):
    return db @ db.mT, db @ ab.mT


variants = {
    "grams": {"split over threads": lambda: setattr(R, "_grams", split), "one mm": lambda: setattr(R, "_grams", plain)},
    "nan_fill": {
        "without the fill": lambda: setattr(torch.utils.deterministic, "fill_uninitialized_memory", False),
        "with the fill": lambda: setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)},
}[args.switch]
for _ in range(10):
    step()
res: dict[str, list[float]] = {k: [] for k in variants}
for _ in range(args.blocks):
    for name, use in variants.items():
        use()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        res[name].append((time.perf_counter() - t0) / args.steps * 1e3)
for name, v in res.items():
    v.sort()
    mid = len(v) // 2
    med = v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
    print(f"{name}: median {med:.2f} ms per step (min {v[0]:.2f}, max {v[-1]:.2f}), {args.threads} threads")
