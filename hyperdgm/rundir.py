"""Run directories and checkpoint files that cannot silently mix runs or hand back damaged state.

A run directory belongs to one run: a lock file is held while a run works in it, ``run.json``
names the run (a random run key, the seed, the config hash), ``run_config.yaml`` is the config
``resume=`` continues with and ``mlflow_run_id`` the MLflow run it reports to (written as soon as
that run exists). Checkpoints are written durably (fsync, then an atomic rename, then a directory
fsync) with a sha256 digest beside them (``task_000.pt.sha256``, ``sha256sum -c`` format) that is
verified before a checkpoint is loaded.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import ConfigError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
IDENTITY_FILE = "run.json"
CONFIG_FILE = "run_config.yaml"
MLFLOW_ID_FILE = "mlflow_run_id"
CHECKPOINT_DIR = "checkpoints"


# -- durable files -----------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where the file system cannot fsync directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the complete new one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no partial file left behind (full disk, signal)
        raise
    fsync_dir(path.parent)


# -- checkpoints ---------------------------------------------------------------------------
class CorruptCheckpoint(ValueError):
    """A checkpoint whose bytes do not match its digest or cannot be read."""


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Serialise ``state`` with ``torch.save``, write it and its sha256 digest durably."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    # digest first: a crash between the two renames leaves a mismatch, never an unchecked file
    atomic_write(digest_path(path), f"{digest}  {path.name}\n".encode())
    try:
        atomic_write(path, data)
    except BaseException:
        digest_path(path).unlink(missing_ok=True)
        raise


def read_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint after checking its digest; raises :class:`CorruptCheckpoint`."""
    try:
        data = path.read_bytes()
        expected = digest_path(path).read_text().split()[0]
    except (OSError, IndexError) as err:
        raise CorruptCheckpoint(f"{path}: cannot read it or its digest ({err})") from err
    if hashlib.sha256(data).hexdigest() != expected:
        raise CorruptCheckpoint(f"{path}: sha256 does not match {digest_path(path).name} (damaged or truncated)")
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for bad archives
        raise CorruptCheckpoint(f"{path}: cannot be loaded ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{path}: not a checkpoint (a {type(state).__name__})")
    return state


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Checkpoints in ``run_dir``, oldest task first."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob("task_*.pt"))


# -- the run directory -----------------------------------------------------------------------
class RunDir:
    """One run's directory: an exclusive lock while running and the run's identity."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Hold the directory for this process; refuses one another live run holds."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ConfigError(f"run dir {self.path} is not writable: {err.strerror} ({err.filename})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ConfigError(f"run dir {self.path} is in use by another run (pid {owner}); "
                                  "give this run its own hydra.run.dir") from err
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock (a dead process's too)
            self._lock_fd = None

    def holds_a_run(self) -> bool:
        """True where an earlier run left its identity or checkpoints here."""
        return (self.path / IDENTITY_FILE).exists() or bool(checkpoint_files(self.path))

    # identity ------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / IDENTITY_FILE).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise ConfigError(f"{self.path / IDENTITY_FILE} cannot be read ({err})") from err

    def create_identity(self, seed: int, config_hash: str, config_yaml: str) -> dict[str, Any]:
        """Tie this directory to a new run: its saved config and ``run.json``."""
        ident = {"run_key": uuid.uuid4().hex, "seed": int(seed), "config_hash": config_hash,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid()}
        atomic_write(self.path / CONFIG_FILE, config_yaml.encode())
        atomic_write(self.path / IDENTITY_FILE, (json.dumps(ident, indent=1) + "\n").encode())
        return ident

    def mlflow_run_id(self) -> str | None:
        try:
            return (self.path / MLFLOW_ID_FILE).read_text().strip() or None
        except FileNotFoundError:
            return None

    def save_mlflow_run_id(self, run_id: str | None) -> None:
        if run_id and run_id != self.mlflow_run_id():
            atomic_write(self.path / MLFLOW_ID_FILE, f"{run_id}\n".encode())


__all__ = ["RunDir", "CorruptCheckpoint", "write_checkpoint", "read_checkpoint", "checkpoint_files",
           "atomic_write", "digest_path"]
