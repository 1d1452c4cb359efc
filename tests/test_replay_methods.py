"""HNET+R / DGR / RPL-UB / HNET+TIR on short real split-MNIST runs, TIR on a constructed case, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from hyperdgm.experiment import run_experiment
from hyperdgm.methods import build_method
from hyperdgm.methods.replay import distillation
from hyperdgm.scenarios import make_scenario

from .helpers import assert_resume_equals_uninterrupted, quick_cfg

SMALL_MEMORY = ["method.memory.enc_hidden=[200]", "method.memory.dec_hidden=[200]", "method.memory.latent_dim=20",
                "method.memory.hnet.chunk_size=8000", "method.memory.hnet.chunk_emb_size=16",
                "method.memory.hnet.task_emb_size=16", "method.memory.hnet.hidden=[20,20]"]
CL3 = ["scenario=cl3", "tracking=none", "benchmark.n_tasks=3", "benchmark.train_limit=2000",
       "trainer.iters_per_task=250", "trainer.checkpoint=false", "benchmark.net.hidden=[100]"]


def _tiny(data_root, name: str = "hnet_tir", scenario: str = "cl3", train_limit: int = 20, test_limit: int = 10,
          **memory):
    """A replay method with tiny nets on 3 split-MNIST tasks, set up (no task begun)."""
    from hyperdgm.data.benchmarks import build_benchmark

    bench = build_benchmark("split_mnist", data_root, n_tasks=3, train_limit=train_limit, test_limit=test_limit)
    cfg = OmegaConf.to_container(OmegaConf.load(f"conf/method/{name}.yaml"))
    cfg["net"] = {"arch": "mlp", "hidden": [10]}
    if "hnet" in cfg:
        cfg["hnet"].update(chunk_size=1000, hidden=[5])
    cfg["memory"].update(enc_hidden=[10], dec_hidden=[10], latent_dim=4, **memory)
    cfg["memory"]["hnet"].update(chunk_size=1000, hidden=[5])
    m = build_method(cfg)
    m.setup(bench, make_scenario(scenario, bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    return m, bench


def test_distillation_matches_definition():
    s, t = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.0, 3.0, 1.0]])
    T = 2.0
    p = torch.softmax(t / T, 1)
    expect = -(p * torch.log_softmax(s / T, 1)).sum() * T * T
    assert distillation(s, t, T).item() == pytest.approx(expect.item())


@pytest.mark.parametrize("name", ["hnet_r", "dgr"])
def test_cl3_hard_targets_argmax_over_old_classes(name):
    """CL3 hard replay labels are the old classifier's best old class, even when every old logit is negative."""
    from hyperdgm.methods.replay import REPLAY_DEFAULTS

    m = build_method({"name": name, "replay": {"targets": "hard"}})
    m.scenario = make_scenario("cl3", [2, 2, 2])
    m.rcfg = {**REPLAY_DEFAULTS, **m.method_defaults, "targets": "hard"}
    teacher = torch.tensor([[-3.0, -1.0, 0.0, 0.0, 0.0, 0.0], [-0.5, -2.0, 0.0, 0.0, 0.0, 0.0]])
    student = torch.tensor([[0.1, 0.2, 2.0, 0.3, 0.0, 0.0], [1.0, -1.0, 0.5, 2.0, 0.0, 0.0]])
    m.net, m.teacher = (lambda x: student), (lambda x: teacher)
    loss = m.replay_loss(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), task_id=1)
    # task 1 of CL3: 4 classes seen, the teacher knew 2; labels 1 and 0 (never a new class 2 or 3)
    expect = torch.nn.functional.cross_entropy(student[:, :4], torch.tensor([1, 0]))
    assert loss.item() == pytest.approx(expect.item())


def test_hnet_r_cl3_far_above_finetune(data_root, tmp_path):
    hr = run_experiment(quick_cfg(data_root, tmp_path, "method=hnet_r", *SMALL_MEMORY, *CL3), tmp_path / "r")
    ft = run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", *CL3), tmp_path / "f")
    old_hr, old_ft = hr.R[2, :2].mean(), ft.R[2, :2].mean()
    assert old_ft < 10 and old_hr > old_ft + 40, (hr.R, ft.R)
    assert hr.summary["acc_avg"] > ft.summary["acc_avg"] + 25
    assert hr.param_counts["memory_generator_target"] > 0


def test_dgr_and_replay_ub_beat_finetune(data_root, tmp_path):
    dgr = run_experiment(quick_cfg(data_root, tmp_path, "method=dgr", *SMALL_MEMORY[:3], *CL3), tmp_path / "d")
    ub = run_experiment(quick_cfg(data_root, tmp_path, "method=replay_ub", *CL3), tmp_path / "u")
    assert ub.summary["acc_avg"] > 85, ub.R  # real replay: the upper bound
    assert dgr.R[2, :2].mean() > 25, dgr.R  # generated replay keeps the old tasks (finetune: ~0)
    assert ub.summary["acc_avg"] >= dgr.summary["acc_avg"] - 2


def test_tir_inference_on_constructed_case(data_root):
    """The task-inference net picks the task; that task's generated net classifies."""
    m, bench = _tiny(data_root, train_limit=10)
    for t in bench.tasks:
        m.begin_task(t)
    x = torch.zeros(3, 1, 28, 28)
    tir_logits = torch.tensor([[0.0, 5.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    task_logits = [torch.tensor([[1.0, 0.0]] * 3), torch.tensor([[0.0, 1.0]] * 3), torch.tensor([[2.0, 0.0]] * 3)]
    class Fixed(torch.nn.Module):
        def forward(self, inp):
            return tir_logits

    m.tir = Fixed()
    m.logits = lambda inp, e, weights=None: task_logits[e][: inp.shape[0]]  # each sample: its inferred task's net
    out = m.predict(x)
    assert out.shape == (3, 6)
    assert out.argmax(1).tolist() == [3, 0, 4]  # task 1 class 1, task 0 class 0, task 2 class 0
    assert torch.isinf(out[0, :2]).all() and torch.isinf(out[0, 4:]).all()


def test_hnet_tir_step_trains_the_task_inference_net(data_root):
    """HNetTIR.step trains the task-inference net from replay: its loss falls and it tells the tasks apart."""
    from hyperdgm.data.benchmarks import build_benchmark

    from .helpers import train_directly

    torch.manual_seed(0)
    bench = build_benchmark("split_mnist", data_root, n_tasks=3, train_limit=2000, test_limit=300)
    cfg = OmegaConf.to_container(OmegaConf.load("conf/method/hnet_tir.yaml"))
    cfg["net"] = {"arch": "mlp", "hidden": [100]}
    cfg["hnet"].update(chunk_size=4000, hidden=[20, 20], chunk_emb_size=16, task_emb_size=16)
    cfg["tir"]["hidden"] = [100]
    cfg["memory"].update(enc_hidden=[200], dec_hidden=[200], latent_dim=20)
    cfg["memory"]["hnet"].update(chunk_size=8000, hidden=[20, 20], chunk_emb_size=16, task_emb_size=16)
    m = build_method(cfg)
    m.setup(bench, make_scenario("cl3", bench.n_classes_per_task), torch.device("cpu"), torch.Generator().manual_seed(0))
    losses = train_directly(m, bench, iters=250)
    tir = [step["tir_loss"] for step in losses[2]]
    assert "tir_loss" not in losses[0][0] and np.mean(tir[-20:]) < 0.5 * np.mean(tir[:20]), (tir[:3], tir[-3:])
    m.eval()
    inferred = [(m.infer_task(t.batch("test")[0]) == t.id).float().mean().item() for t in bench.tasks]
    assert min(inferred) > 0.55, inferred  # chance: 1/3; old tasks are known only from replay


def test_hnet_tir_class_conditioned_memory_learns_each_sample_with_its_class(data_root):
    """memory.condition=class: the task-inference net's memory is told every real sample's global class."""
    # 3 tasks: the memory trains on task 1 (the last task trains none)
    m, bench = _tiny(data_root, condition="class")
    seen = []
    step = m.memory.step
    m.memory.step = lambda x, t, cond=None, **k: seen.append(cond) or step(x, t, cond, **k)
    task = bench.tasks[1]
    m.begin_task(bench.tasks[0])
    m.begin_task(task)
    x, y = task.batch("train", torch.arange(6))
    m.step(x, y, task.id)
    assert seen[0].tolist() == (y + 2).tolist()  # task 1 holds digits 2 and 3


def test_hnet_r_resume_equals_uninterrupted(data_root, tmp_path):
    over = ["method=hnet_r", *SMALL_MEMORY, "scenario=cl3", "tracking=none", "benchmark.n_tasks=3",
            "benchmark.train_limit=300", "trainer.iters_per_task=30"]
    assert_resume_equals_uninterrupted(data_root, tmp_path, *over)


def test_hnet_r_with_gan_memory_runs(data_root, tmp_path):
    """The replay model is a config choice: a conditional LSGAN whose generator weights come from the hnet."""
    r = run_experiment(quick_cfg(data_root, tmp_path, "method=hnet_r", "method.memory.model=gan", *SMALL_MEMORY,
                                 "scenario=cl3", "tracking=none", "benchmark.n_tasks=2", "trainer.iters_per_task=40",
                                 "trainer.checkpoint=false"), tmp_path / "g")
    assert r.R[0, 0] > 90 and r.R[1, 1] > 80, r.R  # each task learned with GAN replay in the mix (chance: 50 / 25)
    assert r.param_counts["memory_discriminator"] > 0 and r.param_counts["memory_encoder"] == 0


@pytest.mark.parametrize("name", ["hnet_r", "hnet_tir"])
def test_last_task_replays_without_generating_the_past(data_root, monkeypatch, name):
    """The last task trains no memory but replays from it: the past tasks' decoder weights are taken once as
    it begins (memory.hold), not generated by the hypernetwork at every step."""
    from hyperdgm.hnet import WeightGenerator

    m, bench = _tiny(data_root, name)
    for task in bench.tasks:
        m.begin_task(task)
        x, y = task.batch("train", torch.arange(8))
        if task.id == 2:
            calls = []
            orig = WeightGenerator.flat
            monkeypatch.setattr(WeightGenerator, "flat",
                                lambda self, *a, **k: calls.append(self) or orig(self, *a, **k))
            for _ in range(3):
                m.step(x, y, task.id)
            assert not any(g is m.memory.protection.gen for g in calls)
        else:
            m.step(x, y, task.id)
        m.end_task(task)
    assert m.memory.snapshot is not None and m.memory.snapshot.covers([0, 1])


@pytest.mark.parametrize("scenario", ["cl2", "cl3"])
def test_tir_prediction_runs_each_sample_through_its_inferred_task_only(data_root, scenario):
    """HNET+TIR's prediction equals assembling every task's logits by the inferred task, with one target-net
    pass per inferred task over its own samples."""
    from hyperdgm.methods.hnet import HNet

    torch.manual_seed(0)
    m, bench = _tiny(data_root, scenario=scenario, test_limit=64)
    for t in bench.tasks:
        m.begin_task(t)
    m.eval()
    x = torch.cat([t.batch("test")[0] for t in bench.tasks])
    inferred = m.infer_task(x)
    assert len(inferred.unique()) > 1  # the untrained task-inference net spreads the samples over tasks
    expect, expect_tasks = HNet.predict_with_task(m, x)
    calls = []
    forward = m.target.forward
    m.target.forward = lambda inp, *a, **k: calls.append(inp.shape[0]) or forward(inp, *a, **k)
    got, got_tasks = m.predict_with_task(x)
    assert torch.equal(got_tasks, expect_tasks)
    assert torch.equal(torch.isinf(got), torch.isinf(expect))
    fin = torch.isfinite(expect)
    assert torch.allclose(got[fin], expect[fin], atol=1e-5)
    assert sorted(calls) == sorted(c for c in torch.bincount(inferred).tolist() if c)


def _after_first_task(data_root, name: str, **memory):
    """A tiny replay method on split MNIST that has learned task 0 (3 steps) and begun task 1."""
    m, bench = _tiny(data_root, name, **memory)
    t0, t1 = bench.tasks[:2]
    m.plan_task(3, 8)
    m.begin_task(t0)
    for _ in range(3):
        x, y = t0.batch("train", torch.randint(len(t0.train), (8,)))
        m.step(x, y, 0)
    m.end_task(t0)
    m.plan_task(3, 8)
    m.begin_task(t1)
    return m, t1


def test_dgr_generator_learns_from_the_classifiers_replayed_batch(data_root):
    """DGR as the three-scenarios code: one draw per step from the generator as the task began; the classifier
    replays it and the generator trains on the same samples (weight t/(t+1)) instead of drawing its own."""
    m, task = _after_first_task(data_root, "dgr")
    draws, reps = [], []
    draw = m.draw_replay
    m.draw_replay = lambda t: draws.append(draw(t)) or draws[-1]
    model_step = m.memory.model.step
    m.memory.model.step = lambda mem, x, c, b, rep, d=None: reps.append(rep) or model_step(mem, x, c, b, rep, d)
    generate = m.memory.generate
    calls = []
    m.memory.generate = lambda *a, **k: calls.append(a) or generate(*a, **k)
    x, y = task.batch("train", torch.arange(8))
    m.step(x, y, task.id)
    (xr, _, (mx, mc, mb)), = draws
    rep, = reps
    assert torch.equal(rep[0], mx) and torch.equal(rep[1], mc) and rep[2] == mb and rep[3] == 0.5
    assert mb == [(0, m.rcfg["n_replay"])] and torch.equal(xr, mx)  # MNIST: the memory's [0, 1] is the input
    assert len(calls) == 1  # the draw itself: the generator's step generated nothing more


def test_merged_passes_equal_separate_ones(data_root, monkeypatch):
    """The classifier's forward over current + replayed rows and the VAE's pass over both give the losses and
    gradients of separate passes (a net or body with batch statistics keeps them apart)."""
    import copy

    from hyperdgm.memory.bodies import MLPBody
    from hyperdgm.nets import TargetNet

    m, task = _after_first_task(data_root, "dgr")
    x, y = task.batch("train", torch.arange(8))
    outs, grads = [], []
    for merged in (True, False):
        monkeypatch.setattr(MLPBody, "rows_independent", merged)
        monkeypatch.setattr(TargetNet, "has_bn_stats", property(lambda self, merged=merged: not merged))
        mm = copy.deepcopy(m)
        mm.rng.manual_seed(7)
        torch.manual_seed(3)
        outs.append(mm.step(x, y, task.id))
        grads.append([p.grad for p in [*mm.net.parameters(), *mm.memory.parameters()] if p.grad is not None])
    for k in ("loss_current", "loss_replay", "loss", "memory/recon", "memory/kl", "memory/replay_loss"):
        assert outs[0][k].item() == pytest.approx(outs[1][k].item(), rel=1e-5), k
    assert len(grads[0]) == len(grads[1]) >= 12  # the classifier's 4 tensors, the encoder's 6, the decoder's
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_logit0_targets_that_hand_the_replays_to_the_new_classes_are_flagged(data_root, caplog):
    """CL3 logit-0 targets depend on the old logits' level: below the padded 0 they label replays as new classes.
    The check says so at the task's start, and leaves the run's random stream as it was."""
    m, task = _after_first_task(data_root, "hnet_r")
    bias = list(m.teacher.parameters())[-1]
    caplog.clear()  # (after 3 steps the logits are ~0, so begin_task found the new classes at ~half the targets)
    with torch.no_grad(), caplog.at_level("WARNING", logger="hyperdgm"):
        bias[:2] += 50.0  # old logits well above the padded 0, as after fp32 training (shares 0.02-0.07 measured)
        assert m.check_logit0_targets(task.id) < 0.01
        assert "replays will be learned" not in caplog.text
        bias[:2] -= 150.0  # far under it, as after bf16 training (0.87-0.995 measured)
        state = m.rng.get_state()
        assert m.check_logit0_targets(task.id) > 0.99
    assert "replays will be learned as new classes" in caplog.text
    assert torch.equal(m.rng.get_state(), state)
    m.rcfg["new_class_target"] = "prob0"
    assert m.check_logit0_targets(task.id) is None
