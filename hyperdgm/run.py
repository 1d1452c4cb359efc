"""Command-line entry: ``python -m hyperdgm.run method=... scenario=... benchmark=...`` (Hydra)."""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .experiment import run_experiment
from .scenarios import ScenarioError

log = logging.getLogger("hyperdgm")


@hydra.main(config_path="../conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    """Returns the final average accuracy (so Hydra sweepers can optimise it)."""
    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = run_experiment(cfg, run_dir)
    except (ScenarioError, FileNotFoundError, ValueError) as err:
        # Bad input: one clear line, no traceback.
        log.error("%s", err)
        sys.exit(2)
    return result.summary["acc_avg"]


if __name__ == "__main__":
    main()
