"""Networks and losses of the replay models: a VAE and a conditional least-squares GAN.

The *body* (VAE decoder / GAN generator) has no weights of its own: it takes its weights as an
argument, so that a protection (hypernetwork, own weights + frozen copy, masks, ...) decides where
they come from. Its input is ``z`` concatenated with a task condition (one-hot), its output are
logits ``[B, C, H, W]`` (``sigmoid`` gives images in ``[0, 1]``).

The auxiliary nets (VAE encoder, GAN discriminator) are plain modules with their own weights.

* ``mlp``: hypnettorch ``mnets.MLP`` decoder (as in hypercl), MLP encoder / discriminator.
* ``conv``: DCGAN-style, 32x32 images only: ``z+c -> 4x4 -> 8x8 -> 16x16 -> 32x32`` with
  transposed convolutions (no batch norm: generated weights are task-specific, running stats
  would not be); a mirrored strided-conv encoder / discriminator.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import activation

__all__ = [
    "MLPDecoder", "ConvDecoder", "MLPTrunk", "ConvTrunk", "Encoder", "Discriminator",
    "build_body", "build_encoder", "build_discriminator", "vae_loss", "lsgan_d_loss", "lsgan_g_loss",
]

Shape = list[int]


class MLPDecoder(nn.Module):
    """Weightless MLP ``[B, in_dim] -> logits [B, *out_shape]`` (hypnettorch ``MLP(no_weights=True)``)."""

    def __init__(self, in_dim: int, out_shape: Sequence[int], hidden: Sequence[int], act: str = "relu") -> None:
        super().__init__()
        from hypnettorch.mnets import MLP

        self.out_shape = tuple(int(s) for s in out_shape)
        self.net = MLP(n_in=int(in_dim), n_out=math.prod(self.out_shape), hidden_layers=tuple(int(h) for h in hidden),
                       activation_fn=activation(act), no_weights=True, verbose=False)

    @property
    def param_shapes(self) -> list[Shape]:
        return [list(map(int, s)) for s in self.net.param_shapes]

    def forward(self, h: Tensor, weights: Sequence[Tensor]) -> Tensor:
        return self.net.forward(h, weights=list(weights)).view(-1, *self.out_shape)


class ConvDecoder(nn.Module):
    """Weightless DCGAN-style generator ``[B, in_dim] -> logits [B, C, 32, 32]``.

    Linear to ``4*ch x 4 x 4``, then ``ConvTranspose2d(k=4, s=2, p=1)`` to 8, 16, 32 pixels
    (``4ch -> 2ch -> ch -> C``), ReLU in between.
    """

    def __init__(self, in_dim: int, out_shape: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        c, h, w = (int(s) for s in out_shape)
        if (h, w) != (32, 32):
            raise ValueError(f"conv decoder needs 32x32 images, got {h}x{w}")
        self.out_shape = (c, h, w)
        self.ch = [4 * channels, 2 * channels, channels, c]
        self._shapes: list[Shape] = [[self.ch[0] * 16, int(in_dim)], [self.ch[0] * 16]]
        for cin, cout in zip(self.ch[:-1], self.ch[1:]):
            self._shapes += [[cin, cout, 4, 4], [cout]]

    @property
    def param_shapes(self) -> list[Shape]:
        return [list(s) for s in self._shapes]

    def forward(self, h: Tensor, weights: Sequence[Tensor]) -> Tensor:
        w = list(weights)
        x = F.relu(F.linear(h, w[0], w[1])).view(-1, self.ch[0], 4, 4)
        n = len(self.ch) - 1
        for i in range(n):
            x = F.conv_transpose2d(x, w[2 + 2 * i], w[3 + 2 * i], stride=2, padding=1)
            if i < n - 1:
                x = F.relu(x)
        return x


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
        c, h, w = (int(s) for s in in_shape)
        if (h, w) != (32, 32):
            raise ValueError(f"conv encoder needs 32x32 images, got {h}x{w}")
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


def build_body(arch: str, in_dim: int, shape: Sequence[int], hidden: Sequence[int], act: str = "relu",
               channels: int = 64) -> nn.Module:
    """The weightless decoder / generator of ``arch`` (``mlp`` | ``conv``)."""
    if arch == "mlp":
        return MLPDecoder(in_dim, shape, hidden, act)
    if arch == "conv":
        return ConvDecoder(in_dim, shape, channels)
    raise ValueError(f"unknown arch {arch!r} (choose mlp or conv)")


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


def vae_loss(logits: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(recon + kl, recon, kl)`` with hypercl's normalisation.

    ``recon`` = BCE mean over pixels and batch; ``kl`` = analytic KL to ``N(0, I)``, summed over
    latents, mean over the batch, divided by the number of pixels.
    """
    recon = F.binary_cross_entropy_with_logits(logits, x)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean() / x[0].numel()
    return recon + kl, recon, kl


def lsgan_d_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Least-squares GAN discriminator loss (Mao et al. 2017, a=0, b=1)."""
    return 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())


def lsgan_g_loss(d_fake: Tensor) -> Tensor:
    """Least-squares GAN generator loss (c=1)."""
    return 0.5 * (d_fake - 1).pow(2).mean()
