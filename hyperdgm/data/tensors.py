"""Batched tensor-side preprocessing: scaling, standardisation, padding, augmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DATASET_STATS", "NORMALIZATIONS", "to_float", "standardize", "pad_to", "random_crop_flip"]

#: Per-channel (mean, std) of the training sets, on the [0, 1] scale. MNIST has none.
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}

NORMALIZATIONS = ("unit", "standard")


def standardize(x: Tensor, dataset: str) -> Tensor:
    """``(x - mean) / std`` per channel for a float tensor ``[..., C, H, W]`` on the [0, 1] scale."""
    if dataset not in DATASET_STATS:
        raise ValueError(
            f"no channel statistics for dataset {dataset!r} (have {sorted(DATASET_STATS)}); use normalize='unit'"
        )
    mean, std = DATASET_STATS[dataset]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - mean_t) / std_t


def to_float(x: Tensor, dataset: str, normalize: str = "unit") -> Tensor:
    """Convert ``uint8`` images ``[B, C, H, W]`` to float32.

    ``"unit"``: ``x / 255`` in [0, 1]; ``"standard"``: per-channel standardisation with
    :data:`DATASET_STATS`.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    out = x.to(torch.float32) / 255.0
    return standardize(out, dataset) if normalize == "standard" else out


def pad_to(x: Tensor, size: int) -> Tensor:
    """Zero-pad ``[B, C, H, W]`` to ``[B, C, size, size]``, centred (28 -> 32 adds 2 px per side)."""
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"cannot pad {h}x{w} images to {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


def random_crop_flip(
    x: Tensor, padding: int = 4, generator: torch.Generator | None = None, *, flip: bool = True
) -> Tensor:
    """Random crop after zero padding plus random horizontal flip (p=0.5), per sample.

    Vectorised over the batch with advanced indexing. ``x`` is ``[B, C, H, W]``; the output has
    the same shape. Random numbers come from ``generator`` (drawn on its device).
    """
    b, c, h, w = x.shape
    gdev = generator.device if generator is not None else torch.device("cpu")
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gdev).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gdev).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = dy[:, None] + ar_h  # [B, H]
    if flip:
        mirror = torch.rand((b,), generator=generator, device=gdev).to(x.device) < 0.5
        ar_w = torch.where(mirror[:, None], (w - 1 - ar_w)[None, :], ar_w[None, :])  # [B, W]
    cols = dx[:, None] + ar_w  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
