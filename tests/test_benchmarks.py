"""Tests for hyperdgm.data.benchmarks and hyperdgm.data.tensors."""

from __future__ import annotations

import os

import pytest
import torch

from hyperdgm.data import (
    BENCHMARKS,
    build_benchmark,
    pad_to,
    random_crop_flip,
    read_cifar10,
    read_mnist,
    to_float,
)


def _labels_of(task, split):
    """Original class of each sample of a split, recovered from the shared label tensor."""
    data = getattr(task, split)
    return data.idx, torch.tensor(task.classes)[data.y]


# --------------------------------------------------------------------------- tensors


def test_pad_to():
    x = torch.rand(3, 1, 28, 28) + 0.1
    p = pad_to(x, 32)
    assert p.shape == (3, 1, 32, 32)
    assert torch.equal(p[:, :, 2:30, 2:30], x)
    assert p[:, :, :2].abs().sum() == 0 and p[:, :, 30:].abs().sum() == 0 and p[..., :2].abs().sum() == 0
    with pytest.raises(ValueError):
        pad_to(torch.zeros(1, 1, 33, 33), 32)


def test_random_crop_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, padding=0, generator=g, flip=False), x)
    # padding 0 with flips: every sample is itself or its mirror image, and both happen
    out = random_crop_flip(x, padding=0, generator=g)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()
    # padding 2, no flip: every sample is an 8x8 window of the zero-padded input, not all centred
    out = random_crop_flip(x, padding=2, generator=g, flip=False)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    windows = padded.unfold(2, 8, 1).unfold(3, 8, 1)  # [B, C, 5, 5, 8, 8]
    match = (windows == out[:, :, None, None]).all(-1).all(-1).all(1)  # [B, 5, 5]
    assert bool(match.flatten(1).any(1).all())
    assert not bool(match[:, 2, 2].all())
    # seeded: same generator state -> same output
    a = random_crop_flip(x, 4, torch.Generator().manual_seed(3))
    b = random_crop_flip(x, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_to_float_unit_and_standard(cifar10_root):
    x, _ = read_cifar10(cifar10_root, train=True)
    u = to_float(x[:8], "cifar10", "unit")
    assert u.dtype == torch.float32 and float(u.min()) >= 0 and float(u.max()) <= 1
    assert torch.allclose(u * 255, x[:8].float())
    s = to_float(x[:5000], "cifar10", "standard")
    mean, std = s.mean(dim=(0, 2, 3)), s.std(dim=(0, 2, 3))
    assert mean.abs().max() < 0.05 and (std - 1).abs().max() < 0.05
    with pytest.raises(ValueError):
        to_float(x[:2], "mnist", "standard")
    with pytest.raises(ValueError):
        to_float(x[:2], "cifar10", "zscore")


# --------------------------------------------------------------------------- MNIST benchmarks


def test_split_mnist(data_root):
    bench = build_benchmark("split_mnist", data_root)
    _, y_all = read_mnist(data_root, train=True)
    assert bench.n_tasks == 5 and bench.n_classes_per_task == [2] * 5 and bench.class_offsets == [0, 2, 4, 6, 8]
    assert [t.classes for t in bench.tasks] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert sum(len(t.train) for t in bench.tasks) == 60000 and sum(len(t.test) for t in bench.tasks) == 10000
    all_idx = torch.cat([t.train.idx for t in bench.tasks])
    assert torch.equal(all_idx.sort().values, torch.arange(60000))
    for t in bench.tasks:
        idx, orig = _labels_of(t, "train")
        assert set(t.train.y.unique().tolist()) == {0, 1}
        assert torch.equal(orig, y_all[idx])
        assert t.train.x is bench.tasks[0].train.x  # shared, not copied
    t = bench.tasks[2]
    x, y = t.batch("test", torch.arange(16))
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (16,)
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.max()) > 0.5
    assert torch.equal(y, t.test.y[:16])
    xa, ya = t.batch("test")
    assert xa.shape[0] == len(t.test) and torch.equal(xa[:16], x)
    with pytest.raises(ValueError):
        t.batch("val")


def test_permuted_mnist(data_root):
    kw = dict(n_tasks=3, train_limit=200, test_limit=100)
    bench = build_benchmark("permuted_mnist", data_root, seed=1, **kw)
    perms = [t.permutation for t in bench.tasks]
    for p in perms:
        assert p.dtype == torch.long and torch.equal(p.sort().values, torch.arange(1024))
    assert not torch.equal(perms[0], perms[1]) and not torch.equal(perms[1], perms[2])
    again = build_benchmark("permuted_mnist", data_root, seed=1, **kw)
    other = build_benchmark("permuted_mnist", data_root, seed=2, **kw)
    assert all(torch.equal(a.permutation, b.permutation) for a, b in zip(bench.tasks, again.tasks))
    assert torch.equal(bench.tasks[0].train.idx, again.tasks[0].train.idx)
    assert not torch.equal(bench.tasks[0].permutation, other.tasks[0].permutation)
    t = bench.tasks[1]
    assert t.input_shape == (1, 32, 32) and t.classes == list(range(10)) and len(t.train) == 200
    assert t.train.x is bench.tasks[0].train.x
    x, y = t.batch("train", torch.arange(5))
    assert x.shape == (5, 1, 32, 32)
    raw, labels = read_mnist(data_root, train=True)
    ref = pad_to(raw[t.train.idx[:5]].float() / 255, 32).flatten(1)[:, t.permutation]
    assert torch.allclose(x.flatten(1), ref) and torch.equal(y, labels[t.train.idx[:5]])


def test_permuted_mnist_first_unpermuted(data_root):
    """Task 0 is plain padded MNIST; the later tasks keep the permutations of the default build."""
    kw = dict(n_tasks=3, train_limit=50, test_limit=20, seed=3)
    plain = build_benchmark("permuted_mnist", data_root, first_unpermuted=True, **kw)
    every = build_benchmark("permuted_mnist", data_root, **kw)
    t0 = plain.tasks[0]
    assert t0.permutation is None and every.tasks[0].permutation is not None
    raw, _ = read_mnist(data_root, train=True)
    x, _ = t0.batch("train", torch.arange(5))
    assert torch.allclose(x, pad_to(raw[t0.train.idx[:5]].float() / 255, 32))
    for a, b in zip(plain.tasks[1:], every.tasks[1:]):
        assert torch.equal(a.permutation, b.permutation)
    with pytest.raises(ValueError, match="first_unpermuted"):
        build_benchmark("split_mnist", data_root, first_unpermuted=True, n_tasks=1, train_limit=5, test_limit=5)


def test_val_split_disjoint(data_root):
    bench = build_benchmark("split_mnist", data_root, val_size=100, n_tasks=2)
    for t in bench.tasks:
        assert len(t.val) == 100
        assert not set(t.val.idx.tolist()) & set(t.train.idx.tolist())
        _, orig = _labels_of(t, "val")
        assert set(orig.tolist()) <= set(t.classes)
    full = build_benchmark("split_mnist", data_root, n_tasks=2)
    assert len(bench.tasks[0].train) + 100 == len(full.tasks[0].train)
    pm = build_benchmark("permuted_mnist", data_root, n_tasks=2, val_size=50, train_limit=100, test_limit=10)
    assert len(pm.tasks[1].val) == 50 and not set(pm.tasks[1].val.idx.tolist()) & set(pm.tasks[1].train.idx.tolist())
    x, _ = pm.tasks[1].batch("val")
    assert x.shape == (50, 1, 32, 32)


def test_class_order(data_root):
    order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    bench = build_benchmark("split_mnist", data_root, class_order=order, train_limit=50, test_limit=20)
    assert bench.tasks[0].classes == [9, 8] and bench.tasks[4].classes == [1, 0]
    _, y_all = read_mnist(data_root, train=True)
    t = bench.tasks[0]
    assert torch.equal(y_all[t.train.idx], torch.where(t.train.y == 0, 9, 8))
    for bad in ([0, 1, 2], [0] * 10, list(range(1, 11)), [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9]):
        with pytest.raises(ValueError, match="permutation") as info:
            build_benchmark("split_mnist", data_root, class_order=bad)
        assert "\n" not in str(info.value)


def test_cil_mnist_and_limits(data_root):
    bench = build_benchmark("cil_mnist", data_root, train_limit=30, test_limit=10, seed=4)
    assert bench.n_tasks == 10 and bench.n_classes_per_task == [1] * 10 and bench.class_offsets == list(range(10))
    assert [t.classes for t in bench.tasks] == [[c] for c in range(10)]
    _, y_all = read_mnist(data_root, train=True)
    for t in bench.tasks:
        assert len(t.train) == 30 and len(t.test) == 10 and int(t.train.y.max()) == 0
        assert bool((y_all[t.train.idx] == t.classes[0]).all())
    again = build_benchmark("cil_mnist", data_root, train_limit=30, test_limit=10, seed=4)
    other = build_benchmark("cil_mnist", data_root, train_limit=30, test_limit=10, seed=5)
    assert torch.equal(bench.tasks[3].train.idx, again.tasks[3].train.idx)
    assert not torch.equal(bench.tasks[3].train.idx, other.tasks[3].train.idx)


def test_bad_arguments(data_root):
    with pytest.raises(ValueError) as info:
        build_benchmark("split_imagenet", data_root)
    assert all(name in str(info.value) for name in BENCHMARKS)
    with pytest.raises(ValueError):
        build_benchmark("split_mnist", data_root, n_tasks=6)
    with pytest.raises(ValueError):
        build_benchmark("split_mnist", data_root, normalize="standard")
    with pytest.raises(ValueError):
        build_benchmark("cil_mnist", data_root, val_size=10**6)


def test_to_device_keeps_sharing(data_root):
    bench = build_benchmark("permuted_mnist", data_root, n_tasks=3, train_limit=20, test_limit=20)
    moved = bench.to("meta")
    assert moved.tasks[0].train.x.device.type == "meta" and bench.tasks[0].train.x.device.type == "cpu"
    assert moved.tasks[0].train.x is moved.tasks[2].train.x and moved.tasks[0].test.x is moved.tasks[1].test.x
    assert moved.tasks[1].permutation.device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batch_on_cuda(data_root):
    bench = build_benchmark("permuted_mnist", data_root, n_tasks=2, train_limit=64, test_limit=64).to("cuda")
    x, y = bench.tasks[1].batch("train", torch.arange(8, device="cuda"))
    assert x.is_cuda and y.is_cuda and x.shape == (8, 1, 32, 32)


# --------------------------------------------------------------------------- CIFAR / SVHN benchmarks


def test_split_cifar10(cifar10_root):
    bench = build_benchmark("split_cifar10", cifar10_root, train_limit=64, test_limit=32)
    assert bench.n_tasks == 5 and [t.classes for t in bench.tasks][1] == [2, 3]
    t = bench.tasks[1]
    assert t.augment and t.normalize == "standard" and t.input_shape == (3, 32, 32) and t.permutation is None
    g = torch.Generator().manual_seed(0)
    x_aug, y = t.batch("train", torch.arange(16), train_aug=True, generator=g)
    x_plain, y2 = t.batch("train", torch.arange(16))
    assert x_aug.shape == (16, 3, 32, 32) and torch.equal(y, y2) and not torch.equal(x_aug, x_plain)
    assert float(x_plain.min()) < 0  # standardised
    _, y_all = read_cifar10(cifar10_root, train=True)
    assert set(y_all[t.train.idx].tolist()) == {2, 3}


def test_split_cifar10_100(cifar10_root, tiny_cifar100, tmp_path):
    os.symlink(cifar10_root / "cifar-10-batches-py", tmp_path / "cifar-10-batches-py")
    os.symlink(tiny_cifar100.root / "cifar-100-python", tmp_path / "cifar-100-python")
    order = list(range(99, -1, -1))
    bench = build_benchmark("split_cifar10_100", tmp_path, n_tasks=3, class_order=order, test_limit=50)
    assert bench.n_tasks == 3 and bench.n_classes_per_task == [10, 10, 10]
    t0, t1, t2 = bench.tasks
    assert t0.dataset == "cifar10" and t0.classes == list(range(10)) and len(t0.train) == 50000
    assert t1.dataset == "cifar100" and t1.classes == [109 - i for i in range(10)] and t2.classes[0] == 99
    assert len(t1.train) == 20 and sorted(set(t1.train.y.tolist())) == list(range(10))
    fine = torch.from_numpy(tiny_cifar100.train.fine)
    assert torch.equal(fine[t1.train.idx] + 10, torch.tensor(t1.classes)[t1.train.y])
    x, _ = t1.batch("test")
    assert x.shape == (10, 3, 32, 32)
    assert build_benchmark("split_cifar10_100", tmp_path, test_limit=5).n_tasks == 6
    with pytest.raises(ValueError):
        build_benchmark("split_cifar10_100", tmp_path, class_order=list(range(10)))


def test_svhn_benchmarks(tiny_svhn):
    bench = build_benchmark("split_svhn", tiny_svhn.root)
    assert bench.n_tasks == 5 and bench.tasks[0].classes == [0, 1] and not bench.tasks[0].augment
    assert sum(len(t.train) for t in bench.tasks) == 60 and sum(len(t.test) for t in bench.tasks) == 30
    t = bench.tasks[0]
    raw_y = torch.tensor([0 if v == 10 else int(v) for v in tiny_svhn.train.y[:, 0]])
    assert torch.equal(raw_y[t.train.idx], t.train.y)  # classes [0, 1] -> local == original
    x, _ = t.batch("train")
    assert x.shape == (len(t.train), 3, 32, 32)
    cil = build_benchmark("cil_svhn", tiny_svhn.root)
    assert cil.n_tasks == 10 and all(len(t.train) == 6 for t in cil.tasks)
