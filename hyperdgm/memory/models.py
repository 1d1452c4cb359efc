"""Auxiliary networks and losses of the replay models: VAE encoder, LSGAN and AC-GAN discriminators.

The generator bodies live in :mod:`.bodies`; these nets are plain modules with their own weights.

* ``mlp``: MLP encoder / discriminator (as in hypercl).
* ``conv``: strided-conv encoder / discriminator for 32x32 images.
* :class:`ACDiscriminator`: DGM's / MeRGAN's AC-GAN discriminator, a WGAN critic head and an
  auxiliary classification head on one conv trunk (DGM's DCGAN trunk, or WGAN-GP's CIFAR-10 ResNet).
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


def _norm2d(norm: str, c: int) -> list[nn.Module]:
    if norm == "batch":
        return [nn.BatchNorm2d(c)]
    if norm == "layer":  # what WGAN-GP recommends: no coupling between the samples of a batch
        return [nn.GroupNorm(1, c)]
    return []


class _ResBlockD(nn.Module):
    """WGAN-GP's residual critic block (``gan_cifar_resnet.py``): ``[norm] -> ReLU -> conv3x3 -> [norm] ->
    ReLU -> conv3x3 [-> mean-pool 2]`` plus a shortcut (identity, or ``conv1x1 [-> mean-pool]``).
    ``first``: the optimised first block (no activation before its first conv; shortcut pools first)."""

    def __init__(self, cin: int, cout: int, down: bool, norm: str, first: bool = False) -> None:
        super().__init__()
        pre = [] if first else [*_norm2d(norm, cin), nn.ReLU()]
        def pool() -> list[nn.Module]:
            return [nn.AvgPool2d(2)] if down else []

        self.path = nn.Sequential(*pre, nn.Conv2d(cin, cout, 3, 1, 1), *_norm2d(norm, cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1), *pool())
        if cin == cout and not down:
            self.shortcut: nn.Module = nn.Identity()
        else:
            conv = [nn.Conv2d(cin, cout, 1)]
            self.shortcut = nn.Sequential(*(pool() + conv if first else conv + pool()))

    def forward(self, x: Tensor) -> Tensor:
        return self.path(x) + self.shortcut(x)


class ACDiscriminator(nn.Module):
    """AC-GAN discriminator for 32x32 images: a trunk, a WGAN critic head ``Linear(., 1)`` and an
    auxiliary classifier ``Linear(., n_classes)``. Inputs in ``[0, 1]`` are mapped to ``[-1, 1]``.

    ``arch="dcgan"`` (DGM's ``netD``; MeRGAN's with ``norm="none"``): ``Conv(C, ndf, 5, 2, 2, no bias) ->
    LReLU(0.2) -> Conv(ndf, 2ndf, 5, 2, 2) [-> norm] -> LReLU -> Conv(2ndf, 4ndf, 5, 2, 2) [-> norm] -> LReLU
    -> flatten (4ndf * 16)``. Init as the official code: convs N(0, 0.02), BN weight N(1, 0.02).

    ``arch="resnet"`` (WGAN-GP's CIFAR-10 critic, which DGM names for CIFAR-10): four residual blocks of
    ``ndf`` channels (down to 16, down to 8, then two at 8x8) -> ReLU -> global mean pool (``ndf``
    features). Init as WGAN-GP: the blocks' 3x3 convs uniform with std ``sqrt(4 / (fan_in + fan_out))``,
    shortcuts Glorot, biases 0.

    ``norm``: ``batch`` (DGM's), ``layer`` (WGAN-GP's advice) or ``none`` (MeRGAN's, WGAN-GP's CIFAR-10
    critic). With batch norm the critic sees real and fake batches normalised apart, which the gradient
    penalty does not constrain (measured: the critic's Wasserstein estimate grows without bound early in
    training).
    """

    ARCHS = ("dcgan", "resnet")

    def __init__(self, shape: Sequence[int], n_classes: int, ndf: int = 32, norm: str = "batch",
                 arch: str = "dcgan") -> None:
        super().__init__()
        c, _, _ = image_32(shape, "the AC-GAN discriminator")
        if norm not in ("batch", "layer", "none"):
            raise ValueError(f"discriminator norm must be batch, layer or none, got {norm!r}")
        if arch not in self.ARCHS:
            raise ValueError(f"discriminator arch must be one of {', '.join(self.ARCHS)}, got {arch!r}")
        self.arch = arch
        if arch == "resnet":
            self.trunk = nn.Sequential(_ResBlockD(c, ndf, True, norm, first=True), _ResBlockD(ndf, ndf, True, norm),
                                       _ResBlockD(ndf, ndf, False, norm), _ResBlockD(ndf, ndf, False, norm),
                                       nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            n_feat = ndf
        else:
            layers: list[nn.Module] = [nn.Conv2d(c, ndf, 5, 2, 2, bias=False), nn.LeakyReLU(0.2)]
            for cin, cout in ((ndf, 2 * ndf), (2 * ndf, 4 * ndf)):
                layers += [nn.Conv2d(cin, cout, 5, 2, 2), *_norm2d(norm, cout), nn.LeakyReLU(0.2)]
            layers.append(nn.Flatten())
            self.trunk = nn.Sequential(*layers)
            n_feat = 4 * ndf * 16
        self.critic = nn.Linear(n_feat, 1)
        self.aux = nn.Linear(n_feat, int(n_classes))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if self.arch == "resnet":  # WGAN-GP: "he" uniform for 3x3 convs, Glorot for 1x1 shortcuts
                    nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2.0) if m.kernel_size[0] > 1 else 1.0)
                else:
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
