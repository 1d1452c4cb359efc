"""Shared fixtures: the real data root and tiny CIFAR-100 / SVHN files in their original formats."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("HYPERDGM_DATA")
    return Path(env).expanduser().resolve() if env else (REPO_ROOT / ".." / "shared" / "data").resolve()


def _has(root: Path, dirs: list[str], name: str) -> bool:
    return any((root / d / n).is_file() for d in dirs for n in (name, name + ".gz"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Real data root ($HYPERDGM_DATA or ../shared/data); skips when MNIST is absent."""
    root = _data_root()
    if not _has(root, ["MNIST/raw", "MNIST", "."], "train-images-idx3-ubyte"):
        pytest.skip(f"MNIST not available under {root}")
    return root


@pytest.fixture(scope="session")
def cifar10_root(data_root: Path) -> Path:
    """Real data root that also holds CIFAR-10; skips otherwise."""
    if not (data_root / "cifar-10-batches-py" / "test_batch").is_file():
        pytest.skip(f"CIFAR-10 not available under {data_root}")
    return data_root


@pytest.fixture(scope="session")
def tiny_cifar100(tmp_path_factory) -> SimpleNamespace:
    """A tiny CIFAR-100 (2 train + 1 test image per class) in the original pickle layout."""
    root = tmp_path_factory.mktemp("c100")
    d = root / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    out = SimpleNamespace(root=root)
    for split, per_class in (("train", 2), ("test", 1)):
        n = 100 * per_class
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [i % 100 for i in range(n)]
        coarse = [f // 5 for f in fine]
        with open(d / split, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": fine, b"coarse_labels": coarse}, f)
        setattr(out, split, SimpleNamespace(data=data, fine=np.array(fine), coarse=np.array(coarse)))
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [b"c%d" % i for i in range(100)]}, f)
    return out


@pytest.fixture(scope="session")
def tiny_svhn(tmp_path_factory) -> SimpleNamespace:
    """A tiny SVHN (.mat, X [32,32,3,N] uint8, y [N,1] with 10 meaning digit 0) under root/SVHN."""
    import scipy.io

    root = tmp_path_factory.mktemp("svhn")
    d = root / "SVHN"
    d.mkdir()
    rng = np.random.default_rng(1)
    out = SimpleNamespace(root=root)
    for split, n in (("train", 60), ("test", 30)):
        X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10
        scipy.io.savemat(str(d / f"{split}_32x32.mat"), {"X": X, "y": y})
        setattr(out, split, SimpleNamespace(X=X, y=y))
    return out
