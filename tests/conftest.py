"""Shared fixtures: the real data root and tiny CIFAR-100 / SVHN files in their original formats."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """Parallel workers (pytest-xdist: `make test` runs one per core) share the cores: one torch thread
    each, also in the processes the tests start (torch on 2 threads under load runs many times slower)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


#: The MNIST files the readers need (each plain or .gz, in MNIST/raw, MNIST or the data root itself).
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def data_expectation(env: str | None, repo_root: Path = REPO_ROOT) -> tuple[Path, bool]:
    """The real data root of the tests and whether data is promised there.

    ``$HYPERDGM_DATA`` when set, else ``../shared/data``. Promised: a data root that exists (CI's
    ../shared/data) or an explicit ``$HYPERDGM_DATA`` other than the clone's own ``./data``, which
    ``make test`` sets when there is nothing else: a clone without data promises nothing.
    """
    if env:
        root = Path(env).expanduser().resolve()
        return root, root.is_dir() or root != (repo_root / "data").resolve()
    root = (repo_root / ".." / "shared" / "data").resolve()
    return root, root.is_dir()


def missing_mnist(root: Path) -> list[str]:
    """The MNIST files found in none of the directories the reader looks in."""
    dirs = [root / "MNIST" / "raw", root / "MNIST", root]
    return [n for n in MNIST_FILES if not any((d / f).is_file() for d in dirs for f in (n, n + ".gz"))]


def require_mnist(env: str | None, repo_root: Path = REPO_ROOT) -> Path:
    """The data root if it holds MNIST; else skip, or fail where data is promised (the core tests must not
    pass in CI by skipping)."""
    root, promised = data_expectation(env, repo_root)
    missing = missing_mnist(root)
    if not missing:
        return root
    msg = (f"MNIST not found under {root}: expected {', '.join(missing)} (or .gz) in {root / 'MNIST' / 'raw'}, "
           f"{root / 'MNIST'} or {root}")
    if promised:
        pytest.fail(f"{msg}; $HYPERDGM_DATA or ../shared/data promises real data, so the tests reading it fail "
                    "instead of skipping", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Real data root ($HYPERDGM_DATA or ../shared/data) holding MNIST: skips on a clone without data, fails
    where data is promised but MNIST is missing (see :func:`require_mnist`)."""
    return require_mnist(os.environ.get("HYPERDGM_DATA"))


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
