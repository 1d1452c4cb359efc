"""A synthetic image data set generated in memory: try a method in seconds, test without any download.

Ten classes built from five smooth random "parts" (bright blobs on a dark border, as MNIST's
strokes): each class is the union of its own pair of parts, so every part appears in four classes
of different tasks, with a different meaning in each. A sample is its class's prototype shifted by
up to two pixels, scaled in brightness and overlaid with noise, quantised to ``uint8`` as the real
readers' images. A small MLP tells the ten classes apart after about a hundred steps; a net trained
on one task after another reuses the parts for the new classes and forgets the old ones (split
into tasks, finetune loses old tasks in CL1 and CL2 as on split MNIST).

The data set is fixed, as MNIST is: generated from :data:`DATA_SEED` (training and test samples from
separate streams), the same wherever ``torch.Generator`` draws the same numbers. Benchmarks over it
select tasks, subsets and validation samples from their own ``seed`` exactly as over the real data
sets. The readers have the real readers' signature and ignore the data root.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import os

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DATA_SEED", "N_CLASSES", "TRAIN_PER_CLASS", "TEST_PER_CLASS", "GENERATED", "make_synthetic",
           "read_synthetic", "read_synthetic_rgb", "fingerprint"]

DATA_SEED = 20240601
N_CLASSES = 10
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
_SHIFT = 2           # samples move by up to this many pixels each way
_NOISE = 0.15        # std of the per-pixel noise, on the [0, 1] scale
_N_PARTS = 5         # C(5, 2) = 10 classes
_LOW_RES = 7         # prototypes are smooth: random fields at this resolution, upsampled
#: the generated data sets (a benchmark's ``Task.dataset``) and their (channels, size)
GENERATED: dict[str, tuple[int, int]] = {"synthetic": (1, 28), "synthetic_rgb": (3, 32)}


def _field(g: torch.Generator, channels: int, inner: int) -> Tensor:
    """A smooth pattern ``[C, inner, inner]`` in (0, 1): bright blobs (about a third of it) on dark."""
    low = torch.randn(1, channels, _LOW_RES, _LOW_RES, generator=g)
    up = F.interpolate(low, size=(inner, inner), mode="bicubic", align_corners=False)[0]
    return torch.sigmoid(4.0 * (up - 0.5))


def _prototypes(channels: int, size: int) -> Tensor:
    """``[N_CLASSES, C, size, size]`` in [0, 1]: per class the union of two parts, inside a dark border."""
    g = torch.Generator().manual_seed(DATA_SEED)
    inner = size - 2 * (_SHIFT + 2)
    parts = torch.stack([_field(g, channels, inner) for _ in range(_N_PARTS)])
    pairs = list(itertools.combinations(range(_N_PARTS), 2))
    order = torch.randperm(len(pairs), generator=g).tolist()
    protos = torch.zeros(N_CLASSES, channels, size, size)
    lo = _SHIFT + 2
    for c in range(N_CLASSES):
        i, j = pairs[order[c]]
        protos[c, :, lo : lo + inner, lo : lo + inner] = torch.maximum(parts[i], parts[j])
    return protos


def _shift(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Each image of ``x`` [N, C, H, W] moved by its own (dy, dx) pixels, zeros shifted in."""
    n, _, h, w = x.shape
    padded = F.pad(x, (_SHIFT, _SHIFT, _SHIFT, _SHIFT))
    rows = (torch.arange(h).view(1, h, 1) + _SHIFT - dy.view(n, 1, 1)).expand(n, h, w)
    cols = (torch.arange(w).view(1, 1, w) + _SHIFT - dx.view(n, 1, 1)).expand(n, h, w)
    flat = rows * (w + 2 * _SHIFT) + cols  # [N, H, W] positions in each padded image
    return padded.flatten(2).gather(2, flat.flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)).view_as(x)


@functools.lru_cache(maxsize=8)
def make_synthetic(train: bool, channels: int = 1, size: int = 28) -> tuple[Tensor, Tensor]:
    """``(images uint8 [N, C, size, size], labels int64 [N])``, classes interleaved, deterministic.

    Cached: callers share the tensors and must not modify them in place (as the readers' cache).
    """
    if channels < 1 or size < 2 * (_SHIFT + 2) + _LOW_RES:
        raise ValueError(f"synthetic images need channels >= 1 and size >= {2 * (_SHIFT + 2) + _LOW_RES}")
    protos = _prototypes(channels, size)
    per_class = TRAIN_PER_CLASS if train else TEST_PER_CLASS
    g = torch.Generator().manual_seed(DATA_SEED + (1 if train else 2))  # disjoint train / test draws
    y = torch.arange(N_CLASSES).repeat(per_class)
    n = y.numel()
    dy = torch.randint(-_SHIFT, _SHIFT + 1, (n,), generator=g)
    dx = torch.randint(-_SHIFT, _SHIFT + 1, (n,), generator=g)
    gain = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
    x = _shift(protos[y], dy, dx) * gain + _NOISE * torch.randn(n, channels, size, size, generator=g)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, y


def read_synthetic(root: str | os.PathLike | None, train: bool) -> tuple[Tensor, Tensor]:
    """The grey 1x28x28 synthetic set (``root`` unused: nothing is read from disk)."""
    return make_synthetic(bool(train), *GENERATED["synthetic"])


def read_synthetic_rgb(root: str | os.PathLike | None, train: bool) -> tuple[Tensor, Tensor]:
    """The colour 3x32x32 synthetic set, for convolutional targets and replay models."""
    return make_synthetic(bool(train), *GENERATED["synthetic_rgb"])


@functools.lru_cache(maxsize=None)
def fingerprint(dataset: str) -> bytes | None:
    """sha256 of a generated data set's samples (train and test); ``None`` for a data set read from files.

    A run's dataset digest names the files by the data root; a generated set has none, so the digest
    takes its samples: a change to the generator shows as another data set.
    """
    if dataset not in GENERATED:
        return None
    h = hashlib.sha256()
    for train in (True, False):
        for t in make_synthetic(train, *GENERATED[dataset]):
            h.update(t.numpy().tobytes())
    return h.digest()
