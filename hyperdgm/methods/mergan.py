"""MeRGAN (Wu et al., "Memory Replay GANs: learning to generate images from new categories without
forgetting", NeurIPS 2018): a class-conditional WGAN-GP with an AC-GAN head whose generator keeps
old classes by replay alignment (MeRGAN-RA, ``memory.protection=alignment``) or by joint training
with replay (MeRGAN-JTR, ``memory.protection=replay``).

It is :class:`~.dgm.DGM` with the memory configured as MeRGAN's (``conf/method/mergan.yaml``) and
two evaluations, both logged per task:

* the toolkit's ``a_n`` (and the accuracy matrix): a classifier trained on the current real data
  plus replayed samples of the earlier classes, tested on real test data. MeRGAN's auxiliary head
  is trained on current data only (part of the GAN's loss), so the classifier is a separate one
  (``classifier: separate``).
* MeRGAN's own ``a_n_mergan``: a classifier trained once on real training data of *every* class
  of the benchmark (the official MNIST evaluator: an MLP with hidden layers 1024-512-256-128; a conv net for RGB)
  scores ``n_per_class`` (6400: 100 batches of 64) generated samples per class seen; the score is
  the fraction classified as the conditioning class, averaged over the classes seen
  (``a_n_mergan/class_k`` per class). It measures the generator, not a continual classifier. The
  evaluator is cached under ``evaluator.cache_dir`` (default: the run dir), keyed by the benchmark
  and the evaluator's settings, so a resumed run scores with the same one.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..memory.models import ACDiscriminator
from .dgm import DGM

log = logging.getLogger(__name__)

__all__ = ["MeRGAN", "generated_sample_accuracy", "EVALUATOR_DEFAULTS", "build_evaluator"]

#: MeRGAN's evaluator (pretrain/mnist_test.py: an MLP 1024 -> 1024-512-256-128 -> 10 on 32x32 images, its checkpoint
#: at step 10,197 of batch 64; SVHN: a conv net)
EVALUATOR_DEFAULTS: dict[str, Any] = {
    "arch": "auto",       # auto: mlp for 1-channel images, conv for RGB | mlp | conv
    "hidden": [1024, 512, 256, 128],
    "channels": 64,       # conv: base width of the critic-style conv trunk (batch norm)
    "epochs": 12,
    "lr": 0.001,
    "batch_size": 64,
    "seed": 0,
    "n_per_class": 6400,  # generated samples scored per class (official: 64 x 100)
    "cache_dir": None,    # null: the run dir
}


def generated_sample_accuracy(classify: Callable[[Tensor], Tensor], sample: Callable[[int, int], Tensor],
                              classes: Sequence[int], n_per_class: int,
                              batch_size: int = 1000) -> tuple[float, dict[int, float]]:
    """MeRGAN's score: per class ``k``, the % of ``n_per_class`` samples ``sample(k, n)`` that ``classify``
    (logits over all classes) assigns to ``k``; returns the mean over ``classes`` and the per-class values."""
    per: dict[int, float] = {}
    for k in classes:
        hits, left = 0, int(n_per_class)
        while left > 0:
            n = min(left, int(batch_size))
            hits += int((classify(sample(int(k), n)).argmax(1) == int(k)).sum())
            left -= n
        per[int(k)] = 100.0 * hits / int(n_per_class)
    return sum(per.values()) / len(per), per


class _MLP(nn.Module):
    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int) -> None:
        super().__init__()
        dims, layers = [n_in, *[int(h) for h in hidden]], [nn.Flatten()]
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2.0 - 1.0)  # MeRGAN feeds its classifier images in [-1, 1]


class _Conv(nn.Module):
    def __init__(self, shape: Sequence[int], n_out: int, channels: int) -> None:
        super().__init__()
        self.net = ACDiscriminator(shape, n_out, channels, "batch")

    def forward(self, x: Tensor) -> Tensor:
        return self.net.aux(self.net.features(x))


def build_evaluator(cfg: dict[str, Any], shape: Sequence[int], n_classes: int) -> nn.Module:
    """The evaluator classifier (images in ``[0, 1]`` -> logits over ``n_classes``)."""
    arch = cfg["arch"] if cfg["arch"] != "auto" else ("mlp" if int(shape[0]) == 1 else "conv")
    if arch == "mlp":
        n_in = 1
        for s in shape:
            n_in *= int(s)
        return _MLP(n_in, cfg["hidden"], n_classes)
    if arch == "conv":
        return _Conv(shape, n_classes, int(cfg["channels"]))
    raise ValueError(f"method.evaluator.arch must be auto, mlp or conv, got {cfg['arch']!r}")


class MeRGAN(DGM):
    """DGM's AC-GAN machinery as MeRGAN (protection from config: alignment = RA, replay = JTR) with
    MeRGAN's generated-sample evaluation."""

    name = "mergan"

    def setup(self, benchmark, scenario, device, rng) -> None:
        ev = dict(self.cfg.get("evaluator") or {})
        unknown = set(ev) - set(EVALUATOR_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown method.evaluator keys {sorted(unknown)} (known: {sorted(EVALUATOR_DEFAULTS)})")
        self.ecfg = {**EVALUATOR_DEFAULTS, **ev}
        if int(self.ecfg["n_per_class"]) < 1 or int(self.ecfg["epochs"]) < 0:
            raise ValueError("method.evaluator.n_per_class must be >= 1 and method.evaluator.epochs >= 0")
        cond = (self.cfg.get("memory") or {}).get("condition", "class")
        if cond != "class":
            raise ValueError(f"method mergan scores samples by the class they are conditioned on: memory.condition must "
                             f"be class, got {cond!r}")
        super().setup(benchmark, scenario, device, rng)
        self.a_n_mergan: list[float] = []

    # -- the evaluator -------------------------------------------------------------------
    def _cache_key(self) -> str:
        b = self.benchmark
        ident = {"benchmark": b.name, "seed": b.seed, "classes": [list(t.classes) for t in b.tasks],
                 "train": [len(t.train) for t in b.tasks], "shape": list(b.tasks[0].input_shape),
                 "evaluator": {k: v for k, v in self.ecfg.items() if k not in ("cache_dir", "n_per_class")}}
        return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def _cache_path(self) -> Path | None:
        root = self.ecfg["cache_dir"] or getattr(self, "run_dir", None)
        return None if root is None else Path(root) / f"mergan_evaluator_{self._cache_key()}.pt"

    def _real(self, split: str) -> tuple[Tensor, Tensor]:
        """Every task's ``split`` as uint8 images in ``[0, 255]`` (the unit pixel space) and global labels."""
        xs, ys = [], []
        for task in self.benchmark.tasks:
            x, y = task.batch(split)
            xs.append((self.pixels.to_unit(x) * 255.0).round().to(torch.uint8))
            ys.append(self.scenario.target(y, task.id))
        return torch.cat(xs), torch.cat(ys)

    def evaluator(self) -> nn.Module:
        """The evaluator, trained on real data of every class once and cached (``evaluator.cache_dir`` or the run dir)."""
        ev = self.__dict__.get("_evaluator")
        if ev is not None:
            return ev
        shape, n_cls = tuple(self.benchmark.tasks[0].input_shape), self.scenario.n_outputs()
        ev = build_evaluator(self.ecfg, shape, n_cls).to(self.device)
        path = self._cache_path()
        if path is not None and path.is_file():
            state = torch.load(path, map_location=self.device, weights_only=True)
            ev.load_state_dict(state["weights"])
            self.evaluator_test_acc = float(state["test_acc"])
            log.info("mergan evaluator from %s (real test accuracy %.2f%%)", path, self.evaluator_test_acc)
        else:
            self._train_evaluator(ev)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                torch.save({"weights": ev.state_dict(), "test_acc": self.evaluator_test_acc}, tmp)
                tmp.replace(path)
        ev.eval()
        ev.requires_grad_(False)
        self.__dict__["_evaluator"] = ev  # not a submodule: it is no part of the learner or its checkpoints
        return ev

    def _train_evaluator(self, ev: nn.Module) -> None:
        c = self.ecfg
        x, y = self._real("train")
        g = torch.Generator().manual_seed(int(c["seed"]))
        with torch.random.fork_rng(devices=[]), torch.enable_grad():  # the learner's random streams stay untouched
            torch.manual_seed(int(c["seed"]))
            ev.apply(lambda m: m.reset_parameters() if isinstance(m, (nn.Linear, nn.Conv2d)) else None)
            opt = torch.optim.Adam(ev.parameters(), lr=float(c["lr"]))
            ev.train()
            bs = int(c["batch_size"])
            for _ in range(int(c["epochs"])):
                perm = torch.randperm(x.shape[0], generator=g).to(x.device)
                for s in range(0, x.shape[0], bs):
                    idx = perm[s:s + bs]
                    loss = F.cross_entropy(ev(x[idx].float() / 255.0), y[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        ev.eval()
        xt, yt = self._real("test")
        with torch.no_grad():
            pred = torch.cat([ev(xt[s:s + 1000].float() / 255.0).argmax(1) for s in range(0, xt.shape[0], 1000)])
        self.evaluator_test_acc = 100.0 * float((pred == yt).float().mean())
        log.info("mergan evaluator trained on real data of every class: real test accuracy %.2f%%",
                 self.evaluator_test_acc)

    def _paper_eval(self, task_id: int) -> None:
        if int(self.dcfg["paper_eval_every"]) > 0:  # DGM's model selection on real data: off unless asked for
            super()._paper_eval(task_id)

    # -- MeRGAN's evaluation -------------------------------------------------------------
    @torch.no_grad()
    def mergan_accuracy(self, upto: int) -> tuple[float, dict[int, float]]:
        """``a_n_mergan`` after task ``upto``: the evaluator's accuracy on generated samples of every class seen."""
        ev, mem = self.evaluator(), self.memory
        offsets = self.benchmark.class_offsets
        task_of = {offsets[t] + k: t for t in range(upto + 1) for k in range(self.benchmark.tasks[t].n_classes)}
        g = torch.Generator(device=self.device).manual_seed(int(self.ecfg["seed"]) + 1000 + upto)

        def sample(k: int, n: int) -> Tensor:
            z = torch.randn(n, mem.latent_dim, device=self.device, generator=g)
            cond = torch.full((n,), k, dtype=torch.long, device=self.device)
            return mem.generate([(task_of[k], n)], z=z, cond=cond)

        was = self.training
        self.eval()
        try:
            return generated_sample_accuracy(ev, sample, sorted(task_of), int(self.ecfg["n_per_class"]))
        finally:
            self.train(was)

    def log_artifacts(self, tracker: Any, task: Any) -> None:
        acc, per = self.mergan_accuracy(task.id)
        self.a_n_mergan = self.a_n_mergan[: task.id] + [acc]
        row = {"a_n_mergan": acc, "mergan/evaluator_test_acc": self.evaluator_test_acc}
        row.update({f"a_n_mergan/class_{k}": v for k, v in per.items()})
        tracker.log_metrics(row, step=task.id)
        log.info("mergan after task %d: a_n_mergan %.2f (generated samples classified as their class; evaluator "
                 "%.2f%% on real test data)", task.id + 1, acc, self.evaluator_test_acc)
        super().log_artifacts(tracker, task)

    def checkpoint_state(self) -> dict[str, Any]:
        return {**super().checkpoint_state(), "a_n_mergan": list(self.a_n_mergan)}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        super().load_checkpoint_state(state)
        self.a_n_mergan = [float(v) for v in state.get("a_n_mergan", [])]
