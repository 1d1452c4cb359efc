"""Command-line entry: ``python -m hyperdgm.run method=... scenario=... benchmark=...`` (Hydra).

Expected failures end with one line on stderr (also in ``run.log``) and no traceback: bad input
exits 2 before any work, a run that cannot give a trustworthy result (divergence, an unwritable
checkpoint) exits 1 with its MLflow run FAILED, SIGINT / SIGTERM exit 130 / 143 with the MLflow
run KILLED and the ``resume=`` command to continue.
"""
from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from .data.readers import DataError
from .errors import ConfigError, Interrupted, RunFailed
from .experiment import run_experiment
from .launch import auto_resume, config_dirs, local_overrides, parallel_jobs, threads_for_job
from .naming import preset_changes
from .rundir import CONFIG_FILE, IDENTITY_FILE, MLFLOW_ID_FILE
from .scenarios import ScenarioError

log = logging.getLogger("hyperdgm")

#: Bad input (the experiment re-raises a ValueError found before training as a ConfigError).
BAD_INPUT = (ConfigError, ScenarioError, DataError)


def report(message: str) -> None:
    """One line on stderr, and the same line in the run's log file (not on the console twice)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def interrupted_line(err: Interrupted, run_dir: Path) -> str:
    if not (run_dir / IDENTITY_FILE).exists():
        return f"interrupted by {err.signame} before training started; nothing to resume"
    killed = "; MLflow run marked KILLED" if (run_dir / MLFLOW_ID_FILE).exists() else ""
    return f"interrupted by {err.signame}{killed}; continue with: python -m hyperdgm.run resume={run_dir}"


def job_settings(cfg: DictConfig, hc: DictConfig, run_dir: Path) -> list[str] | None:
    """Fit the job to where it runs: ``resume=auto``, threads under a parallel launcher, this machine's
    ``conf/local``. Returns the overrides ``resume=`` checks: the command's and the local keys (taken
    on another node), or None for a job continuing itself (``resume=auto``: its whole config is compared)."""
    overrides = list(hc.overrides.task) + local_overrides(hc.runtime.choices.get("local"), config_dirs(hc))
    auto = str(cfg.get("resume")) == "auto"
    with open_dict(cfg):
        cfg.resume = auto_resume(cfg.get("resume"), run_dir)
        launcher = {k: OmegaConf.select(hc.launcher, k) for k in ("_target_", "n_jobs")}
        threads = threads_for_job(cfg.get("threads"), parallel_jobs(launcher))
        if threads != cfg.get("threads"):
            overrides.append(f"threads={threads}")
        cfg.threads = threads  # resolved: ${hydra:launcher.cpus_per_task} means nothing to a later resume=
    return None if auto and cfg.resume else overrides


def continue_log(run_dir: Path, hydra_dir: Path) -> None:
    """A resumed run logs on at the end of its own ``run.log``, not in the new dir Hydra made for the command
    (named from the defaults, not the run). That dir goes when it holds nothing else; what was logged there so far
    moves along."""
    run_dir, hydra_dir = run_dir.resolve(), hydra_dir.resolve()
    if run_dir == hydra_dir or not (run_dir / CONFIG_FILE).exists():
        return  # the run's own dir, or not a run dir (load_resume_config says so in one line)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        path = Path(old.baseFilename)
        if path.parent != hydra_dir:
            continue
        old.close()
        new = logging.FileHandler(run_dir / path.name, mode="a")
        new.setLevel(old.level)
        new.setFormatter(old.formatter)
        for f in old.filters:
            new.addFilter(f)
        with open(new.baseFilename, "a") as out:  # Hydra's first lines, if any
            out.write(path.read_text() if path.exists() else "")
        root.removeHandler(old)
        root.addHandler(new)
    if {p.name for p in hydra_dir.iterdir()} <= {"run.log", ".hydra"}:
        shutil.rmtree(hydra_dir, ignore_errors=True)


def sweep_tags(hc: DictConfig) -> dict[str, str]:
    """A job's MLflow tags: the preset it was made from (``experiment=``; the reproduction table groups by
    it) and, in a multirun, its sweep (the sweep dir) and its number in it."""
    tags = {}
    preset = hc.runtime.choices.get("experiment")
    if preset:
        tags["preset"] = str(preset)
        # what else the command changed: a run with changes is not a run of the preset (the table skips it)
        tags["preset.changes"] = preset_changes(list(OmegaConf.select(hc, "overrides.task", default=None) or []))
    if hc.mode != RunMode.MULTIRUN:
        return tags
    return {**tags, "sweep": str(Path(hc.sweep.dir).resolve()), "sweep.job": str(hc.job.num)}


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    """Returns the final average accuracy (so Hydra sweepers can optimise it)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    target = run_dir
    try:
        overrides = job_settings(cfg, hc, run_dir)
        target = Path(str(cfg.resume)).expanduser().resolve() if cfg.get("resume") else run_dir
        if cfg.get("resume"):
            continue_log(target, run_dir)
        result = run_experiment(cfg, run_dir, overrides=overrides, tags=sweep_tags(hc))
    except (Interrupted, KeyboardInterrupt) as err:
        err = err if isinstance(err, Interrupted) else Interrupted(2)
        report(interrupted_line(err, target))
        sys.exit(err.exit_code)
    except BAD_INPUT as err:
        report(f"error: {err}")
        sys.exit(2)
    except RunFailed as err:
        report(f"run failed: {err}")
        sys.exit(1)
    return result.summary["acc_avg"]


if __name__ == "__main__":
    main()
