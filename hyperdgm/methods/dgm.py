"""DGM (Ostapenko et al., "Learning to Remember: A Synaptic Plasticity Driven Framework for Continual
Learning", CVPR 2019): an AC-GAN whose generator keeps every class it learned, and whose
discriminator's auxiliary head is the classifier.

Per training step: one step of the auxiliary classifier on the real current batch plus generated
samples of every past class (class-balanced: the current batch weighs ``1/(t+1)``, the replay
``t/(t+1)``, one step instead of the official code's ``t+1`` separate ones;
``classifier_steps=per_class`` takes the official ``t+1``), then the memory's
step (WGAN-GP critic, generator under its protection). The generator's protection is a config
choice: ``dgm_w`` / ``dgm_a`` (DGMw / DGMa: learned binary masks with dynamic expansion, the
paper), ``hnet`` (weights generated per task, output regularizer), ``replay`` (self-replay),
``none``, ``alignment`` (MeRGAN's replay alignment). Nothing here knows which.

``classifier=separate`` trains a classifier of its own (the critic's architecture) on those batches
instead of the auxiliary head, for GANs whose auxiliary head is part of the GAN's loss on current
data only (MeRGAN, :mod:`.mergan`).

``shared_hnet=true`` (with ``memory.protection=hnet``): one hypernetwork generates the generator's
body and the classifier's head (``Linear`` on the discriminator's features) together, one task
embedding per task, one output regularizer over both (``memory.hnet``, ``memory.beta``); the
classifier is the head generated for the latest task.

Two protocols, both logged: the headline (the trainer's accuracy matrix and ``a_n``: the model at
the end of each task, no selection) and ``a_n_paper``: the official code's, the test accuracy at
the evaluation point (every ``paper_eval_every`` epochs and at the task's end) whose accuracy on a
validation split of *real images of every seen class* is best. It peeks at real past data; it needs
``benchmark.val_size > 0``.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hnet import OutputRegularizer
from ..hooks import protected_step
from ..memory import memory_config
from ..memory.models import ACDiscriminator
from ..memory.replay_models import fused_adam
from .base import Method, count
from .hnet import OutputRegHook, build_generator
from .replay import PixelSpace, build_memory, log_memory

log = logging.getLogger(__name__)

DGM_DEFAULTS = dict(
    n_replay=64,          # generated samples of past classes per classifier step, split evenly over them
    paper_eval_every=2,   # epochs between the a_n_paper evaluations (official: 2 for DGMw, 5 for DGMa)
    eval_batch_size=1000,
    shared_hnet=False,    # one hypernetwork for the generator and the classifier head (memory.protection=hnet)
    classifier="aux",     # aux: the AC-GAN's auxiliary head classifies (DGM) | separate: a classifier of the
                          # critic's architecture with its own weights, trained on the same class-balanced batches
    classifier_lr=0.001,  # classifier=separate: its Adam (betas 0.9, 0.999), fresh per task
    classifier_steps="balanced",  # balanced: one step on a class-balanced batch | per_class: the official t+1
                                  # steps per iteration on shuffled chunks of the real batch and as many
                                  # generated samples of every past class (t+1 times the classifier's work)
    classifier_ema=None,  # null | a decay in (0, 1): the classifier predicts with an exponential moving average of
                          # its weights over the task's steps (restarted when a task begins), not the last step's
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
        self.shared = bool(self.dcfg["shared_hnet"])
        if self.shared:
            if mcfg.get("protection", "hnet") not in ("hnet", "hnet_shared"):
                raise ValueError("dgm shared_hnet=true needs memory.protection=hnet (the shared hypernetwork protects "
                                 f"the generator), got {mcfg.get('protection')!r}")
            mcfg["protection"] = "hnet_shared"
            a = memory_config(mcfg)["acgan"]
            if a["aux_weight"] or a["aux_g_weight"]:
                raise ValueError("dgm shared_hnet=true: the classifier head is generated, so acgan.aux_weight and "
                                 "acgan.aux_g_weight (which train the discriminator's own head) must be 0")
        if self.dcfg["classifier_steps"] not in ("balanced", "per_class"):
            raise ValueError(f"method.classifier_steps must be balanced or per_class, got {self.dcfg['classifier_steps']!r}")
        if self.dcfg["classifier"] not in ("aux", "separate"):
            raise ValueError(f"method.classifier must be aux or separate, got {self.dcfg['classifier']!r}")
        self.separate = self.dcfg["classifier"] == "separate"
        if self.separate and self.shared:
            raise ValueError("dgm shared_hnet=true generates the auxiliary head: it needs method.classifier=aux")
        ema = self.dcfg["classifier_ema"]
        if ema is not None and (isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 < ema < 1):
            raise ValueError(f"method.classifier_ema must be null or a decay in (0, 1), got {ema!r}")
        if ema is not None and self.shared:
            raise ValueError("method.classifier_ema averages the classifier's own weights: shared_hnet=true generates "
                             "its head, so it needs classifier_ema=null")
        self.ema_decay = None if ema is None else float(ema)
        self.ema: torch.nn.Module | None = None
        self.memory = build_memory(mcfg, benchmark, device)
        if self.separate:  # the critic's trunk and head, own weights: the GAN's auxiliary head stays the GAN's
            c = self.memory.cfg
            self.clf = ACDiscriminator(tuple(benchmark.tasks[0].input_shape), self.memory.n_classes,
                                       int(c["acgan"]["ndf"]), str(c["acgan"]["d_norm"]),
                                       str(c["acgan"]["d_arch"])).to(device)
        if self.shared:
            c, aux = self.memory.cfg, self.memory.model.discriminator.aux
            head = [[aux.out_features, aux.in_features], [aux.out_features]]
            self.gen = build_generator([head, self.memory.body.param_shapes], c["hnet"]).to(device)
            self.reg = OutputRegularizer(float(c["beta"]), tasks_per_step=c["tasks_per_step"],
                                         online_targets=bool(c["online_targets"]), lookahead=bool(c["lookahead"]))
            self.reg_hook = OutputRegHook(self.reg, self.gen)
            self.memory.protection.attach(self.gen, 1, self.reg)
        self.pixels = PixelSpace(benchmark.tasks[0], device)
        self.a_n_paper: list[float] = []
        self.paper_curve: list[dict[str, float]] = []  # every a_n_paper evaluation point of the current task
        self._warned_val = False

    # -- lifecycle -----------------------------------------------------------------------
    def begin_task(self, task) -> None:
        super().begin_task(task)
        iters, self.ipe = self.task_schedule(task)  # iterations (per epoch) of the current class
        if self.shared:  # targets of earlier tasks before anything moves, then the new embedding
            self.reg.begin_task(self.gen, current_task=task.id)
            while self.gen.n_tasks <= task.id:
                self.gen.add_task()
            lr, betas = self.memory.model.generator_optim()
            self.h_opts = [fused_adam(self.gen.hnet_parameters(), lr, betas, self.device),
                           fused_adam([self.gen.task_embedding(task.id)], float(self.memory.cfg["emb_lr"]), betas,
                                      self.device)]
        self.memory.begin_task(task.id, schedule=(iters, self.ipe))
        self._task = task  # _draw_real's source (acgan.fresh_real's further critic batches)
        if self.separate:
            self.clf_opt = fused_adam(self.clf.parameters(), float(self.dcfg["classifier_lr"]), (0.9, 0.999),
                                      self.device)
        if self.ema_decay is not None:  # restarted from the classifier as the task begins (DGM re-initialises it)
            self.ema = copy.deepcopy(self._classifier_module()).requires_grad_(False)
        self.it = 0
        self._best: tuple[float, float] | None = None  # (val, test) at the best validation point
        self.paper_curve = []

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
        if task_id > 0 and self.dcfg["classifier_steps"] == "per_class":
            # the official code: the real batch and as many generated samples of each past class, shuffled,
            # one classifier step per chunk of the real batch's size (t+1 steps)
            n = xu.shape[0]
            xr, _, cr = mem.replay_batch(list(range(task_id)), n, generator=self.rng)
            xa, ya = torch.cat([xu, xr]), torch.cat([labels, cr])
            perm = torch.randperm(xa.shape[0], generator=self.rng, device=self.rng.device).to(xa.device)
            cls = torch.stack([self._classifier_update(xa[i], ya[i], n_cls, None, task_id)
                               for i in perm.split(n)]).mean()
        else:
            xs, ys, w = xu, labels, None
            if task_id > 0:  # class-balanced: real current batch 1/(t+1), generated past classes t/(t+1)
                per = max(1, math.ceil(int(self.dcfg["n_replay"]) / task_id))
                xr, _, cr = mem.replay_batch(list(range(task_id)), per, generator=self.rng)
                t1 = float(task_id + 1)
                w = torch.cat([torch.full((xu.shape[0],), 1.0 / (t1 * xu.shape[0]), device=xu.device),
                               torch.full((xr.shape[0],), task_id / (t1 * xr.shape[0]), device=xu.device)])
                xs, ys = torch.cat([xu, xr]), torch.cat([labels, cr])
            cls = self._classifier_update(xs, ys, n_cls, w, task_id)
        out = {"loss_classifier": cls}
        for k, v in mem.step(xu, task_id, cond=labels, draw=self._draw_real).items():  # drawn from if fresh_real
            out[f"memory/{k}"] = v
        if self.ema is not None:
            self._update_ema()
        self.it += 1
        every = int(self.dcfg["paper_eval_every"]) * self.ipe
        if (every > 0 and self.it % every == 0) or self.it == int(getattr(self, "task_iters", -1)):
            self._paper_eval(task_id)
        return out

    def _draw_real(self) -> tuple[Tensor, Tensor]:
        """A random batch (the step's size) of the current task's training data, in ``[0, 1]``, and its labels."""
        task = self._task
        idx = torch.randint(len(task.train), (int(self.batch_size),), generator=self.rng, device=self.rng.device)
        x, y = task.batch("train", idx, train_aug=True, generator=self.rng)
        return self.pixels.to_unit(x), self.scenario.target(y, task.id)

    def _classifier_update(self, xs: Tensor, ys: Tensor, n_cls: int, w: Tensor | None, task_id: int) -> Tensor:
        """One classifier step on ``xs`` (labels ``ys``, per-sample weights ``w``); its loss, detached."""
        if self.shared:  # the generated head through the one hook sequence (output regularizer)
            model = self.memory.model
            model.opt.zero_grad(set_to_none=True)
            for o in self.h_opts:
                o.zero_grad(set_to_none=True)
            cls = model.classifier_loss(xs, ys, n_cls, w, head=self._head(task_id))
            protected_step(cls, [model.opt, *self.h_opts], [self.reg_hook])
            return cls.detach()
        if self.separate:
            self.clf_opt.zero_grad(set_to_none=True)
            ce = F.cross_entropy(self._clf_logits(xs, n_cls), ys, reduction="none")
            cls = ce.mean() if w is None else (ce * w).sum() / w.sum()
            cls.backward()
            self.clf_opt.step()
            return cls.detach()
        return self.memory.model.classifier_step(xs, ys, n_cls, w)

    def _classifier_module(self) -> torch.nn.Module:
        """The module whose weights classify: the separate classifier, or the AC-GAN's discriminator."""
        return self.clf if self.separate else self.memory.model.discriminator

    @torch.no_grad()
    def _update_ema(self) -> None:
        """``ema <- decay * ema + (1 - decay) * live`` for every weight (in one fused call); buffers copied."""
        assert self.ema is not None and self.ema_decay is not None
        live = self._classifier_module()
        torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in live.parameters()],
                             1.0 - self.ema_decay)
        for b, lb in zip(self.ema.buffers(), live.buffers()):
            b.copy_(lb)

    # -- the official protocol (model selection on real validation data of every seen class) --
    @torch.no_grad()
    def _class_accs(self, split: str, upto: int) -> list[float]:
        """Accuracy on ``split`` of each seen task (the official code averages these per class)."""
        accs, bs = [], int(self.dcfg["eval_batch_size"])
        for task in self.benchmark.tasks[: upto + 1]:
            data = task.split(split)
            n, correct = len(data), torch.zeros((), device=self.device)
            for s in range(0, n, bs):
                idx = torch.arange(s, min(n, s + bs), device=self.device)
                x, y = task.batch(split, idx)
                correct += (self.predict(x).argmax(1) == self.scenario.target(y, task.id)).sum()
            accs.append(100.0 * correct.item() / max(n, 1))
        return accs

    def _paper_eval(self, task_id: int) -> None:
        if self.benchmark.tasks[0].val is None:
            if not self._warned_val:
                log.warning("a_n_paper needs a validation split (benchmark.val_size > 0): not computed")
                self._warned_val = True
            return
        with self._evaluating():
            vals, tests = self._class_accs("val", task_id), self._class_accs("test", task_id)
        val, test = sum(vals) / len(vals), sum(tests) / len(tests)
        if self._best is None or val > self._best[0]:
            self._best = (val, test)
        # the curve shows where inside a task an old class is lost (and what the selection hides)
        point = {"it": float(self.it), "val_acc": val, "test_acc": test, "test_acc_min": min(tests)}
        point.update({f"test_acc.task_{k}": a for k, a in enumerate(tests)})
        s_now = getattr(self.memory.protection, "current_s", None)
        if s_now is not None:
            point["s"] = float(s_now()[0])
        self.paper_curve.append(point)

    # -- prediction ----------------------------------------------------------------------
    def _head(self, task_id: int) -> list[Tensor]:
        """The classifier head ``[W, b]`` the shared hypernetwork generates for ``task_id``."""
        return self.gen.split(self.gen.flat([task_id])[0])[0]

    def _clf_logits(self, x: Tensor, n_classes: int, net: torch.nn.Module | None = None) -> Tensor:
        """Logits over the first ``n_classes`` classes (``x`` in ``[0, 1]``) of ``net``'s auxiliary head on its
        features (default: the separate classifier)."""
        net = self.clf if net is None else net
        return net.aux(net.features(x))[:, :n_classes]

    @torch.no_grad()
    def predict(self, x: Tensor, task_id: int | None = None) -> Tensor:
        n = self.scenario.n_seen_classes(self.n_seen)
        if self.ema is not None:  # a submodule: in the method's train / eval mode
            return self._clf_logits(self.pixels.to_unit(x), n, self.ema)
        if self.separate:
            return self._clf_logits(self.pixels.to_unit(x), n)
        head = self._head(self.n_seen - 1) if self.shared else None
        return self.memory.model.classify(self.pixels.to_unit(x), n, head)

    # -- bookkeeping ---------------------------------------------------------------------
    def param_counts(self) -> dict[str, float]:
        m = self.memory.param_counts()
        out = {f"memory_{k}": v for k, v in m.items()}
        out["classifier"] = float(count((self.clf if self.separate else self.memory.model.discriminator).parameters()))
        out["trainable"] = m["trainable"] + (out["classifier"] if self.separate else 0.0)
        out["target"] = m["generator_target"]
        out["compression_ratio"] = m["compression_ratio"]
        out["stored_mask_bits"] = m["generator_stored"] if self.memory.protection.name.startswith("dgm") else 0.0
        if self.shared:  # the one hypernetwork, counted here (the memory counts 0 for it)
            c = self.gen.param_counts()
            out.update(hnet=c["hnet"], task_embeddings=c["task_embeddings"], hnet_target=c["target"])
            out["trainable"] = m["trainable"] + c["hnet"] + c["task_embeddings"]
            out["compression_ratio"] = (c["hnet"] + c["task_embeddings"]) / c["target"]
        widths = self.memory.body.widths
        for i, w in enumerate(widths):
            out[f"generator_width_{i}"] = float(w)
        return out

    def log_artifacts(self, tracker: Any, task: Any) -> None:
        for p in self.paper_curve:
            tracker.log_metrics({f"paper/{k}": v for k, v in p.items() if k != "it"},
                                step=self.step_base + int(p["it"]))
        if self.paper_curve:
            lo = min(self.paper_curve, key=lambda p: p["test_acc_min"])
            log.info("a_n_paper curve of task %d: %d points, test acc %.2f at the end, worst class %.2f at step %d",
                     task.id + 1, len(self.paper_curve), self.paper_curve[-1]["test_acc"], lo["test_acc_min"],
                     int(lo["it"]))
        extra = {"a_n_paper": self.a_n_paper[task.id]} if len(self.a_n_paper) > task.id else {}
        if self.ema is not None:  # what the averaging changed: the live classifier's accuracy at the same point
            live = self._live_accs(task.id)
            extra["live_classifier_acc"] = sum(live) / len(live)
            tracker.log_metrics({f"live_classifier/acc.task_{k}": a for k, a in enumerate(live)}, step=task.id)
            log.info("classifier_ema: the live classifier after task %d: %s (avg %.2f)", task.id + 1,
                     " ".join(f"{a:.2f}" for a in live), extra["live_classifier_acc"])
        log_memory(self.memory, tracker, task, extra=extra)

    def _live_accs(self, task_id: int) -> list[float]:
        """Test accuracy per seen task of the classifier's live weights (not the moving average)."""
        ema = self.ema
        self.ema = None
        try:
            with self._evaluating():
                return self._class_accs("test", task_id)
        finally:
            self.ema = ema

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode, and no autocast (these evaluations run inside a training step or after it: the trainer
        evaluates without autocast, so the same model gives the same numbers); the mode is restored after."""
        was = self.training
        self.eval()
        try:
            with torch.autocast(device_type=self.device.type, enabled=False):
                yield
        finally:
            self.train(was)

    def checkpoint_state(self) -> dict[str, Any]:
        out = {"n_seen": self.n_seen, "memory": self.memory.checkpoint_state(), "a_n_paper": list(self.a_n_paper)}
        if self.shared:
            out["hnet"] = {k: v.detach().clone() for k, v in self.gen.state_dict().items()}
        if self.separate:
            out["classifier"] = {k: v.detach().clone() for k, v in self.clf.state_dict().items()}
        if self.ema is not None:
            out["classifier_ema"] = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
        return out

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.n_seen = int(state["n_seen"])
        if self.shared:  # the hypernetwork first: the memory's protection reads it
            while self.gen.n_tasks < self.n_seen:
                self.gen.add_task()
            self.gen.load_state_dict(state["hnet"])
        self.memory.load_checkpoint_state(state["memory"])
        if self.separate:
            self.clf.load_state_dict(state["classifier"])
        if self.ema_decay is not None and "classifier_ema" in state:
            self.ema = copy.deepcopy(self._classifier_module()).requires_grad_(False)
            self.ema.load_state_dict(state["classifier_ema"])
        self.a_n_paper = [float(v) for v in state["a_n_paper"]]
