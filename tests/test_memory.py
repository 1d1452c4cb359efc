"""Generative memory: forgetting with/without protection on real split MNIST, GAN/conv steps, checkpoints."""
from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from hyperdgm.data import build_benchmark
from hyperdgm.hnet import WeightGenerator
from hyperdgm.memory import PROTECTIONS, GenerativeMemory, build_protection

STEPS = 200  # per task
BATCH = 64
LATENT = 16
SMALL: dict[str, Any] = dict(
    latent_dim=LATENT, enc_hidden=[256], dec_hidden=[128, 256],
    hnet=dict(hidden=[10, 10], chunk_size=10000, chunk_emb_size=16, task_emb_size=16),
)


@pytest.fixture(scope="module")
def bench(data_root):
    torch.set_num_threads(1)
    return build_benchmark("split_mnist", data_root, n_tasks=2, train_limit=2000, test_limit=100)


@pytest.fixture(scope="module")
def class_means(bench) -> torch.Tensor:
    """Mean training image of digits 0, 1, 2, 3 ``[4, 784]``."""
    means = []
    for task in bench.tasks:
        x, y = task.batch("train")
        means += [x[y == k].flatten(1).mean(0) for k in range(2)]
    return torch.stack(means)


_RUNS: dict[str, dict[str, Any]] = {}


def _train(bench, protection: str) -> dict[str, Any]:
    """Train a small VAE memory on 2 tasks (cached per protection); record samples for a fixed z."""
    if protection in _RUNS:
        return _RUNS[protection]
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    mem = GenerativeMemory(dict(SMALL, protection=protection), (1, 28, 28), n_tasks=2)
    z = torch.randn(200, LATENT, generator=g)
    run: dict[str, Any] = {"mem": mem, "z": z, "recon": []}
    for t, task in enumerate(bench.tasks):
        mem.begin_task(t)
        for _ in range(STEPS):
            x, _ = task.batch("train", torch.randint(0, len(task.train), (BATCH,), generator=g))
            out = mem.step(x, t)
            if t == 0:
                run["recon"].append(out["recon"])
        mem.end_task(t)
        if t == 0:
            run["after0"] = mem.sample(0, 200, z=z)
            if protection == "hnet":
                run["emb0"] = mem.protection.gen.task_embedding(0).detach().clone()
    run["after1"] = mem.sample(0, 200, z=z)
    _RUNS[protection] = run
    return run


def _frac_task0(samples: torch.Tensor, means: torch.Tensor) -> float:
    """Fraction of samples whose nearest class mean (of digits 0-3) is a digit of task 0 (0 or 1)."""
    d = torch.cdist(samples.flatten(1), means)
    return (d.argmin(1) < 2).float().mean().item()


def test_hnet_protection_keeps_old_samples(bench):
    hnet, none = _train(bench, "hnet"), _train(bench, "none")
    d_hnet = (hnet["after1"] - hnet["after0"]).abs().mean().item()
    d_none = (none["after1"] - none["after0"]).abs().mean().item()
    assert d_none > 0.03, d_none
    assert d_hnet < 0.25 * d_none, (d_hnet, d_none)
    assert torch.equal(hnet["mem"].protection.gen.task_embedding(0), hnet["emb0"])  # old embedding fixed
    assert hnet["mem"].param_counts()["generator_stored"] > 0  # regulariser targets of task 0


def test_vae_learns_digits(bench, class_means):
    run = _train(bench, "hnet")
    recon = torch.stack(run["recon"])
    assert recon[-10:].mean() < 0.5 * recon[0], (recon[0], recon[-10:].mean())
    s = run["after0"]
    assert _frac_task0(s, class_means) > 0.8
    noise = torch.rand_like(s)
    d_s = torch.cdist(s.flatten(1), class_means[:2]).min(1).values.mean()
    d_n = torch.cdist(noise.flatten(1), class_means[:2]).min(1).values.mean()
    assert d_s < 0.5 * d_n, (d_s, d_n)


def test_replay_protection_beats_none(bench, class_means):
    rep, none = _train(bench, "replay"), _train(bench, "none")
    f_rep, f_none = _frac_task0(rep["after1"], class_means), _frac_task0(none["after1"], class_means)
    assert f_rep > 0.6, f_rep  # real test digits score ~0.9 with this crude classifier
    assert f_rep > f_none + 0.4, (f_rep, f_none)
    # the replayed generator also learned task 1
    x1 = rep["mem"].sample(1, 200, generator=torch.Generator().manual_seed(0))
    assert 1.0 - _frac_task0(x1, class_means) > 0.8


def _roundtrip(mem: GenerativeMemory, cfg: dict[str, Any], shape: tuple[int, int, int], n_tasks: int) -> GenerativeMemory:
    buf = io.BytesIO()
    torch.save(mem.checkpoint_state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = GenerativeMemory(cfg, shape, n_tasks)
    fresh.load_checkpoint_state(state)
    return fresh


def test_gan_hnet_step_and_checkpoint():
    torch.manual_seed(0)
    cfg = dict(SMALL, model="gan")
    mem = GenerativeMemory(cfg, (1, 28, 28), n_tasks=3)
    x = torch.rand(16, 1, 28, 28)
    for t in range(2):
        mem.begin_task(t)
        for _ in range(2):
            out = mem.step(x, t)
        assert all(torch.isfinite(v) for v in out.values()), out
        assert {"d_loss", "g_loss", "penalty"} <= set(out)
        mem.end_task(t)
    assert out["penalty"] > 0  # task 1 is regularised towards task 0's targets
    z = torch.randn(5, LATENT)
    s = mem.sample(1, 5, z=z)
    assert s.shape == (5, 1, 28, 28) and 0 <= s.min() and s.max() <= 1
    fresh = _roundtrip(mem, cfg, (1, 28, 28), 3)
    assert fresh.n_begun == 2
    for t in range(2):
        assert torch.equal(fresh.sample(t, 5, z=z), mem.sample(t, 5, z=z))
    # training continues from the restored state (targets of tasks 0 and 1)
    fresh.begin_task(2)
    assert torch.isfinite(fresh.step(x, 2)["penalty"])
    grid = mem.sample_grid([0, 1], n_per_task=4)
    assert grid.shape == (1, 2 * 30, 4 * 30)


@pytest.mark.parametrize("model,protection", [("gan", "hnet"), ("vae", "replay")])
def test_conv_variant_step(model, protection):
    torch.manual_seed(0)
    cfg = dict(SMALL, model=model, arch="conv", conv_channels=8, protection=protection)
    mem = GenerativeMemory(cfg, (3, 32, 32), n_tasks=2)
    x = torch.rand(8, 3, 32, 32)
    for t in range(2):
        mem.begin_task(t)
        out = mem.step(x, t)
        assert all(torch.isfinite(v) for v in out.values()), out
    if protection == "replay":
        assert "replay_loss" in out
        assert mem.snapshot is not None and mem.snapshot.shared  # self-replay draws from the task-start snapshot
        fresh = _roundtrip(mem, cfg, (3, 32, 32), 2)
        assert fresh.protection.n_past == 1
        z = torch.randn(4, LATENT)
        assert torch.equal(fresh.sample(0, 4, z=z), mem.sample(0, 4, z=z))
    assert mem.sample(1, 4).shape == (4, 3, 32, 32)


def test_sample_tasks_one_hnet_call(monkeypatch):
    mem = GenerativeMemory(SMALL, (1, 28, 28), n_tasks=3)
    for t in range(3):
        mem.begin_task(t)
    calls = []
    orig = WeightGenerator.flat

    def counting(self, *a, **k):
        calls.append(a)
        return orig(self, *a, **k)

    monkeypatch.setattr(WeightGenerator, "flat", counting)
    x, ids = mem.sample_tasks([2, 0, 1], n_per_task=5, generator=torch.Generator().manual_seed(0))
    assert len(calls) == 1
    assert x.shape == (15, 1, 28, 28)
    assert ids.tolist() == [2] * 5 + [0] * 5 + [1] * 5
    # per-task blocks use their own weights: same z, different task -> different images
    z = torch.randn(5, LATENT)
    assert not torch.allclose(mem.sample(0, 5, z=z), mem.sample(1, 5, z=z))


def test_hold_replays_the_past_from_one_copy(monkeypatch):
    """A task the memory is not trained on (the last): replay reads the weights held as it began, the same
    samples as generating them live, without a hypernetwork call per replay draw."""
    torch.manual_seed(0)
    mem = GenerativeMemory(SMALL, (1, 28, 28), n_tasks=3)
    x = torch.rand(8, 1, 28, 28)
    for t in range(2):
        mem.begin_task(t)
        mem.step(x, t)
        mem.end_task(t)
    live = mem.replay_batch([0, 1], 6, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="hold"):
        mem.hold(3)
    mem.hold(2)
    calls = []
    orig = WeightGenerator.flat
    monkeypatch.setattr(WeightGenerator, "flat", lambda self, *a, **k: calls.append(a) or orig(self, *a, **k))
    held = [mem.replay_batch([0, 1], 6, generator=torch.Generator().manual_seed(3)) for _ in range(3)][0]
    assert calls == []
    for a, b in zip(live, held):
        assert torch.equal(a, b)
    # a checkpoint loaded into it replaces the weights: the held copy goes with them
    fresh = _roundtrip(mem, SMALL, (1, 28, 28), 3)
    mem.load_checkpoint_state(fresh.checkpoint_state())
    assert mem.snapshot is None


def test_registry_and_param_counts():
    assert {"hnet", "replay", "none"} <= set(PROTECTIONS)
    with pytest.raises(ValueError):
        build_protection("nope", {})
    with pytest.raises(ValueError):
        GenerativeMemory(dict(hnet=dict(hiden=[3])), (1, 28, 28), 2)
    full = GenerativeMemory({}, (1, 28, 28), n_tasks=5)  # hypercl split-MNIST HNET+R VAE
    c = full.param_counts()
    assert c["generator_target"] == (200 * 250 + 250) + (250 * 350 + 350) + (350 * 784 + 784)
    assert c["encoder"] == (784 * 400 + 400) + (400 * 400 + 400) + (400 * 200 + 200)
    # hnet 10,10 (ELU), 9 chunks of 50000, chunk/task emb 96: (192*10+10)+(10*10+10)+(10*50000+50000)+9*96
    assert c["generator_trainable"] == 552904  # no task embedding before begin_task
    assert c["compression_ratio"] == pytest.approx(552904 / c["generator_target"])
    full.begin_task(0)
    assert full.param_counts()["generator_trainable"] == 552904 + 96
    own = GenerativeMemory(dict(protection="none"), (1, 28, 28), n_tasks=5).param_counts()
    assert own["generator_trainable"] == own["generator_target"]


def test_sample_replay_uses_weights_frozen_at_task_start():
    """Replay during a task sees earlier tasks as they were when the task began; live sampling moves on."""
    import torch

    from hyperdgm.memory import GenerativeMemory

    torch.manual_seed(0)
    cfg = {"protection": "none", "enc_hidden": [32], "dec_hidden": [32], "latent_dim": 4}
    mem = GenerativeMemory(cfg, (1, 8, 8), n_tasks=3)
    x = torch.rand(16, 1, 8, 8)
    mem.begin_task(0)
    for _ in range(3):
        mem.step(x, 0)
    mem.end_task(0)
    mem.begin_task(1)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    before, ids = mem.sample_replay([0], 5, generator=g())
    for _ in range(5):
        mem.step(x, 1)
    after, _ = mem.sample_replay([0], 5, generator=g())
    live, _ = mem.sample_tasks([0], 5, generator=g())
    assert torch.equal(before, after) and ids.tolist() == [0] * 5
    assert not torch.allclose(after, live)
    mem.end_task(1)
    assert torch.equal(mem.sample_replay([0], 5, generator=g())[0], mem.sample_tasks([0], 5, generator=g())[0])
