"""Fetch a data set into the data root with torchvision, where torchvision is installed and works.

torchvision is an optional extra (``pip install 'hyperdgm[vision]'``, for machines whose torch it
matches, e.g. GPU machines): the readers never need it, and on a CPU-only torch it cannot even be
imported. Its data sets write the original files into the layouts the readers look in
(``MNIST/raw``, ``cifar-10-batches-py``, ``cifar-100-python``, ``SVHN``), so a fetched data set is
read, checked and cached exactly like one put there by hand.

    python -m hyperdgm.data.download cifar100 svhn [--root DIR]

or ``download=true`` on a run: a data set missing under the data root is fetched before the run.
"""
from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import Any, Callable

from .readers import READERS, DataError, MissingDataError, PathLike, resolve_data_root

logger = logging.getLogger(__name__)

#: dataset -> (torchvision class, sub-directory its files go to, how it is called per split); our readers: READERS
_SOURCES: dict[str, tuple[str, str, Callable[[bool], dict[str, Any]]]] = {
    "mnist": ("MNIST", "", lambda train: {"train": train}),
    "cifar10": ("CIFAR10", "", lambda train: {"train": train}),
    "cifar100": ("CIFAR100", "", lambda train: {"train": train}),
    # torchvision's SVHN writes {train,test}_32x32.mat into the root it is given: ours is root/SVHN
    "svhn": ("SVHN", "SVHN", lambda train: {"split": "train" if train else "test"}),
}
assert set(_SOURCES) == set(READERS), "every data set in files can be downloaded"
DATASETS: tuple[str, ...] = tuple(_SOURCES)


class DownloadUnavailable(DataError):
    """torchvision is missing or cannot be imported with this torch."""


def _torchvision_datasets(dataset: str, root: Path) -> Any:
    try:
        return importlib.import_module("torchvision.datasets")
    except Exception as e:  # ImportError, or RuntimeError (`torchvision::nms does not exist`) on a CPU torch
        raise DownloadUnavailable(
            f"cannot download {dataset}: torchvision is not usable here ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no message'}); install the extra `vision` where it matches "
            f"torch, or put the files by hand under {root} (see the README's data table)") from None


def download(dataset: str, root: PathLike | None = None) -> Path:
    """Fetch ``dataset`` (train and test) into the data root with torchvision, then read both splits back
    through our own reader, so a bad download fails here. Returns the data root."""
    if dataset not in _SOURCES:
        raise ValueError(f"cannot download {dataset!r}: one of {', '.join(DATASETS)}")
    base = resolve_data_root(root)
    cls_name, sub, split_kw = _SOURCES[dataset]
    reader = READERS[dataset]
    tv = _torchvision_datasets(dataset, base)
    target = base / sub if sub else base
    target.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        logger.info("downloading %s %s into %s (torchvision.datasets.%s)", dataset, "train" if train else "test",
                    target, cls_name)
        getattr(tv, cls_name)(str(target), download=True, **split_kw(train))
    for train in (True, False):
        reader(base, train, cache=False)
    return base


def ensure(dataset: str, root: PathLike | None) -> None:
    """Download ``dataset`` when its files are missing under the data root (generated data sets: nothing)."""
    if dataset not in _SOURCES:
        return
    try:
        for train in (True, False):
            READERS[dataset](root, train)
    except MissingDataError:
        download(dataset, root)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hyperdgm.data.download", description=__doc__.split("\n")[0])
    p.add_argument("datasets", nargs="+", choices=DATASETS)
    p.add_argument("--root", default=None, help="data root (default: $HYPERDGM_DATA, else ./data)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for d in args.datasets:
            logger.info("%s: ready under %s", d, download(d, args.root))
    except DataError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
