"""DGM (Ostapenko et al., "Learning to Remember: A Synaptic Plasticity Driven Framework for Continual
Learning", CVPR 2019): an AC-GAN whose generator keeps every class it learned, and whose
discriminator's auxiliary head is the classifier.

Per training step: one step of the auxiliary classifier on the real current batch plus generated
samples of every past class (class-balanced: the current batch weighs ``1/(t+1)``, the replay
``t/(t+1)``, one step instead of the official code's ``t+1`` separate ones), then the memory's
step (WGAN-GP critic, generator under its protection). The generator's protection is a config
choice: ``dgm_w`` / ``dgm_a`` (DGMw / DGMa: learned binary masks with dynamic expansion, the
paper), ``hnet`` (weights generated per task, output regularizer), ``replay`` (self-replay),
``none``. Nothing here knows which.

Two protocols, both logged: the headline (the trainer's accuracy matrix and ``a_n``: the model at
the end of each task, no selection) and ``a_n_paper``: the official code's, the test accuracy at
the evaluation point (every ``paper_eval_every`` epochs and at the task's end) whose accuracy on a
validation split of *real images of every seen class* is best. It peeks at real past data; it needs
``benchmark.val_size > 0``.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Method, count
from .replay import PixelSpace, build_memory, log_replay_grid

log = logging.getLogger(__name__)

DGM_DEFAULTS = dict(
    n_replay=64,          # generated samples of past classes per classifier step, split evenly over them
    paper_eval_every=2,   # epochs between the a_n_paper evaluations (official: 2 for DGMw, 5 for DGMa)
    eval_batch_size=1000,
)


class DGM(Method):
    """AC-GAN generative memory whose auxiliary head classifies; the generator's protection from config."""

    name = "dgm"
    scenarios = frozenset({"cil", "cl3"})

    def setup(self, benchmark, scenario, device, rng) -> None:
        super().setup(benchmark, scenario, device, rng)
        self.dcfg = {**DGM_DEFAULTS, **{k: v for k, v in self.cfg.items() if k in DGM_DEFAULTS}}
        mcfg = dict(self.cfg.get("memory") or {})
        mcfg.setdefault("model", "acgan")
        mcfg.setdefault("condition", "class")
        if mcfg["model"] != "acgan":
            raise ValueError(f"method dgm classifies with the AC-GAN's auxiliary head: memory.model must be acgan, "
                             f"got {mcfg['model']!r}")
        self.memory = build_memory(mcfg, benchmark, device)
        self.pixels = PixelSpace(benchmark.tasks[0], device)
        self.a_n_paper: list[float] = []
        self._warned_val = False

    # -- lifecycle -----------------------------------------------------------------------
    def begin_task(self, task) -> None:
        super().begin_task(task)
        iters = int(getattr(self, "task_iters", 1))
        bs = int(getattr(self, "batch_size", 64))
        self.ipe = max(1, math.ceil(len(task.train) / bs))  # iterations per epoch of the current class
        self.memory.begin_task(task.id, schedule=(iters, self.ipe))
        self.it = 0
        self._best: tuple[float, float] | None = None  # (val, test) at the best validation point

    def end_task(self, task) -> None:
        if self._best is not None:
            self.a_n_paper.append(self._best[1])
        self.memory.end_task(task.id, task)

    # -- training ------------------------------------------------------------------------
    def step(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        sc, mem = self.scenario, self.memory
        labels = sc.target(y, task_id)
        xu = self.pixels.to_unit(x)
        n_cls = sc.n_seen_classes(task_id + 1)
        if task_id > 0:  # class-balanced: real current batch 1/(t+1), generated past classes t/(t+1)
            per = max(1, math.ceil(int(self.dcfg["n_replay"]) / task_id))
            xr, _, cr = mem.replay_batch(list(range(task_id)), per, generator=self.rng)
            t1 = float(task_id + 1)
            w = torch.cat([torch.full((xu.shape[0],), 1.0 / (t1 * xu.shape[0]), device=xu.device),
                           torch.full((xr.shape[0],), task_id / (t1 * xr.shape[0]), device=xu.device)])
            cls = mem.model.classifier_step(torch.cat([xu, xr]), torch.cat([labels, cr]), n_cls, w)
        else:
            cls = mem.model.classifier_step(xu, labels, n_cls)
        out = {"loss_classifier": cls}
        for k, v in mem.step(xu, task_id, cond=labels).items():
            out[f"memory/{k}"] = v
        self.it += 1
        every = int(self.dcfg["paper_eval_every"]) * self.ipe
        if (every > 0 and self.it % every == 0) or self.it == int(getattr(self, "task_iters", -1)):
            self._paper_eval(task_id)
        return out

    # -- the official protocol (model selection on real validation data of every seen class) --
    @torch.no_grad()
    def _class_mean_acc(self, split: str, upto: int) -> float:
        """Mean over seen tasks of the accuracy on ``split`` (the official code averages per class)."""
        accs, bs = [], int(self.dcfg["eval_batch_size"])
        for task in self.benchmark.tasks[: upto + 1]:
            data = task.split(split)
            n, correct = len(data), torch.zeros((), device=self.device)
            for s in range(0, n, bs):
                idx = torch.arange(s, min(n, s + bs), device=self.device)
                x, y = task.batch(split, idx)
                correct += (self.predict(x).argmax(1) == self.scenario.target(y, task.id)).sum()
            accs.append(100.0 * correct.item() / max(n, 1))
        return sum(accs) / len(accs)

    def _paper_eval(self, task_id: int) -> None:
        if self.benchmark.tasks[0].val is None:
            if not self._warned_val:
                log.warning("a_n_paper needs a validation split (benchmark.val_size > 0): not computed")
                self._warned_val = True
            return
        was = self.training
        self.eval()
        val, test = self._class_mean_acc("val", task_id), self._class_mean_acc("test", task_id)
        self.train(was)
        if self._best is None or val > self._best[0]:
            self._best = (val, test)

    # -- prediction ----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: Tensor, task_id: int | None = None) -> Tensor:
        n = self.scenario.n_seen_classes(self.n_seen)
        return self.memory.model.classify(self.pixels.to_unit(x), n)

    # -- bookkeeping ---------------------------------------------------------------------
    def param_counts(self) -> dict[str, float]:
        m = self.memory.param_counts()
        out = {f"memory_{k}": v for k, v in m.items()}
        out["classifier"] = float(count(self.memory.model.discriminator.parameters()))
        out["trainable"] = m["trainable"]
        out["target"] = m["generator_target"]
        out["compression_ratio"] = m["compression_ratio"]
        out["stored_mask_bits"] = m["generator_stored"] if self.memory.protection.name.startswith("dgm") else 0.0
        widths = self.memory.body.widths
        for i, w in enumerate(widths):
            out[f"generator_width_{i}"] = float(w)
        return out

    def log_artifacts(self, tracker: Any, task: Any) -> None:
        row = dict(self.memory.protection.stats())
        if len(self.a_n_paper) > task.id:
            row["a_n_paper"] = self.a_n_paper[task.id]
        for i, w in enumerate(self.memory.body.widths):
            row[f"generator/width_{i}"] = float(w)
        row["generator/params"] = self.memory.param_counts()["generator_target"]
        if row:
            tracker.log_metrics(row, step=task.id)
        log.info("dgm after task %d: %s", task.id + 1, {k: round(v, 4) for k, v in row.items()})
        log_replay_grid(self.memory, tracker, task)
        log_growth_plot(self.memory, tracker, task)

    def checkpoint_state(self) -> dict[str, Any]:
        return {"n_seen": self.n_seen, "memory": self.memory.checkpoint_state(), "a_n_paper": list(self.a_n_paper)}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.n_seen = int(state["n_seen"])
        self.memory.load_checkpoint_state(state["memory"])
        self.a_n_paper = [float(v) for v in state["a_n_paper"]]


def growth_table(memory: Any) -> list[dict[str, float]]:
    """Generator size per finished task against the linear worst case (a fresh net per task)."""
    hist = getattr(memory.protection, "history", [])
    tw = memory.body.task_widths
    first = tw.get(0, memory.body.widths)
    rows = []
    for i, h in enumerate(hist):
        widths = tw.get(int(h["task"]) + 1, memory.body.widths)  # what the next task starts with
        rows.append({"task": float(h["task"]), "width_sum": float(sum(widths)),
                     "linear_width_sum": float(sum(first) * (i + 2)), "reserved": float(h["reserved"]),
                     "free": float(h["free"])})
    return rows


def log_growth_plot(memory: Any, tracker: Any, task: Any) -> None:
    """MLflow artifact: hidden units of the generator after each task against the linear worst case."""
    rows = growth_table(memory)
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["task"] + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(t, [r["width_sum"] for r in rows], "o-", label="generator (hidden units)")
    ax.plot(t, [r["linear_width_sum"] for r in rows], "--", label="a new generator per task")
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("hidden units")
    ax.legend()
    ax.set_title("DGM dynamic expansion")
    fig.tight_layout()
    tracker.log_figure(fig, f"growth/after_task_{task.id:02d}.png")
    plt.close(fig)
