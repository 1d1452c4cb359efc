"""Command-line entry: ``python -m hyperdgm.run method=... scenario=... benchmark=...`` (Hydra).

Expected failures end with one line on stderr (also in ``run.log``) and no traceback: bad input
exits 2 before any work, a run that cannot give a trustworthy result (divergence, an unwritable
checkpoint) exits 1 with its MLflow run FAILED, SIGINT / SIGTERM exit 130 / 143 with the MLflow
run KILLED and the ``resume=`` command to continue.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .data.readers import DataError
from .errors import ConfigError, Interrupted, RunFailed
from .experiment import run_experiment
from .rundir import IDENTITY_FILE, MLFLOW_ID_FILE
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


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    """Returns the final average accuracy (so Hydra sweepers can optimise it)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    target = Path(str(cfg.resume)).expanduser().resolve() if cfg.get("resume") else run_dir
    try:
        result = run_experiment(cfg, run_dir, overrides=list(hc.overrides.task))
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
