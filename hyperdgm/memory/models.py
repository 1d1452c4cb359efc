"""Auxiliary networks and losses of the replay models: VAE encoder, LSGAN and AC-GAN discriminators.

The generator bodies live in :mod:`.bodies`; these nets are plain modules with their own weights.

* ``mlp``: MLP encoder / discriminator (as in hypercl).
* ``conv``: strided-conv encoder / discriminator for 32x32 images.
* :class:`ACDiscriminator`: DGM's / MeRGAN's AC-GAN discriminator, a WGAN critic head and an
  auxiliary classification head on one conv trunk.
"""
from __future__ import annotations

import math

import torch
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import activation
from .bodies import image_32

__all__ = [
    "MLPTrunk", "ConvTrunk", "Encoder", "Discriminator", "ACDiscriminator", "build_encoder",
    "build_discriminator", "vae_loss", "lsgan_d_loss", "lsgan_g_loss", "gradient_penalty",
]

Shape = list[int]


class MLPTrunk(nn.Module):
    """Flatten + ``Linear``/activation(/dropout) layers; ``out_features`` = last hidden size."""

    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], act: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        n = math.prod(int(s) for s in in_shape)
        for hdim in hidden:
            layers += [nn.Linear(n, int(hdim)), act]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            n = int(hdim)
        self.net = nn.Sequential(*layers)
        self.out_features = n

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvTrunk(nn.Module):
    """Strided convs ``C -> ch -> 2ch -> 4ch`` (32 -> 16 -> 8 -> 4 px), LeakyReLU(0.2), flattened."""

    def __init__(self, in_shape: Sequence[int], channels: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        c, _, _ = image_32(in_shape, "the conv encoder")
        ch = [c, channels, 2 * channels, 4 * channels]
        layers: list[nn.Module] = []
        for cin, cout in zip(ch[:-1], ch[1:]):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Flatten())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)
        self.out_features = ch[-1] * 16

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """VAE encoder (unconditioned, as in hypercl): trunk + linear to ``(mu, logvar)``."""

    def __init__(self, trunk: nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_features, 2 * int(latent_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.trunk(x)).chunk(2, dim=1)
        return mu, logvar


class Discriminator(nn.Module):
    """Task-conditioned discriminator with a projection (Miyato & Koyama 2018): ``f(h) + <e_task, h>``.

    Inputs in ``[0, 1]`` are mapped to ``[-1, 1]``.
    """

    def __init__(self, trunk: nn.Module, cond_dim: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.out_features, 1)
        self.embed = nn.Embedding(int(cond_dim), trunk.out_features)
        nn.init.zeros_(self.embed.weight)

    def forward(self, x: Tensor, task_ids: Tensor) -> Tensor:
        h = self.trunk(x * 2.0 - 1.0)
        return self.head(h).squeeze(1) + (self.embed(task_ids) * h).sum(1)


def _trunk(arch: str, shape: Sequence[int], hidden: Sequence[int], act: nn.Module, channels: int,
           dropout: float) -> nn.Module:
    if arch == "mlp":
        return MLPTrunk(shape, hidden, act, dropout)
    if arch == "conv":
        return ConvTrunk(shape, channels, dropout)
    raise ValueError(f"unknown arch {arch!r} (choose mlp or conv)")


def build_encoder(arch: str, shape: Sequence[int], hidden: Sequence[int], latent_dim: int, act: str = "relu",
                  channels: int = 64) -> Encoder:
    """VAE encoder: ``mlp`` (hidden layers, ``act``) or ``conv`` (LeakyReLU convs)."""
    return Encoder(_trunk(arch, shape, hidden, activation(act), channels, 0.0), latent_dim)


def build_discriminator(arch: str, shape: Sequence[int], hidden: Sequence[int], cond_dim: int,
                        dropout: float = 0.4, channels: int = 64) -> Discriminator:
    """GAN discriminator (LeakyReLU(0.2), dropout after hidden layers / conv features)."""
    return Discriminator(_trunk(arch, shape, hidden, nn.LeakyReLU(0.2), channels, dropout), cond_dim)


def vae_loss(logits: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, likelihood: str = "bernoulli",
             std: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``(recon + kl, recon, kl)`` with hypercl's normalisation.

    ``recon`` = BCE mean over pixels and batch (``bernoulli``), or for ``gaussian`` (features) the
    negative log-likelihood of ``N(logits, std^2)`` without its constant, ``0.5 ((x - mean) / std)^2``,
    mean over dimensions and batch; ``kl`` = analytic KL to ``N(0, I)``, summed over latents, mean
    over the batch, divided by the number of dimensions.
    """
    if likelihood == "gaussian":
        recon = 0.5 * ((logits - x) / std).pow(2).mean()
    else:
        recon = F.binary_cross_entropy_with_logits(logits, x)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean() / x[0].numel()
    return recon + kl, recon, kl


def lsgan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Least-squares GAN discriminator loss (Mao et al. 2017, a=0, b=1)."""
    return 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())


def lsgan_g_loss(d_fake: Tensor) -> Tensor:
    """Least-squares GAN generator loss (c=1)."""
    return 0.5 * (d_fake - 1).pow(2).mean()


class ACDiscriminator(nn.Module):
    """AC-GAN discriminator for 32x32 images (DGM's ``netD``; MeRGAN's with ``norm="none"``).

    ``Conv(C, ndf, 5, 2, 2, no bias) -> LReLU(0.2) -> Conv(ndf, 2ndf, 5, 2, 2) [-> norm] -> LReLU ->
    Conv(2ndf, 4ndf, 5, 2, 2) [-> norm] -> LReLU -> flatten (4ndf * 16)``; ``norm``: ``batch`` (DGM's),
    ``layer`` (WGAN-GP's advice) or ``none`` (MeRGAN's). With batch norm the critic sees real and fake
    batches normalised apart, which the gradient penalty does not constrain (measured: the critic's
    Wasserstein estimate grows without bound early in training)., then a WGAN critic head
    ``Linear(., 1)`` and an auxiliary classifier ``Linear(., n_classes)``. Inputs in ``[0, 1]`` are
    mapped to ``[-1, 1]``. Init as the official code: convs N(0, 0.02), BN weight N(1, 0.02).
    """

    def __init__(self, shape: Sequence[int], n_classes: int, ndf: int = 32, norm: str = "batch") -> None:
        super().__init__()
        c, _, _ = image_32(shape, "the AC-GAN discriminator")
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"discriminator norm must be batch, layer or none, got {norm!r}")
        layers: list[nn.Module] = [nn.Conv2d(c, ndf, 5, 2, 2, bias=False), nn.LeakyReLU(0.2)]
        for cin, cout in ((ndf, 2 * ndf), (2 * ndf, 4 * ndf)):
            layers.append(nn.Conv2d(cin, cout, 5, 2, 2))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            elif norm == "layer":  # what WGAN-GP recommends: no coupling between the samples of a batch
                layers.append(nn.GroupNorm(1, cout))
            layers.append(nn.LeakyReLU(0.2))
        layers.append(nn.Flatten())
        self.trunk = nn.Sequential(*layers)
        self.critic = nn.Linear(4 * ndf * 16, 1)
        self.aux = nn.Linear(4 * ndf * 16, int(n_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()

    def features(self, x: Tensor) -> Tensor:
        return self.trunk(x * 2.0 - 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(critic [B], class logits [B, n_classes])``."""
        h = self.features(x)
        return self.critic(h).squeeze(1), self.aux(h)


def gradient_penalty(critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``mean_i (||grad_x D(x_i)|| - 1)^2`` at ``x = a real + (1-a) fake``,
    ``a ~ U(0, 1)`` per sample. The interpolates are a new leaf: the penalty does not reach the generator."""
    a = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype,
                   generator=generator)
    x = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return (g.flatten(1).norm(2, dim=1) - 1).pow(2).mean()
