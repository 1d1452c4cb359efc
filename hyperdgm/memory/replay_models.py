"""Replay models: what the generator is trained with (losses, auxiliary nets, step schedule).

Each model owns its auxiliary nets (VAE encoder, GAN discriminator), their optimizers and its
step schedule (critic steps, gradient penalty). The generator side goes through the memory:
``mem.generate`` / ``mem.decode`` with the protection's weights, and ``mem.update_generator(loss)``,
which runs the one hook sequence (protection penalty, gradient masks, optimizer steps).

* ``vae``    conditional decoder, unconditioned encoder (hypercl's HNET+R / DGR replay VAE).
* ``gan``    conditional least-squares GAN with a projection discriminator, 1:1 schedule.
* ``acgan``  AC-GAN with WGAN-GP (DGM, MeRGAN): a critic head and an auxiliary classifier head;
  ``n_critic`` critic steps per generator step, gradient penalty ``gp``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import (ACDiscriminator, build_discriminator, build_encoder, gradient_penalty, lsgan_d_loss,
                     lsgan_g_loss, vae_loss)
from .protection import Blocks, ReplayData

#: Draws another batch of the current task's real data: ``(x in [0, 1], conditions)``.
RealDraw = Callable[[], "tuple[Tensor, Tensor]"]

if TYPE_CHECKING:  # pragma: no cover
    from .memory import GenerativeMemory

__all__ = ["fused_adam", "ReplayModel", "VAEModel", "LSGANModel", "ACGANModel", "REPLAY_MODELS", "build_replay_model"]


def fused_adam(params, lr: float, betas: Sequence[float], device: torch.device) -> torch.optim.Adam:
    """Adam over ``params``; the fused kernel on CPU / CUDA (fewer passes per step)."""
    fused = True if device.type in ("cpu", "cuda") else None
    return torch.optim.Adam(list(params), lr=float(lr), betas=tuple(float(b) for b in betas), fused=fused)


class ReplayModel(nn.Module):
    """Base class. ``generator_optim`` gives the generator's ``(lr, betas)``."""

    name: ClassVar[str] = "base"

    def __init__(self, cfg: Mapping[str, Any], shape: Sequence[int], cond_dim: int, arch: str,
                 n_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.opt: torch.optim.Optimizer | None = None

    def generator_optim(self) -> tuple[float, tuple[float, float]]:
        return float(self.cfg["lr"]), (0.9, 0.999)

    def begin_task(self, task_id: int, device: torch.device) -> None:
        """Fresh optimizer of the auxiliary net (as the reference codes: per task)."""

    def step(self, mem: "GenerativeMemory", x: Tensor, cond: Tensor, blocks: Blocks,
             rep: ReplayData | None, draw: RealDraw | None = None) -> dict[str, Tensor]:  # pragma: no cover - abstract
        """One step on current real data ``x`` (conditions ``cond``, ``blocks``) and the protection's replay ``rep``;
        ``draw`` gives another batch of the current task's real data when a model wants more than one per step."""
        raise NotImplementedError


class VAEModel(ReplayModel):
    name = "vae"

    def __init__(self, cfg, shape, cond_dim, arch, n_classes) -> None:
        super().__init__(cfg, shape, cond_dim, arch, n_classes)
        self.encoder = build_encoder(arch, shape, cfg["enc_hidden"], int(cfg["latent_dim"]), cfg["activation"],
                                     int(cfg["conv_channels"]))

    def begin_task(self, task_id: int, device: torch.device) -> None:
        self.opt = fused_adam(self.encoder.parameters(), self.cfg["lr"], (0.9, 0.999), device)

    def reconstruct(self, mem: "GenerativeMemory", x: Tensor, cond: Tensor, blocks: Blocks
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """The decoder's logits of a reparametrised encoding of ``x``, and the encoding's ``mu``, ``logvar``."""
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = mem.decode(z, cond, blocks, mem.protection.weights([t for t, _ in blocks]), batch_stats=True)
        return logits, mu, logvar

    def terms(self, mem: "GenerativeMemory", x: Tensor, cond: Tensor, blocks: Blocks) -> tuple[Tensor, Tensor, Tensor]:
        return self.loss_of(mem, x, *self.reconstruct(mem, x, cond, blocks))

    def loss_of(self, mem: "GenerativeMemory", x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        return vae_loss(logits, x, mu, logvar, mem.likelihood, float(self.cfg["gaussian_std"]))

    def step(self, mem, x, cond, blocks, rep, draw=None) -> dict[str, Tensor]:
        assert self.opt is not None
        mem.zero_grad_generator()
        self.opt.zero_grad(set_to_none=True)
        if rep is not None and mem.body.rows_independent:
            # one pass over the current and the replayed rows (no batch statistics couple them); the noise is
            # drawn for the rows in the same order as two passes draw it
            xr, cr, br, w = rep
            n = x.shape[0]
            logits, mu, logvar = self.reconstruct(mem, torch.cat([x, xr]), torch.cat([cond, cr]), [*blocks, *br])
            loss, recon, kl = self.loss_of(mem, x, logits[:n], mu[:n], logvar[:n])
            rloss, _, _ = self.loss_of(mem, xr, logits[n:], mu[n:], logvar[n:])
        else:
            loss, recon, kl = self.terms(mem, x, cond, blocks)
            if rep is not None:
                xr, cr, br, w = rep
                rloss, _, _ = self.terms(mem, xr, cr, br)
        out = {"recon": recon.detach(), "kl": kl.detach()}
        total = loss
        if rep is not None:
            total = (1 - w) * loss + w * rloss
            out["replay_loss"] = rloss.detach()
        out["penalty"] = mem.update_generator(total, [self.opt])
        out["loss"] = total.detach()
        return out


class LSGANModel(ReplayModel):
    name = "gan"

    def __init__(self, cfg, shape, cond_dim, arch, n_classes) -> None:
        super().__init__(cfg, shape, cond_dim, arch, n_classes)
        g = cfg["gan"]
        self.discriminator = build_discriminator(arch, shape, g["d_hidden"] or cfg["enc_hidden"], cond_dim,
                                                 float(g["dropout_d"]), int(cfg["conv_channels"]))

    def generator_optim(self) -> tuple[float, tuple[float, float]]:
        g = self.cfg["gan"]
        return float(g["lr_g"]), tuple(g["betas"])

    def begin_task(self, task_id: int, device: torch.device) -> None:
        g = self.cfg["gan"]
        self.opt = fused_adam(self.discriminator.parameters(), g["lr_d"], g["betas"], device)

    def step(self, mem, x, cond, blocks, rep, draw=None) -> dict[str, Tensor]:
        d, opt = self.discriminator, self.opt
        assert opt is not None
        mem.zero_grad_generator()
        opt.zero_grad(set_to_none=True)
        parts = [(x, cond, blocks, 1.0)]
        if rep is not None:
            parts = [(x, cond, blocks, 1 - rep[3]), rep]
        fakes = [(mem.generate(b, cond=c, batch_stats=True), c, xr, w) for xr, c, b, w in parts]
        d_loss = sum(w * lsgan_d_loss(d(xr, c), d(f.detach(), c)) for f, c, xr, w in fakes)
        d_loss.backward()
        opt.step()
        d.requires_grad_(False)  # the generator step must not move (or even differentiate) D
        try:
            g_loss = sum(w * lsgan_g_loss(d(f, c)) for f, c, _, w in fakes)
            pen = mem.update_generator(g_loss)
        finally:
            d.requires_grad_(True)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "loss": g_loss.detach(), "penalty": pen}


class ACGANModel(ReplayModel):
    """AC-GAN with WGAN-GP. Per step: ``n_critic`` critic steps on real data (current plus the
    protection's replay; with ``fresh_real`` each critic step after the first on a new batch of current
    data from ``draw``, as the official MeRGAN) against fakes of the same conditions, with gradient penalty ``gp``
    (+ ``aux_weight`` x CE of the auxiliary head on real data); then one generator step on
    ``-critic(fake)`` (+ ``aux_g_weight`` x CE of the auxiliary head on fakes) and the protection.

    The auxiliary head is a classifier over ``n_classes`` classes (DGM scores it on real test data):
    :meth:`classifier_step` trains it, :meth:`classify` applies it.
    """

    name = "acgan"

    def __init__(self, cfg, shape, cond_dim, arch, n_classes) -> None:
        super().__init__(cfg, shape, cond_dim, arch, n_classes)
        a = cfg["acgan"]
        self.n_classes = int(n_classes)
        self.discriminator = ACDiscriminator(shape, self.n_classes, int(a["ndf"]), str(a["d_norm"]), str(a["d_arch"]))

    def generator_optim(self) -> tuple[float, tuple[float, float]]:
        a = self.cfg["acgan"]
        return float(a["lr_g"]), tuple(a["betas"])

    def begin_task(self, task_id: int, device: torch.device) -> None:
        a = self.cfg["acgan"]
        if task_id > 0 and a["reinit_d"]:
            self.discriminator.reset_parameters()  # DGM's reinit_D: a fresh critic and classifier per task
        self.opt = fused_adam(self.discriminator.parameters(), a["lr_d"], a["betas"], device)

    def step(self, mem, x, cond, blocks, rep, draw=None) -> dict[str, Tensor]:
        a, d, opt = self.cfg["acgan"], self.discriminator, self.opt
        assert opt is not None
        real, rc, rb = x, cond, blocks
        if rep is not None:
            real, rc, rb = torch.cat([x, rep[0]]), torch.cat([cond, rep[1]]), blocks + rep[2]
        gp_w, aux_w = float(a["gp"]), float(a["aux_weight"])
        if a["fresh_real"] and draw is None:
            raise ValueError("memory.acgan.fresh_real draws a new real batch for every critic step: it needs a method "
                             "that hands the memory its task's data (dgm, mergan)")
        for i in range(int(a["n_critic"])):
            if i > 0 and a["fresh_real"]:  # the official MeRGAN: a new real batch for every critic step
                xi, ci = draw()
                real, rc, rb = xi, ci, [(blocks[0][0], int(xi.shape[0]))]
                if rep is not None:
                    real, rc, rb = torch.cat([xi, rep[0]]), torch.cat([ci, rep[1]]), rb + rep[2]
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                fake = mem.generate(rb, cond=rc, batch_stats=True)
            c_real, logits = d(real)
            c_fake, _ = d(fake)
            w_dist = c_real.mean() - c_fake.mean()
            gp = gradient_penalty(lambda t: d(t)[0], real, fake)
            d_loss = -w_dist + gp_w * gp
            if aux_w:
                d_loss = d_loss + aux_w * F.cross_entropy(logits, rc)
            d_loss.backward()
            opt.step()
        mem.zero_grad_generator()
        fake = mem.generate(rb, cond=rc, batch_stats=True)
        d.requires_grad_(False)
        try:
            c_fake, logits = d(fake)
            g_loss = -c_fake.mean()
            if float(a["aux_g_weight"]):
                g_loss = g_loss + float(a["aux_g_weight"]) * F.cross_entropy(logits, rc)
            pen = mem.update_generator(g_loss)
        finally:
            d.requires_grad_(True)
        return {"d_loss": d_loss.detach(), "w_dist": w_dist.detach(), "gp": gp.detach(), "g_loss": g_loss.detach(),
                "loss": g_loss.detach(), "penalty": pen}

    def logits(self, x: Tensor, n_classes: int, head: Sequence[Tensor] | None = None) -> Tensor:
        """Class logits over the first ``n_classes`` classes: the auxiliary head, or ``head = (W, b)``
        applied to the discriminator's features (a head generated by a hypernetwork)."""
        f = self.discriminator.features(x)
        out = self.discriminator.aux(f) if head is None else F.linear(f, head[0], head[1])
        return out[:, :n_classes]

    def classifier_loss(self, x: Tensor, y: Tensor, n_classes: int, weights: Tensor | None = None,
                        head: Sequence[Tensor] | None = None) -> Tensor:
        """Cross-entropy of :meth:`logits` against global labels ``y``; ``weights`` per sample."""
        ce = F.cross_entropy(self.logits(x, n_classes, head), y, reduction="none")
        return ce.mean() if weights is None else (ce * weights).sum() / weights.sum()

    def classifier_step(self, x: Tensor, y: Tensor, n_classes: int, weights: Tensor | None = None) -> Tensor:
        """One step of the auxiliary classifier (D's optimizer) on ``x`` with global labels ``y``
        over the first ``n_classes`` classes; ``weights`` per sample (mean-normalised by the caller)."""
        assert self.opt is not None
        self.opt.zero_grad(set_to_none=True)
        loss = self.classifier_loss(x, y, n_classes, weights)
        loss.backward()
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def classify(self, x: Tensor, n_classes: int, head: Sequence[Tensor] | None = None) -> Tensor:
        return self.logits(x, n_classes, head)


REPLAY_MODELS: dict[str, type[ReplayModel]] = {c.name: c for c in (VAEModel, LSGANModel, ACGANModel)}


def build_replay_model(cfg: Mapping[str, Any], shape: Sequence[int], cond_dim: int, arch: str,
                       n_classes: int) -> ReplayModel:
    name = cfg["model"]
    if name not in REPLAY_MODELS:
        raise ValueError(f"unknown replay model {name!r} (choose from {', '.join(sorted(REPLAY_MODELS))})")
    return REPLAY_MODELS[name](cfg, shape, cond_dim, arch, n_classes)
