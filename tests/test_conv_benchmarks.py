"""Methods on 32x32 RGB benchmarks: ResNet-32 / ZenkeNet targets, per-task batch-norm statistics,
convolutional replay models. Short smoke runs on real CIFAR-10 and on tiny SVHN files."""
from __future__ import annotations

import numpy as np
import torch

from hyperdgm.experiment import run_experiment

from .helpers import quick_cfg

TINY = ["benchmark.n_tasks=2", "benchmark.train_limit=64", "benchmark.test_limit=32", "trainer.iters_per_task=3",
        "trainer.batch_size=16", "trainer.eval_batch_size=32", "tracking=none"]
SMALL_HNET = ["method.hnet.chunk_size=7000", "method.hnet.hidden=[]", "method.hnet.chunk_emb_size=32",
              "method.hnet.task_emb_size=32"]


def test_hnet_resnet32_keeps_batchnorm_statistics_per_task(cifar10_root, tmp_path):
    cfg = quick_cfg(cifar10_root, tmp_path, "benchmark=split_cifar10", "method=hnet", "scenario=cl1",
                    *SMALL_HNET, *TINY)
    res = run_experiment(cfg, tmp_path / "r")
    assert not np.isnan(res.R[1, 0])
    ck = torch.load(tmp_path / "r" / "checkpoints" / "task_001.pt", weights_only=True)
    module = ck["method"]["module"]
    # one slot of running statistics per task, and they differ (each task saw its own data)
    means = sorted(k for k in module if k.startswith("target.net._batchnorm_layers.0.mean_"))
    assert means == ["target.net._batchnorm_layers.0.mean_0", "target.net._batchnorm_layers.0.mean_1"]
    assert not torch.equal(module[means[0]], module[means[1]])
    # the paper's setup: the hnet maps (task, chunk) embeddings straight to 7000 outputs, compressive
    assert res.param_counts["compression_ratio"] < 1.0
    # a fresh method grows to the checkpoint's shape (embeddings + statistics slots) and loads it
    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.experiment import method_config
    from hyperdgm.methods import build_method
    from hyperdgm.scenarios import make_scenario

    bench = build_benchmark("split_cifar10", cifar10_root, n_tasks=2, train_limit=8, test_limit=8)
    fresh = build_method(method_config(cfg))
    fresh.setup(bench, make_scenario("cl1", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    fresh.load_checkpoint_state(ck["method"])
    assert torch.equal(fresh.target.net.batchnorm_layers[0].get_stats(1)[0], module[means[1]])


def test_hnet_r_conv_memory_on_cifar10(cifar10_root, tmp_path):
    cfg = quick_cfg(cifar10_root, tmp_path, "benchmark=split_cifar10", "benchmark.net.arch=zenke", "method=hnet_r",
                    "scenario=cl3", "method.memory.hnet.chunk_size=20000", *TINY)
    res = run_experiment(cfg, tmp_path / "r")
    assert res.R.shape == (2, 2) and not np.isnan(res.R[1, 0])
    assert res.param_counts["memory_generator_target"] > 0


def test_dgr_and_hnet_ent_on_svhn_files(tiny_svhn, tmp_path):
    for method in ("dgr", "hnet_ent"):
        extra = SMALL_HNET if method == "hnet_ent" else []
        cfg = quick_cfg(tiny_svhn.root, tmp_path, "benchmark=split_svhn", "benchmark.net.arch=zenke",
                        f"method={method}", "scenario=cl3", *extra, *TINY)
        res = run_experiment(cfg, tmp_path / method)
        assert not np.isnan(res.R[1, 0])
