"""The generative memory: a task-conditioned replay model (VAE or LSGAN) plus its protection."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hnet import adam_lookahead
from .models import (build_body, build_discriminator, build_encoder, lsgan_d_loss, lsgan_g_loss, vae_loss)
from .protection import Blocks, Protection, build_protection

__all__ = ["GenerativeMemory", "DEFAULT_CFG", "memory_config"]

_FORMAT = "hyperdgm.GenerativeMemory"

#: Defaults = split-MNIST HNET+R replay VAE of hypercl (notes/hypercl_presets.md §1, §2, §4).
DEFAULT_CFG: dict[str, Any] = {
    "model": "vae",            # vae | gan
    "arch": "mlp",             # mlp | conv (conv: 32x32 images)
    "latent_dim": 100,
    "enc_hidden": [400, 400],  # VAE encoder; also the MLP discriminator unless gan.d_hidden
    "dec_hidden": [250, 350],  # decoder / generator (mlp)
    "activation": "relu",      # hidden activation of MLP decoder / encoder
    "conv_channels": 64,       # base width of the conv nets (4c, 2c, c)
    "cond_dim": 100,           # one-hot condition size (hypercl: 100); at least n_tasks is used
    "lr": 0.001,               # decoder weights / hnet theta, and encoder
    "emb_lr": 0.001,           # current task embedding (hnet)
    "protection": "hnet",      # hnet | replay | none
    "beta": 0.01,
    "lookahead": True,
    "tasks_per_step": None,
    "online_targets": False,
    "hnet": {"hidden": [10, 10], "activation": "elu", "chunk_size": 50000, "chunk_emb_size": 96,
             "task_emb_size": 96, "emb_init_std": 1.0},
    "gan": {"lr_d": 0.0001, "lr_g": 0.0001, "dropout_d": 0.4, "loss": "lsgan", "betas": [0.5, 0.999],
            "d_hidden": None},
}


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
    """``DEFAULT_CFG`` updated with ``cfg`` (one level deep for ``hnet`` / ``gan``); unknown nested keys raise."""
    out = copy.deepcopy(DEFAULT_CFG)
    for k, v in _plain(dict(cfg or {})).items():
        if k in ("hnet", "gan") and v is not None:
            bad = set(v) - set(out[k])
            if bad:
                raise ValueError(f"unknown {k} keys {sorted(bad)} (known: {sorted(out[k])})")
            out[k].update(v)
        else:
            out[k] = v
    if out["model"] not in ("vae", "gan"):
        raise ValueError(f"model must be vae or gan, got {out['model']!r}")
    if out["gan"]["loss"] != "lsgan":
        raise ValueError(f"only gan.loss=lsgan is implemented, got {out['gan']['loss']!r}")
    return out


class GenerativeMemory(nn.Module):
    """Task-conditioned replay model whose generator weights are owned by a :class:`Protection`.

    The body (VAE decoder / GAN generator) reads ``z ++ onehot(task, cond_dim)``;
    ``cond_dim = max(cfg.cond_dim, n_tasks)``. Optimizers (Adam) are rebuilt in :meth:`begin_task`.
    """

    def __init__(self, cfg: Mapping[str, Any] | None, input_shape: Sequence[int], n_tasks: int) -> None:
        super().__init__()
        self.cfg = memory_config(cfg)
        c = self.cfg
        self.input_shape = tuple(int(s) for s in input_shape)
        self.n_tasks = int(n_tasks)
        self.latent_dim = int(c["latent_dim"])
        self.cond_dim = max(int(c["cond_dim"]), self.n_tasks)
        self.model_type: str = c["model"]
        arch = c["arch"]
        self.body = build_body(arch, self.latent_dim + self.cond_dim, self.input_shape, c["dec_hidden"],
                               c["activation"], int(c["conv_channels"]))
        self.body_shapes = self.body.param_shapes
        self.encoder: nn.Module | None = None
        self.discriminator: nn.Module | None = None
        if self.model_type == "vae":
            self.encoder = build_encoder(arch, self.input_shape, c["enc_hidden"], self.latent_dim, c["activation"],
                                         int(c["conv_channels"]))
        else:
            g = c["gan"]
            self.discriminator = build_discriminator(
                arch, self.input_shape, g["d_hidden"] or c["enc_hidden"], self.cond_dim,
                float(g["dropout_d"]), int(c["conv_channels"]))
        self.protection: Protection = build_protection(c["protection"], c)
        self.protection.setup(self.body_shapes)
        self.n_begun = 0
        self.current_task: int | None = None
        self._opts: dict[str, torch.optim.Optimizer] = {}
        self._frozen: list[list[Tensor]] | None = None  # generator weights of earlier tasks, see sample_replay

    # -- helpers ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.protection.theta_parameters()[0].device

    def _ids(self, blocks: Blocks) -> Tensor:
        """Task id of every row ``[N]`` (built on the device, no host sync)."""
        dev = self.device
        return torch.cat([torch.full((n,), t, dtype=torch.long, device=dev) for t, n in blocks])

    def decode(self, z: Tensor, blocks: Blocks, weights: Sequence[Sequence[Tensor]]) -> Tensor:
        """Body logits ``[N, C, H, W]`` for ``z`` ``[N, latent]`` whose rows are grouped by ``blocks``
        (``(task, count)``), with ``weights[i]`` for block ``i``."""
        eye = torch.eye(self.cond_dim, device=z.device, dtype=z.dtype)  # (F.one_hot syncs on CUDA)
        h = torch.cat([z, eye.index_select(0, self._ids(blocks))], dim=1)
        if self.protection.shared_weights:
            return self.body(h, weights[0])
        outs, s = [], 0
        for (_, n), w in zip(blocks, weights):
            outs.append(self.body(h[s:s + n], w))
            s += n
        return torch.cat(outs)

    def generate(self, blocks: Blocks, *, weights: Sequence[Sequence[Tensor]] | None = None,
                 z: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Images in ``[0, 1]`` for ``blocks`` (with grad if weights require it); weights default to the protection's."""
        n = sum(c for _, c in blocks)
        if z is None:
            z = torch.randn(n, self.latent_dim, device=self.device, generator=generator)
        if weights is None:
            weights = self.protection.weights([t for t, _ in blocks])
        return torch.sigmoid(self.decode(z, blocks, weights))

    # -- lifecycle -------------------------------------------------------------------------
    def begin_task(self, task_id: int) -> None:
        """Protection's ``begin_task`` (adds the hnet embedding, snapshots), then fresh optimizers."""
        if not 0 <= task_id < self.cond_dim:
            raise ValueError(f"task id {task_id} out of range (cond_dim={self.cond_dim})")
        self.protection.begin_task(self, task_id)
        self._freeze_replay(task_id)
        self.current_task = int(task_id)
        self.n_begun = max(self.n_begun, task_id + 1)
        c, p = self.cfg, self.protection
        gan = self.model_type == "gan"
        betas = tuple(c["gan"]["betas"]) if gan else (0.9, 0.999)
        lr_g = float(c["gan"]["lr_g"] if gan else c["lr"])
        fused = True if self.device.type in ("cpu", "cuda") else None  # fused Adam: fewer passes per step
        adam = lambda ps, lr: torch.optim.Adam(ps, lr=lr, betas=betas, fused=fused)  # noqa: E731
        self._opts = {"gen": adam(p.theta_parameters(), lr_g)}
        task_params = p.task_parameters(task_id)
        if task_params:
            self._opts["emb"] = adam(task_params, float(c["emb_lr"]))
        if self.encoder is not None:
            self._opts["aux"] = torch.optim.Adam(self.encoder.parameters(), lr=float(c["lr"]), fused=fused)
        if self.discriminator is not None:
            self._opts["aux"] = adam(self.discriminator.parameters(), float(c["gan"]["lr_d"]))

    def end_task(self, task_id: int) -> None:
        self.protection.end_task(self, task_id)
        self._frozen = None

    # -- training --------------------------------------------------------------------------
    def _vae_terms(self, x: Tensor, blocks: Blocks) -> tuple[Tensor, Tensor, Tensor]:
        assert self.encoder is not None
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decode(z, blocks, self.protection.weights([t for t, _ in blocks]))
        return vae_loss(logits, x, mu, logvar)

    def _protect(self, task_id: int) -> Tensor:
        """Penalty backward (with Adam lookahead) and ``after_backward``; returns the detached penalty."""
        p = self.protection
        pen = None
        if p.has_penalty(task_id):
            delta = adam_lookahead(self._opts["gen"], p.lookahead_parameters()) if p.lookahead else None
            pen = p.penalty(self, task_id, delta=delta)
            pen.backward()
        p.after_backward(self)
        return torch.zeros((), device=self.device) if pen is None else pen.detach()

    def step(self, x: Tensor, task_id: int) -> dict[str, Tensor]:
        """One optimisation step on current real data ``x`` ``[B, C, H, W]`` in ``[0, 1]``; detached losses."""
        if self.current_task != task_id or not self._opts:
            raise RuntimeError(f"call begin_task({task_id}) before step")
        self.train()
        blocks: Blocks = [(int(task_id), int(x.shape[0]))]
        rep = self.protection.replay(self, task_id, int(x.shape[0]))
        for o in self._opts.values():
            o.zero_grad(set_to_none=True)
        if self.model_type == "vae":
            out = self._vae_step(x, blocks, rep)
        else:
            out = self._gan_step(x, blocks, rep)
        out["penalty"] = self._protect(task_id)
        for o in self._opts.values():
            o.step()
        return out

    def _vae_step(self, x: Tensor, blocks: Blocks, rep: tuple[Tensor, Blocks, float] | None) -> dict[str, Tensor]:
        loss, recon, kl = self._vae_terms(x, blocks)
        out = {"recon": recon.detach(), "kl": kl.detach()}
        total = loss
        if rep is not None:
            xr, br, w = rep
            rloss, _, _ = self._vae_terms(xr, br)
            total = (1 - w) * loss + w * rloss
            out["replay_loss"] = rloss.detach()
        total.backward()
        out["loss"] = total.detach()
        return out

    def _gan_step(self, x: Tensor, blocks: Blocks, rep: tuple[Tensor, Blocks, float] | None) -> dict[str, Tensor]:
        d = self.discriminator
        assert d is not None
        parts = [(x, blocks, 1.0)]
        if rep is not None:
            parts = [(x, blocks, 1 - rep[2]), (rep[0], rep[1], rep[2])]
        fakes = [(self.generate(b), self._ids(b), xr, w) for xr, b, w in parts]
        d_loss = sum(w * lsgan_d_loss(d(xr, ids), d(f.detach(), ids)) for f, ids, xr, w in fakes)
        d_loss.backward()
        self._opts["aux"].step()
        self._opts["aux"].zero_grad(set_to_none=True)
        g_loss = sum(w * lsgan_g_loss(d(f, ids)) for f, ids, _, w in fakes)
        g_loss.backward()
        for p in d.parameters():  # the G step must not move D (its optimizer steps again below)
            p.grad = None
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "loss": g_loss.detach()}

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, task_id: int, n: int, generator: torch.Generator | None = None,
               z: Tensor | None = None) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in ``[0, 1]`` of task ``task_id`` (``z`` ``[n, latent]`` optional).

        ``generator`` must live on the memory's device.
        """
        return self.generate([(int(task_id), int(n))], z=z, generator=generator)

    @torch.no_grad()
    def sample_tasks(self, task_ids: Sequence[int], n_per_task: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n_per_task`` samples of each task (one batched weight call) and their task ids ``[N]``."""
        blocks = [(int(t), int(n_per_task)) for t in task_ids]
        return self.generate(blocks, generator=generator), self._ids(blocks)

    @torch.no_grad()
    def _freeze_replay(self, task_id: int) -> None:
        """Keep the generator weights of tasks ``< task_id`` as they are when ``task_id`` begins.

        A learner replaying while this memory trains on the new task then sees the memory of the
        earlier tasks as it was (as in the reference codes, whose classifier learns against a fixed
        generator), and no weights are generated per replay step.
        """
        self._frozen = None
        if task_id > 0:
            ws = self.protection.weights(list(range(task_id)))
            ws = ws[:1] if self.protection.shared_weights else ws
            self._frozen = [[w.detach().clone() for w in lst] for lst in ws]

    @torch.no_grad()
    def sample_replay(self, task_ids: Sequence[int], n_per_task: int,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Like :meth:`sample_tasks` for replay during a task: earlier tasks come from the weights
        frozen when the current task began (live weights outside a task)."""
        frozen = self._frozen
        ids = [int(t) for t in task_ids]
        shared = self.protection.shared_weights
        if frozen is None or (not shared and not all(0 <= t < len(frozen) for t in ids)):
            return self.sample_tasks(ids, n_per_task, generator=generator)
        blocks = [(t, int(n_per_task)) for t in ids]
        weights = [frozen[0]] * len(ids) if self.protection.shared_weights else [frozen[t] for t in ids]
        return self.generate(blocks, weights=weights, generator=generator), self._ids(blocks)

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
        gen = self.protection.trainable_numel()
        target = sum(int(torch.Size(s).numel()) for s in self.body_shapes)
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
            "format": _FORMAT, "version": 1, "cfg": copy.deepcopy(self.cfg),
            "input_shape": list(self.input_shape), "n_tasks": self.n_tasks, "n_begun": self.n_begun,
            "current_task": self.current_task,
            "module": {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in self.state_dict().items()},
        }

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`checkpoint_state` into a memory built with the same cfg (grows embeddings first).

        Optimizers are not restored: call :meth:`begin_task` before further steps.
        """
        if state.get("format") != _FORMAT:
            raise ValueError("not a GenerativeMemory checkpoint")
        self.protection.grow(int(state["n_begun"]))
        self.load_state_dict(state["module"])
        self.n_begun = int(state["n_begun"])
        self.current_task = None
        self._opts = {}
