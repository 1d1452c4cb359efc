"""Training precision: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 only where the hardware has it).

bf16 autocast pays only with native bf16 arithmetic: on a CUDA GPU that supports it, or a CPU with
AVX512-BF16 / AMX (oneDNN reports it). On a CPU without it (AVX2 only) oneDNN emulates bf16 and a
DGM step ran 12.6x slower than in fp32 (measured: 40 steps of cil_mnist_dgmw_short, 467 s vs 37 s,
AMD EPYC, 1 thread), so ``auto`` falls back to fp32 there and an explicit ``bf16`` warns.
"""
from __future__ import annotations

import logging

import torch

__all__ = ["PRECISIONS", "native_bf16", "resolve_precision"]

log = logging.getLogger(__name__)

#: accepted spellings -> canonical name
PRECISIONS = {"fp32": "fp32", "float32": "fp32", "32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "auto": "auto"}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (not by emulation)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:  # oneDNN's own check: AVX512-BF16 or AMX
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
            return False
    return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``fp32`` or ``bf16`` for the configured ``name`` on ``device``; unknown names raise ``ValueError``."""
    key = PRECISIONS.get(str(name).lower())
    if key is None:
        raise ValueError(f"trainer.precision must be fp32, bf16 or auto, got {name!r}")
    native = native_bf16(device)
    if key == "auto":
        return "bf16" if native else "fp32"
    if key == "bf16" and not native:
        log.warning("trainer.precision=bf16 on %s without native bf16 (CPU capability %s): autocast emulates it and "
                    "runs many times slower than fp32 (12.6x measured on a DGM step); precision=auto picks fp32 here",
                    device, torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else device.type)
    return key
