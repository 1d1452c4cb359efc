"""Tests for hyperdgm.data.readers: real MNIST / CIFAR-10 and tiny files in the original formats."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from hyperdgm.data.readers import (
    DataError,
    MissingDataError,
    read_cifar10,
    read_cifar100,
    read_mnist,
    read_svhn,
    resolve_data_root,
)

MNIST_NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def _write_mnist(directory, n_train=6, n_test=4, gz=True, seed=0):
    """Tiny MNIST in IDX format; returns the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for name, arr, magic in ((f"{prefix}-images-idx3-ubyte", x, 2051), (f"{prefix}-labels-idx1-ubyte", y, 2049)):
            data = _idx_bytes(arr, magic)
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (directory / name).write_bytes(data)
        arrays[prefix] = (x, y)
    return arrays


# --------------------------------------------------------------------------- root resolution


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("HYPERDGM_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == (tmp_path / "env").resolve()
    assert resolve_data_root(tmp_path / "given") == (tmp_path / "given").resolve()
    monkeypatch.delenv("HYPERDGM_DATA")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == (tmp_path / "data").resolve()
    assert resolve_data_root("rel").is_absolute()


# --------------------------------------------------------------------------- MNIST


def test_mnist_real(data_root):
    x, y = read_mnist(data_root, train=True)
    xt, yt = read_mnist(data_root, train=False)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and yt.dtype == torch.int64
    assert int(y[0]) == 5 and int(yt[0]) == 7
    assert torch.bincount(y, minlength=10).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(yt, minlength=10).sum() == 10000
    assert int(x.max()) == 255 and abs(x.float().mean().item() / 255 - 0.1307) < 1e-3  # published pixel mean
    # cached: same tensors on a second read
    x2, y2 = read_mnist(data_root, train=True)
    assert x2 is x and y2 is y


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["MNIST/raw", "MNIST", "."])
def test_mnist_gz_raw_and_layouts(tmp_path, gz, layout):
    arrays = _write_mnist(tmp_path / layout, gz=gz)
    for train, prefix in ((True, "train"), (False, "t10k")):
        x, y = read_mnist(tmp_path, train=train, cache=False)
        assert x.shape == (len(arrays[prefix][0]), 1, 28, 28)
        assert torch.equal(x[:, 0], torch.from_numpy(arrays[prefix][0]))
        assert y.tolist() == arrays[prefix][1].tolist()


def test_mnist_truncated(tmp_path):
    d = tmp_path / "MNIST" / "raw"
    _write_mnist(d, gz=False)
    path = d / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        read_mnist(tmp_path, train=True)
    read_mnist(tmp_path, train=False)  # the test split is intact


def test_mnist_truncated_gzip(tmp_path):
    d = tmp_path / "MNIST" / "raw"
    _write_mnist(d, gz=True)
    path = d / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        read_mnist(tmp_path, train=False)


def test_mnist_bad_magic_count_and_labels(tmp_path):
    d = tmp_path / "MNIST" / "raw"
    _write_mnist(d, gz=False)
    lbl = d / "train-labels-idx1-ubyte"
    good = lbl.read_bytes()
    lbl.write_bytes(struct.pack(">I", 2051) + good[4:])
    with pytest.raises(DataError, match="magic"):
        read_mnist(tmp_path, train=True)
    lbl.write_bytes(_idx_bytes(np.zeros(5, np.uint8), 2049))  # 5 labels for 6 images
    with pytest.raises(DataError, match="labels"):
        read_mnist(tmp_path, train=True)
    lbl.write_bytes(_idx_bytes(np.full(6, 12, np.uint8), 2049))
    with pytest.raises(DataError, match="outside"):
        read_mnist(tmp_path, train=True)


def test_mnist_missing(tmp_path):
    _write_mnist(tmp_path / "MNIST" / "raw")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    read_mnist(tmp_path, train=True, cache=False)
    with pytest.raises(MissingDataError) as info:
        read_mnist(tmp_path, train=False)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DataError)
    msg = str(info.value)
    assert "\n" not in msg and "MNIST" in msg
    assert all(name in msg for name in MNIST_NAMES)
    assert str((tmp_path / "MNIST" / "raw").resolve()) in msg
    with pytest.raises(MissingDataError):
        read_mnist(tmp_path / "nowhere", train=True)


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_real(cifar10_root):
    x, y = read_cifar10(cifar10_root, train=True)
    xt, yt = read_cifar10(cifar10_root, train=False)
    assert x.shape == (50000, 3, 32, 32) and xt.shape == (10000, 3, 32, 32)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert int(y[0]) == 6 and int(yt[0]) == 3  # frog, cat
    assert torch.bincount(y, minlength=10).tolist() == [5000] * 10
    with open(cifar10_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    # channel-major rows: bytes 1024..2047 of row 0 are the green plane, row-major
    assert xt[0, 1].flatten().tolist() == raw[0, 1024:2048].tolist()
    assert int(xt[5, 2, 3, 4]) == int(raw[5, 2048 + 3 * 32 + 4])


def test_cifar10_corrupt_and_missing(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    with pytest.raises(MissingDataError) as info:
        read_cifar10(tmp_path, train=False)
    assert "test_batch" in str(info.value) and "data_batch_5" in str(info.value) and str(d) in str(info.value)
    d.mkdir()
    (d / "test_batch").write_bytes(b"\x80\x04garbage-not-a-pickle")
    with pytest.raises(DataError, match="test_batch"):
        read_cifar10(tmp_path, train=False)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with pytest.raises(DataError, match="3072"):
        read_cifar10(tmp_path, train=False)


# --------------------------------------------------------------------------- CIFAR-100


@pytest.mark.parametrize("train", [True, False])
def test_cifar100_tiny(tiny_cifar100, train):
    ref = tiny_cifar100.train if train else tiny_cifar100.test
    x, y = read_cifar100(tiny_cifar100.root, train=train)
    assert x.shape == (len(ref.data), 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == ref.fine.tolist()
    for i, c, h, w in [(0, 0, 0, 0), (3, 1, 5, 7), (17, 2, 31, 30), (len(ref.data) - 1, 2, 31, 31)]:
        assert int(x[i, c, h, w]) == int(ref.data[i, c * 1024 + h * 32 + w])
    _, yc = read_cifar100(tiny_cifar100.root, train=train, label="coarse")
    assert yc.tolist() == ref.coarse.tolist() and int(yc.max()) == 19
    with pytest.raises(ValueError):
        read_cifar100(tiny_cifar100.root, train=train, label="medium")


def test_cifar100_missing(tmp_path):
    with pytest.raises(MissingDataError, match="CIFAR-100.*cifar-100-python"):
        read_cifar100(tmp_path, train=True)


# --------------------------------------------------------------------------- SVHN


@pytest.mark.parametrize("train", [True, False])
def test_svhn_tiny(tiny_svhn, train):
    ref = tiny_svhn.train if train else tiny_svhn.test
    n = ref.X.shape[3]
    x, y = read_svhn(tiny_svhn.root, train=train)
    assert x.shape == (n, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    for i, c, h, w in [(0, 0, 0, 0), (1, 2, 3, 4), (n - 1, 1, 31, 0), (7, 0, 10, 20)]:
        assert int(x[i, c, h, w]) == int(ref.X[h, w, c, i])
    expected = [0 if v == 10 else int(v) for v in ref.y[:, 0]]
    assert y.tolist() == expected and 0 in expected and int(y.max()) == 9


def test_svhn_root_directly_and_missing(tiny_svhn, tmp_path):
    shutil.copy(tiny_svhn.root / "SVHN" / "test_32x32.mat", tmp_path / "test_32x32.mat")
    x, _ = read_svhn(tmp_path, train=False)
    assert x.shape[0] == tiny_svhn.test.X.shape[3]
    with pytest.raises(MissingDataError) as info:
        read_svhn(tmp_path, train=True)
    msg = str(info.value)
    assert "train_32x32.mat" in msg and "test_32x32.mat" in msg and str(tmp_path / "SVHN") in msg
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match="train_32x32.mat"):
        read_svhn(tmp_path, train=True)
