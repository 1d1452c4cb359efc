"""Expected failures: each ends a command-line run with one line on stderr and a distinct exit code.

* :class:`ConfigError` (and the data layer's ``DataError``, ``ScenarioError``): bad input, found
  before any work; exit 2.
* :class:`RunFailed`: the run started but cannot give a trustworthy result (divergence, a
  checkpoint that cannot be written); the MLflow run is FAILED; exit 1.
* :class:`Interrupted`: SIGINT / SIGTERM; the MLflow run is KILLED; exit 128 + signal number.
"""
from __future__ import annotations

import signal


class ConfigError(ValueError):
    """Bad input: a config value, a device, a run directory or a store that cannot work."""


class RunFailed(RuntimeError):
    """A started run that must stop rather than report numbers."""


class DivergenceError(RunFailed):
    """Non-finite losses or weights."""


class CheckpointError(RunFailed):
    """A checkpoint cannot be written."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; raised in the main thread like ``KeyboardInterrupt``."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.signame}")

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


__all__ = ["ConfigError", "RunFailed", "DivergenceError", "CheckpointError", "Interrupted"]
