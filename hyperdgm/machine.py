"""What a run ran on, as one line for its ``machine`` tag (the reproduction table quotes it with wall times)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

__all__ = ["describe"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    """``<cpu model> (<capability>), <n> cores, torch threads <t>, load <1-min avg> [, <gpu>]`` at the run's start."""
    parts = [f"{_cpu_model()} ({torch.backends.cpu.get_cpu_capability()})", f"{os.cpu_count()} cores",
             f"torch threads {torch.get_num_threads()}"]
    try:
        parts.append(f"load {os.getloadavg()[0]:.1f}")
    except OSError:  # pragma: no cover - no load average on this platform
        pass
    if device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    return ", ".join(parts)
