"""One Adam step over a hypernetwork's parameters with the output layer's weight in each layout.

``python benchmarks/adam_layout.py THREADS [pmnist]``: split MNIST's hypernetwork (output layer ``[42000, 10]``) or
permuted MNIST's (``[78000, 25]``); best of 5 blocks, ms per step. The fused Adam copies a non-contiguous parameter
in and out at every step; a contiguous one (the layout ``WeightGenerator`` now stores) costs one pass.
"""
import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]))
N, H = (78000, 25) if len(sys.argv) > 2 else (42000, 10)


def params(column_major: bool) -> list[torch.nn.Parameter]:
    ps = [torch.randn(10, 192) * 0.1, torch.randn(10), torch.randn(10, 10), torch.randn(10),
          torch.randn(H, N).T if column_major else torch.randn(N, H), torch.randn(N), torch.randn(12, 96)]
    ps = [torch.nn.Parameter(p) for p in ps]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


def bench(groups: list[dict], reps: int = 300) -> float:
    opt = torch.optim.Adam(groups, lr=1e-3)
    for _ in range(5):
        opt.step()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps // 5):
            opt.step()
        best = min(best, (time.perf_counter() - t0) / (reps // 5) * 1e3)
    return best


print(f"output layer [{N}, {H}], {torch.get_num_threads()} threads, ms per Adam step")
print(f"  fused, column-major [N, H] (the old layout) {bench([dict(params=params(True), fused=True)]):.3f}")
print(f"  fused, contiguous                           {bench([dict(params=params(False), fused=True)]):.3f}")
print(f"  foreach, column-major                       {bench([dict(params=params(True), foreach=True)]):.3f}")
