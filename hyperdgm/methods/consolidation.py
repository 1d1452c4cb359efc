"""``ewc`` and ``si``: one classifier trained on each task in turn under online EWC / SI.

The three-scenarios code's baselines (van de Ven & Tolias, 2019): the finetune classifier plus the
regularizer of the ``method.ewc`` / ``method.si`` block in the one hook sequence
(:mod:`hyperdgm.regularizers`), one Adam for the whole run. The same blocks work on any
classifier method (``finetune``, the replay methods) and on HNET's hypernetwork.
"""
from __future__ import annotations

from typing import ClassVar

from .baselines import Finetune


class _Regularized(Finetune):
    block: ClassVar[str]
    scenarios = frozenset({"cl1", "cl2", "cl3", "cil"})

    def setup(self, benchmark, scenario, device, rng) -> None:
        if self.cfg.get(self.block) is None:
            raise ValueError(f"method {self.name} needs its method.{self.block} block (e.g. conf/method/{self.name}.yaml)")
        super().setup(benchmark, scenario, device, rng)


class EWCMethod(_Regularized):
    """Online EWC (Schwarz et al. 2018) with the three-scenarios Fisher (every sample, predicted label)."""

    name = "ewc"
    block = "ewc"


class SIMethod(_Regularized):
    """Synaptic Intelligence (Zenke et al. 2017)."""

    name = "si"
    block = "si"
