"""Latent replay (``memory.space=features``, ``hnet_lr``): replay spaces, the classifier's feature / head
split, the drift options, the hypernetwork's protection of the feature generator, config refusals."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from hyperdgm.data.benchmarks import build_benchmark
from hyperdgm.errors import ConfigError
from hyperdgm.experiment import run_experiment
from hyperdgm.memory.models import vae_loss
from hyperdgm.memory.spaces import FeatureSpace, PixelSpace
from hyperdgm.methods import build_method
from hyperdgm.methods.replay import distillation
from hyperdgm.nets import TargetNet
from hyperdgm.scenarios import make_scenario

from .helpers import quick_cfg, train_directly

REPO = Path(__file__).resolve().parents[1]
TINY_MEMORY = {"enc_hidden": [24], "dec_hidden": [24], "latent_dim": 8,
               "hnet": {"hidden": [8], "chunk_size": 500, "chunk_emb_size": 8, "task_emb_size": 8}}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bench():
    return build_benchmark("synthetic", None, seed=0, n_tasks=3, train_limit=64, test_limit=16)


def tiny_method(bench, name: str = "hnet_r", n_tasks: int | None = None, net: dict | None = None,
                scenario: str = "cl3", **memory):
    """A tiny replay method set up on the synthetic benchmark (CL3)."""
    cfg = {"name": name, "net": net or {"arch": "mlp", "hidden": [32, 16]}, "replay": {"n_replay": 16},
           "memory": {**TINY_MEMORY, **memory}}
    m = build_method(cfg)
    m.setup(bench, make_scenario(scenario, bench.n_classes_per_task[:n_tasks]), torch.device("cpu"),
            torch.Generator().manual_seed(1))
    return m


def test_pixel_space_numbers_unchanged():
    """hnet_r in pixel space gives the losses it gave before replay spaces existed (commit e6632f4)."""
    torch.manual_seed(0)
    b = build_benchmark("synthetic", None, seed=0, n_tasks=2, train_limit=64, test_limit=16)
    m = tiny_method(b)
    assert isinstance(m.space, PixelSpace) and m.layer == 0
    out = train_directly(m, b, iters=5, batch_size=16, seed=3)
    assert out[0][-1]["memory/recon"] == pytest.approx(0.6756755113601685, rel=1e-6)
    assert out[0][-1]["memory/kl"] == pytest.approx(0.00028435446438379586, rel=1e-5)
    assert out[1][-1]["loss_replay"] == pytest.approx(5.557155609130859, rel=1e-6)
    assert out[1][-1]["loss"] == pytest.approx(3.4788458347320557, rel=1e-6)


@pytest.mark.parametrize("arch,shape,dims", [("mlp", (1, 28, 28), (32, 16)), ("zenke", (3, 32, 32), (7200, 2304, 512))])
def test_classifier_splits_into_features_and_head(arch, shape, dims):
    net = TargetNet(arch, shape, 6, hidden=(32, 16)).eval()
    x = torch.randn(3, *shape)
    assert net.split_points == len(dims)
    for k, d in enumerate(dims, start=1):
        h = net.features(x, k)
        assert h.shape == (3, d) == (3, net.feature_dim(k))
        torch.testing.assert_close(net.head(h, k), net(x), atol=1e-5, rtol=1e-5)
        if k < len(dims):  # the trunk a BI-R-like encoder shares: the head without its output layer
            hid = net.hidden_from(h, k)
            assert hid.shape == (3, dims[-1])
            w = list(net.net.internal_params)
            torch.testing.assert_close(F.linear(hid, w[-2], w[-1]), net(x), atol=1e-5, rtol=1e-5)
    assert TargetNet("resnet32", (3, 32, 32), 6).split_points == 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_real_and_replayed_features_take_the_same_path_through_a_dropout_net(k):
    """ZenkeNet has dropout inside layers 1..k. A real batch's features in training must not carry it: replays
    (deterministic features) never do, and a head tells the two apart by the zeros (split CIFAR-10's latent ceiling
    then read every test image as an old class). The dropout that ends layer k applies to both alike."""
    net = TargetNet("zenke", (3, 32, 32), 10).train()
    space = FeatureSpace(net, k)
    x = torch.randn(4, 3, 32, 32)
    f = space.entry(net, x)
    assert f.requires_grad
    torch.testing.assert_close(f, space.at_entry(x), rtol=0, atol=0)  # no dropout below the entry point
    torch.manual_seed(5)
    real = space.logits(net, x)
    torch.manual_seed(5)
    replayed = space.classify(net, space.at_entry(x))
    torch.testing.assert_close(real, replayed, rtol=0, atol=0)
    torch.manual_seed(5)
    assert not torch.allclose(net.head(f, k), real)  # the entry's dropout is drawn (training regularises the head)
    net.eval()
    torch.testing.assert_close(space.logits(net, x), net(x), rtol=1e-5, atol=1e-5)


def test_replayed_features_enter_after_layer_k(bench):
    m = tiny_method(bench, "hnet_lr", layer=1, drift="none")
    assert isinstance(m.space, FeatureSpace) and m.space.shape == (32,)
    assert m.memory.input_shape == (32,) and m.memory.likelihood == "gaussian"
    train_directly(m, build_benchmark("synthetic", None, seed=0, n_tasks=1, train_limit=64), iters=3, batch_size=16)
    m.begin_task(bench.tasks[1])
    xr, ids = m.replay_inputs(1)
    assert xr.shape == (16, 32) and (xr >= 0).all()  # ReLU features: the Gaussian's mean projected on [0, inf)
    # the replay loss reads the features after layer 1: the heads (layer 2 and the output layer) of both nets
    n_all = m.scenario.n_seen_classes(2)
    expect = distillation(m.net.head(xr, 1)[:, :n_all], F.pad(m.teacher.head(xr, 1)[:, :2], (0, n_all - 2)), 2.0)
    assert m.replay_loss(xr, ids, 1).item() == pytest.approx(expect.item(), rel=1e-6)
    # the memory trains on what layer 1 outputs for the current inputs
    x, _ = bench.tasks[1].batch("train", torch.arange(8))
    torch.testing.assert_close(m.space.to_memory(x), m.net.features(x, 1).detach())


def test_gaussian_likelihood_is_scaled_squared_error():
    mean, x = torch.randn(4, 10), torch.randn(4, 10)
    mu, logvar = torch.randn(4, 3), torch.randn(4, 3)
    total, recon, kl = vae_loss(mean, x, mu, logvar, "gaussian", 0.5)
    assert recon.item() == pytest.approx((0.5 * ((mean - x) / 0.5) ** 2).mean().item())
    assert total.item() == pytest.approx(recon.item() + kl.item())


def test_freeze_keeps_the_extractor_bit_identical(bench):
    m = tiny_method(bench, "hnet_lr", layer=1, drift="freeze")
    train_directly(m, build_benchmark("synthetic", None, seed=0, n_tasks=1, train_limit=64), iters=3, batch_size=16)
    frozen = [p.detach().clone() for p in m.net.feature_parameters(1)]
    head = [p.detach().clone() for p in list(m.net.parameters())[2:]]
    for task in bench.tasks[1:]:
        m.plan_task(4, 16)
        m.begin_task(task)
        for _ in range(4):
            x, y = task.batch("train", torch.randint(len(task.train), (16,)))
            m.step(x, y, task.id)
        m.end_task(task)
    assert all(torch.equal(a, b) for a, b in zip(frozen, m.net.feature_parameters(1)))
    assert not any(torch.equal(a, b) for a, b in zip(head, list(m.net.parameters())[2:]))


def test_freeze_after_a_one_class_first_task_says_the_layers_are_untrained(bench, caplog):
    """Class-incremental, one class per task: a cross-entropy over one class has no gradient, so drift=freeze
    keeps layers 1..k at their initialisation; the run says so (and says nothing where the first task has two)."""
    one = build_benchmark("cil_synthetic", None, seed=0, n_tasks=1, train_limit=64, test_limit=16)
    m = tiny_method(one, "hnet_lr", scenario="cil", layer=1, drift="freeze")
    init = [p.detach().clone() for p in m.net.feature_parameters(1)]
    with caplog.at_level("WARNING", logger="hyperdgm"):
        train_directly(m, one, iters=3, batch_size=16)
    assert all(torch.equal(a, b) for a, b in zip(init, m.net.feature_parameters(1)))
    assert "layers 1..1 were frozen untrained" in caplog.text
    caplog.clear()
    two = build_benchmark("synthetic", None, seed=0, n_tasks=1, train_limit=64, test_limit=16)
    m = tiny_method(two, "hnet_lr", layer=1, drift="freeze")
    init = [p.detach().clone() for p in m.net.feature_parameters(1)]
    with caplog.at_level("WARNING", logger="hyperdgm"):
        train_directly(m, two, iters=3, batch_size=16)
    assert not any(torch.equal(a, b) for a, b in zip(init, m.net.feature_parameters(1)))
    assert "untrained" not in caplog.text


@pytest.mark.parametrize("target,warns", [("logit0", True), ("prob0", False)])
def test_logit0_targets_after_a_one_class_first_task_are_flagged(target, warns, caplog):
    """hypercl's logit-0 targets score replays against the classifier before the task; after a first task of one
    class that classifier is untrained (measured on class-incremental MNIST: hnet_r lost the first digit)."""
    one = build_benchmark("cil_synthetic", None, seed=0, n_tasks=2, train_limit=16, test_limit=16)
    m = build_method({"name": "hnet_r", "net": {"arch": "mlp", "hidden": [16]}, "memory": TINY_MEMORY,
                      "replay": {"n_replay": 16, "new_class_target": target}})
    with caplog.at_level("WARNING", logger="hyperdgm"):
        m.setup(one, make_scenario("cil", one.n_classes_per_task), torch.device("cpu"), torch.Generator())
    assert ("labels its replays was never trained" in caplog.text) == warns


def test_replay_ub_in_feature_space_replays_the_stored_images_features(bench):
    """Latent RPL-UB (hnet_lr's ceiling): the stored images' features under the frozen extractor enter after
    layer k, so the replayed batch is exactly the first task's features, and the extractor stays as it was."""
    m = tiny_method(bench, "replay_ub", space="features", layer=1, drift="freeze")
    assert isinstance(m.space, FeatureSpace) and m.layer == 1
    train_directly(m, build_benchmark("synthetic", None, seed=0, n_tasks=1, train_limit=64), iters=3, batch_size=16)
    frozen = [p.detach().clone() for p in m.net.feature_parameters(1)]
    m.plan_task(3, 16)
    m.begin_task(bench.tasks[1])
    state = m.rng.get_state()
    x, ids = m.replay_inputs(1)
    m.rng.set_state(state)
    task = bench.tasks[0]
    idx = torch.randint(len(task.train), (16,), generator=m.rng, device=m.rng.device)
    images = task.batch("train", idx, train_aug=True, generator=m.rng)[0]
    assert torch.equal(ids, torch.zeros(16, dtype=torch.long))
    m.net.eval()
    torch.testing.assert_close(x, m.net.features(images, 1), rtol=0, atol=0)
    m.net.train()
    for _ in range(3):
        xb, yb = bench.tasks[1].batch("train", torch.randint(len(bench.tasks[1].train), (16,)))
        m.step(xb, yb, 1)
    assert all(torch.equal(a, b) for a, b in zip(frozen, m.net.feature_parameters(1)))


def test_align_adds_a_feature_distillation_term(bench):
    m = tiny_method(bench, "hnet_lr", n_tasks=2, layer=2, drift="align", align_weight=3.0)
    b2 = build_benchmark("synthetic", None, seed=0, n_tasks=2, train_limit=64)
    out = train_directly(m, b2, iters=4, batch_size=16)
    assert "loss_align" not in out[0][-1] and out[1][0]["loss_align"] == 0.0  # the first step: the nets are equal
    last = out[1][-1]
    assert last["loss_align"] > 0
    assert last["loss"] == pytest.approx(0.5 * last["loss_current"] + 0.5 * last["loss_replay"] + 3 * last["loss_align"],
                                         rel=1e-5)


def test_hnet_keeps_the_earlier_feature_generators(bench):
    """The output regularizer keeps the decoder the hypernetwork generates for task 0 (beta=0: it drifts)."""
    changes = {}
    for beta in (0.0, 10.0):
        torch.manual_seed(0)
        m = tiny_method(bench, "hnet_lr", layer=1, drift="none", beta=beta)
        t0, t1 = bench.tasks[:2]
        for task, n in ((t0, 20), (t1, 40)):
            m.plan_task(n, 16)
            m.begin_task(task)
            for _ in range(n):
                x, y = task.batch("train", torch.randint(len(task.train), (16,)))
                m.step(x, y, task.id)
            if task.id == 0:
                before = torch.cat([w.flatten() for w in m.memory.protection.weights([0])[0]]).detach().clone()
            m.end_task(task)
        after = torch.cat([w.flatten() for w in m.memory.protection.weights([0])[0]]).detach()
        changes[beta] = ((after - before).norm() / before.norm()).item()
    assert changes[10.0] < 0.2 * changes[0.0], changes


def test_class_conditioned_memory_learns_from_the_labels(bench):
    m = tiny_method(bench, "hnet_lr", layer=1, condition="class")
    y = torch.tensor([0, 1, 1])
    assert m.memory.real_conditions(2, y).tolist() == [4, 5, 5]
    with pytest.raises(ValueError, match="needs each sample's class"):  # never a random class for real data
        m.memory.begin_task(0)
        m.memory.step(torch.rand(3, 1, 28, 28), 0)
    assert tiny_method(bench, "hnet_lr", layer=1).memory.real_conditions(2, y) is None  # task-conditioned
    assert tiny_method(bench, "dgr").memory.real_conditions(2, y) is None  # unconditional: one constant condition


def test_hnet_lr_end_to_end(tmp_path):
    cmd = [sys.executable, "-m", "hyperdgm.run", "method=hnet_lr", "benchmark=synthetic", "scenario=cl3",
           "benchmark.n_tasks=2", "benchmark.train_limit=200", "benchmark.test_limit=50", "trainer.iters_per_task=20",
           "trainer.batch_size=32", "trainer.progress=false", "trainer.checkpoint=false", "tracking=none", "threads=1",
           "method.memory.layer=2", "method.memory.drift=align", "method.memory.enc_hidden=[32]",
           "method.memory.dec_hidden=[32]", "method.memory.hnet.chunk_size=2000", f"hydra.run.dir={tmp_path}/run"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "final: avg acc" in res.stderr + res.stdout


@pytest.mark.parametrize("overrides,msg", [
    (["method=hnet_lr", "method.memory.layer=3"], "memory.layer=3 is out of range"),
    (["method=hnet_lr", "method.memory.layer=0"], "memory.layer=0 is out of range"),
    (["method=hnet_tir", "+method.memory.space=features", "+method.memory.layer=1"], "replays pixels only"),
    (["method=replay_ub", "+method.memory.space=features", "+method.memory.layer=1",
      "+method.memory.feature_norm=standardize"], "replays stored data: memory.feature_norm and memory.encoder"),
    (["method=hnet_r", "+method.memory.drift=freeze"], "apply to memory.space=features"),
    (["method=hnet_lr", "method.memory.drift=melt"], "memory.drift must be one of"),
    (["method=hnet_lr", "method.memory.likelihood=bernoulli"], "needs memory.likelihood=gaussian"),
    (["method=hnet_lr", "method.memory.feature_norm=whiten"], "memory.feature_norm must be one of"),
    (["method=hnet_r", "+method.memory.feature_norm=standardize"], "apply to memory.space=features"),
    (["method=hnet_lr", "method.memory.feature_norm=standardize", "method.memory.encoder=classifier"],
     "needs memory.encoder=own"),
    (["method=hnet_lr", "method.memory.feature_norm=standardize", "+method.memory.conditional=false"],
     "needs a conditional memory"),
])
def test_bad_latent_config_is_refused_in_one_line(tmp_path, overrides, msg):
    cfg = quick_cfg(tmp_path, tmp_path, "benchmark=synthetic", "benchmark.net.hidden=[16,16]", "tracking=none",
                    "benchmark.n_tasks=2", *overrides)
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "run")
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_resnet_has_no_split():
    with pytest.raises(ValueError, match="net.arch=resnet32 has no feature/head split"):
        TargetNet("resnet32", (3, 32, 32), 4).check_split(1)


def test_feedback_encoder_is_the_classifiers_path(bench):
    """memory.encoder=classifier (BI-R-like): the VAE encodes through the classifier's layers above k, so its
    loss reaches them (not the frozen-or-detached layers up to k); the memory owns only the map to (mu, logvar)."""
    from hyperdgm.methods.replay import train_memory_step

    m = tiny_method(bench, "hnet_lr", layer=1, drift="none", encoder="classifier")
    assert sum(p.numel() for p in m.memory.encoder.parameters()) == 16 * 2 * 8 + 2 * 8  # Linear(16 -> 2 x latent)
    m.plan_task(2, 16)
    m.begin_task(bench.tasks[0])
    x, y = bench.tasks[0].batch("train", torch.arange(16))
    m.opt.zero_grad(set_to_none=True)
    train_memory_step(m.memory, m.space, x, 0, {})
    w1, b1, w2 = list(m.net.parameters())[:3]
    assert w1.grad is None and w2.grad is not None and w2.grad.abs().sum() > 0
    out = m.step(x, y, 0)
    assert "memory/recon" in out and "loss_current" in out
    with pytest.raises(ValueError, match="needs a hidden layer above memory.layer=2"):
        tiny_method(bench, "hnet_lr", layer=2, encoder="classifier")


def test_feedback_encoder_on_zenke_trains_the_hidden_fc_layer_only():
    """The BI-R-like encoder on ZenkeNet cut after its conv blocks (split CIFAR's hnet_lr): the VAE encodes
    through the classifier's hidden fc layer, so its loss reaches that layer and not the conv blocks."""
    from hyperdgm.methods.replay import train_memory_step

    b = build_benchmark("synthetic_rgb", None, seed=0, n_tasks=2, train_limit=32, test_limit=8)
    zenke = {"arch": "zenke", "hidden": None}
    m = tiny_method(b, "hnet_lr", net=zenke, layer=2, drift="none", encoder="classifier")
    assert sum(p.numel() for p in m.memory.encoder.parameters()) == 512 * 2 * 8 + 2 * 8  # Linear(512 -> 2 x latent)
    m.plan_task(2, 8)
    m.begin_task(b.tasks[0])
    x, _ = b.tasks[0].batch("train", torch.arange(8))
    m.opt.zero_grad(set_to_none=True)
    train_memory_step(m.memory, m.space, x, 0, {})
    reached = {tuple(p.shape) for p in m.net.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # only the hidden fc layer, the shared encoder trunk: the conv blocks' features are the memory's data, and
    # the output layer is not part of the encoder
    assert reached == {(512, 2304), (512,)}, reached
    with pytest.raises(ValueError, match="needs a hidden layer above memory.layer=3"):
        tiny_method(b, "hnet_lr", net=zenke, layer=3, encoder="classifier")


def test_replay_map_compares_real_and_replayed_features(bench, monkeypatch):
    """Latent replay's replay map puts real training samples and replays side by side where replays enter the
    classifier (features after layer k, each task's replays mapped back with its own moments), not pixels beside
    features (which could not be projected together)."""
    from hyperdgm import maps

    b = bench  # three tasks: the memory learns the first two (never the last)
    m = tiny_method(b, "hnet_lr", layer=1, drift="freeze", feature_norm="standardize")
    train_directly(m, b, iters=3, batch_size=16)
    seen = {}
    figure = maps.replay_map_figure

    def recording(real, real_ids, fake, fake_ids, seed=0, where=""):
        seen.update(real=real, fake=fake, fake_ids=fake_ids, where=where)
        return figure(real, real_ids, fake, fake_ids, seed, where)

    monkeypatch.setattr(maps, "replay_map_figure", recording)
    images = []
    tracker = SimpleNamespace(log_image=lambda image, key, step: images.append((key, step, image.shape)))
    assert maps.log_replay_map(m, tracker, b.tasks, 2)
    n = maps.REPLAY_MAP_PER_TASK
    assert [k for k, _, _ in images] == ["replay_map"]
    assert seen["real"].shape == (2 * n, 32) == seen["fake"].shape  # features after layer 1, both
    idx = torch.randperm(len(b.tasks[0].train), generator=torch.Generator().manual_seed(0))[:n]
    torch.testing.assert_close(torch.as_tensor(seen["real"][:n]), m.space.at_entry(b.tasks[0].batch("train", idx)[0]))
    assert seen["where"] == "features after layer 1"
    assert (seen["fake"] >= 0).all()  # mapped back to the ReLU features' range, not the standardised memory space


def test_standardized_features_map_back_with_their_own_tasks_moments(bench):
    """memory.feature_norm=standardize: the memory learns standardised features; a replay of task t is mapped back
    with the moments task t was learned with, whatever later tasks did to the running moments."""
    net = TargetNet("mlp", bench.tasks[0].input_shape, 4, hidden=[32, 16])
    space = FeatureSpace(net, 1, "relu", norm="standardize", momentum=0.5)
    x0, _ = bench.tasks[0].batch("train", torch.arange(32))
    x1, _ = bench.tasks[1].batch("train", torch.arange(32))
    f0 = net.features(x0, 1).detach()
    m0 = space.to_memory(x0, learn=True)  # the first batch sets the moments
    std0 = f0.var(0, unbiased=False).sqrt().clamp_min(space.min_std)
    assert torch.allclose(m0, (f0 - f0.mean(0)) / std0, atol=1e-5)
    space.end_task(0)
    ids0 = torch.zeros(32, dtype=torch.long)
    assert torch.allclose(space.to_input(m0, ids0), f0, atol=1e-5)  # back to the features (ReLU range kept)
    for _ in range(3):
        space.to_memory(x1, learn=True)  # task 1 moves the running moments ...
    assert not torch.allclose(space.mean, f0.mean(0))
    assert torch.allclose(space.to_input(m0, ids0), f0, atol=1e-5)  # ... but not task 0's
    space.end_task(1)
    both = space.to_input(torch.cat([m0, m0]), torch.cat([ids0, ids0 + 1]))
    assert torch.allclose(both[:32], f0, atol=1e-5) and not torch.allclose(both[32:], f0, atol=1e-3)
    with pytest.raises(ValueError, match="task of every row"):
        space.to_input(m0)
    plain = FeatureSpace(net, 1, "relu")
    assert torch.equal(plain.to_memory(x0, learn=True), f0) and plain.state() == {}


@pytest.mark.parametrize("norm", ["none", "standardize"])
def test_hnet_lr_freeze_resume_equals_uninterrupted(tmp_path, norm):
    """A checkpoint taken after the first task comes back with the extractor frozen (same numbers), and with the
    feature moments of every finished task and the running ones."""
    from .helpers import assert_resume_equals_uninterrupted

    assert_resume_equals_uninterrupted(
        tmp_path, tmp_path, f"method.memory.feature_norm={norm}",
        "method=hnet_lr", "benchmark=synthetic", "benchmark.n_tasks=3", "benchmark.train_limit=200",
        "benchmark.net.hidden=[32,16]", "trainer.iters_per_task=15", "tracking=none", "method.memory.drift=freeze",
        "method.memory.enc_hidden=[16]", "method.memory.dec_hidden=[16]", "method.memory.latent_dim=4",
        "method.memory.hnet.chunk_size=1000", "method.memory.hnet.hidden=[8]", "method.replay.n_replay=16")
