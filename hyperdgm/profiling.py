"""Where a run's time goes: named, nested regions of the training loop, timed only while profiling.

The trainer and the hot paths mark regions (``with region("backward"):``); outside :func:`profiling`
a region is a shared no-op context (one global read), so marking costs nothing in normal runs.
While profiling, each region's wall time is recorded under its path in the nesting
(``step/memory/backward`` is the generator's backward inside a classifier step), exclusive of the
regions nested in it, so the rows of :func:`table` add up to the profiled time. On a GPU the device
is synchronised at every region boundary (the profile then shows where time goes, at some cost).

    python -m hyperdgm.bench profile --run "experiment=splitmnist_hnet_r trainer.iters_per_task=200"
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Iterator

import torch

__all__ = ["Profile", "profiling", "region", "table"]


class Profile:
    """Exclusive wall seconds and entry counts per region path."""

    def __init__(self, sync: bool) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list] = []  # [path, start, seconds spent in nested regions]
        self.sync = sync
        self.started = time.perf_counter()
        self.wall = 0.0

    def _now(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        return time.perf_counter()

    def enter(self, name: str) -> None:
        path = f"{self.stack[-1][0]}/{name}" if self.stack else name
        self.stack.append([path, self._now(), 0.0])

    def exit(self) -> None:
        path, start, nested = self.stack.pop()
        spent = self._now() - start
        self.seconds[path] += spent - nested
        self.calls[path] += 1
        if self.stack:
            self.stack[-1][2] += spent


_ACTIVE: Profile | None = None


class _Region:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        if _ACTIVE is not None:
            _ACTIVE.enter(self.name)

    def __exit__(self, *exc) -> None:
        if _ACTIVE is not None:
            _ACTIVE.exit()


_NULL = contextlib.nullcontext()


def region(name: str) -> contextlib.AbstractContextManager:
    """A named region: timed while :func:`profiling` is on, a no-op otherwise."""
    return _NULL if _ACTIVE is None else _Region(name)


@contextlib.contextmanager
def profiling(device: torch.device | str = "cpu") -> Iterator[Profile]:
    """Record every region entered inside the block (not re-entrant)."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("profiling() is already active")
    prof = Profile(sync=torch.device(device).type == "cuda")
    _ACTIVE = prof
    try:
        yield prof
    finally:
        _ACTIVE = None
        prof.wall = time.perf_counter() - prof.started


def table(prof: Profile, min_share: float = 0.001) -> list[str]:
    """Markdown rows, largest first: region path, exclusive seconds, share of the profiled wall time,
    calls, milliseconds per call; what no region covers is the last row ("outside regions")."""
    total = prof.wall or sum(prof.seconds.values())
    rows = ["| region | s | % | calls | ms / call |", "|---|---:|---:|---:|---:|"]
    covered = 0.0
    for path, s in sorted(prof.seconds.items(), key=lambda kv: -kv[1]):
        covered += s
        if total and s / total < min_share:
            continue
        n = prof.calls[path]
        rows.append(f"| `{path}` | {s:.2f} | {100 * s / total:.1f} | {n} | {1e3 * s / n:.2f} |")
    rest = max(total - covered, 0.0)
    rows.append(f"| (outside regions: setup, data reading, logging) | {rest:.2f} | "
                f"{100 * rest / total if total else 0:.1f} | | |")
    return rows
