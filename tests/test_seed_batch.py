"""Several seeds in one process (``seeds=[...]``, hyperdgm.seed_batch): each seed's numbers equal a
separate run's, its own run dir and MLflow run under one parent, resume, refusals."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from hyperdgm.errors import ConfigError
from hyperdgm.experiment import run_experiment
from hyperdgm.hnet import OutputRegularizer, StackedOutputRegularizer, WeightGenerator, adam_lookahead
from hyperdgm.rundir import read_checkpoint

from .helpers import quick_cfg

SYN = ["benchmark=synthetic", "trainer.iters_per_task=40", "trainer.log_every=10"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _module_state(run_dir: Path, task: int) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "checkpoints" / f"task_{task:03d}.pt")["method"]["module"]


def _assert_same_learner(a: dict, b: dict, rtol: float = 1e-3, atol: float = 1e-4, frac: float = 1e-4,
                         cap: float = 1e-2) -> None:
    """Equal to float round-off as Adam amplifies it: an update is ~lr = 1e-3 whatever the gradient's size, so an
    element whose gradient is ~0 can take a step of the other sign when batched and single kernels round
    differently (measured on an AVX-512 Xeon: 6 of 420,000 output-layer weights 4e-4 apart after 80 steps).
    At most a fraction ``frac`` of a tensor's elements may lie beyond ``atol + rtol * |b|``, none beyond ``cap``."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        assert x.shape == y.shape and x.dtype == y.dtype, k
        if not x.is_floating_point():
            assert torch.equal(x, y), k
            continue
        diff = (x - y).abs()
        off = int((diff > atol + rtol * y.abs()).sum())
        assert off <= frac * x.numel() and (float(diff.max()) if diff.numel() else 0.0) <= cap, (
            f"{k}: {off} of {x.numel()} elements apart, the largest by {(float(diff.max()) if diff.numel() else 0.0):.2e}")


# ------------------------------------------------------------------------ the stacked regularizer
def test_stacked_penalty_equals_each_learners_penalty_and_gradients():
    gens, regs, opts = [], [], []
    for seed in range(3):
        torch.manual_seed(seed)
        g = WeightGenerator([[10, 11], [10], [7, 10]], chunk_size=37, chunk_emb_size=4, hidden=(6, 5), task_emb_size=3,
                            n_tasks=2)
        r = OutputRegularizer(0.05, lookahead=True)
        r.begin_task(g)  # tasks 0, 1 are past
        g.add_task()
        with torch.no_grad():  # move the weights away from the snapshot
            for p in g.hnet_parameters():
                p.add_(0.05 * torch.randn_like(p))
        o = torch.optim.Adam(g.hnet_parameters(), lr=1e-2)
        g.flat([2]).pow(2).sum().backward()  # a task gradient for the lookahead
        gens.append(g), regs.append(r), opts.append(o)
    own, own_grads = [], []
    for g, r, o in zip(gens, regs, opts):
        delta = adam_lookahead(o, g.hnet_parameters())
        twin = copy.deepcopy(g)
        for p in twin.parameters():
            p.grad = None
        pen = r.penalty(twin, delta=delta)
        pen.backward()
        own.append(pen.detach())
        own_grads.append([p.grad.clone() for p in twin.hnet_parameters()])
    stack = StackedOutputRegularizer(regs)
    theta = [torch.stack([g.hnet_parameters()[i].detach() for g in gens]).requires_grad_()
             for i in range(len(gens[0].hnet_parameters()))]
    deltas = [adam_lookahead(o, g.hnet_parameters()) for g, o in zip(gens, opts)]
    delta = [torch.stack([d[i] for d in deltas]) for i in range(len(theta))]
    lay = gens[0]._layout()
    wi, bi = lay["weights"][-1], lay["biases"][-1]
    hidden = torch.func.vmap(lambda th, d, e: gens[0].hidden_features(e, delta=d, params=th))(
        theta, delta, torch.stack([g._embeddings([0, 1]).detach() for g in gens]))
    as_w = gens[0].as_output_weight
    pen = stack.penalty(as_w(theta[wi]), theta[bi], as_w(delta[wi]), delta[bi], hidden)
    assert pen.shape == (3,)
    torch.testing.assert_close(pen.detach(), torch.stack(own), rtol=1e-5, atol=1e-7)
    assert len({round(float(v), 6) for v in own}) == 3  # three different learners, not one repeated
    pen.sum().backward()
    for s in range(3):
        for i, p in enumerate(theta):
            torch.testing.assert_close(p.grad[s], own_grads[s][i], rtol=1e-4, atol=1e-7)


def test_stacking_refuses_a_subsampled_or_online_regularizer():
    torch.manual_seed(0)
    g = WeightGenerator([[4, 3]], chunk_size=None, hidden=(5,), task_emb_size=2, n_tasks=3)
    sub = OutputRegularizer(0.1, tasks_per_step=1)
    sub.begin_task(g)
    with pytest.raises(ValueError, match="reg_tasks_per_step"):
        StackedOutputRegularizer([sub, sub])
    online = OutputRegularizer(0.1, online_targets=True)
    online.begin_task(g)
    with pytest.raises(ValueError, match="online_targets"):
        StackedOutputRegularizer([online])


# ------------------------------------------------------------------------ whole runs
@pytest.mark.parametrize("method,scenario", [("hnet", "cl1"), ("hnet_ent", "cl3")])
def test_batched_seeds_equal_separate_runs(tmp_path, method, scenario):
    """The stacked learner's seeds end where separate runs with the same seeds end (weights to float
    round-off, the accuracy matrix), and the regularizer really acted (task 1 kept)."""
    ov = [*SYN, f"method={method}", f"scenario={scenario}", "tracking=none"]
    batched = run_experiment(quick_cfg(tmp_path, tmp_path, *ov, "seeds=[3,5]"), tmp_path / "batched")
    assert batched.extra["seeds"].keys() == {3, 5}
    for seed in (3, 5):
        alone = run_experiment(quick_cfg(tmp_path, tmp_path, *ov, f"seed={seed}"), tmp_path / f"alone{seed}")
        mine = batched.extra["seeds"][seed]
        np.testing.assert_allclose(mine.R, alone.R, atol=0.34)  # at most one test sample of 300 flips
        _assert_same_learner(_module_state(tmp_path / "batched" / f"seed_{seed}", 2),
                             _module_state(tmp_path / f"alone{seed}", 2))
    r3, r5 = (batched.extra["seeds"][s].R for s in (3, 5))
    assert not np.array_equal(r3, r5)  # two learners, not one twice
    np.testing.assert_allclose(batched.summary["acc_avg"], (batched.extra["seeds"][3].summary["acc_avg"]
                                                            + batched.extra["seeds"][5].summary["acc_avg"]) / 2)


def test_seeds_without_a_stacked_step_train_one_after_another(tmp_path, caplog):
    ov = [*SYN, "method=finetune", "scenario=cl1", "tracking=none"]
    with caplog.at_level("INFO", logger="hyperdgm.seed_batch"):
        batched = run_experiment(quick_cfg(tmp_path, tmp_path, *ov, "seeds=[0,1]"), tmp_path / "b")
    assert "one after another (method finetune has no seed-batched step)" in caplog.text
    alone = run_experiment(quick_cfg(tmp_path, tmp_path, *ov, "seed=1"), tmp_path / "a")
    np.testing.assert_array_equal(batched.extra["seeds"][1].R, alone.R)  # the very same computation


def test_seeds_tracked_under_one_parent_and_resumed(tmp_path):
    from mlflow.tracking import MlflowClient

    ov = [*SYN, "method=hnet", "scenario=cl1"]
    full = run_experiment(quick_cfg(tmp_path, tmp_path, *ov, "seeds=[0,2]"), tmp_path / "full")
    part = tmp_path / "part"
    cfg = quick_cfg(tmp_path, tmp_path, *ov, "seeds=[0,2]", "trainer.stop_after=1")
    run_experiment(cfg, part)
    assert sorted(p.name for p in part.glob("seed_*")) == ["seed_0", "seed_2"]
    assert (part / "seed_2" / "checkpoints" / "task_000.pt").exists()
    cfg.resume = str(part)
    cfg.trainer.stop_after = None
    resumed = run_experiment(cfg, tmp_path / "elsewhere")
    for s in (0, 2):
        np.testing.assert_allclose(resumed.extra["seeds"][s].R, full.extra["seeds"][s].R, atol=0.34)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "seeds" in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2  # the full run's and the stopped-then-resumed run's
    resumed_parent = next(r for r in parents if r.info.run_id == resumed.run_id)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == resumed.run_id]
    assert sorted(r.data.params["seed"] for r in kids) == ["0", "2"]
    assert all(r.info.status == "FINISHED" and "final.acc_avg" in r.data.metrics for r in kids)
    assert "batched learner" in kids[0].data.tags["seed_batch"]
    assert all(r.data.tags["seed_batch.size"] == "2" for r in kids)  # reports count each seed its share
    assert resumed_parent.data.metrics["final.acc_avg"] == pytest.approx(resumed.summary["acc_avg"])


@pytest.mark.parametrize("bad", ["seeds=[1,1]", "seeds=[]", "seeds=[a]"])
def test_bad_seeds_refused(tmp_path, bad):
    with pytest.raises(ConfigError, match="seeds must be"):
        run_experiment(quick_cfg(tmp_path, tmp_path, *SYN, "tracking=none", bad), tmp_path / "r")
