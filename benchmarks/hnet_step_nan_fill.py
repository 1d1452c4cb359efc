"""The split MNIST CL1 HNET training step (4 past tasks, lookahead, fused Adam) with and without torch's NaN fill of
uninitialised memory under deterministic mode: 6 alternated blocks of 60 steps in one process, ms per step.

``python benchmarks/hnet_step_nan_fill.py`` (2 threads). Measured 2026-12-07 (docs/PERFORMANCE.md): within the noise.
"""
import time

import torch
import torch.nn.functional as F
from hypnettorch.mnets import MLP

from hyperdgm.hnet import OutputRegularizer, WeightGenerator, adam_lookahead

torch.set_num_threads(2)
torch.use_deterministic_algorithms(True, warn_only=True)
torch.manual_seed(0)
mnet = MLP(n_in=784, n_out=10, hidden_layers=[400, 400], no_weights=True, verbose=False)
gen = WeightGenerator(mnet, task_emb_size=96, chunk_size=42000, chunk_emb_size=96, hidden=(10, 10), n_tasks=4)
reg = OutputRegularizer(0.05, lookahead=True)
reg.begin_task(gen)
t = gen.add_task()
opt = torch.optim.Adam(gen.hnet_parameters(), lr=1e-3, fused=True)
emb_opt = torch.optim.Adam([gen.task_embedding(t)], lr=1e-3, fused=True)
x, y = torch.rand(128, 784), torch.randint(0, 10, (128,))


def step() -> None:
    opt.zero_grad(set_to_none=True)
    emb_opt.zero_grad(set_to_none=True)
    F.cross_entropy(mnet.forward(x, weights=gen(t)), y).backward()
    reg.penalty(gen, delta=adam_lookahead(opt, gen.hnet_parameters())).backward()
    opt.step()
    emb_opt.step()


for _ in range(10):
    step()
res: dict[str, list[float]] = {"without the fill": [], "with the fill": []}
for _ in range(6):
    for mode in res:
        torch.utils.deterministic.fill_uninitialized_memory = mode == "with the fill"
        t0 = time.perf_counter()
        for _ in range(60):
            step()
        res[mode].append((time.perf_counter() - t0) / 60 * 1e3)
for mode, v in res.items():
    v.sort()
    print(f"{mode}: median {(v[2] + v[3]) / 2:.2f} ms per step (min {v[0]:.2f}, max {v[-1]:.2f})")
