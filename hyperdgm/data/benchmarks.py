"""Continual-learning benchmarks built from index tensors over shared uint8 data sets.

A :class:`Benchmark` is a list of :class:`Task` objects. Each data set split stays one
``uint8`` tensor shared by all tasks; tasks only hold index tensors into it (and, for
permuted MNIST, a pixel permutation), so ten permuted-MNIST tasks cost one copy of MNIST.
Preprocessing (scaling, padding, permutation, augmentation) happens per batch in
:meth:`Task.batch`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable

import torch
from torch import Tensor

from .readers import READERS, PathLike
from .synthetic import fingerprint, read_synthetic, read_synthetic_rgb
from .tensors import DATASET_STATS, NORMALIZATIONS, pad_to, random_crop_flip, standardize

__all__ = ["TaskData", "Task", "Benchmark", "build_benchmark", "BENCHMARKS"]

logger = logging.getLogger(__name__)

_Memo = dict[int, Tensor]


def _move(t: Tensor | None, device: torch.device, memo: _Memo) -> Tensor | None:
    """Move ``t`` to ``device`` once per memo, so tensors shared on the host stay shared there."""
    if t is None:
        return None
    moved = memo.get(id(t))
    if moved is None:
        moved = t.to(device)
        memo[id(t)] = moved
    return moved


@dataclass
class TaskData:
    """One split of one task: indices into a shared image tensor plus local labels."""

    x: Tensor  # uint8 [N_all, C, H, W], shared with other tasks/splits
    y: Tensor  # int64 [n] local labels (position of the original class in Task.classes)
    idx: Tensor  # int64 [n] indices into x

    def __len__(self) -> int:
        return int(self.idx.shape[0])

    def to(self, device: torch.device | str, memo: _Memo | None = None) -> "TaskData":
        """Copy to ``device``; tensors already moved under ``memo`` are reused."""
        memo = {} if memo is None else memo
        device = torch.device(device)
        return TaskData(_move(self.x, device, memo), _move(self.y, device, memo), _move(self.idx, device, memo))


@dataclass
class Task:
    """One task of a benchmark; :meth:`batch` produces model-ready inputs."""

    id: int
    name: str
    classes: list[int]
    train: TaskData
    val: TaskData | None
    test: TaskData
    input_shape: tuple[int, int, int]
    permutation: Tensor | None
    dataset: str
    normalize: str
    pad: int | None
    augment: bool

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split(self, split: str) -> TaskData:
        """The :class:`TaskData` of ``"train"``, ``"val"`` or ``"test"``."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        data = getattr(self, split)
        if data is None:
            raise ValueError(f"task {self.id} ({self.name}) has no {split} split (build with val_size > 0)")
        return data

    def batch(
        self,
        split: str,
        idx: Tensor | None = None,
        *,
        train_aug: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Float inputs ``[B, C, H, W]`` and local labels ``[B]`` for positions ``idx`` of a split.

        ``idx`` indexes the split (``None`` = the whole split). Inputs are scaled, padded,
        augmented (only if ``train_aug`` and the task has ``augment``), standardised and
        permuted, on the device of the task's tensors.
        """
        data = self.split(split)
        if idx is None:
            sel, y = data.idx, data.y
        else:
            pos = torch.as_tensor(idx, dtype=torch.long, device=data.idx.device)
            sel, y = data.idx[pos], data.y[pos]
        x = data.x[sel].to(torch.float32) / 255.0
        if self.pad is not None:
            x = pad_to(x, self.pad)
        if train_aug and self.augment:
            x = random_crop_flip(x, padding=4, generator=generator)
        if self.normalize == "standard":
            x = standardize(x, self.dataset)
        if self.permutation is not None:
            x = x.flatten(1)[:, self.permutation].view(-1, *self.input_shape)
        return x, y

    def to(self, device: torch.device | str, memo: _Memo | None = None) -> "Task":
        """Copy to ``device``; pass one ``memo`` for several tasks so shared tensors stay shared."""
        memo = {} if memo is None else memo
        device = torch.device(device)
        return replace(
            self,
            train=self.train.to(device, memo),
            val=None if self.val is None else self.val.to(device, memo),
            test=self.test.to(device, memo),
            permutation=_move(self.permutation, device, memo),
        )


@dataclass
class Benchmark:
    """An ordered sequence of tasks."""

    name: str
    tasks: list[Task]
    n_classes_per_task: list[int]
    seed: int

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def class_offsets(self) -> list[int]:
        """Start of each task's classes in a head covering all classes seen (``[0, k0, k0+k1, ...]``)."""
        offsets, total = [], 0
        for k in self.n_classes_per_task:
            offsets.append(total)
            total += k
        return offsets

    @property
    def n_classes_total(self) -> int:
        return sum(self.n_classes_per_task)

    @cached_property
    def digest(self) -> str:
        """Fingerprint of what the benchmark feeds a run: per task its classes, the sample indices and
        labels of every split, the permutation and the preprocessing (the files themselves: the data root;
        a generated data set's samples: their hash). Computed once per benchmark."""
        h = hashlib.sha256(self.name.encode())
        for t in self.tasks:
            h.update(json.dumps([t.name, t.classes, t.dataset, t.normalize, t.pad, t.augment]).encode())
            generated = fingerprint(t.dataset)
            if generated is not None:  # no files behind it (hyperdgm.data.synthetic): the samples themselves
                h.update(generated)
            for data in (t.train, t.val, t.test):
                if data is not None:
                    h.update(data.idx.cpu().numpy().tobytes())
                    h.update(data.y.cpu().numpy().tobytes())
            if t.permutation is not None:
                h.update(t.permutation.cpu().numpy().tobytes())
        return h.hexdigest()[:16]

    def to(self, device: torch.device | str) -> "Benchmark":
        """Copy all tasks to ``device``, moving each shared tensor once."""
        memo: _Memo = {}
        return replace(self, tasks=[t.to(device, memo) for t in self.tasks])

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]


# --------------------------------------------------------------------------- specifications


@dataclass(frozen=True)
class _Spec:
    kind: str  # "permuted" | "split" | "cil" | "split_c10_100"
    dataset: str
    default_tasks: int
    classes_per_task: int
    normalize: str
    augment: bool
    pad: bool


_SPECS: dict[str, _Spec] = {
    "permuted_mnist": _Spec("permuted", "mnist", 10, 10, "unit", False, True),
    "split_mnist": _Spec("split", "mnist", 5, 2, "unit", False, False),
    "split_cifar10": _Spec("split", "cifar10", 5, 2, "standard", True, False),
    "split_cifar10_100": _Spec("split_c10_100", "cifar100", 6, 10, "standard", True, False),
    "split_svhn": _Spec("split", "svhn", 5, 2, "standard", False, False),
    "cil_mnist": _Spec("cil", "mnist", 10, 1, "unit", False, False),
    "cil_svhn": _Spec("cil", "svhn", 10, 1, "standard", False, False),
    "cil_cifar10": _Spec("cil", "cifar10", 10, 1, "standard", True, False),
    # generated in memory (hyperdgm/data/synthetic.py): quick tries and the test suite's method matrix
    "synthetic": _Spec("split", "synthetic", 5, 2, "unit", False, False),
    "cil_synthetic": _Spec("cil", "synthetic", 10, 1, "unit", False, False),
    "synthetic_rgb": _Spec("split", "synthetic_rgb", 5, 2, "unit", False, False),
}

#: Names accepted by :func:`build_benchmark`.
BENCHMARKS: tuple[str, ...] = tuple(_SPECS)

_READERS: dict[str, Callable[[PathLike | None, bool], tuple[Tensor, Tensor]]] = {
    **READERS,  # the data sets in files
    "synthetic": read_synthetic,
    "synthetic_rgb": read_synthetic_rgb,
}
_N_CLASSES = {"mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10, "synthetic": 10, "synthetic_rgb": 10}


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")


def _subset(pool: Tensor, limit: int | None, g: torch.Generator) -> Tensor:
    """A seeded random subset of at most ``limit`` elements of ``pool``, sorted."""
    if limit is None or limit >= pool.numel():
        return pool
    return pool[torch.randperm(pool.numel(), generator=g)[:limit]].sort().values


def _train_val(
    pool: Tensor, val_size: int, train_limit: int | None, g: torch.Generator, what: str
) -> tuple[Tensor, Tensor | None]:
    """Split ``pool`` (training indices of one task) into sorted train / validation indices."""
    if val_size == 0:
        return _subset(pool, train_limit, g), None
    if val_size >= pool.numel():
        raise ValueError(f"val_size={val_size} leaves no training data for {what} ({pool.numel()} samples)")
    shuffled = pool[torch.randperm(pool.numel(), generator=g)]
    val, rest = shuffled[:val_size].sort().values, shuffled[val_size:]
    if train_limit is not None:
        rest = rest[:train_limit]
    return rest.sort().values, val


def _local_labels(labels: Tensor, raw_classes: list[int], n_classes: int) -> Tensor:
    """Map original labels to positions in ``raw_classes`` (-1 for other classes)."""
    lut = torch.full((n_classes,), -1, dtype=torch.long)
    lut[torch.tensor(raw_classes, dtype=torch.long)] = torch.arange(len(raw_classes))
    return lut[labels]


def _class_order(name: str, class_order: list[int] | None, n: int) -> list[int]:
    if class_order is None:
        return list(range(n))
    order = list(class_order)
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in order) or sorted(order) != list(range(n)):
        raise ValueError(f"class_order for {name} must be a permutation of 0..{n - 1}, got {list(class_order)!r}")
    return order


def benchmark_datasets(name: str) -> list[str]:
    """The data sets a benchmark reads (split CIFAR-10/100: both)."""
    if name not in _SPECS:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    spec = _SPECS[name]
    return ["cifar10", "cifar100"] if spec.kind == "split_c10_100" else [spec.dataset]


def build_benchmark(
    name: str,
    root: PathLike | None,
    *,
    seed: int = 0,
    n_tasks: int | None = None,
    class_order: list[int] | None = None,
    val_size: int = 0,
    pad: bool | None = None,
    normalize: str | None = None,
    augment: bool | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    first_unpermuted: bool = False,
) -> Benchmark:
    """Build a benchmark by name (see :data:`BENCHMARKS`) from data under ``root``.

    ``class_order`` permutes the data set's classes before they are cut into tasks (for
    ``split_cifar10_100`` it permutes the 100 CIFAR-100 classes; for ``permuted_mnist`` it is the
    head order). ``val_size`` training samples per task are held out as validation;
    ``train_limit`` / ``test_limit`` keep a seeded random subset per task and split. All
    randomness derives from ``seed``. ``pad``, ``normalize`` and ``augment`` override the
    benchmark's defaults. ``first_unpermuted`` (``permuted_mnist`` only) keeps task 0 as plain
    (padded) MNIST, as the hypercl and three-scenarios codes do; tasks 1.. keep the same
    permutations either way.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}")
    spec = _SPECS[name]
    normalize = spec.normalize if normalize is None else normalize
    augment = spec.augment if augment is None else bool(augment)
    pad = spec.pad if pad is None else bool(pad)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if not isinstance(val_size, int) or val_size < 0:
        raise ValueError(f"val_size must be an int >= 0, got {val_size!r}")
    _check_limit("train_limit", train_limit)
    _check_limit("test_limit", test_limit)
    if first_unpermuted and spec.kind != "permuted":
        raise ValueError(f"first_unpermuted applies to permuted_mnist only, not {name}")
    n_tasks = spec.default_tasks if n_tasks is None else n_tasks
    if not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive int, got {n_tasks!r}")
    datasets = benchmark_datasets(name)
    for ds in datasets:
        if normalize == "standard" and ds not in DATASET_STATS:
            raise ValueError(f"normalize='standard' is not available for {ds} (no channel statistics); use 'unit'")

    n_cls = _N_CLASSES[spec.dataset]
    order = _class_order(name, class_order, n_cls)
    if spec.kind == "split_c10_100":
        max_tasks = 1 + n_cls // spec.classes_per_task
    elif spec.kind == "permuted":
        max_tasks = None
    else:
        max_tasks = n_cls // spec.classes_per_task
    if max_tasks is not None and n_tasks > max_tasks:
        raise ValueError(f"{name} has at most {max_tasks} tasks, got n_tasks={n_tasks}")

    data = {ds: {tr: _READERS[ds](root, tr) for tr in (True, False)} for ds in datasets}
    split_g = torch.Generator().manual_seed(seed)
    common = dict(normalize=normalize, augment=augment)

    def shape_of(ds: str) -> tuple[tuple[int, int, int], int | None]:
        c, h, w = data[ds][True][0].shape[1:]
        if pad and (h < 32 or w < 32):
            return (c, 32, 32), 32
        return (c, h, w), None

    def class_task(tid: int, ds: str, raw: list[int], ids: list[int], task_name: str) -> Task:
        (x_tr, y_tr), (x_te, y_te) = data[ds][True], data[ds][False]
        loc_tr = _local_labels(y_tr, raw, _N_CLASSES[ds])
        loc_te = _local_labels(y_te, raw, _N_CLASSES[ds])
        tr_idx, va_idx = _train_val(
            torch.nonzero(loc_tr >= 0).squeeze(1), val_size, train_limit, split_g, f"task {tid}"
        )
        te_idx = _subset(torch.nonzero(loc_te >= 0).squeeze(1), test_limit, split_g)
        shape, pad_size = shape_of(ds)
        return Task(
            id=tid,
            name=task_name,
            classes=ids,
            train=TaskData(x_tr, loc_tr[tr_idx], tr_idx),
            val=None if va_idx is None else TaskData(x_tr, loc_tr[va_idx], va_idx),
            test=TaskData(x_te, loc_te[te_idx], te_idx),
            input_shape=shape,
            permutation=None,
            dataset=ds,
            pad=pad_size,
            **common,
        )

    tasks: list[Task] = []
    if spec.kind == "permuted":
        (x_tr, y_tr), (x_te, y_te) = data["mnist"][True], data["mnist"][False]
        loc_tr, loc_te = _local_labels(y_tr, order, n_cls), _local_labels(y_te, order, n_cls)
        tr_idx, va_idx = _train_val(torch.arange(y_tr.numel()), val_size, train_limit, split_g, name)
        te_idx = _subset(torch.arange(y_te.numel()), test_limit, split_g)
        train = TaskData(x_tr, loc_tr[tr_idx], tr_idx)
        val = None if va_idx is None else TaskData(x_tr, loc_tr[va_idx], va_idx)
        test = TaskData(x_te, loc_te[te_idx], te_idx)
        shape, pad_size = shape_of("mnist")
        perm_g = torch.Generator().manual_seed(seed)
        n_pix = shape[0] * shape[1] * shape[2]
        for tid in range(n_tasks):
            perm = torch.randperm(n_pix, generator=perm_g)  # drawn for task 0 too: later tasks stay the same
            if tid == 0 and first_unpermuted:
                perm = None
            tasks.append(
                Task(
                    id=tid, name=f"permutation {tid}" if perm is not None else "unpermuted", classes=list(order), train=train, val=val, test=test,
                    input_shape=shape, permutation=perm, dataset="mnist", pad=pad_size, **common,
                )
            )
    elif spec.kind == "split_c10_100":
        tasks.append(class_task(0, "cifar10", list(range(10)), list(range(10)), "cifar10 classes 0-9"))
        k = spec.classes_per_task
        for tid in range(1, n_tasks):
            raw = order[(tid - 1) * k : tid * k]
            tasks.append(
                class_task(tid, "cifar100", raw, [c + 10 for c in raw], f"cifar100 classes {','.join(map(str, raw))}")
            )
    else:
        k = spec.classes_per_task
        word = "digits" if spec.dataset in ("mnist", "svhn") else "classes"
        label = {"mnist": word, "svhn": f"svhn {word}"}.get(spec.dataset, f"{spec.dataset} {word}")
        for tid in range(n_tasks):
            raw = order[tid * k : (tid + 1) * k]
            tasks.append(class_task(tid, spec.dataset, raw, list(raw), f"{label} {','.join(map(str, raw))}"))

    bench = Benchmark(name=name, tasks=tasks, n_classes_per_task=[t.n_classes for t in tasks], seed=seed)
    logger.info(
        "built %s: %d tasks, train sizes %s, test sizes %s",
        name, bench.n_tasks, [len(t.train) for t in tasks], [len(t.test) for t in tasks],
    )
    return bench
