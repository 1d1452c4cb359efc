"""Fused elementwise kernels for the hypernetwork's largest tensors (``trainer.fuse``).

The Adam lookahead (:func:`~hyperdgm.hnet.regularizer.adam_lookahead`) is ~10 elementwise passes over
each parameter. On permuted MNIST the output layer alone is ``[78000, 25]`` (7.8 MB, larger than the
cache), so every pass streams through memory: 12-20 ms per step in eager mode against 1.7-2.8 ms for
the same arithmetic compiled into one loop by ``torch.compile`` (1 thread, measured on the 2-core Xeon).
Compiling takes seconds (more on a cold cache), so only tensors of at least :data:`FUSE_MIN` elements
use it: the permuted-MNIST presets do, the split-MNIST ones (``[42000, 10]``) do not.

``auto`` (the default) compiles on first use and falls back to eager mode, with one warning, where
compiling fails (no C++ compiler, an unsupported platform); ``off`` never compiles. The fused result
equals the eager one up to float32 rounding (the same operations, evaluated in one loop).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["FUSE_MIN", "MODES", "set_mode", "adam_change"]

log = logging.getLogger(__name__)

#: smallest tensor (elements) worth a compiled kernel: ~4 MB, beyond a core's L2 cache
FUSE_MIN = 1 << 20
MODES = ("auto", "off")

_state: dict[str, Any] = {"mode": "auto", "kernel": None, "failed": False}


def set_mode(mode: str) -> None:
    """``auto`` (compile for tensors of at least :data:`FUSE_MIN` elements) or ``off``."""
    mode = str(mode).lower()
    if mode not in MODES:
        raise ValueError(f"trainer.fuse must be one of {', '.join(MODES)}, got {mode!r}")
    _state["mode"] = mode


def _adam_change(exp_avg: Tensor, grad: Tensor, exp_avg_sq: Tensor, beta1: Tensor, beta2: Tensor,
                 sqrt_bc2: Tensor, eps: Tensor, scale: Tensor) -> Tensor:
    m = torch.lerp(exp_avg, grad, 1 - beta1)
    v = exp_avg_sq * beta2 + grad * grad * (1 - beta2)
    return m / (v.sqrt() / sqrt_bc2 + eps) * scale


def _kernel() -> Callable[..., Tensor]:
    if _state["kernel"] is None:
        # the run set torch's deterministic flag without the compiler's (experiment._deterministic_algorithms)
        torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled(),
                                           warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
        # the scalars are passed as 0-dim tensors: one compiled graph for every step (floats would recompile)
        _state["kernel"] = torch.compile(_adam_change, dynamic=True, fullgraph=True)
    return _state["kernel"]


def adam_change(exp_avg: Tensor, grad: Tensor, exp_avg_sq: Tensor, *, beta1: float, beta2: float,
                bias_correction2: float, eps: float, scale: float) -> Tensor | None:
    """Adam's change ``scale * m / (sqrt(v / bc2) + eps)`` with ``m``, ``v`` one step on from the state, in
    one compiled loop; None when the tensor is too small, fusion is off or compiling failed (use eager)."""
    if _state["mode"] == "off" or grad.numel() < FUSE_MIN or grad.device.type != "cpu" or _state["failed"]:
        return None
    kernel = _kernel()
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    try:
        return kernel(exp_avg, grad, exp_avg_sq, t(beta1), t(beta2), t(bias_correction2 ** 0.5), t(eps), t(scale))
    except Exception as err:  # noqa: BLE001 - any compiler failure: eager mode is always correct
        _state["failed"] = True
        log.warning("trainer.fuse=auto: compiling the Adam lookahead failed (%s: %s); eager mode from now on",
                    type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        return None
