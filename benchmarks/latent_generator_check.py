"""How good are generated features as training data? (issue 16: hnet_lr's generator gap)

A 784-400-400-10 MLP learns digits 0 and 1 (split MNIST CL3's first task), its first layer is frozen
(hnet_lr's ``drift=freeze``), and a conditional VAE of hnet_lr's sizes learns the frozen layer-1 features
(or the pixels) of all ten digits jointly, with no protection: an upper bound of what the memory can
replay. A fresh classifier above layer 1 then learns only from generated samples (their conditions as
labels) and is scored on real test data. Usage:
``python benchmarks/latent_generator_check.py [iters] [option ...]``, options ``pixels``, ``real``,
``feat:STD[:relu|:std]`` (``relu``: decoder mean through ReLU; ``std``: features standardised per unit),
``pre:STD`` (the pre-activations of layer 1 standardised per unit, generated, mapped back and put through the ReLU);
a feature option may end in ``:dec=H1-H2`` (the decoder's hidden widths, default hnet_lr's 250-350) and ``:lat=N``
(latent size, default 100), e.g. ``feat:1.0:std:dec=400-400``.
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from hyperdgm.data.readers import read_mnist
from hyperdgm.memory import GenerativeMemory

torch.manual_seed(0)
torch.set_num_threads(1)
xtr, ytr = read_mnist(None, True)
xte, yte = read_mnist(None, False)
xtr, xte = xtr.float().flatten(1), xte.float().flatten(1)
if xtr.max() > 1:
    xtr, xte = xtr / 255, xte / 255
ITERS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10))


net = mlp()
opt = torch.optim.Adam(net.parameters(), 1e-3)
m01 = ytr < 2
x01, y01 = xtr[m01], ytr[m01]
for i in range(1000):  # task 1 of split MNIST CL3
    idx = torch.randint(len(x01), (128,))
    loss = F.cross_entropy(net(x01[idx])[:, :2], y01[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
layer1 = net[:2].requires_grad_(False)
with torch.no_grad():
    ftr, fte = layer1(xtr), layer1(xte)
    ptr = layer1[0](xtr)  # pre-activations
print(f"layer-1 features: mean {ftr.mean():.3f}, std {ftr.std():.3f}, zeros {(ftr == 0).float().mean():.2f}, "
      f"max {ftr.max():.2f}", flush=True)


def train_vae(data: torch.Tensor, likelihood: str, std: float, dec: tuple[int, ...] = (250, 350),
              latent: int = 100) -> GenerativeMemory:
    cfg = dict(model="vae", arch="mlp", condition="class", latent_dim=latent, enc_hidden=[400, 400],
               dec_hidden=list(dec), protection="none", likelihood=likelihood, gaussian_std=std, lr=1e-3)
    mem = GenerativeMemory(cfg, (data.shape[1],), 1, task_classes=[list(range(10))])
    mem.begin_task(0)
    for i in range(ITERS):
        idx = torch.randint(len(data), (128,))
        mem.step(data[idx], 0, cond=ytr[idx])
    mem.end_task(0)
    return mem


def head_on(gen, test_x: torch.Tensor, above: nn.Module | None) -> float:
    """A fresh classifier (layers above 1, or the whole MLP with ``above`` as frozen layer 1) trained on
    ``gen(labels)`` samples; accuracy on ``test_x``."""
    torch.manual_seed(1)
    head = nn.Sequential(nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10))
    o = torch.optim.Adam(head.parameters(), 1e-3)
    for i in range(ITERS):
        y = torch.randint(10, (128,))
        x = gen(y)
        h = above(x) if above is not None else x
        loss = F.cross_entropy(head(h), y)
        o.zero_grad()
        loss.backward()
        o.step()
    with torch.no_grad():
        h = above(test_x) if above is not None else test_x
        return float((head(h).argmax(1) == yte).float().mean() * 100)


for opt_name in sys.argv[2:] or ["real", "pixels", "feat:0.3", "feat:0.3:relu", "feat:1.0", "feat:0.3:std"]:
    t0 = time.time()
    if opt_name == "real":
        by = [ftr[ytr == k] for k in range(10)]
        acc = head_on(lambda y: torch.stack([by[k][torch.randint(len(by[k]), ())] for k in y.tolist()]), fte, None)
    elif opt_name == "pixels":
        mem = train_vae(xtr, "bernoulli", 1.0)
        acc = head_on(lambda y: mem.generate([(0, len(y))], cond=y).detach(), xte, layer1)
    else:
        sizes = dict(p.split("=") for p in opt_name.split(":") if "=" in p)
        parts = [p for p in opt_name.split(":") if "=" not in p]
        dec = tuple(int(w) for w in sizes.get("dec", "250-350").split("-"))
        std, post = float(parts[1]), (parts[2] if len(parts) > 2 else "")
        src = ptr if parts[0] == "pre" else ftr
        post = "std" if parts[0] == "pre" else post
        mu, sd = src.mean(0), src.std(0).clamp_min(1e-3)
        data = (src - mu) / sd if post == "std" else src
        mem = train_vae(data, "gaussian", std, dec, int(sizes.get("lat", 100)))

        def gen(y, mem=mem, post=post, mu=mu, sd=sd):
            out = mem.generate([(0, len(y))], cond=y).detach()
            if post == "relu":
                out = out.clamp_min(0)
            if post == "std":
                out = (out * sd + mu).clamp_min(0)
            return out
        acc = head_on(gen, fte, None)
    print(f"{opt_name}: test accuracy of a classifier trained on generated samples {acc:.2f} ({time.time() - t0:.0f} s)",
          flush=True)
