"""Fetching a data set with torchvision (the optional extra `vision`): a stand-in torchvision writes the
original file formats, so what our readers make of a download is tested without network or torchvision."""
from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperdgm.data import read_cifar100, read_svhn
from hyperdgm.data.download import DownloadUnavailable, download, ensure, main
from hyperdgm.data.readers import DataError, MissingDataError
from hyperdgm.experiment import run_experiment

from .helpers import quick_cfg


def _fake_torchvision(monkeypatch, calls: list, corrupt: bool = False) -> None:
    """torchvision.datasets.{CIFAR100, SVHN} that write tiny files where the real ones put theirs."""

    class CIFAR100:
        def __init__(self, root, train=True, download=False):
            calls.append(("CIFAR100", Path(root), train, download))
            d = Path(root) / "cifar-100-python"
            d.mkdir(parents=True, exist_ok=True)
            n = 200 if train else 100
            rng = np.random.default_rng(int(train))
            fine = [i % 100 for i in range(n)]
            payload = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine,
                       b"coarse_labels": [f // 5 for f in fine]}
            with open(d / ("train" if train else "test"), "wb") as f:
                if corrupt:
                    f.write(b"not a pickle")
                else:
                    pickle.dump(payload, f)

    class SVHN:
        def __init__(self, root, split="train", download=False):
            import scipy.io
            calls.append(("SVHN", Path(root), split, download))
            n = 40 if split == "train" else 20
            X = np.random.default_rng(3).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
            y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
            scipy.io.savemat(str(Path(root) / f"{split}_32x32.mat"), {"X": X, "y": y})

    tv = types.ModuleType("torchvision")
    ds = types.ModuleType("torchvision.datasets")
    ds.CIFAR100, ds.SVHN = CIFAR100, SVHN
    tv.datasets = ds
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", ds)


def test_download_writes_the_layout_the_readers_read(monkeypatch, tmp_path):
    calls: list = []
    _fake_torchvision(monkeypatch, calls)
    with pytest.raises(MissingDataError):
        read_cifar100(tmp_path, True, cache=False)
    assert download("cifar100", tmp_path) == tmp_path.resolve()
    assert [(c[0], c[2], c[3]) for c in calls] == [("CIFAR100", True, True), ("CIFAR100", False, True)]
    x, y = read_cifar100(tmp_path, False, cache=False)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == list(range(100))
    # torchvision's SVHN writes into the root it is given: ours is root/SVHN, where the reader looks first
    download("svhn", tmp_path)
    assert calls[-1][1] == (tmp_path / "SVHN").resolve() and calls[-1][2] == "test"
    x, y = read_svhn(tmp_path, True, cache=False)
    assert x.shape == (40, 3, 32, 32) and y[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # the file's 10 is 0


def test_ensure_downloads_only_what_is_missing(monkeypatch, tmp_path):
    calls: list = []
    _fake_torchvision(monkeypatch, calls)
    ensure("svhn", tmp_path)
    assert len(calls) == 2
    ensure("svhn", tmp_path)  # present now: nothing fetched again
    ensure("synthetic", tmp_path)  # generated in memory: nothing to fetch
    assert len(calls) == 2


def test_a_bad_download_fails_in_our_reader(monkeypatch, tmp_path):
    _fake_torchvision(monkeypatch, [], corrupt=True)
    with pytest.raises(DataError, match="cannot unpickle|not a genuine CIFAR"):
        download("cifar100", tmp_path)


@pytest.mark.parametrize("failure", [None, RuntimeError("operator torchvision::nms does not exist\nmore")])
def test_without_a_usable_torchvision_one_line_says_why_and_where(monkeypatch, tmp_path, failure):
    """Missing torchvision (ImportError) or this machine's case: importing it with the CPU torch raises."""
    if failure is None:
        monkeypatch.setitem(sys.modules, "torchvision", None)  # import raises ImportError
        monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    else:
        def broken(name):
            raise failure
        monkeypatch.setattr("hyperdgm.data.download.importlib.import_module", broken)
    with pytest.raises(DownloadUnavailable) as err:
        download("cifar100", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "torchvision" in msg and str(tmp_path.resolve()) in msg, msg
    with pytest.raises(SystemExit, match="^error: cannot download cifar100"):
        main(["cifar100", "--root", str(tmp_path)])


def test_a_run_with_download_true_fetches_then_trains(monkeypatch, tmp_path):
    calls: list = []
    _fake_torchvision(monkeypatch, calls)
    root = tmp_path / "data"
    common = ("benchmark=cil_svhn", "benchmark.n_tasks=2", "method=finetune", "scenario=cil", "tracking=none",
              "trainer.iters_per_task=2", "trainer.batch_size=4", "trainer.checkpoint=false")
    with pytest.raises(MissingDataError, match="SVHN not found"):  # download=false (default): one line, no fetch
        run_experiment(quick_cfg(root, tmp_path, *common), tmp_path / "r0")
    assert calls == []
    r = run_experiment(quick_cfg(root, tmp_path, *common, "download=true"), tmp_path / "r1")
    assert [c[0] for c in calls] == ["SVHN", "SVHN"] and r.R.shape == (2, 2)
