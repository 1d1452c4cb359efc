"""Data layer: original-format readers, tensor preprocessing and continual-learning benchmarks."""

from .benchmarks import BENCHMARKS, Benchmark, Task, TaskData, build_benchmark
from .readers import (
    DataError,
    MissingDataError,
    clear_cache,
    read_cifar10,
    read_cifar100,
    read_mnist,
    read_svhn,
    resolve_data_root,
)
from .tensors import DATASET_STATS, pad_to, random_crop_flip, standardize, to_float

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "Task",
    "TaskData",
    "build_benchmark",
    "DataError",
    "MissingDataError",
    "clear_cache",
    "read_cifar10",
    "read_cifar100",
    "read_mnist",
    "read_svhn",
    "resolve_data_root",
    "DATASET_STATS",
    "pad_to",
    "random_crop_flip",
    "standardize",
    "to_float",
]
