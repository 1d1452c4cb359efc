"""Replay methods: one plain classifier trained on current data mixed with replayed past data.

* ``hnet_r``    HNET+R (von Oswald et al., 2020): replay from a generative memory whose decoder
  weights come from a task-conditioned hypernetwork (protected by the output regularizer);
  soft targets from the classifier as it was before the task (distillation, T=2); the current
  and the replay loss weigh 0.5 each (``l_rew`` of the reference code).
* ``hnet_lr``   latent HNET+R: the same memory on the classifier's features after layer ``k``
  (``memory.space=features``), replayed features enter the classifier after layer ``k``.
* ``dgr``       DGR+distill as the three-scenarios code (Shin et al., 2017; van de Ven & Tolias, 2019)
  and the papers' tables run it: an *unconditional* VAE (``memory.conditional: false``) keeps old
  tasks by replaying its own samples (protection ``replay``); the classifier before the task labels
  the replayed samples, in CL1 on every previous task's head (``replay.cl1_heads: previous``);
  current loss weighs 1/t, replay (t-1)/t.
* ``dgr_conditional`` the same with a task-conditioned VAE, each replayed sample distilled on its
  own task's head (``cl1_heads: own``).
* ``replay_ub`` RPL-UB: replays stored *real* data of past tasks with self-generated targets; the
  upper bound of replay methods.

The memory's replay space (:mod:`hyperdgm.memory.spaces`) is ``memory.space``: ``pixels`` (the
memory works in ``[0, 1]``; inputs normalised otherwise, CIFAR and SVHN, are mapped to it and back)
or ``features`` with ``memory.layer=k``: the memory models the classifier's features after layer
``k`` and replayed features enter the classifier there (latent replay, ``hnet_lr``).
``memory.drift`` says what keeps old latent memories valid while the extractor learns on:
``none``, ``freeze`` (layers ``1..k`` frozen after the first task, as brain-inspired replay's
pre-trained convolutional layers) or ``align`` (``memory.align_weight`` x the squared distance
between the feature vectors of the current inputs under the classifier and under the classifier
before the task).
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..memory import GenerativeMemory
from ..memory.protection import GivenReplay
from ..memory.models import Encoder
from ..memory.spaces import (DRIFTS, ENCODERS, FEATURE_NORMS, SPACES, ClassifierTrunk, FeatureSpace, PixelSpace,
                             ReplaySpace)
from ..profiling import region
from .base import ClassifierMethod

log = logging.getLogger(__name__)

REPLAY_DEFAULTS = dict(
    n_replay=128,            # replayed samples per step, split evenly over past tasks
    replay_weight="fixed",   # fixed: (1 - w_fixed) * current + w_fixed * replay; inverse_t: 1/t and (t-1)/t
    w_fixed=0.5,
    targets="soft",          # soft (distillation) | hard (argmax of the old classifier)
    temperature=2.0,
    new_class_target="logit0",  # CL3 replay targets for the new task's classes: logit0 (hypercl) | prob0 (DGR)
    cl1_heads="own",         # CL1: a replayed sample is scored on its own task's head | previous: on every previous head
)

#: The memory keys that say where the memory sits (read by the method, not by the memory itself).
SPACE_DEFAULTS: dict[str, Any] = dict(space="pixels", layer=None, drift="none", align_weight=1.0, encoder="own",
                                      feature_norm="none")


def space_config(cfg: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a ``memory`` config into the replay-space keys (checked, with defaults) and the memory's own."""
    mcfg = dict(cfg or {})
    sc = {k: mcfg.pop(k, v) for k, v in SPACE_DEFAULTS.items()}
    if sc["space"] not in SPACES:
        raise ValueError(f"memory.space must be one of {', '.join(SPACES)}, got {sc['space']!r}")
    if sc["drift"] not in DRIFTS:
        raise ValueError(f"memory.drift must be one of {', '.join(DRIFTS)}, got {sc['drift']!r}")
    if sc["encoder"] not in ENCODERS:
        raise ValueError(f"memory.encoder must be one of {', '.join(ENCODERS)}, got {sc['encoder']!r}")
    if sc["feature_norm"] not in FEATURE_NORMS:
        raise ValueError(f"memory.feature_norm must be one of {', '.join(FEATURE_NORMS)}, got {sc['feature_norm']!r}")
    if sc["space"] == "pixels" and (sc["layer"] is not None or sc["drift"] != "none" or sc["encoder"] != "own"
                                    or sc["feature_norm"] != "none"):
        raise ValueError("memory.layer, memory.drift, memory.encoder and memory.feature_norm apply to "
                         "memory.space=features (pixel replay has none of them)")
    if sc["feature_norm"] != "none" and sc["encoder"] == "classifier":
        raise ValueError("memory.feature_norm=standardize needs memory.encoder=own: the classifier's layers (the "
                         "encoder of memory.encoder=classifier) read the features as they are, not standardised")
    if sc["space"] == "features" and sc["layer"] is None:
        raise ValueError("memory.space=features needs memory.layer=k (the classifier layer whose output is replayed)")
    w = sc["align_weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
        raise ValueError(f"memory.align_weight must be a number >= 0, got {w!r}")
    return sc, mcfg


def distillation(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Knowledge distillation: ``T^2 * CE(softmax(teacher / T), softmax(student / T))``, batch mean."""
    p = torch.softmax(teacher / temperature, dim=1)
    return -(p * torch.log_softmax(student / temperature, dim=1)).sum(1).mean() * temperature**2


def distillation_probs(student: Tensor, probs: Tensor, temperature: float) -> Tensor:
    """Distillation towards given (already tempered) probabilities, e.g. zero-padded for new classes."""
    return -(probs * torch.log_softmax(student / temperature, dim=1)).sum(1).mean() * temperature**2


def build_memory(cfg: Mapping[str, Any] | None, benchmark: Any, device: torch.device,
                 space: ReplaySpace | None = None) -> GenerativeMemory:
    """The generative memory of a method's ``memory`` config; ``arch: auto`` picks conv for RGB inputs.

    ``conditional: false`` builds an unconditional memory: every sample of every task carries the one
    condition 0 (a constant one-unit input, i.e. a bias), so the generator is told nothing of the task.
    ``space``: the replay space the memory models (default: pixels); a method without a classifier
    split passes none, and a ``memory.space=features`` config is refused.
    """
    sc, mcfg = space_config(cfg)
    if space is None and sc["space"] != "pixels":
        raise ValueError("memory.space=features needs a classifier split into features and head; this method "
                         "replays pixels only (latent replay: hnet_lr, hnet_r, dgr, dgr_conditional)")
    conditional = mcfg.pop("conditional", True)
    if not isinstance(conditional, bool):
        raise ValueError(f"memory.conditional must be true or false, got {conditional!r}")
    shape = tuple(benchmark.tasks[0].input_shape) if space is None else tuple(space.shape)
    if space is not None and space.likelihood != "bernoulli":
        if mcfg.get("arch") not in (None, "auto", "mlp"):
            raise ValueError(f"memory.space={space.name} replays feature vectors: memory.arch must be mlp (or auto), "
                             f"got {mcfg.get('arch')!r}")
        mcfg["arch"] = "mlp"
        if mcfg.setdefault("likelihood", space.likelihood) != space.likelihood:
            raise ValueError(f"memory.space={space.name} needs memory.likelihood={space.likelihood} (features are not "
                             f"images in [0, 1]), got {mcfg['likelihood']!r}")
    if mcfg.get("arch") in (None, "auto"):
        mcfg["arch"] = "conv" if shape[0] == 3 else "mlp"
    classes = [[off + k for k in range(t.n_classes)] for off, t in zip(benchmark.class_offsets, benchmark.tasks)]
    if not conditional:
        if mcfg.get("condition", "task") != "task":
            raise ValueError("memory.conditional=false: leave memory.condition unset (there is no condition)")
        mcfg.update(condition="class", cond_dim=1)  # one class for every task: the condition is constant
        classes = [[0] for _ in benchmark.tasks]
    mem = GenerativeMemory(mcfg, shape, benchmark.n_tasks, task_classes=classes).to(device)
    mem.conditional = conditional
    mem.space = space  # what it models (None: pixels); protections that read the task's data map it with it
    return mem


def replay_from_memory(memory: GenerativeMemory, space: ReplaySpace, task_id: int, n_replay: int,
                       rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n_replay`` replayed inputs (as the classifier reads them at the space's entry point), split
    evenly over tasks ``0..task_id-1``, and their task ids."""
    x, ids, _ = draw_from_memory(memory, space, list(range(task_id)), math.ceil(int(n_replay) / task_id), rng)
    return x, ids


def draw_from_memory(memory: GenerativeMemory, space: ReplaySpace, tasks: list[int], per: int,
                     rng: torch.Generator) -> tuple[Tensor, Tensor, GivenReplay]:
    """``per`` replayed inputs of each of ``tasks`` at the space's entry point, their task ids, and the same draw
    as the memory holds it (its samples, conditions, blocks: what a self-replaying memory can train on)."""
    m, ids, cond = memory.replay_batch(tasks, per, generator=rng)
    return space.to_input(m, ids), ids, (m, cond, [(t, per) for t in tasks])


def begin_memory_task(memory: GenerativeMemory, task: Any, n_tasks: int, schedule: tuple[int, int]) -> bool:
    """The memory's part of a replaying learner's ``begin_task``; returns whether the memory trains on ``task``.

    It trains on every task but the last (nothing replays the last). On the last it holds the past tasks'
    weights, so that no replay step generates them.
    """
    train = task.id < n_tasks - 1
    if train:
        memory.begin_task(task.id, schedule=schedule)
    else:
        memory.hold(task.id)
    return train


def train_memory_step(memory: GenerativeMemory, space: ReplaySpace, x: Tensor, task_id: int,
                      out: dict[str, Tensor], cond: Tensor | None = None, replay: GivenReplay | None = None) -> None:
    """One step of the memory on current data (``cond``: the memory's conditions, default the task's; ``replay``:
    the learner's replayed draw, see :meth:`GenerativeMemory.step`); its losses go into ``out`` under ``memory/``."""
    with region("memory"):
        for k, v in memory.step(space.to_memory(x, learn=True), task_id, cond, replay=replay).items():
            out[f"memory/{k}"] = v


def log_replay_grid(memory: GenerativeMemory, tracker: Any, task: Any) -> None:
    """Log a grid of replayed samples as the stepped image ``replay`` (step = task; one row per task
    learned so far, fixed noise across tasks, so the UI's step slider shows each task's drift)."""
    if memory.n_begun == 0:
        return
    grid = memory.sample_grid(list(range(memory.n_begun)), n_per_task=10).cpu().clamp(0, 1)
    img = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    scale = max(1, 320 // img.shape[1])  # small digits: enlarge (nearest) so the UI's thumbnail shows them
    img = img.repeat(scale, 0).repeat(scale, 1)
    tracker.log_image(img if img.shape[2] == 3 else img[..., 0], "replay", task.id)


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


def log_memory(memory: GenerativeMemory, tracker: Any, task: Any, *, grid: bool = True,
               extra: Mapping[str, float] | None = None) -> None:
    """What a memory shows after a task, whichever method owns it: the replay grid (``grid``); the statistics
    of a protection that keeps them per task (DGMw / DGMa: reserved / reused / free capacity, sparsity), when
    it ended this task, with the growth plot; and with those or ``extra`` metrics, the generator's widths and
    size (step = task). A memory not trained on a task (a replay method's last) logs no statistics for it."""
    hist = getattr(memory.protection, "history", [])
    ended = bool(hist) and int(hist[-1]["task"]) == task.id
    row = {**(memory.protection.stats() if ended else {}), **(extra or {})}
    if row:
        row.update({f"generator/width_{i}": float(w) for i, w in enumerate(memory.body.widths)})
        row["generator/params"] = memory.param_counts()["generator_target"]
        tracker.log_metrics(row, step=task.id)
        log.info("memory after task %d: %s", task.id + 1, {k: round(v, 4) for k, v in row.items()})
    if grid:
        log_replay_grid(memory, tracker, task)
    if ended:
        log_growth_plot(memory, tracker, task)


class ReplayClassifier(ClassifierMethod):
    """Base of ``hnet_r`` / ``dgr`` / ``replay_ub``: subclasses say where replayed inputs come from."""

    scenarios = frozenset({"cl1", "cl2", "cl3", "cil"})
    uses_memory = True
    method_defaults: dict[str, Any] = {}
    memory_defaults: dict[str, Any] = {}  # under the method's memory config (e.g. hnet_lr's space)
    space: ReplaySpace = ReplaySpace()    # until setup: the plain input (set up, pixels or features)

    def setup(self, benchmark, scenario, device, rng) -> None:
        super().setup(benchmark, scenario, device, rng)
        self.rcfg = {**REPLAY_DEFAULTS, **self.method_defaults, **dict(self.cfg.get("replay") or {})}
        mcfg = {**self.memory_defaults, **dict(self.cfg.get("memory") or {})}
        self.scfg, _ = space_config(mcfg)
        self.pixels = PixelSpace(benchmark.tasks[0], device)
        self.space: ReplaySpace = self.pixels
        self.layer = 0
        self.drift = str(self.scfg["drift"])
        self.frozen = False
        if self.scfg["space"] == "features":
            if not self.uses_memory and (self.scfg["feature_norm"] != "none" or self.scfg["encoder"] != "own"):
                raise ValueError(f"method {self.name} replays stored data: memory.feature_norm and memory.encoder "
                                 "belong to a generative memory")
            net = self.cfg.get("net") or {}
            self.layer = self.scfg["layer"]
            self.space = FeatureSpace(self.net, self.layer, net.get("act", "relu"), norm=self.scfg["feature_norm"])
        self.teacher = None
        if self.rcfg["cl1_heads"] not in ("own", "previous"):
            raise ValueError(f"method.replay.cl1_heads must be own or previous, got {self.rcfg['cl1_heads']!r}")
        if (scenario.one_class_first_task and not (scenario.task_id_given or scenario.shared_head)
                and self.rcfg["targets"] == "soft" and self.rcfg["new_class_target"] == "logit0"):
            # the first task trains nothing (one class), so the second task's teacher is the untrained classifier
            log.warning("method.replay.new_class_target=logit0 after a first task of one class: the classifier "
                        "that labels its replays was never trained, so their targets are arbitrary "
                        "(new_class_target=prob0 gives the old class probability 1)")
        self.conditional = True
        if self.uses_memory:
            self.memory = build_memory(mcfg, benchmark, device, space=self.space)
            self.conditional = self.memory.conditional
            if not self.conditional and self.scfg["feature_norm"] != "none":
                raise ValueError("memory.feature_norm=standardize maps each task's replays back with that task's "
                                 "moments: it needs a conditional memory (memory.conditional=true)")
            if not self.conditional and scenario.task_id_given and self.rcfg["cl1_heads"] == "own":
                raise ValueError("an unconditional memory's samples have no task: CL1 needs method.replay.cl1_heads=previous")
        self.feedback = self.scfg["encoder"] == "classifier"
        if self.feedback:
            self.share_encoder()

    def share_encoder(self) -> None:
        """``memory.encoder=classifier`` (BI-R-like): the VAE's encoder is the classifier's layers above ``k``
        plus the memory's own linear map to ``(mu, logvar)``; the generator is the feedback path."""
        model = self.memory.model
        if getattr(model, "encoder", None) is None:
            raise ValueError("memory.encoder=classifier needs memory.model=vae")
        model.encoder = Encoder(ClassifierTrunk(self.net, self.layer), self.memory.latent_dim).to(self.device)

    # -- lifecycle -----------------------------------------------------------------------
    def begin_task(self, task) -> None:
        super().begin_task(task)
        t = task.id
        # the classifier as it was before this task gives the replay targets
        self.teacher = copy.deepcopy(self.net).eval().requires_grad_(False) if t > 0 else None
        self.train_memory = self.uses_memory and begin_memory_task(self.memory, task, self.benchmark.n_tasks,
                                                                   self.task_schedule(task))
        self.check_logit0_targets(t)

    def check_logit0_targets(self, task_id: int) -> float | None:
        """hypercl's logit-0 targets (CL3, soft): the mean share of a replay batch's target distribution that the new
        classes' padded 0 logits take, warned above one half; ``None`` where those targets are not in use.

        A cross-entropy over the classes seen so far does not fix the level of their logits, and the level drifts:
        a split MNIST ``hnet_r`` run in bf16 reached old-class logits of about -100 after task 2, so the padded
        zeros took 86% of the targets, the replays were learned as the new classes and every old task was lost. The
        check draws one batch and puts the run's random stream back as it was."""
        sc = self.scenario
        if (task_id == 0 or sc.task_id_given or sc.shared_head or self.rcfg["targets"] != "soft"
                or self.rcfg["new_class_target"] != "logit0"):
            return None
        state = self.rng.get_state()
        try:
            with torch.no_grad():
                xr, _ = self.replay_inputs(task_id)
                old = self.space.classify(self.teacher, xr)[:, : sc.n_seen_classes(task_id)].float()
        finally:
            self.rng.set_state(state)
        n_new = sc.n_seen_classes(task_id + 1) - old.shape[1]
        probs = torch.softmax(F.pad(old, (0, n_new)) / float(self.rcfg["temperature"]), dim=1)
        share = probs[:, old.shape[1]:].sum(1).mean().item()
        if share > 0.5:
            log.warning("task %d: method.replay.new_class_target=logit0 gives the new classes %.0f%% of the replays' "
                        "targets (the classifier before the task puts its replays' old-class logits under the padded "
                        "0: their mean maximum is %.1f), so the replays will be learned as new classes and the old "
                        "tasks lost; new_class_target=prob0 does not depend on the logits' level", task_id,
                        100 * share, old.max(1).values.mean().item())
        return share

    def end_task(self, task) -> None:
        super().end_task(task)  # the classifier's regularizers, if any
        if self.train_memory:
            self.memory.end_task(task.id, task)
            self.space.end_task(task.id)
        self.teacher = None
        if self.drift == "freeze" and not self.frozen:
            self.freeze_features()

    def freeze_features(self) -> None:
        """``memory.drift=freeze``: layers ``1..k`` keep the weights of the first task from now on (no
        gradient, so no optimizer moves them: Adam skips parameters without one)."""
        for p in self.net.feature_parameters(self.layer):
            p.requires_grad_(False)
            p.grad = None
        self.frozen = True
        log.info("memory.drift=freeze: classifier layers 1..%d frozen", self.layer)
        if self.scenario.one_class_first_task:  # the first task gave these layers no gradient
            log.warning("memory.drift=freeze: the first task has one class, so classifier layers 1..%d were "
                        "frozen untrained (random features)", self.layer)

    # -- replay --------------------------------------------------------------------------
    def replay_inputs(self, task_id: int) -> tuple[Tensor, Tensor]:
        """Replayed inputs (normalised as the data) of tasks ``0..task_id-1`` and their task ids (an
        unconditional memory's samples have none: ids 0)."""
        x, ids, _ = self.draw_replay(task_id)
        return x, ids

    def draw_replay(self, task_id: int) -> tuple[Tensor, Tensor, GivenReplay | None]:
        """:meth:`replay_inputs` and the same draw as the memory holds it (``None`` without a memory)."""
        n = int(self.rcfg["n_replay"])
        if not self.conditional:  # one draw from the shared generator; its samples carry no task
            return draw_from_memory(self.memory, self.space, [0], n, self.rng)
        return draw_from_memory(self.memory, self.space, list(range(task_id)), math.ceil(n / task_id), self.rng)

    def replay_loss(self, x: Tensor, ids: Tensor, task_id: int, student: Tensor | None = None) -> Tensor:
        """Loss of the classifier on replayed inputs (entering at the space's layer) against the old
        classifier's outputs on them (``student``: the classifier's logits on them, when already computed)."""
        sc, T = self.scenario, float(self.rcfg["temperature"])
        student_full = self.space.classify(self.net, x) if student is None else student
        teacher_full = self.space.classify(self.teacher, x)
        if sc.task_id_given and self.rcfg["cl1_heads"] == "previous":
            # CL1, three-scenarios: every replayed sample on every previous task's head, losses averaged
            heads = [(sc.offsets[j], sc.classes_per_task[j]) for j in range(task_id)]
            return sum(self._soft_or_hard(student_full[:, o:o + k], teacher_full[:, o:o + k], T)
                       for o, k in heads) / len(heads)
        if sc.task_id_given:  # CL1: each replayed sample on its own task's head
            k = sc.classes_per_task[0]
            offs = torch.tensor(sc.offsets, device=x.device)[ids]
            cols = offs[:, None] + torch.arange(k, device=x.device)
            student, teacher = student_full.gather(1, cols), teacher_full.gather(1, cols)
        elif sc.shared_head:
            student, teacher = student_full, teacher_full
        else:  # CL3: softmax over every class seen so far, the new task's classes included
            n_old, n_all = sc.n_seen_classes(task_id), sc.n_seen_classes(task_id + 1)
            student, teacher = student_full[:, :n_all], teacher_full[:, :n_old]
            if self.rcfg["targets"] == "hard":
                # argmax over the old classes only: after padding, a new class's 0 would beat all-negative old logits
                return F.cross_entropy(student, teacher.argmax(1))
            if self.rcfg["new_class_target"] == "prob0":
                probs = F.pad(torch.softmax(teacher / T, dim=1), (0, n_all - n_old))
                return distillation_probs(student, probs, T)
            teacher = F.pad(teacher, (0, n_all - n_old))  # logit 0 for the new classes (hypercl)
        return self._soft_or_hard(student, teacher, T)

    def _soft_or_hard(self, student: Tensor, teacher: Tensor, T: float) -> Tensor:
        if self.rcfg["targets"] == "hard":
            return F.cross_entropy(student, teacher.argmax(1))
        return distillation(student, teacher, T)

    def replay_weight(self, task_id: int) -> float:
        if self.rcfg["replay_weight"] == "inverse_t":
            return task_id / (task_id + 1)  # current 1/t, replay (t-1)/t with t = tasks so far
        return float(self.rcfg["w_fixed"])

    # -- training ------------------------------------------------------------------------
    def loss(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        return self.loss_from(self.space.logits(self.net, x), y, task_id)

    def align_loss(self, x: Tensor, feats: Tensor) -> Tensor:
        """``memory.drift=align``: squared Euclidean distance between the feature vectors after layer ``k``
        of the current inputs ``x`` under the classifier (``feats``, with gradient) and under the classifier
        before the task, batch mean. (Summed over the features: a per-element mean was too weak to hold them,
        measured on validation.)"""
        with torch.no_grad():
            old = self.space.entry(self.teacher, x)
        return (feats - old).pow(2).sum(1).mean()

    def step(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        self.opt.zero_grad(set_to_none=True)
        out: dict[str, Tensor] = {}
        if self.train_memory and self.feedback:
            # BI-R-like: the memory steps first, so the gradient of its VAE loss, which reaches the classifier's
            # layers its encoder shares, joins the classifier's own in the classifier's step below
            train_memory_step(self.memory, self.space, x, task_id, out, self.memory.real_conditions(task_id, y))
        given = None
        if task_id == 0:
            loss = self.loss(x, y, task_id)
            out["loss_current"] = loss.detach()
        else:
            with region("replay"):
                if self.train_memory and not self.feedback and self.memory.protection.self_replay:
                    xr, ids, given = self.draw_replay(task_id)  # the memory learns from this draw too
                else:
                    xr, ids = self.replay_inputs(task_id)
            feats = self.space.entry(self.net, x)
            if self.net.has_bn_stats:  # batch statistics: the current and the replayed batch stay apart
                current, student = self.space.classify(self.net, feats), self.space.classify(self.net, xr)
            else:  # one forward over both: each weight's gradient in one product, no sum of two
                both = self.space.classify(self.net, torch.cat([feats, xr]))
                current, student = both[: x.shape[0]], both[x.shape[0]:]
            loss = self.loss_from(current, y, task_id)
            out["loss_current"] = loss.detach()
            rl = self.replay_loss(xr, ids, task_id, student)
            w = self.replay_weight(task_id)
            loss = (1 - w) * loss + w * rl
            out["loss_replay"] = rl.detach()
            if self.drift == "align" and self.scfg["align_weight"] > 0:
                al = self.align_loss(x, feats)
                loss = loss + float(self.scfg["align_weight"]) * al
                out["loss_align"] = al.detach()
        out["loss"] = loss.detach()
        self.regularized_step(loss, out)
        if self.train_memory and not self.feedback:
            train_memory_step(self.memory, self.space, x, task_id, out, self.memory.real_conditions(task_id, y),
                              replay=given)
        return out

    # -- bookkeeping ---------------------------------------------------------------------
    def param_counts(self) -> dict[str, float]:
        n = sum(p.numel() for p in self.net.parameters())
        out = {"classifier": float(n), "target": float(n)}
        if self.uses_memory:
            m = self.memory.param_counts()
            out.update({f"memory_{k}": v for k, v in m.items()})
            out["trainable"] = n + m["trainable"]
            out["compression_ratio"] = m["compression_ratio"]  # of the protected generator
        else:
            out["trainable"] = float(n)
            out["compression_ratio"] = 1.0
        return out

    def log_artifacts(self, tracker, task) -> None:
        if self.uses_memory:
            log_memory(self.memory, tracker, task, grid=self.space.name == "pixels")  # feature vectors make no image

    def checkpoint_state(self) -> dict[str, Any]:
        state = {"module": self.net.state_dict(), "n_seen": self.n_seen, **self.optimizer_state()}
        if len(self.regs):
            state["regs"] = self.regs.state_dict()
        if self.uses_memory:
            state["memory"] = self.memory.checkpoint_state()
        space = self.space.state()
        if space:
            state["space"] = space
        return state

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.n_seen = int(state["n_seen"])
        self.net.load_state_dict(state["module"])
        if self.drift == "freeze" and self.n_seen >= 1 and not self.frozen:
            self.freeze_features()  # the checkpoint was taken after the first task
        if len(self.regs):
            self.regs.load_state_dict(state["regs"])
        self.load_optimizer_state(state)
        if self.uses_memory:
            self.memory.load_checkpoint_state(state["memory"])
        self.space.load_state(state.get("space") or {})


class HNetR(ReplayClassifier):
    """HNET+R: replay from a hypernetwork-protected generative memory."""

    name = "hnet_r"


class HNetLR(HNetR):
    """Latent HNET+R: the hypernetwork-protected memory models the classifier's features after layer
    ``memory.layer`` (a Gaussian VAE) and replayed features enter the classifier there; what is done
    about the extractor's drift is ``memory.drift`` (none | freeze | align)."""

    name = "hnet_lr"
    memory_defaults = {"space": "features", "layer": 1, "drift": "none"}


class DGR(ReplayClassifier):
    """DGR+distill (three-scenarios): an unconditional generator that replays its own samples, the
    classifier before the task labels them, in CL1 on every previous head."""

    name = "dgr"
    method_defaults = {"replay_weight": "inverse_t", "new_class_target": "prob0", "cl1_heads": "previous"}


class DGRConditional(DGR):
    """DGR+distill with a task-conditioned generator, each replayed sample distilled on its own task's head."""

    name = "dgr_conditional"
    method_defaults = {"replay_weight": "inverse_t", "new_class_target": "prob0", "cl1_heads": "own"}


class ReplayUB(ReplayClassifier):
    """RPL-UB: replay of stored real data of past tasks, targets from the classifier before the task. With
    ``memory.space=features memory.layer=k`` the stored images' features enter after layer ``k`` (latent replay
    of real data, the ceiling of ``hnet_lr`` under the same ``memory.drift``)."""

    name = "replay_ub"
    uses_memory = False

    def replay_inputs(self, task_id: int) -> tuple[Tensor, Tensor]:
        per = math.ceil(int(self.rcfg["n_replay"]) / task_id)
        xs, ids = [], []
        for t in range(task_id):
            task = self.benchmark.tasks[t]
            idx = torch.randint(len(task.train), (per,), generator=self.rng, device=self.rng.device)
            xs.append(task.batch("train", idx, train_aug=True, generator=self.rng)[0])
            ids.append(torch.full((per,), t, dtype=torch.long, device=xs[-1].device))
        x, ids_ = torch.cat(xs), torch.cat(ids)
        if self.layer:  # the stored images' features under the extractor as it is now (drift=freeze: as they were
            x = self.space.to_input(self.space.to_memory(x), ids_)  # when the task was learned), no gradient
        return x, ids_
