"""Minimal keras stand-in: only keras.datasets.mnist.load_data and keras.utils.np_utils.to_categorical."""
from . import datasets, utils
