"""Methods on 32x32 RGB benchmarks: ResNet-32 / ZenkeNet targets, per-task batch-norm statistics,
convolutional replay models. Short smoke runs on real CIFAR-10 and on tiny SVHN files."""
from __future__ import annotations

import torch

from hyperdgm.data.benchmarks import build_benchmark
from hyperdgm.experiment import method_config, run_experiment
from hyperdgm.methods import build_method
from hyperdgm.scenarios import make_scenario

from .helpers import quick_cfg

TINY = ["benchmark.n_tasks=2", "benchmark.train_limit=64", "benchmark.test_limit=32", "trainer.iters_per_task=3",
        "trainer.batch_size=16", "trainer.eval_batch_size=32", "tracking=none"]
SMALL_HNET = ["method.hnet.chunk_size=7000", "method.hnet.hidden=[]", "method.hnet.chunk_emb_size=32",
              "method.hnet.task_emb_size=32"]


def fits_one_batch(cfg, root, steps: int = 20) -> tuple[float, float]:
    """The method of ``cfg`` trained on one fixed batch of task 0: the mean training loss of its first
    and of its last 3 steps (it must fall, even on random images, by memorising them)."""
    torch.manual_seed(0)
    bench = build_benchmark(cfg.benchmark.name, root, n_tasks=2, train_limit=16, test_limit=8)
    m = build_method(method_config(cfg))
    m.setup(bench, make_scenario(cfg.scenario.name, bench.n_classes_per_task), torch.device("cpu"),
            torch.Generator().manual_seed(0))
    task = bench.tasks[0]
    m.plan_task(steps, 16)
    m.begin_task(task)
    x, y = task.batch("train", torch.arange(min(16, len(task.train))))
    losses = [float(m.step(x, y, 0)["loss"]) for _ in range(steps)]
    return sum(losses[:3]) / 3, sum(losses[-3:]) / 3


def test_hnet_resnet32_keeps_batchnorm_statistics_per_task(cifar10_root, tmp_path):
    cfg = quick_cfg(cifar10_root, tmp_path, "benchmark=split_cifar10", "method=hnet", "scenario=cl1",
                    *SMALL_HNET, *TINY)
    res = run_experiment(cfg, tmp_path / "r")
    assert res.R.shape == (2, 2)
    before, after = fits_one_batch(cfg, cifar10_root)
    assert after < 0.5 * before, (before, after)
    ck = torch.load(tmp_path / "r" / "checkpoints" / "task_001.pt", weights_only=True)
    module = ck["method"]["module"]
    # one slot of running statistics per task, and they differ (each task saw its own data)
    means = sorted(k for k in module if k.startswith("target.net._batchnorm_layers.0.mean_"))
    assert means == ["target.net._batchnorm_layers.0.mean_0", "target.net._batchnorm_layers.0.mean_1"]
    assert not torch.equal(module[means[0]], module[means[1]])
    # the paper's setup: the hnet maps (task, chunk) embeddings straight to 7000 outputs, compressive
    assert res.param_counts["compression_ratio"] < 1.0
    # a fresh method grows to the checkpoint's shape (embeddings + statistics slots) and loads it
    bench = build_benchmark("split_cifar10", cifar10_root, n_tasks=2, train_limit=8, test_limit=8)
    fresh = build_method(method_config(cfg))
    fresh.setup(bench, make_scenario("cl1", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    fresh.load_checkpoint_state(ck["method"])
    assert torch.equal(fresh.target.net.batchnorm_layers[0].get_stats(1)[0], module[means[1]])


def test_hnet_r_conv_memory_on_cifar10(cifar10_root, tmp_path):
    cfg = quick_cfg(cifar10_root, tmp_path, "benchmark=split_cifar10", "benchmark.net.arch=zenke", "method=hnet_r",
                    "scenario=cl3", "method.memory.hnet.chunk_size=20000", *TINY)
    res = run_experiment(cfg, tmp_path / "r")
    assert res.R.shape == (2, 2)
    before, after = fits_one_batch(cfg, cifar10_root)
    assert after < 0.5 * before, (before, after)
    assert res.param_counts["memory_generator_target"] > 0


def test_dgr_and_hnet_ent_on_svhn_files(tiny_svhn, tmp_path):
    for method in ("dgr", "hnet_ent"):
        extra = SMALL_HNET if method == "hnet_ent" else []
        cfg = quick_cfg(tiny_svhn.root, tmp_path, "benchmark=split_svhn", "benchmark.net.arch=zenke",
                        f"method={method}", "scenario=cl3", *extra, *TINY)
        res = run_experiment(cfg, tmp_path / method)
        assert res.R.shape == (2, 2)
        # random images: only memorising lowers the loss (slowly, through the ZenkeNet's dropout)
        before, after = fits_one_batch(cfg, tiny_svhn.root, steps=40)
        assert after < 0.75 * before, (method, before, after)
