"""Hypernetwork core: task-conditioned weight generator and its output regulariser."""
from .generator import WeightGenerator
from .regularizer import OutputRegularizer, StackedOutputRegularizer, adam_lookahead, trainable_parameters

__all__ = ["WeightGenerator", "OutputRegularizer", "StackedOutputRegularizer", "adam_lookahead",
           "trainable_parameters"]
