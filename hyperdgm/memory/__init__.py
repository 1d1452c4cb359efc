"""Generative memory: conditional replay models (VAE / LSGAN / AC-GAN) whose generator is guarded by a protection."""
from .bodies import BODIES, Body, DCGANBody, MLPBody, ParamMeta, build_body
from .alignment import AlignmentProtection
from .dgm import DgmA, DgmW
from .memory import DEFAULT_CFG, GenerativeMemory, memory_config
from .protection import (PROTECTIONS, GeneratorView, HnetProtection, NoProtection, OwnWeights, Protection,
                         ReplayProtection, Snapshot, build_protection, register_protection)
from . import consolidation  # noqa: F401  (registers the ewc / si protections and their memory config blocks)
from .replay_models import REPLAY_MODELS, ACGANModel, LSGANModel, ReplayModel, VAEModel

__all__ = [
    "GenerativeMemory", "DEFAULT_CFG", "memory_config", "Protection", "OwnWeights", "HnetProtection",
    "ReplayProtection", "NoProtection", "DgmW", "DgmA", "AlignmentProtection", "PROTECTIONS", "build_protection", "register_protection",
    "GeneratorView", "Snapshot", "Body", "MLPBody", "DCGANBody", "ParamMeta", "build_body", "BODIES",
    "ReplayModel", "VAEModel", "LSGANModel", "ACGANModel", "REPLAY_MODELS",
]
