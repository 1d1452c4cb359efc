"""Does the classifier tell replayed features from real ones? (issue 16: where latent replay loses old classes)

Trains one configured run (no tracking, no checkpoints, 1 thread), then for every old task scores the final
classifier on the task's real test images and on 1000 of its memory's samples (entering after ``memory.layer``):
accuracy, the fraction predicted inside the task's own classes ("in-task"), and the fraction of exact zeros in
the features at the cut (real ReLU features are sparse). Usage::

    python benchmarks/latent_realness_check.py [--sample-noise S] [--censored] OVERRIDE ...
    python benchmarks/latent_realness_check.py experiment=splitmnist_hnet_lr seed=42 trainer.iters_per_task=500

``--sample-noise S`` adds ``S`` x N(0, 1) to every replayed sample in the memory's (standardised) units before it
is mapped back; ``--censored`` trains the feature VAE with a censored Gaussian likelihood (a Tobit model: an exact
zero of a ReLU feature scores ``-log Phi((floor - mean) / std)``, a positive value the Gaussian's squared error),
so that its mean can sit below the floor and replayed features come back sparse. Both are experiments for this
check only (patched in here), not options of the toolkit.
"""
from __future__ import annotations

import argparse
import logging
import tempfile

import torch

import hyperdgm.memory.replay_models as replay_models
from hyperdgm import config_check as cc
from hyperdgm.bench import _compose
from hyperdgm.experiment import _build, method_config
from hyperdgm.memory.spaces import FeatureSpace
from hyperdgm.methods import build_method
from hyperdgm.rundir import RunDir


def patch(noise: float, censored: bool) -> None:
    """The two experiments: noise on replayed samples, a censored likelihood for the feature VAE."""
    to_input, to_memory, vae_loss = FeatureSpace.to_input, FeatureSpace.to_memory, replay_models.vae_loss
    floor: dict[str, torch.Tensor] = {}

    def noisy_input(self, m, ids=None):
        return to_input(self, m + noise * torch.randn_like(m) if noise > 0 else m, ids)

    def to_memory_floor(self, x, learn=False):
        out = to_memory(self, x, learn)
        # where a raw zero lands in the memory's units: 0 unstandardised, -mean / std standardised
        floor["c"] = (torch.zeros(out.shape[1]) if self.norm == "none"
                      else -self.mean / self.var.sqrt().clamp_min(self.min_std))
        return out

    def censored_loss(logits, x, mu, logvar, likelihood="bernoulli", std=1.0):
        if likelihood != "gaussian":
            return vae_loss(logits, x, mu, logvar, likelihood, std)
        c = floor["c"]
        nll = torch.where(x <= c + 1e-6, -torch.special.log_ndtr((c - logits) / std), 0.5 * ((logits - x) / std) ** 2)
        recon, kl = nll.mean(), vae_loss(logits, x, mu, logvar, likelihood, std)[2]  # the toolkit's KL term
        return recon + kl, recon, kl

    FeatureSpace.to_input = noisy_input
    if censored:
        FeatureSpace.to_memory = to_memory_floor
        replay_models.vae_loss = censored_loss


@torch.no_grad()
def report(bench, method) -> None:
    net, space, mem, sc = method.net, method.space, method.memory, method.scenario
    net.eval()
    g = torch.Generator().manual_seed(0)
    print("task | real acc | real in-task | replayed in-task | zeros real / replayed | real predictions per class")
    for j in range(bench.n_tasks - 1):
        task = bench.tasks[j]
        x, y = task.batch("test")
        lo, k = sc.offsets[j], task.n_classes
        pred = net(x).argmax(1)
        m, ids = mem.sample_tasks([j], 1000, generator=g)
        xr = space.to_input(m, ids)
        pred_r = space.classify(net, xr).argmax(1)
        f = net.features(x, space.layer)
        inside = lambda p: 100 * ((p >= lo) & (p < lo + k)).float().mean().item()  # noqa: E731
        print(f"{j} | {100 * (pred == y + lo).float().mean().item():.2f} | {inside(pred):.2f} | {inside(pred_r):.2f} | "
              f"{(f == 0).float().mean().item():.2f} / {(xr == 0).float().mean().item():.2f} | "
              f"{torch.bincount(pred, minlength=sc.n_seen_classes(bench.n_tasks)).tolist()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample-noise", type=float, default=0.0)
    ap.add_argument("--censored", action="store_true")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    patch(a.sample_noise, a.censored)
    cfg = _compose(" ".join(a.overrides), threads=1)  # no tracking, no checkpoints, no progress bar
    c = cc.validate(cfg)
    method = build_method(method_config(cfg))
    if c["method"].get("memory", {}).get("space") != "features":
        raise SystemExit("this check needs a latent replay run (memory.space=features), e.g. experiment=splitmnist_hnet_lr")
    with tempfile.TemporaryDirectory() as tmp:  # the run's own construction (threads, data, scenario, trainer)
        trainer = _build(c, RunDir(tmp), method, torch.device("cpu"))
        trainer.fit()
    report(trainer.benchmark, method)


if __name__ == "__main__":
    main()
