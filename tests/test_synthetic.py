"""The synthetic benchmarks (hyperdgm/data/synthetic.py): fixed data, the real benchmarks' API, a digest that
follows the samples. No data set needed."""
from __future__ import annotations

import pytest
import torch

from hyperdgm.data import BENCHMARKS, build_benchmark
from hyperdgm.data import synthetic


def _original_classes(task, split: str) -> torch.Tensor:
    data = task.split(split)
    return torch.tensor(task.classes)[data.y]


def test_fixed_data_with_class_structure():
    x, y = synthetic.make_synthetic(True)
    xt, yt = synthetic.make_synthetic(False)
    assert x.dtype == torch.uint8 and x.shape == (10 * synthetic.TRAIN_PER_CLASS, 1, 28, 28)
    assert xt.shape == (10 * synthetic.TEST_PER_CLASS, 1, 28, 28) and torch.bincount(yt).tolist() == [100] * 10
    synthetic.make_synthetic.cache_clear()
    again, _ = synthetic.make_synthetic(True)
    assert again is not x and torch.equal(again, x)  # regenerated: the same samples
    assert not torch.equal(xt[:100], x[:100])  # test samples are other draws
    # learnable from class structure: nearest class mean 85%; brightness alone near chance
    f = lambda im: im.flatten(1).float() / 255  # noqa: E731
    means = torch.stack([f(x[y == c]).mean(0) for c in range(10)])
    assert (torch.cdist(f(xt), means).argmin(1) == yt).float().mean() > 0.75
    bright = torch.stack([f(x[y == c]).mean() for c in range(10)])
    assert ((f(xt).mean(1, keepdim=True) - bright).abs().argmin(1) == yt).float().mean() < 0.3


def test_split_cil_and_rgb_benchmarks():
    assert {"synthetic", "cil_synthetic", "synthetic_rgb"} <= set(BENCHMARKS)
    bench = build_benchmark("synthetic", "/nonexistent")  # nothing is read: any data root
    assert bench.n_tasks == 5 and bench.n_classes_per_task == [2] * 5
    assert [len(t.train) for t in bench] == [800] * 5 and [len(t.test) for t in bench] == [200] * 5
    assert _original_classes(bench[3], "train").unique().tolist() == [6, 7] and bench[3].name == "synthetic classes 6,7"
    x, y = bench[0].batch("train", torch.arange(4))
    assert x.shape == (4, 1, 28, 28) and 0 <= x.min() and x.max() <= 1 and set(y.tolist()) <= {0, 1}
    cil = build_benchmark("cil_synthetic", None)
    assert cil.n_tasks == 10 and cil.n_classes_per_task == [1] * 10
    assert build_benchmark("synthetic", None, pad=True)[0].batch("test", torch.arange(2))[0].shape == (2, 1, 32, 32)
    rgb = build_benchmark("synthetic_rgb", None, n_tasks=2)
    assert rgb[0].input_shape == (3, 32, 32) and rgb[1].batch("train", torch.arange(3))[0].shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="no channel statistics"):
        build_benchmark("synthetic", None, normalize="standard")
    with pytest.raises(ValueError, match="at most 5 tasks"):
        build_benchmark("synthetic", None, n_tasks=6)


def test_limits_validation_and_class_order():
    bench = build_benchmark("synthetic", None, n_tasks=2, val_size=50, train_limit=100, test_limit=30,
                            class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0], seed=3)
    t = bench[0]
    assert t.classes == [9, 8] and len(t.train) == 100 and len(t.val) == 50 and len(t.test) == 30
    assert not set(t.train.idx.tolist()) & set(t.val.idx.tolist())  # validation carved from training data
    assert set(_original_classes(t, "val").tolist()) <= {8, 9}


def test_digest_follows_selection_and_samples(monkeypatch):
    a = build_benchmark("synthetic", None, train_limit=100)
    before = a.digest
    assert before == build_benchmark("synthetic", "/elsewhere", train_limit=100).digest
    assert a.digest != build_benchmark("synthetic", None, train_limit=100, seed=1).digest
    assert a.digest != build_benchmark("synthetic", None, train_limit=100,
                                       class_order=[1, 0, 2, 3, 4, 5, 6, 7, 8, 9]).digest
    # same selection, other generated samples (a changed generator): another digest
    monkeypatch.setattr(synthetic, "_NOISE", 0.2)
    synthetic.make_synthetic.cache_clear()
    synthetic.fingerprint.cache_clear()
    try:
        assert build_benchmark("synthetic", None, train_limit=100).digest != before
    finally:
        monkeypatch.undo()
        synthetic.make_synthetic.cache_clear()
        synthetic.fingerprint.cache_clear()
    assert synthetic.fingerprint("mnist") is None  # a data set read from files: named by its data root



def test_logged_as_the_runs_dataset_input(tmp_path):
    """What the MLflow tracker hands to the store's ``log_inputs`` for a synthetic benchmark (the store itself
    is tests/test_tracking.py's)."""
    from hyperdgm.tracking import MLflowTracker

    logged = []
    tracker = object.__new__(MLflowTracker)  # no store: only the dataset input is looked at
    tracker.run_id = "r1"
    tracker._client = type("Recorder", (), {
        "log_inputs": staticmethod(lambda run_id, datasets: logged.append((run_id, datasets)))})()
    bench = build_benchmark("synthetic", None, n_tasks=2, train_limit=100, test_limit=50)
    tracker.log_benchmark(bench, tmp_path)
    ((run_id, (inp,)),) = logged
    assert run_id == "r1"
    assert inp.dataset.name == "synthetic" and inp.dataset.digest == bench.digest
    assert {t.key: t.value for t in inp.tags} == {"mlflow.data.context": "training", "n_tasks": "2",
                                                  "n_train": "200", "n_test": "100"}
