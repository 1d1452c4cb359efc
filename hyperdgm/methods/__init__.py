"""Method registry: ``method.name`` in the config picks the class; the rest of ``method`` is its config."""
from __future__ import annotations

from typing import Any, Mapping

from .base import ClassifierMethod, Method
from .baselines import Finetune, Joint
from .consolidation import EWCMethod, SIMethod
from .dgm import DGM
from .hnet import HNet, HNetEnt
from .mergan import MeRGAN
from .replay import DGR, DGRConditional, HNetLR, HNetR, ReplayUB
from .tir import HNetTIR

METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator / function adding a method under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


for _cls in (Finetune, Joint, EWCMethod, SIMethod, HNet, HNetEnt, HNetR, HNetLR, HNetTIR, DGR, DGRConditional, ReplayUB, DGM,
             MeRGAN):
    register(_cls)


def build_method(cfg: Mapping[str, Any]) -> Method:
    name = cfg.get("name")
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}' (choose from {', '.join(sorted(METHODS))})")
    return METHODS[name](cfg)


__all__ = ["Method", "ClassifierMethod", "METHODS", "register", "build_method"]
