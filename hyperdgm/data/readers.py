"""Readers for the original on-disk formats of MNIST, CIFAR-10, CIFAR-100 and SVHN.

Every reader returns ``(images, labels)`` with ``images`` a ``uint8`` tensor
``[N, C, H, W]`` and ``labels`` an ``int64`` tensor ``[N]``. Results are kept in a
small in-process LRU cache (keyed by the files read, their size and mtime, and the
split), so building several benchmarks in one process reads each file once. Cached
tensors are shared: callers must not modify them in place.

The CIFAR formats are Python pickles. They are read with a restricted unpickler that only
builds what the genuine files contain (dicts, lists, bytes, str, numbers and numpy arrays): a
pickle that asks for anything else (e.g. a function to call) is refused with a :class:`DataError`.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DataError",
    "MissingDataError",
    "resolve_data_root",
    "read_mnist",
    "read_cifar10",
    "read_cifar100",
    "read_svhn",
    "clear_cache",
    "READERS",
]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


class DataError(RuntimeError):
    """A data file exists but is corrupt, truncated or has unexpected content."""


class MissingDataError(DataError, FileNotFoundError):
    """The files of a data set are not where they are expected."""


def resolve_data_root(root: PathLike | None) -> Path:
    """Return ``root`` if given, else ``$HYPERDGM_DATA``, else ``./data``, expanded and absolute."""
    if root is None:
        root = os.environ.get("HYPERDGM_DATA") or "./data"
    return Path(os.path.expandvars(os.fspath(root))).expanduser().resolve()


# --------------------------------------------------------------------------- cache

_CACHE_SIZE = 8
_CACHE: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()


def clear_cache() -> None:
    """Drop every cached data set."""
    _CACHE.clear()


def _cached(
    key: tuple, files: Sequence[Path], load: Callable[[], tuple[Tensor, Tensor]], cache: bool
) -> tuple[Tensor, Tensor]:
    if not cache:
        return load()
    stamp = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    full_key = (*key, stamp)
    hit = _CACHE.get(full_key)
    if hit is not None:
        _CACHE.move_to_end(full_key)
        return hit
    out = load()
    _CACHE[full_key] = out
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def _check_labels(labels: np.ndarray, n_classes: int, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{path}: labels outside 0..{n_classes - 1} (found {labels.min()}..{labels.max()})"
        )


# --------------------------------------------------------------------------- MNIST

_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_file(directory: Path, name: str) -> Path | None:
    """``directory/name`` or ``directory/name.gz``, preferring the uncompressed one."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytearray:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return bytearray(f.read())
        return bytearray(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file of unsigned bytes whose magic number must be ``magic``."""
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(buf)} bytes, no header)")
    found = int.from_bytes(buf[:4], "big")
    if found != magic:
        raise DataError(f"{path}: bad IDX magic number {found} (expected {magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: truncated IDX header ({len(buf)} of {header} bytes)")
    dims = tuple(int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(buf) != expected:
        kind = "truncated" if len(buf) < expected else "oversized"
        raise DataError(
            f"{path}: {kind} IDX file: {len(buf)} bytes, expected {expected} for shape {dims}"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims)


def read_mnist(root: PathLike | None, train: bool, *, cache: bool = True) -> tuple[Tensor, Tensor]:
    """Read MNIST from the original IDX files (gzipped or not).

    Files are looked up in ``root/MNIST/raw``, then ``root/MNIST``, then ``root``.
    Returns ``uint8 [N, 1, 28, 28]`` images and ``int64 [N]`` labels.
    """
    base = resolve_data_root(root)
    img_name, lbl_name = _MNIST_FILES[bool(train)]
    for directory in (base / "MNIST" / "raw", base / "MNIST", base):
        img_path, lbl_path = _find_file(directory, img_name), _find_file(directory, lbl_name)
        if img_path is not None and lbl_path is not None:
            break
    else:
        names = ", ".join(f"{n}.gz" for pair in _MNIST_FILES.values() for n in pair)
        raise MissingDataError(
            f"MNIST not found: put {names} (or unzipped) in {base / 'MNIST' / 'raw'}"
        )

    def load() -> tuple[Tensor, Tensor]:
        logger.info("reading MNIST %s from %s", "train" if train else "test", img_path.parent)
        images = _read_idx(img_path, 2051)
        labels = _read_idx(lbl_path, 2049)
        if images.shape[1:] != (28, 28):
            raise DataError(f"{img_path}: images are {images.shape[1:]}, expected (28, 28)")
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{lbl_path}: {labels.shape[0]} labels for {images.shape[0]} images in {img_path}"
            )
        _check_labels(labels, 10, lbl_path)
        x = torch.from_numpy(images).unsqueeze(1)
        y = torch.from_numpy(labels.astype(np.int64))
        return x, y

    return _cached(("mnist", bool(train)), (img_path, lbl_path), load, cache)


# --------------------------------------------------------------------------- CIFAR

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_FILES = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
_CIFAR100_DIR = "cifar-100-python"


def _latin1_encode(obj: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes; only the latin-1 codec."""
    if not isinstance(obj, str) or encoding.lower().replace("-", "") not in ("latin1", "latin"):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(obj).__name__}, {encoding!r})")
    return obj.encode("latin1")


def _plain_dtype(*args, **kwargs) -> np.dtype:
    """``numpy.dtype`` without object dtypes (whose elements would be arbitrary objects)."""
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refused object dtype {dt}")
    return dt


def _reconstruct(subtype, *args):
    """``numpy``'s array reconstructor, for plain ``ndarray`` only."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refused array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, *args)


def _frombuffer(buf, dtype, shape, order):
    """``numpy``'s protocol-5 array reconstructor, plain dtypes only."""
    return np.frombuffer(buf, dtype=_plain_dtype(dtype)).reshape(shape, order=order)


#: Every global a genuine CIFAR pickle (or one re-saved by numpy) refers to; numpy 2 moved
#: ``numpy.core`` to ``numpy._core``.
_CIFAR_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, tuples, bytes, str, numbers and plain numpy arrays."""

    def find_class(self, module: str, name: str):
        found = _CIFAR_GLOBALS.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (not part of a CIFAR file)")
        return found

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def _get(d: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise DataError(f"{path}: pickle has no {key!r} entry (keys: {sorted(map(str, d))})")


def _read_cifar_pickle(path: Path, label_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: not a genuine CIFAR pickle, refused to load it ({e})") from e
    except Exception as e:  # corrupt pickles raise many different exception types
        raise DataError(f"{path}: cannot unpickle ({type(e).__name__}: {e})") from e
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a dict, found {type(d).__name__}")
    data = np.asarray(_get(d, "data", path))
    labels = np.asarray(_get(d, label_key, path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, 3072]")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{path}: {label_key!r} has shape {labels.shape} ({labels.dtype}), "
            f"expected {data.shape[0]} integer labels"
        )
    labels = labels.astype(np.int64)
    _check_labels(labels, n_classes, path)
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_dir(base: Path, dirname: str, files: Sequence[str], dataset: str, all_files: Sequence[str]) -> Path:
    for directory in (base / dirname, base):
        if all((directory / n).is_file() for n in files):
            return directory
    raise MissingDataError(
        f"{dataset} not found: put {', '.join(all_files)} (python pickles) in {base / dirname}"
    )


def read_cifar10(root: PathLike | None, train: bool, *, cache: bool = True) -> tuple[Tensor, Tensor]:
    """Read CIFAR-10 from ``root/cifar-10-batches-py``: ``uint8 [N, 3, 32, 32]``, ``int64 [N]``."""
    base = resolve_data_root(root)
    names = _CIFAR10_FILES[bool(train)]
    all_names = _CIFAR10_FILES[True] + _CIFAR10_FILES[False]
    directory = _cifar_dir(base, _CIFAR10_DIR, names, "CIFAR-10", all_names)
    paths = [directory / n for n in names]

    def load() -> tuple[Tensor, Tensor]:
        logger.info("reading CIFAR-10 %s from %s", "train" if train else "test", directory)
        parts = [_read_cifar_pickle(p, "labels", 10) for p in paths]
        x = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        y = np.concatenate([p[1] for p in parts])
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    return _cached(("cifar10", bool(train)), paths, load, cache)


def read_cifar100(
    root: PathLike | None, train: bool, label: str = "fine", *, cache: bool = True
) -> tuple[Tensor, Tensor]:
    """Read CIFAR-100 from ``root/cifar-100-python/{train,test}``.

    ``label`` is ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses).
    """
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    base = resolve_data_root(root)
    name = "train" if train else "test"
    directory = _cifar_dir(base, _CIFAR100_DIR, [name], "CIFAR-100", ["train", "test"])
    path = directory / name

    def load() -> tuple[Tensor, Tensor]:
        logger.info("reading CIFAR-100 %s (%s labels) from %s", name, label, directory)
        x, y = _read_cifar_pickle(path, f"{label}_labels", 100 if label == "fine" else 20)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)

    return _cached(("cifar100", bool(train), label), [path], load, cache)


# --------------------------------------------------------------------------- SVHN


def read_svhn(root: PathLike | None, train: bool, *, cache: bool = True) -> tuple[Tensor, Tensor]:
    """Read SVHN (cropped digits) from ``root/SVHN/{train,test}_32x32.mat`` (or ``root`` directly).

    Returns ``uint8 [N, 3, 32, 32]`` and ``int64 [N]`` labels with the file's 10 mapped to 0.
    """
    import scipy.io

    base = resolve_data_root(root)
    name = f"{'train' if train else 'test'}_32x32.mat"
    for directory in (base / "SVHN", base):
        if (directory / name).is_file():
            break
    else:
        raise MissingDataError(
            f"SVHN not found: put train_32x32.mat, test_32x32.mat in {base / 'SVHN'}"
        )
    path = directory / name

    def load() -> tuple[Tensor, Tensor]:
        logger.info("reading SVHN %s", path)
        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as e:  # scipy raises several types for bad files
            raise DataError(f"{path}: cannot read .mat file ({type(e).__name__}: {e})") from e
        if "X" not in mat or "y" not in mat:
            raise DataError(f"{path}: expected variables 'X' and 'y'")
        X, y = np.asarray(mat["X"]), np.asarray(mat["y"])
        if X.dtype != np.uint8 or X.ndim != 4 or X.shape[:3] != (32, 32, 3):
            raise DataError(f"{path}: X is {X.dtype} {X.shape}, expected uint8 [32, 32, 3, N]")
        y = y.reshape(-1).astype(np.int64)
        if y.shape[0] != X.shape[3]:
            raise DataError(f"{path}: {y.shape[0]} labels for {X.shape[3]} images")
        _check_labels(y, 11, path)
        y[y == 10] = 0
        x = np.ascontiguousarray(X.transpose(3, 2, 0, 1))  # [H,W,C,N] -> [N,C,H,W]
        return torch.from_numpy(x), torch.from_numpy(y)

    return _cached(("svhn", bool(train)), [path], load, cache)


#: The readers of the data sets that live in files under the data root, by name (one home: the benchmarks
#: read through it, ``hyperdgm.data.download`` checks through it what a download wrote).
READERS: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "mnist": read_mnist,
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "svhn": read_svhn,
}
