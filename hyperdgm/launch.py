"""Where and how a job runs under a Hydra launcher: its id, its threads, this machine's own config.

* ``${hyperdgm.job_id:}`` (an OmegaConf resolver, registered on import): the scheduler's job id
  (SLURM ``<array job>_<task>`` or ``<job>``), else ``pid<pid>``; the sweep's run directories carry it
  beside the seed, so jobs of several sweeps or machines never share a directory.
* :func:`threads_for_job`: torch threads for one of ``n`` parallel jobs on this machine's cores (never
  more threads in all than cores).
* :func:`local_overrides`: the keys ``conf/local/<name>.yaml`` (git-ignored, one per machine) sets, as
  command-line overrides, so ``resume=`` on another node takes that node's data root and tracking URI.
* :func:`auto_resume`: ``resume=auto`` continues the run its own directory already holds (a requeued
  SLURM job after preemption), else starts a new one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .rundir import IDENTITY_FILE

#: The launchers whose jobs share this machine's cores (Hydra's ``_target_`` class names).
PARALLEL_LAUNCHERS = ("JoblibLauncher",)


def job_id() -> str:
    """The scheduler's id of this job (SLURM array task or job), else this process's ``pid<n>``."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or f"pid{os.getpid()}"


# not cached: a SLURM job resolves its run dir on its own node, with its own id
if not OmegaConf.has_resolver("hyperdgm.job_id"):
    OmegaConf.register_new_resolver("hyperdgm.job_id", job_id)


def cores() -> int:
    """Cores this process may run on (its CPU affinity, so a cgroup / taskset limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher: Mapping[str, Any] | None, n_cores: int | None = None) -> int:
    """How many jobs of this launcher run at once on this machine (1 for launchers that place each
    job on its own node or allocation)."""
    target = str((launcher or {}).get("_target_", ""))
    if not target.endswith(PARALLEL_LAUNCHERS):
        return 1
    n = int(launcher.get("n_jobs") or -1)
    n_cores = n_cores or cores()
    return n if n > 0 else max(1, n_cores + 1 + n)  # joblib: -1 = every core, -2 = all but one


def threads_for_job(threads: int | None, n_jobs: int, n_cores: int | None = None) -> int | None:
    """Torch threads of one of ``n_jobs`` jobs sharing ``n_cores``: ``threads`` if they fit, by default
    ``n_cores // n_jobs``; raises :class:`ConfigError` where the jobs would need more threads than cores."""
    n_cores = n_cores or cores()
    if n_jobs <= 1:
        return threads
    per_job = threads or max(1, n_cores // n_jobs)
    if n_jobs * per_job > n_cores:
        raise ConfigError(f"{n_jobs} parallel jobs x {per_job} threads need {n_jobs * per_job} cores, this machine "
                          f"has {n_cores}: lower hydra.launcher.n_jobs or threads")
    return per_job


def local_overrides(choice: str | None, config_dirs: Sequence[str | Path]) -> list[str]:
    """``key=value`` for every leaf ``local/<choice>.yaml`` sets, from the first config dir holding it
    (``[]`` without one)."""
    path = next((p for d in config_dirs if choice and (p := Path(d) / "local" / f"{choice}.yaml").is_file()), None)
    if path is None:
        return []
    out: list[str] = []

    def walk(c: Any, prefix: str) -> None:
        for k, v in c.items():
            if isinstance(v, DictConfig):
                walk(v, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k}={v}")

    walk(OmegaConf.load(path), "")
    return out


def config_dirs(hydra_cfg: Any) -> list[str]:
    """The config directories Hydra searches (``conf/`` and any ``--config-dir``), in its order."""
    return [str(s.path) for s in hydra_cfg.runtime.config_sources if s.schema == "file"]


def auto_resume(resume: Any, run_dir: Path) -> str | None:
    """``resume=auto``: the run dir itself where it already holds a run, else a new run (None)."""
    if str(resume) != "auto":
        return resume
    return str(run_dir) if (Path(run_dir) / IDENTITY_FILE).exists() else None


__all__ = ["job_id", "cores", "parallel_jobs", "threads_for_job", "local_overrides", "config_dirs",
           "auto_resume"]
