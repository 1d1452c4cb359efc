"""Generative memory: task-conditioned replay models (VAE / LSGAN) whose generator is guarded by a protection."""
from .memory import DEFAULT_CFG, GenerativeMemory, memory_config
from .protection import (PROTECTIONS, HnetProtection, NoProtection, OwnWeights, Protection, ReplayProtection,
                         build_protection, register_protection)

__all__ = [
    "GenerativeMemory", "DEFAULT_CFG", "memory_config", "Protection", "OwnWeights", "HnetProtection",
    "ReplayProtection", "NoProtection", "PROTECTIONS", "build_protection", "register_protection",
]
