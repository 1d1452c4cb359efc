"""The generative memory: a replay model (VAE, LSGAN, AC-GAN) whose generator a protection guards.

``GenerativeMemory = ReplayModel + Protection + snapshot + sampling``: the replay model owns the
losses, auxiliary nets and step schedule (:mod:`.replay_models`); the protection owns the body's
weights and runs in the one hook sequence (:mod:`.protection`, :mod:`hyperdgm.hooks`); the memory
keeps the generator *body* (:mod:`.bodies`, which may grow between tasks), one public
:class:`~.protection.Snapshot` of the generator as the task began (used by self-replay and frozen
replay alike) and sampling conditioned by a tensor (task ids or class labels).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import protected_step
from .alignment import ALIGNMENT_DEFAULTS
from .bodies import build_body
from .protection import Blocks, GivenReplay, Protection, Snapshot, build_protection
from .replay_models import RealDraw, ReplayModel, build_replay_model, fused_adam

__all__ = ["GenerativeMemory", "DEFAULT_CFG", "memory_config"]

_FORMAT = "hyperdgm.GenerativeMemory"

#: Defaults = split-MNIST HNET+R replay VAE of hypercl (notes/hypercl_presets.md §1, §2, §4).
DEFAULT_CFG: dict[str, Any] = {
    "model": "vae",            # vae | gan (LSGAN) | acgan (AC-GAN with WGAN-GP)
    "arch": "mlp",             # generator body: mlp | conv (32x32) | dcgan (DGM's, 32x32, per-task BN, per-class heads)
    "condition": "task",       # the generator's one-hot condition: task (task id) | class (class label)
    "latent_dim": 100,
    "enc_hidden": [400, 400],  # VAE encoder; also the MLP discriminator unless gan.d_hidden
    "dec_hidden": [250, 350],  # decoder / generator (mlp)
    "activation": "relu",      # hidden activation of MLP decoder / encoder
    "conv_channels": 64,       # base width of the conv nets (4c, 2c, c)
    "conv_kernel": 4,          # conv generator's transposed-conv kernel: 4 (k4 s2 p1) | 5 (MeRGAN's k5 s2, TF SAME)
    "body_norm": "none",       # conv generator: none | cbn (class-conditional batch norm, per-condition scale/offset;
                               # running moments when sampling) | cbn_batch (always each condition's batch moments)
    "cond_input": True,        # the one-hot condition is concatenated to z (false: only cbn tells the condition)
    "ngf": 6,                  # base width of the dcgan generator (4ngf, 2ngf, ngf)
    "cond_dim": 100,           # one-hot condition size (hypercl: 100); at least the number of conditions is used
    "likelihood": "bernoulli", # bernoulli: images in [0, 1], sigmoid output, BCE | gaussian: real vectors (a
                               # classifier's features), identity output, squared error / gaussian_std^2
    "gaussian_std": 1.0,       # the gaussian likelihood's fixed standard deviation (weighs recon against KL)
    "lr": 0.001,               # decoder weights / hnet theta, and encoder
    "emb_lr": 0.001,           # current task embedding (hnet, DGM masks)
    "protection": "hnet",      # hnet | replay | none | dgm_w | dgm_a | alignment | ewc | si
    "beta": 0.01,
    "lookahead": True,
    "tasks_per_step": None,
    "online_targets": False,
    "hnet": {"hidden": [10, 10], "activation": "elu", "chunk_size": 50000, "chunk_emb_size": 96,
             "task_emb_size": 96, "emb_init_std": 1.0},
    "gan": {"lr_d": 0.0001, "lr_g": 0.0001, "dropout_d": 0.4, "loss": "lsgan", "betas": [0.5, 0.999],
            "d_hidden": None},
    # AC-GAN with WGAN-GP; defaults: DGM's MNIST config (cfg_mnist_dgmw.yml; MeRGAN: n_critic 5, gp 10)
    "acgan": {"lr_d": 0.002, "lr_g": 0.002, "betas": [0.5, 0.999], "n_critic": 1, "gp": 1.0, "ndf": 32,
              "d_norm": "batch", "d_arch": "dcgan", "aux_weight": 0.0, "aux_g_weight": 0.0, "reinit_d": True,
              "fresh_real": False},  # fresh_real: a new real batch for each critic step after the first (MeRGAN)
    # DGM masks (Ostapenko et al. 2019); defaults: the official MNIST DGMw config
    # MeRGAN's replay alignment (protection=alignment): lambda_RA (MNIST 1e-3, SVHN 1e-2), shared noise per step
    "alignment": dict(ALIGNMENT_DEFAULTS),
    "dgm": {"smax": 10000.0, "lamb": 0.08, "anneal": "paper", "thres_cosh": 50.0, "expand": True,
            "init_gain": 1.4142135623730951, "expand_std": 0.02, "expand_init": "normal", "init": "xavier"},
}

_NESTED = ("hnet", "gan", "acgan", "dgm", "alignment")


def _plain(x: Any) -> Any:
    """Mappings -> dict, sequences -> list, recursively (Hydra DictConfig / ListConfig included)."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (str, bytes)):
        return x
    if isinstance(x, Sequence) or type(x).__name__ == "ListConfig":
        return [_plain(v) for v in x]
    return x


def memory_config(cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``DEFAULT_CFG`` updated with ``cfg`` (one level deep for the nested blocks); unknown keys raise."""
    out = copy.deepcopy(DEFAULT_CFG)
    for k, v in _plain(dict(cfg or {})).items():
        if k in _NESTED and v is not None:
            bad = set(v) - set(out[k])
            if bad:
                raise ValueError(f"unknown memory.{k} keys {sorted(bad)} (known: {sorted(out[k])})")
            out[k].update(v)
        elif k not in out:
            raise ValueError(f"unknown memory key {k!r} (known: {', '.join(sorted(out))})")
        else:
            out[k] = v
    if out["model"] not in ("vae", "gan", "acgan"):
        raise ValueError(f"memory.model must be vae, gan or acgan, got {out['model']!r}")
    if out["gan"]["loss"] != "lsgan":
        raise ValueError(f"only gan.loss=lsgan is implemented, got {out['gan']['loss']!r}")
    if out["likelihood"] not in ("bernoulli", "gaussian"):
        raise ValueError(f"memory.likelihood must be bernoulli or gaussian, got {out['likelihood']!r}")
    if out["likelihood"] == "gaussian" and out["model"] != "vae":
        raise ValueError(f"memory.likelihood=gaussian (feature replay) needs memory.model=vae, got {out['model']!r}")
    if not float(out["gaussian_std"]) > 0:
        raise ValueError(f"memory.gaussian_std must be > 0, got {out['gaussian_std']!r}")
    if out["condition"] not in ("task", "class"):
        raise ValueError(f"memory.condition must be task or class, got {out['condition']!r}")
    if not isinstance(out["acgan"]["fresh_real"], bool):
        raise ValueError(f"memory.acgan.fresh_real must be true or false, got {out['acgan']['fresh_real']!r}")
    if not isinstance(out["cond_input"], bool):
        raise ValueError(f"memory.cond_input must be true or false, got {out['cond_input']!r}")
    if not out["cond_input"] and out["body_norm"] not in ("cbn", "cbn_batch"):
        raise ValueError("memory.cond_input=false leaves the generator unconditioned: it needs memory.body_norm=cbn "
                         "or cbn_batch (class-conditional batch norm tells it the condition)")
    return out


class GenerativeMemory(nn.Module):
    """Conditional replay model whose generator weights are owned by a :class:`Protection`.

    The body reads ``z ++ onehot(cond, cond_dim)`` (``cond_input``; else ``z`` alone and the body's
    class-conditional batch norm is told ``cond``), ``cond`` a task id or a class label (``condition``); ``cond_dim = max(cfg.cond_dim, number of conditions)``. ``task_classes`` maps a
    task to its (global) classes, for ``condition=class``. Optimizers (Adam) are rebuilt in
    :meth:`begin_task`.
    """

    def __init__(self, cfg: Mapping[str, Any] | None, input_shape: Sequence[int], n_tasks: int,
                 task_classes: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__()
        self.cfg = memory_config(cfg)
        c = self.cfg
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_tasks = int(n_tasks)
        self.condition: str = c["condition"]
        if self.condition == "class" and task_classes is None:
            raise ValueError("memory.condition=class needs the classes of every task")
        self.task_classes = [[int(k) for k in ks] for ks in (task_classes or [[t] for t in range(self.n_tasks)])]
        self.n_classes = 1 + max(k for ks in self.task_classes for k in ks)
        n_cond = self.n_tasks if self.condition == "task" else self.n_classes
        self.latent_dim = int(c["latent_dim"])
        self.cond_dim = max(int(c["cond_dim"]), n_cond)
        self.model_type: str = c["model"]
        self.likelihood: str = c["likelihood"]
        self.cond_input = bool(c["cond_input"])
        in_dim = self.latent_dim + (self.cond_dim if self.cond_input else 0)
        self.body = build_body(c["arch"], in_dim, self.input_shape, c["dec_hidden"], c["activation"],
                               int(c["conv_channels"]), int(c["ngf"]), kernel=int(c["conv_kernel"]),
                               norm=str(c["body_norm"]), n_cond=self.cond_dim)
        self.model: ReplayModel = build_replay_model(c, self.input_shape, self.cond_dim, "conv" if c["arch"] in ("dcgan", "resnet") else c["arch"],
                                                     self.n_classes)
        self.protection: Protection = build_protection(c["protection"], c)
        a = c["acgan"]
        if self.model_type == "acgan" and self.protection.self_replay and not (
                float(a["aux_weight"]) > 0 and float(a["aux_g_weight"]) > 0):
            # measured: DGM's AC-GAN (critic without class, no auxiliary losses) under protection=replay generated a
            # blend of digits for every class after a few tasks, and the classifier learned on it forgot as finetune did
            raise ValueError(f"memory.protection={c['protection']} with self-replay trains the AC-GAN's generator on "
                             "several conditions at once, and its critic does not see the condition: set "
                             "memory.acgan.aux_weight and memory.acgan.aux_g_weight > 0 (MeRGAN-JTR: 1 and 1) so "
                             "that each sample is held to its class")
        self.protection.setup(self.body, self)
        self.growth: list[list[int]] = [list(self.body.widths)]  # widths after each growth (architecture history)
        self.n_begun = 0
        self.current_task: int | None = None
        self.n_steps = 0
        self.schedule: tuple[int, int] | None = None
        self.snapshot: Snapshot | None = None
        self._opts: dict[str, torch.optim.Optimizer] = {}

    # -- helpers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.protection.theta_parameters()[0].device

    @property
    def encoder(self) -> nn.Module | None:
        return getattr(self.model, "encoder", None)

    @property
    def discriminator(self) -> nn.Module | None:
        return getattr(self.model, "discriminator", None)

    def _ids(self, blocks: Blocks) -> Tensor:
        """Task id of every row ``[N]`` (built on the device, no host sync)."""
        dev = self.device
        return torch.cat([torch.full((n,), t, dtype=torch.long, device=dev) for t, n in blocks])

    def conditions(self, blocks: Blocks, generator: torch.Generator | None = None) -> Tensor:
        """The condition of every row ``[N]``: its task id, or a class of its task drawn uniformly."""
        if self.condition == "task":
            return self._ids(blocks)
        dev, out = self.device, []
        for t, n in blocks:
            ks = self.task_classes[t]
            if len(ks) == 1:
                out.append(torch.full((n,), ks[0], dtype=torch.long, device=dev))
            else:
                pick = torch.randint(len(ks), (n,), device=dev, generator=generator)
                out.append(torch.tensor(ks, device=dev)[pick])
        return torch.cat(out)

    def _per_class(self, task_id: int) -> bool:
        """Whether real samples of ``task_id`` need their own class as condition (a class-conditioned memory,
        a task of several classes); otherwise the condition is the task, or constant."""
        return self.condition == "class" and len(self.task_classes[task_id]) > 1

    def real_conditions(self, task_id: int, y: Tensor) -> Tensor | None:
        """The conditions of real samples of ``task_id`` with within-task labels ``y`` ``[B]``: their global
        classes when the memory is class-conditioned, else None (the task, or a constant condition)."""
        if not self._per_class(task_id):
            return None
        return torch.as_tensor(self.task_classes[task_id], device=y.device)[y]

    def progress(self) -> tuple[int, float, int]:
        """``(epoch, fraction of the epoch done, epochs in the task)`` of the current step."""
        if self.schedule is None:
            return 0, 0.0, 1
        iters, ipe = self.schedule
        return self.n_steps // ipe, (self.n_steps % ipe) / ipe, max(1, math.ceil(iters / ipe))

    def decode(self, z: Tensor, cond: Tensor, blocks: Blocks, weights: Sequence[Sequence[Tensor]],
               batch_stats: bool = False) -> Tensor:
        """Body logits ``[N, C, H, W]`` for ``z`` ``[N, latent]`` and conditions ``cond`` ``[N]`` whose rows
        are grouped by ``blocks`` (``(task, count)``), with ``weights[i]`` for block ``i``."""
        h = z
        if self.cond_input:
            eye = torch.eye(self.cond_dim, device=z.device, dtype=z.dtype)  # (F.one_hot syncs on CUDA)
            h = torch.cat([z, eye.index_select(0, cond)], dim=1)
        if self.protection.shared_weights and not self.body.per_task_modules:
            return self.body(h, weights[0], cond=cond, batch_stats=batch_stats)
        outs, s = [], 0
        for (t, n), w in zip(blocks, weights):
            outs.append(self.body(h[s:s + n], w, task_id=t, cond=cond[s:s + n],
                                  batch_stats=batch_stats and t == self.current_task))
            s += n
        return torch.cat(outs)

    def generate(self, blocks: Blocks, *, weights: Sequence[Sequence[Tensor]] | None = None,
                 cond: Tensor | None = None, z: Tensor | None = None, generator: torch.Generator | None = None,
                 batch_stats: bool = False) -> Tensor:
        """Samples for ``blocks``: images in ``[0, 1]`` (bernoulli likelihood) or the gaussian's mean (features);
        with grad if weights require it; weights default to the protection's."""
        n = sum(c for _, c in blocks)
        if z is None:
            z = torch.randn(n, self.latent_dim, device=self.device, generator=generator)
        if cond is None:
            cond = self.conditions(blocks, generator)
        if weights is None:
            weights = self.protection.weights([t for t, _ in blocks])
        out = self.decode(z, cond, blocks, weights, batch_stats)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    # -- lifecycle -------------------------------------------------------------------------
    def begin_task(self, task_id: int, *, schedule: tuple[int, int] | None = None) -> None:
        """Body and protection begin the task (per-task modules, embeddings, targets), the snapshot is
        taken, fresh optimizers. ``schedule``: ``(iterations, iterations per epoch)`` of the task."""
        if not 0 <= task_id < self.n_tasks:
            raise ValueError(f"task id {task_id} out of range (n_tasks={self.n_tasks})")
        if schedule is None and self.protection.needs_schedule:  # without it DGM's s would never anneal
            raise ValueError(f"memory.protection={self.protection.name} anneals over the task: begin_task needs "
                             "schedule=(iterations, iterations per epoch)")
        dev = self.device
        self.body.begin_task(task_id, self.task_classes[task_id])
        self.body.to(dev)
        self.protection.begin_task(task_id)
        self._take_snapshot(task_id)
        self.current_task = int(task_id)
        self.n_begun = max(self.n_begun, task_id + 1)
        self.n_steps = 0
        self.schedule = None if schedule is None else (int(schedule[0]), max(1, int(schedule[1])))
        lr_g, betas = self.model.generator_optim()
        adam = lambda ps, lr: fused_adam(ps, lr, betas, dev)  # noqa: E731
        p = self.protection
        self._opts = {"gen": adam(p.theta_parameters(), lr_g)}
        task_params = p.task_parameters(task_id)
        if task_params:
            self._opts["emb"] = adam(task_params, float(self.cfg["emb_lr"]))
        own = self.body.own_parameters(task_id)
        if own:
            self._opts["own"] = adam(own, lr_g)
        self.model.begin_task(task_id, dev)

    def end_task(self, task_id: int, data: Any = None) -> None:
        """The protection ends the task (``data``: the task, for protections that need it), then the body
        grows if the protection asks for it."""
        self.protection.end_task(task_id, data)
        self.snapshot = None
        widths = self.protection.new_widths(self.body)
        if widths is not None and list(widths) != self.body.widths:
            self._grow(widths)
        self.current_task = None

    def _grow(self, widths: Sequence[int]) -> None:
        old = self.body.param_meta
        self.body.grow(widths)
        self.protection.expand(old, self.body.param_meta)
        self.growth.append(list(self.body.widths))
        self._opts = {}  # built anew, over the grown tensors, by the next begin_task

    # -- training --------------------------------------------------------------------------
    def zero_grad_generator(self) -> None:
        for o in self._opts.values():
            o.zero_grad(set_to_none=True)

    def update_generator(self, loss: Tensor, extra: Sequence[torch.optim.Optimizer] = ()) -> Tensor:
        """The hook sequence on the generator loss: backward, protection penalty (with lookahead),
        gradient masks, every generator optimizer (and ``extra``) steps; returns the detached penalty."""
        pen = protected_step(loss, [*self._opts.values(), *extra], [self.protection])
        return torch.zeros((), device=self.device) if pen is None else pen

    def step(self, x: Tensor, task_id: int, cond: Tensor | None = None,
             draw: RealDraw | None = None, replay: GivenReplay | None = None) -> dict[str, Tensor]:
        """One optimisation step on current real data ``x`` ``[B, C, H, W]`` in ``[0, 1]`` with conditions
        ``cond`` ``[B]`` (default: the task id, or the task's class); detached losses. ``draw``: another batch
        of the task's real data and its conditions, for a model that takes more than one per step
        (``acgan.fresh_real``). ``replay``: what a learner replayed from this memory's snapshot this step
        (:meth:`replay_batch`: samples, conditions, blocks); a self-replaying protection trains the generator on
        those samples (as the three-scenarios code trains its generator on the classifier's replayed batch)
        instead of drawing its own, a protection that does not replay ignores them."""
        if self.current_task != task_id or not self._opts:
            raise RuntimeError(f"call begin_task({task_id}) before step")
        self.train()
        blocks: Blocks = [(int(task_id), int(x.shape[0]))]
        if cond is None:
            if self._per_class(task_id):
                raise ValueError(f"a class-conditioned memory needs each sample's class (cond=): task {task_id} has "
                                 f"{len(self.task_classes[task_id])} classes (see real_conditions)")
            cond = self.conditions(blocks)
        rep = self.protection.replay(task_id, int(x.shape[0]), replay)
        out = self.model.step(self, x, cond, blocks, rep, draw)
        self.n_steps += 1
        return out

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, task_id: int, n: int, generator: torch.Generator | None = None,
               z: Tensor | None = None, cond: Tensor | None = None) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in ``[0, 1]`` of task ``task_id`` (``z`` ``[n, latent]``, ``cond`` optional).

        ``generator`` must live on the memory's device.
        """
        return self.generate([(int(task_id), int(n))], z=z, cond=cond, generator=generator)

    @torch.no_grad()
    def sample_tasks(self, task_ids: Sequence[int], n_per_task: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n_per_task`` samples of each task (one batched weight call) and their task ids ``[N]``."""
        blocks = [(int(t), int(n_per_task)) for t in task_ids]
        return self.generate(blocks, generator=generator), self._ids(blocks)

    def hold(self, task_id: int) -> None:
        """A task the memory replays during but is not trained on (the last one: nothing replays it later):
        keep the weights of tasks ``< task_id`` as they are now, as :meth:`begin_task` does, so that each
        replay step reads one copy instead of generating every past task's weights (on permuted MNIST-10 the
        last task of HNET+TIR generated 9 x 2.2M decoder weights per step)."""
        if not 0 <= task_id <= self.n_begun:
            raise ValueError(f"hold({task_id}): the memory has begun {self.n_begun} tasks; it can hold tasks "
                             f"0..{self.n_begun}")
        self._take_snapshot(task_id)

    @torch.no_grad()
    def _take_snapshot(self, task_id: int) -> None:
        """Keep the generator weights of tasks ``< task_id`` as they are when ``task_id`` begins.

        A learner replaying while this memory trains on the new task then sees the memory of the
        earlier tasks as it was (as in the reference codes, whose classifier learns against a fixed
        generator), self-replay replays from it, and no weights are generated per replay step.
        """
        self.snapshot = None
        if task_id > 0:
            shared = self.protection.shared_weights
            ws = self.protection.weights(list(range(task_id)))
            ws = ws[:1] if shared else ws
            self.snapshot = Snapshot([[w.detach().clone() for w in lst] for lst in ws], shared)

    @torch.no_grad()
    def replay_batch(self, task_ids: Sequence[int], n_per_task: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Replay during a task: ``n_per_task`` samples of each of ``task_ids`` from the snapshot (taken by
        :meth:`begin_task` or :meth:`hold`; live weights otherwise), their task ids and their conditions
        (class labels or task ids)."""
        ids = [int(t) for t in task_ids]
        blocks = [(t, int(n_per_task)) for t in ids]
        snap = self.snapshot
        weights = snap.for_tasks(ids) if snap is not None and snap.covers(ids) else None
        z = torch.randn(sum(n for _, n in blocks), self.latent_dim, device=self.device, generator=generator)
        cond = self.conditions(blocks, generator)
        return self.generate(blocks, weights=weights, z=z, cond=cond), self._ids(blocks), cond

    @torch.no_grad()
    def sample_replay(self, task_ids: Sequence[int], n_per_task: int,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Like :meth:`sample_tasks` for replay during a task: earlier tasks come from the snapshot
        taken when the current task began (live weights outside a task)."""
        x, ids, _ = self.replay_batch(task_ids, n_per_task, generator)
        return x, ids

    @torch.no_grad()
    def sample_grid(self, task_ids: Sequence[int], n_per_task: int = 8, pad: int = 1, seed: int = 0) -> Tensor:
        """Image grid ``[C, T*(H+2p), n*(W+2p)]``: one row per task, fixed noise (``seed``) for comparability."""
        g = torch.Generator(device=self.device).manual_seed(seed)
        x, _ = self.sample_tasks(task_ids, n_per_task, generator=g)
        x = F.pad(x, (pad, pad, pad, pad), value=1.0)
        c, h, w = x.shape[1:]
        return x.view(len(task_ids), n_per_task, c, h, w).permute(2, 0, 3, 1, 4).reshape(
            c, len(task_ids) * h, n_per_task * w)

    # -- bookkeeping -----------------------------------------------------------------------
    def param_counts(self) -> dict[str, float]:
        """``generator_trainable`` (hnet + embeddings, or own weights), ``generator_target`` (body weights),
        ``generator_stored`` (targets / frozen copies kept for protection), ``encoder``, ``discriminator``,
        ``trainable`` (generator + encoder/discriminator) and ``compression_ratio`` = trainable / target
        of the generator."""
        own = self.body.own_numel()  # per-task / per-class modules of the body (DGM's batch norm, heads)
        gen = self.protection.trainable_numel() + own
        target = sum(m.numel for m in self.body.param_meta) + own
        enc = 0 if self.encoder is None else sum(p.numel() for p in self.encoder.parameters())
        disc = 0 if self.discriminator is None else sum(p.numel() for p in self.discriminator.parameters())
        return {
            "generator_trainable": float(gen), "generator_target": float(target),
            "generator_stored": float(self.protection.stored_numel()),
            "encoder": float(enc), "discriminator": float(disc), "trainable": float(gen + enc + disc),
            "compression_ratio": gen / target,
        }

    def checkpoint_state(self) -> dict[str, Any]:
        """Config, shapes, task counters and all weights/protection state (``weights_only``-loadable)."""
        return {
            "format": _FORMAT, "version": 2, "cfg": copy.deepcopy(self.cfg),
            "input_shape": list(self.input_shape), "n_tasks": self.n_tasks, "n_begun": self.n_begun,
            "current_task": self.current_task, "arch": self.body.arch_state(),
            "growth": [list(w) for w in self.growth],
            "module": {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in self.state_dict().items()},
        }

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`checkpoint_state` into a memory built with the same cfg (grows embeddings first).

        Optimizers are not restored: call :meth:`begin_task` before further steps.
        """
        if state.get("format") != _FORMAT:
            raise ValueError("not a GenerativeMemory checkpoint")
        arch = state.get("arch")
        if arch is not None:  # rebuild a grown body (and its per-task modules) before loading weights
            old = self.body.param_meta
            self.body.load_arch(arch)
            self.body.to(self.device)
            self.protection.expand(old, self.body.param_meta)
            self.growth = [list(w) for w in state.get("growth", [self.body.widths])]
        self.protection.grow(int(state["n_begun"]))
        self.load_state_dict(state["module"])
        self.n_begun = int(state["n_begun"])
        self.current_task = None
        self.snapshot = None  # of the weights before the load
        self._opts = {}
