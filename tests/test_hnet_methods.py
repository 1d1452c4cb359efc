"""HNET / HNET+ENT: entropy task inference on constructed cases and a short real split-MNIST run."""
from __future__ import annotations

import math

import pytest
import torch

from hyperdgm.experiment import run_experiment
from hyperdgm.methods.inference import assemble, entropy, infer_by_entropy

from .helpers import quick_cfg


def test_entropy_values():
    assert entropy(torch.tensor([[0.0, 0.0]])).item() == pytest.approx(math.log(2))
    assert entropy(torch.tensor([[100.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_inference_and_assembly():
    # sample 0: task 1 confident; sample 1: task 0 confident; sample 2: task 2 confident
    t0 = torch.tensor([[0.1, 0.0], [9.0, -9.0], [0.0, 0.2]])
    t1 = torch.tensor([[-8.0, 8.0], [0.0, 0.1], [0.3, 0.0]])
    t2 = torch.tensor([[0.0, 0.0], [0.2, 0.0], [7.0, -7.0]])
    inferred = infer_by_entropy([t0, t1, t2])
    assert inferred.tolist() == [1, 0, 2]
    # CL3: each sample's inferred block in the space of all 6 classes, -inf elsewhere
    out = assemble([t0, t1, t2], inferred, offsets=(0, 2, 4), n_classes=6)
    assert out.argmax(1).tolist() == [3, 0, 4]
    assert torch.isinf(out[0, [0, 1, 4, 5]]).all() and torch.equal(out[0, 2:4], t1[0])
    # CL2: the inferred task's shared-head logits
    out2 = assemble([t0, t1, t2], inferred, offsets=None)
    assert torch.equal(out2, torch.stack([t1[0], t0[1], t2[2]]))


SMALL_HNET = ["method.hnet.chunk_size=4000", "method.hnet.hidden=[20,20]", "method.hnet.chunk_emb_size=16",
              "method.hnet.task_emb_size=16"]


def test_hnet_cl1_regularizer_prevents_forgetting(data_root, tmp_path):
    common = ["scenario=cl1", "tracking=none", "benchmark.n_tasks=5", "benchmark.net.hidden=[100]",
              "benchmark.train_limit=1000", "trainer.iters_per_task=200", "trainer.checkpoint=false"]
    hn = run_experiment(quick_cfg(data_root, tmp_path, "method=hnet", *SMALL_HNET, "method.beta=0.05", *common),
                        tmp_path / "h")
    free = run_experiment(quick_cfg(data_root, tmp_path, "method=hnet", *SMALL_HNET, "method.beta=0", *common),
                          tmp_path / "h0")
    ft = run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", *common), tmp_path / "f")
    # the old tasks after the last one: all kept with the regularizer, some lost without it
    assert hn.R[4, :4].min() > 95 and free.R[4, :4].min() < 75, (hn.R[4], free.R[4])
    assert hn.summary["forgetting"] < 2 and free.summary["forgetting"] > 10, (hn.summary, free.summary)
    assert hn.summary["acc_avg"] > ft.summary["acc_avg"] - 1.0  # at least as good as the multi-head baseline
    assert hn.param_counts["target"] == 784 * 100 + 100 + 100 * 10 + 10  # every task's 2-way head generated
    assert hn.param_counts["compression_ratio"] == pytest.approx(hn.param_counts["hnet"] / hn.param_counts["target"])


def test_hnet_ent_cl3_far_above_finetune(data_root, tmp_path):
    common = ["scenario=cl3", "tracking=none", "benchmark.n_tasks=3", "trainer.iters_per_task=150",
              "trainer.checkpoint=false"]
    ent = run_experiment(quick_cfg(data_root, tmp_path, "method=hnet_ent", *SMALL_HNET, *common), tmp_path / "e")
    ft = run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", *common), tmp_path / "f")
    # a wrong task guess is a wrong answer, yet old tasks stay far above catastrophic forgetting
    assert ent.R[2, :2].mean() > ft.R[2, :2].mean() + 40, (ent.R, ft.R)
    assert ent.summary["acc_avg"] > 45  # chance: 1/6


@pytest.mark.parametrize("scenario,heads,n_out", [("cl1", "all", 6), ("cl3", "all", 6), ("cl2", "all", 2),
                                                  ("cl1", "own", 2)])
def test_generated_head_layout(scenario, heads, n_out, data_root):
    """``heads=all``: every task's head is generated and task t reads its own block (CL2: one head)."""
    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.methods import build_method
    from hyperdgm.scenarios import make_scenario

    bench = build_benchmark("split_mnist", data_root, n_tasks=3, train_limit=8, test_limit=8)
    m = build_method({"name": "hnet" if scenario != "cl3" else "hnet_ent", "heads": heads,
                      "net": {"arch": "mlp", "hidden": [8]}, "hnet": {"chunk_size": 500, "hidden": [5]}})
    m.setup(bench, make_scenario(scenario, bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    for t in bench.tasks:
        m.begin_task(t)
    assert m.target.n_out == n_out
    x = torch.rand(4, 1, 28, 28)
    full = m.target(x, m.gen(2))
    o = 4 if n_out == 6 else 0
    assert torch.equal(m.logits(x, 2), full[:, o : o + 2])
