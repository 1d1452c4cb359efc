"""MeRGAN: replay alignment (value, zero / positive, keeps old classes), the class-conditional batch norm
generator, MeRGAN's generated-sample accuracy, the mergan method end to end, resume and refusals."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperdgm.errors import ConfigError
from hyperdgm.experiment import run_experiment
from hyperdgm.memory import GenerativeMemory
from hyperdgm.memory.alignment import alignment_distance
from hyperdgm.methods.mergan import generated_sample_accuracy

from .helpers import assert_resume_equals_uninterrupted, quick_cfg

REPO = Path(__file__).resolve().parents[1]

#: MeRGAN's generator and critic (conf/method/mergan.yaml) at a few channels
TINY_MERGAN = dict(model="acgan", arch="conv", condition="class", latent_dim=16, cond_dim=4, cond_input=False,
                   conv_channels=4, conv_kernel=5, body_norm="cbn", protection="alignment",
                   acgan=dict(ndf=4, n_critic=1, gp=10.0, lr_d=1e-3, lr_g=1e-3, betas=[0.0, 0.9], d_norm="none",
                              aux_weight=1.0, aux_g_weight=1.0, reinit_d=False))
#: the mergan method on the synthetic benchmark, a few seconds
TINY_RUN = ["benchmark=cil_synthetic", "method=mergan", "benchmark.pad=true", "benchmark.n_tasks=2",
            "benchmark.train_limit=64", "benchmark.test_limit=32", "trainer.iters_per_task=2", "trainer.batch_size=8",
            "method.memory.conv_channels=4", "method.memory.acgan.ndf=4", "method.memory.acgan.n_critic=1",
            "method.n_replay=8", "method.evaluator.hidden=[16]", "method.evaluator.epochs=1",
            "method.evaluator.n_per_class=40", "threads=1", "trainer.progress=false"]


def _memory(n_tasks: int = 3, **over) -> GenerativeMemory:
    torch.manual_seed(0)
    cfg = {**TINY_MERGAN, **over}
    return GenerativeMemory(cfg, (1, 32, 32), n_tasks, task_classes=[[t] for t in range(n_tasks)])


def _train(mem: GenerativeMemory, t: int, steps: int = 3, n: int = 16) -> None:
    g = torch.Generator().manual_seed(100 + t)
    x = torch.rand(n, 1, 32, 32, generator=g) * (0.3 + 0.2 * t)  # each class its own brightness
    mem.begin_task(t)
    for _ in range(steps):
        mem.step(x, t, cond=torch.full((n,), t))
    mem.end_task(t)


def _penalty(mem: GenerativeMemory, seed: int = 7) -> torch.Tensor:
    torch.manual_seed(seed)
    return mem.protection.penalty()


# -- the alignment term -------------------------------------------------------------------------
def test_alignment_zero_for_unchanged_generator_positive_after_a_step():
    mem = _memory()
    _train(mem, 0)
    mem.begin_task(1)
    assert mem.protection.has_penalty()
    assert _penalty(mem).item() == 0.0  # live generator == snapshot: exactly zero
    x = torch.rand(16, 1, 32, 32)
    out = mem.step(x, 1, cond=torch.full((16,), 1))
    assert out["penalty"].item() == 0.0  # the first step's penalty is taken before the weights move
    assert _penalty(mem).item() > 0.0
    mem.step(x, 1, cond=torch.full((16,), 1))
    assert mem.step(x, 1, cond=torch.full((16,), 1))["penalty"].item() > 0.0


def test_alignment_value_is_the_official_sum():
    """lambda * (1/c) * sum over the c old classes of 1/2 ||G_old(z_i, i) - G(z_i, i)||^2 on [-1, 1] images,
    floor(n_noise / c) shared noise rows per class, summed over rows and pixels."""
    lam, n_noise = 0.37, 7
    mem = _memory(alignment={"lambda": lam, "n_noise": n_noise})
    _train(mem, 0)
    _train(mem, 1)
    mem.begin_task(2)
    p = mem.protection
    blocks, cond, c = p.alignment_batch()
    per = n_noise // 2
    assert c == 2 and blocks == [(0, per), (1, per)] and cond.tolist() == [0] * per + [1] * per
    with torch.no_grad():  # move the live generator away from the snapshot
        for w in p.params:
            w.add_(0.05 * torch.randn_like(w))
    got = _penalty(mem, seed=11).item()
    torch.manual_seed(11)
    z = torch.randn(2 * per, mem.latent_dim)
    snap = mem.snapshot.weights[0]
    hand = 0.0
    for i in range(2):  # one class at a time, as the official code's loop
        zi, ci = z[i * per:(i + 1) * per], torch.full((per,), i)
        with torch.no_grad():
            old = 2 * mem.generate([(i, per)], weights=[snap], z=zi, cond=ci) - 1  # tanh scale
            new = 2 * mem.generate([(i, per)], z=zi, cond=ci) - 1
        hand += 0.5 * float(((old - new) ** 2).sum())
    hand *= lam / 2
    assert got == pytest.approx(hand, rel=1e-5)
    assert alignment_distance(torch.zeros(2, 3), torch.full((2, 3), 0.5)).item() == pytest.approx(0.5 * 6 * 1.0)


def test_alignment_keeps_old_class_samples_close():
    """After training on a new class, class 0's samples for a fixed z stay closer to the snapshot with
    alignment than without (lambda 0: the same GAN, nothing pulls the shared weights back)."""
    drift = {}
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    c0 = torch.zeros(32, dtype=torch.long)
    for lam in (0.0, 0.05):
        mem = _memory(2, alignment={"lambda": lam})
        _train(mem, 0, steps=2, n=8)
        before = mem.sample(0, 32, z=z, cond=c0)
        _train(mem, 1, steps=12, n=8)
        drift[lam] = float((mem.sample(0, 32, z=z, cond=c0) - before).abs().mean())
    assert drift[0.0] > 0.0
    assert drift[0.05] < 0.5 * drift[0.0], drift


def test_alignment_works_on_other_generators():
    """A task-conditioned MLP VAE (hnet_r's / dgr's generator) takes it too: per task, zero then positive."""
    mem = GenerativeMemory({"model": "vae", "arch": "mlp", "latent_dim": 4, "enc_hidden": [16], "dec_hidden": [16],
                            "cond_dim": 3, "protection": "alignment"}, (1, 8, 8), 3)
    for t in range(2):
        mem.begin_task(t)
        for _ in range(3):
            mem.step(torch.rand(8, 1, 8, 8), t)
        if t == 1:
            assert mem.protection.past_conditions() == [(0, 0)]
            assert _penalty(mem).item() > 0.0
        mem.end_task(t)


# -- the class-conditional batch norm generator -----------------------------------------------
def test_cbn_normalises_each_class_on_its_own_and_samples_with_running_moments():
    mem = _memory()
    z = torch.randn(12, mem.latent_dim)
    cond = torch.tensor([0] * 6 + [1] * 6)
    ws = mem.protection.weights([0])
    with torch.no_grad():
        mixed = mem.decode(z, cond, [(0, 12)], ws, batch_stats=True)
        alone = mem.decode(z[:6], cond[:6], [(0, 6)], ws, batch_stats=True)
    torch.testing.assert_close(mixed[:6], alone, rtol=1e-4, atol=1e-5)  # MeRGAN's one-class batches
    assert float(mem.body.cbn0_mean[0].abs().sum()) > 0 and float(mem.body.cbn0_mean[2].abs().sum()) == 0
    with torch.no_grad():  # sampling: running moments, so a sample does not depend on its batch
        a = mem.decode(z, cond, [(0, 12)], ws)
        b = mem.decode(z[:3], cond[:3], [(0, 3)], ws)
    torch.testing.assert_close(a[:3], b)
    names = [m.name for m in mem.body.param_meta]
    assert "cbn0.scale" in names and mem.body.param_shapes[names.index("cbn0.scale")] == [4, 16]
    assert torch.equal(mem.protection.params[names.index("cbn0.scale")], torch.ones(4, 16))  # init 1 (official)


def test_cbn_batch_always_normalises_with_each_class_batch_moments():
    """body_norm=cbn_batch (the official MeRGAN's cBN): sampling uses each condition's own batch moments (other
    conditions' rows do not matter, the running moments stay), so a per-channel rescaling of the shared first layer
    leaves every class's samples as they were; with running moments (cbn) it reaches them."""
    z = torch.randn(12, 16)
    cond = torch.tensor([0] * 6 + [1] * 6)
    outs = {}
    for norm in ("cbn", "cbn_batch"):
        mem = _memory(body_norm=norm)
        _train(mem, 0)
        ws = [w.detach().clone() for w in mem.protection.weights([0])[0]]
        rmean = mem.body.cbn0_mean.clone()
        with torch.no_grad():
            a = mem.decode(z, cond, [(0, 12)], [ws])
            b = mem.decode(z[:6], cond[:6], [(0, 6)], [ws])
            gain = torch.linspace(0.5, 2.0, ws[0].shape[0] // 16).repeat_interleave(16)  # per channel (x 4 x 4)
            scaled = [ws[0] * gain[:, None], ws[1] * gain] + ws[2:]
            c = mem.decode(z, cond, [(0, 12)], [scaled])
        assert torch.equal(mem.body.cbn0_mean, rmean)  # sampling never moves the running moments
        outs[norm] = (a, b, c)
    a, b, c = outs["cbn_batch"]
    torch.testing.assert_close(a[:6], b, rtol=1e-4, atol=1e-5)   # class 0's rows alone: the same samples
    torch.testing.assert_close(c, a, rtol=1e-3, atol=1e-3)  # the rescaling is normalised away (up to eps)
    a, _, c = outs["cbn"]
    assert float((c - a).abs().max()) > 1e-2                      # running moments: it reaches the samples
    with pytest.raises(ValueError, match="generator norm must be one of none, cbn, cbn_batch"):
        _memory(body_norm="batch", cond_input=True)


def test_fresh_real_gives_every_critic_step_after_the_first_its_own_real_batch():
    """acgan.fresh_real (the official MeRGAN): n_critic - 1 further real batches per step, each seen by the critic
    (a different batch moves the critic elsewhere); off, the step's batch serves every critic step; refused
    without a source of batches."""
    x = torch.rand(8, 1, 32, 32)
    cond = torch.zeros(8, dtype=torch.long)
    other = torch.rand(8, 1, 32, 32)
    crit = {}
    for fresh, batch in ((False, x), (True, x), (True, other)):
        mem = _memory(acgan={**TINY_MERGAN["acgan"], "n_critic": 3, "fresh_real": fresh})
        mem.begin_task(0)
        calls = []

        def draw(batch=batch):
            calls.append(1)
            return batch, cond
        torch.manual_seed(3)
        mem.step(x, 0, cond=cond, draw=draw)
        assert len(calls) == (2 if fresh else 0)
        crit[(fresh, id(batch))] = torch.cat([p.detach().flatten() for p in mem.model.discriminator.parameters()])
    torch.testing.assert_close(crit[(True, id(x))], crit[(False, id(x))])  # the same batch: the same critic
    assert not torch.allclose(crit[(True, id(other))], crit[(False, id(x))])
    mem = _memory(acgan={**TINY_MERGAN["acgan"], "fresh_real": True})
    mem.begin_task(0)
    with pytest.raises(ValueError, match="fresh_real draws a new real batch"):
        mem.step(x, 0, cond=cond)
    with pytest.raises(ValueError, match="memory.acgan.fresh_real must be true or false"):
        _memory(acgan={**TINY_MERGAN["acgan"], "fresh_real": "yes"})


# -- MeRGAN's evaluation ------------------------------------------------------------------------
def test_generated_sample_accuracy_formula():
    """Per class: % of n samples classified as the conditioning class (in chunks); the mean over classes."""
    calls = []

    def sample(k: int, n: int) -> torch.Tensor:
        calls.append((k, n))
        lab = torch.full((n,), float(k))
        if k == 1:
            lab[1::2] = 0.0  # every second sample of class 1 looks like a 0
        if k == 2:
            lab[:] = 3.0  # class 2 collapsed onto class 3
        return lab

    def classify(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(x.long(), 4).float()

    mean, per = generated_sample_accuracy(classify, sample, [0, 1, 2], n_per_class=10, batch_size=4)
    assert per == {0: 100.0, 1: 50.0, 2: 0.0}
    assert mean == pytest.approx(50.0)
    assert calls[:3] == [(0, 4), (0, 4), (0, 2)]


def test_mergan_runs_end_to_end_and_logs_both_metrics(tmp_path):
    """``python -m hyperdgm.run method=mergan``: the accuracy matrix (toolkit a_n) and a_n_mergan per task."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "hyperdgm.run", *TINY_RUN, "tracking=none",
                          f"data_root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    log = (tmp_path / "run" / "run.log").read_text()
    assert "mergan after task 1: a_n_mergan" in log and "mergan after task 2: a_n_mergan" in log
    assert list((tmp_path / "run").glob("mergan_evaluator_*.pt"))  # cached in the run dir
    R = np.genfromtxt(tmp_path / "run" / "accuracy_matrix.csv", delimiter=",", skip_header=1)[:, 1:]
    assert R.shape == (2, 2) and np.isfinite(R[1]).all()


def test_mergan_logs_named_metrics_and_jtr_runs(tmp_path):
    """The tracker gets a_n_mergan, a_n_mergan/class_k and the evaluator's real accuracy; MeRGAN-JTR
    (memory.protection=replay) runs on the same GAN; a resumed run gives the uninterrupted matrix."""
    class Rec:
        run_id = None
        maps = False

        def __init__(self):
            self.rows = []

        def log_metrics(self, row, step=None):
            self.rows.append((step, dict(row)))

        def __getattr__(self, name):
            return lambda *a, **k: None

    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.experiment import method_config
    from hyperdgm.methods import build_method
    from hyperdgm.scenarios import make_scenario

    cfg = quick_cfg(tmp_path, tmp_path, *TINY_RUN, "tracking=none", "method.memory.protection=replay",
                    "method.memory.acgan.n_critic=2", "method.memory.acgan.fresh_real=true")
    bench = build_benchmark("cil_synthetic", tmp_path, n_tasks=2, train_limit=64, test_limit=32, pad=True)
    m = build_method(method_config(cfg))
    m.setup(bench, make_scenario("cil", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    assert m.memory.protection.name == "replay"
    rec = Rec()
    g = torch.Generator().manual_seed(0)
    for task in bench.tasks:
        m.plan_task(2, 8)
        m.begin_task(task)
        for _ in range(2):
            x, y = task.batch("train", torch.randint(len(task.train), (8,), generator=g))
            m.step(x, y, task.id)
        m.end_task(task)
        m.log_artifacts(rec, task)
    names = {k for _, row in rec.rows for k in row}
    assert {"a_n_mergan", "a_n_mergan/class_0", "a_n_mergan/class_1", "mergan/evaluator_test_acc"} <= names
    last = [row for step, row in rec.rows if step == 1 and "a_n_mergan" in row][0]
    assert last["a_n_mergan"] == pytest.approx((last["a_n_mergan/class_0"] + last["a_n_mergan/class_1"]) / 2)
    assert_resume_equals_uninterrupted(tmp_path, tmp_path / "resume", *TINY_RUN, "benchmark.n_tasks=3",
                                       "tracking=none")


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,expect", [
    ("method.memory.alignment.lambda=-0.1", "memory.alignment.lambda must be a number >= 0"),
    ("method.memory.condition=task", "memory.condition must be class"),
    ("method.memory.body_norm=none", "memory.cond_input=false leaves the generator unconditioned"),
    ("method.memory.alignment.n_noise=0", "memory.alignment.n_noise must be an integer >= 1"),
])
def test_bad_values_refused_with_one_line(override, expect, tmp_path):
    cfg = quick_cfg(tmp_path, tmp_path, *TINY_RUN, "tracking=none", override)
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg, tmp_path / "run")
    msg = str(err.value)
    assert expect in msg and "\n" not in msg, msg
