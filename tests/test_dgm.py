"""DGM: annealing, sparsity term, reserved weights bit-identical, expansion, resume after growth, the swaps."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from hyperdgm.experiment import run_experiment
from hyperdgm.memory import GenerativeMemory
from hyperdgm.memory.dgm import anneal_s

from .helpers import quick_cfg

TINY_DGM = dict(model="acgan", arch="dcgan", condition="class", latent_dim=12, cond_dim=4, ngf=4,
                acgan=dict(ndf=8), emb_lr=0.01)


def _memory(protection: str, n_tasks: int = 3, **over) -> GenerativeMemory:
    torch.manual_seed(0)
    cfg = {**TINY_DGM, "protection": protection, **over}
    return GenerativeMemory(cfg, (1, 32, 32), n_tasks, task_classes=[[t] for t in range(n_tasks)])


def _train(mem: GenerativeMemory, t: int, steps: int = 6, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed + t)
    mem.begin_task(t, schedule=(steps, 3))
    x = torch.rand(16, 1, 32, 32, generator=g)
    for _ in range(steps):
        mem.step(x, t, cond=torch.full((16,), t))
    mem.end_task(t)


def _roundtrip(mem: GenerativeMemory, cfg_over: dict, n_tasks: int = 3) -> GenerativeMemory:
    buf = io.BytesIO()
    torch.save(mem.checkpoint_state(), buf)
    buf.seek(0)
    fresh = _memory(mem.protection.name, n_tasks, **cfg_over)
    fresh.load_checkpoint_state(torch.load(buf, weights_only=True))
    return fresh


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_layer_norm_critic_scores_each_sample_on_its_own(arch):
    """The short presets' critic (``d_norm=layer``) normalises per sample, so the gradient penalty, taken per sample,
    constrains what the critic does; batch norm (DGM's) scores a sample by the rest of its batch."""
    from hyperdgm.memory.models import ACDiscriminator

    torch.manual_seed(0)
    x = torch.rand(6, 1, 32, 32)
    for norm, alone_equals_batch in (("layer", True), ("batch", False)):
        d = ACDiscriminator((1, 32, 32), 3, ndf=4, norm=norm, arch=arch).train()
        (critic, aux), (critic_1, aux_1) = d(x), d(x[:2])
        assert torch.allclose(critic[:2], critic_1, atol=1e-5) == alone_equals_batch, norm
        assert torch.allclose(aux[:2], aux_1, atol=1e-5) == alone_equals_batch, norm


# -- annealing ------------------------------------------------------------------------------
def test_annealing_values():
    smax = 1e4
    # official: s_max(e) = (smax - 1/smax) e / n + 1/smax; s rises within the epoch from 1/s_max(e) to ~s_max(e)
    s, se = anneal_s(smax, 1, 0.0, 101, per_batch=True, mode="official")
    assert se == pytest.approx((smax - 1 / smax) / 101 + 1 / smax)
    assert s == pytest.approx(1 / se)
    s, _ = anneal_s(smax, 100, 0.5, 101, per_batch=True, mode="official")
    se = (smax - 1 / smax) * 100 / 101 + 1 / smax
    assert s == pytest.approx((se - 1 / se) * 0.5 + 1 / se)
    # the official epoch-0 quirk: s starts at smax and falls
    assert anneal_s(smax, 0, 0.0, 101, per_batch=True, mode="official")[0] == pytest.approx(smax)
    # paper mode: rises in every epoch and reaches smax in the last one
    assert anneal_s(smax, 100, 1.0, 101, per_batch=True, mode="paper")[0] == pytest.approx(smax - 1 / smax, rel=1e-6)
    assert anneal_s(smax, 0, 0.0, 101, per_batch=True)[0] < 1.0
    # DGMa: constant within the epoch
    a = anneal_s(1e5, 3, 0.1, 10, per_batch=False)
    b = anneal_s(1e5, 3, 0.9, 10, per_batch=False)
    assert a == b and a[0] == pytest.approx((1e5 - 1e-5) * 4 / 10 + 1e-5)
    with pytest.raises(ValueError):
        anneal_s(smax, 0, 0.0, 1, per_batch=True, mode="nope")


def test_memory_progress_drives_s():
    mem = _memory("dgm_w")
    mem.begin_task(0, schedule=(20, 10))
    x = torch.rand(8, 1, 32, 32)
    s0 = mem.protection.current_s()[0]
    for _ in range(5):
        mem.step(x, 0, cond=torch.zeros(8, dtype=torch.long))
    assert mem.progress() == (0, 0.5, 2)
    assert mem.protection.current_s()[0] > s0


# -- the sparsity term -----------------------------------------------------------------------
def test_sparsity_term_ignores_reserved_capacity():
    mem = _memory("dgm_w")
    p = mem.protection
    _train(mem, 0, steps=2)
    mem.begin_task(1, schedule=(10, 10))
    cum = p.cum
    with torch.no_grad():
        for e in p.emb:
            e.normal_()
    s = p.current_s()[0]
    m = [torch.sigmoid(s * e) for e in p.emb]
    lam = p.lamb * p._units(p.meta) / p.units0
    expect = lam * sum((mi * (1 - ci)).sum() for mi, ci in zip(m, cum)) / sum((1 - ci).sum() for ci in cum)
    assert p.penalty().item() == pytest.approx(expect.item(), rel=1e-5)
    assert lam > p.lamb  # the body grew: lambda scales with the units now over the units at the start
    # changing the embedding where capacity is reserved leaves the term unchanged
    before = p.penalty().item()
    with torch.no_grad():
        for e, c in zip(p.emb, cum):
            e.add_(c * 7.0)
    assert any(c.sum() > 0 for c in cum)
    assert p.penalty().item() == pytest.approx(before, rel=1e-6)


# -- reserved weights and old samples ------------------------------------------------------------
@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
@pytest.mark.parametrize("protection", ["dgm_w", "dgm_a"])
def test_reserved_weights_bit_identical_after_further_tasks(protection, arch):
    """Also for the residual generator, whose block outputs are written by two tensors (second conv and shortcut)
    and whose shortcuts read the units of the layer before the block, not of the layer before them."""
    mem = _memory(protection, arch=arch)
    _train(mem, 0)
    w0 = [w.clone() for w in mem.protection.weights([0])[0]]
    z = torch.randn(10, mem.latent_dim, generator=torch.Generator().manual_seed(5))
    cond = torch.zeros(10, dtype=torch.long)
    x0 = mem.sample(0, 10, z=z, cond=cond)
    widths0 = list(mem.body.widths)
    _train(mem, 1)
    _train(mem, 2)
    assert mem.body.widths != widths0 or protection == "dgm_a"  # DGMw grows after every task here
    w0_now = mem.protection.weights([0])[0]
    for a, b in zip(w0, w0_now):  # old task's (masked) weights: bit-identical where it had them
        assert torch.equal(b[tuple(slice(0, s) for s in a.shape)], a)
    assert torch.equal(mem.sample(0, 10, z=z, cond=cond), x0)  # and so are its samples, after two expansions


def test_gradients_masked_by_cumulative_mask():
    mem = _memory("dgm_w")
    _train(mem, 0)
    before = [p.detach().clone() for p in mem.protection.params]
    cum = [c.clone() for c in mem.protection.cum]
    _train(mem, 1)
    for b, p, c in zip(before, mem.protection.params, cum):
        sl = tuple(slice(0, s) for s in b.shape)
        reserved = c.bool()
        assert torch.equal(p.detach()[sl][reserved], b[reserved])       # reserved: frozen
        assert not torch.equal(p.detach()[sl][~reserved], b[~reserved])  # free: trained


def test_dgm_a_freezes_where_both_units_are_reserved():
    mem = _memory("dgm_a")
    _train(mem, 0)
    p = mem.protection
    cum = p.cum
    gm = p._grad_masks(cum)
    # conv2 weight [in, out, k, k]: frozen iff in-unit (conv1 out) and out-unit (conv2 out) both reserved
    expect = 1 - torch.minimum(cum[1].view(1, -1, 1, 1), cum[0].view(-1, 1, 1, 1))
    assert torch.equal(gm[1], expect.expand_as(gm[1]))
    assert torch.equal(gm[0], (1 - cum[0]).view(1, -1, 1, 1).expand_as(gm[0]))


# -- expansion --------------------------------------------------------------------------------------
def test_resnet_generator_declares_its_residual_layers():
    from hyperdgm.memory.bodies import Body, ParamMeta, ResNetBody

    body = ResNetBody(10, (3, 32, 32), ngf=4)
    meta = {m.name: m for m in body.param_meta}
    assert body.widths == [4] * 7 and body.can_grow
    sc = meta["block1.shortcut.weight"]  # block 1 writes layer 4 (c2) and reads layer 2 (c1)
    assert (sc.layer, sc.source) == (4, 2) and meta["block1.conv2.weight"].layer == 4
    assert meta["block1.conv1.weight"].source == 2 and meta["block1.conv2.weight"].source == 3
    body.grow([5, 6, 7, 8, 9, 10, 11])
    shapes = {m.name: m.shape for m in body.param_meta}
    assert shapes["block1.shortcut.weight"] == (9, 7, 1, 1) and shapes["block1.conv1.weight"] == (8, 7, 3, 3)
    body.begin_task(0, [0])
    out = body(torch.randn(2, 10), [torch.randn(s) * 0.1 for s in body.param_shapes], 0)
    assert out.shape == (2, 3, 32, 32)
    # a declaration whose tensors disagree on a layer's units is refused when the body is built
    bad = [ParamMeta("a", 0, "weight", (4, 3), 0, 1, True), ParamMeta("b", 1, "weight", (5, 4), 0, 1, True),
           ParamMeta("c", 1, "weight", (6, 3), 0, 1, True, in_layer=-1)]
    with pytest.raises(ValueError, match="layer 1 has 5"):
        Body._check(bad)
    with pytest.raises(ValueError, match="input units"):
        Body._check([*bad[:2], ParamMeta("c", 1, "weight", (5, 4), 0, 1, True, in_layer=-1)] + [
            ParamMeta("d", 2, "weight", (2, 5), 0, 1, True, in_layer=0)])


def test_dgm_on_the_resnet_generator_grows_each_layer_by_what_it_reserved():
    """DGMw: a residual block's output layer counts the weights of its second conv and its shortcut together, and
    grows by at most one output unit's weights more than that; DGMa freezes a shortcut weight where its output unit
    and the block's input unit (not the inner conv's) are both reserved."""
    mem = _memory("dgm_w", arch="resnet", ngf=6)
    p, body = mem.protection, mem.body
    mem.begin_task(0, schedule=(1, 1))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for e in p.emb:
            e.copy_(torch.where(torch.rand(e.shape, generator=g) < 0.4, 1.0, -1.0))
    old = {m.name: m for m in body.param_meta}
    mem.end_task(0)
    new = {m.name: m for m in body.param_meta}
    cum = dict(zip([m.name for m in body.param_meta], p.cum))
    per_layer: dict[int, list[str]] = {}
    for m in body.param_meta:
        per_layer.setdefault(m.layer, []).append(m.name)
    assert len(per_layer[2]) == 2 and len(p.history[-1]["new_per_layer"]) == 7
    for layer, names in per_layer.items():
        reserved = sum(int(cum[n].sum()) for n in names)
        assert p.history[-1]["new_per_layer"][layer] == reserved
    for layer, names in per_layer.items():  # free capacity of the whole net never shrinks, layer by layer
        added = sum(new[n].numel - old[n].numel for n in names)
        reserved = sum(int(cum[n].sum()) for n in names)
        assert added >= reserved, (layer, added, reserved)
        if new[names[0]].shape[new[names[0]].out_dim] > old[names[0]].shape[old[names[0]].out_dim]:
            one_unit = sum(new[n].numel // new[n].shape[new[n].out_dim] for n in names)  # ... by less than the ceiling
            assert added - reserved < one_unit, (layer, added, reserved, one_unit)
    ma = _memory("dgm_a", arch="resnet", ngf=6)
    _train(ma, 0)
    pa = ma.protection
    gm = dict(zip([m.name for m in ma.body.param_meta], pa._grad_masks(pa.cum)))
    c_in, c_out = pa.cum[2], pa.cum[4]  # block 1 reads layer 2 (c1) and writes layer 4 (c2)
    expect = 1 - torch.minimum(c_out.view(-1, 1, 1, 1), c_in.view(1, -1, 1, 1))
    assert torch.equal(gm["block1.shortcut.weight"], expect.expand_as(gm["block1.shortcut.weight"]))
    fresh = _roundtrip(ma, {"arch": "resnet", "ngf": 6})  # a grown residual generator rebuilt from its checkpoint
    z = torch.randn(4, ma.latent_dim)
    c0 = torch.zeros(4, dtype=torch.long)
    assert torch.equal(fresh.sample(0, 4, z=z, cond=c0), ma.sample(0, 4, z=z, cond=c0))


def test_dgm_w_expansion_keeps_free_capacity_on_a_constructed_mask():
    mem = _memory("dgm_w")
    p, body = mem.protection, mem.body
    mem.begin_task(0, schedule=(1, 1))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a constructed mask: about 30% / 50% / 70% of each layer reserved
        for e, frac in zip(p.emb, (0.3, 0.5, 0.7)):
            e.copy_(torch.where(torch.rand(e.shape, generator=g) < frac, 1.0, -1.0))
        reserved = [int((e > 0).sum()) for e in p.emb]
    old = body.param_meta
    mem.end_task(0)
    new = body.param_meta
    assert p.history[-1]["new_per_layer"] == reserved
    for mo, mn, n, c in zip(old, new, reserved, p.cum):
        added = mn.numel - mo.numel
        free_before, free_after = mo.numel, mn.numel - int(c.sum())
        assert free_after - free_before == added - n >= 0  # free capacity never shrinks
        grew_out = mn.shape[mn.out_dim] - mo.shape[mo.out_dim]
        k = mn.numel // (mn.shape[mn.in_dim] * mn.shape[mn.out_dim])
        if grew_out > 0:  # ... and exceeds what was reserved by less than one output unit (the ceiling)
            assert added - n < mn.shape[mn.in_dim] * k
    assert body.widths != [m.shape[m.out_dim] for m in old]
    # DGMa adds exactly the newly reserved units
    ma = _memory("dgm_a")
    ma.begin_task(0, schedule=(1, 1))
    with torch.no_grad():
        for e, n in zip(ma.protection.emb, (5, 3, 1)):
            e.fill_(-1.0)
            e[:n] = 1.0
    w = list(ma.body.widths)
    ma.end_task(0)
    assert ma.body.widths == [w[0] + 5, w[1] + 3, w[2] + 1]


@pytest.mark.parametrize("init,std", [("normal", 0.1), ("xavier", None)])
def test_expansion_draws_new_weights_as_configured_and_keeps_the_old(init, std):
    """New capacity: N(0, expand_std) or xavier at the new shape; old entries copied bit for bit."""
    mem = _memory("dgm_w", dgm={"expand_init": init, "expand_std": std or 0.02})
    p = mem.protection
    _train(mem, 0)
    before = [w.detach().clone() for w in p.params]
    old = mem.body.param_meta
    mem.body.grow([w + 40 for w in mem.body.widths])
    p.expand(old, mem.body.param_meta)
    for w0, w, m in zip(before, p.params, mem.body.param_meta):
        region = tuple(slice(0, s) for s in w0.shape)
        assert torch.equal(w[region], w0)
        fresh = torch.ones_like(w, dtype=torch.bool)
        fresh[region] = False
        got = float(w.detach()[fresh].std())
        if init == "xavier":
            fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(w)
            std = p.init_gain * math.sqrt(2.0 / (fan_in + fan_out))
        assert abs(got - std) < 0.1 * std
    with pytest.raises(ValueError, match="expand_init"):
        _memory("dgm_w", dgm={"expand_init": "zeros"})


def test_expansion_without_growth_is_refused_for_fixed_bodies():
    mem = GenerativeMemory(dict(protection="dgm_w", arch="conv", conv_channels=4, latent_dim=4, model="vae",
                                enc_hidden=[8]), (1, 32, 32), 2)
    mem.begin_task(0, schedule=(2, 2))
    mem.step(torch.rand(4, 1, 32, 32), 0)
    mem.end_task(0)  # the conv body cannot grow: masks only, no expansion
    assert mem.body.widths == [] and len(mem.growth) == 1


def test_checkpoint_of_a_grown_memory_rebuilds_it():
    mem = _memory("dgm_w")
    _train(mem, 0)
    _train(mem, 1)
    assert len(mem.growth) == 3
    fresh = _roundtrip(mem, {})
    assert fresh.body.widths == mem.body.widths and fresh.body.task_widths == mem.body.task_widths
    z = torch.randn(6, mem.latent_dim)
    for t in range(2):
        c = torch.full((6,), t)
        assert torch.equal(fresh.sample(t, 6, z=z, cond=c), mem.sample(t, 6, z=z, cond=c))
    assert fresh.param_counts() == mem.param_counts()
    _train(fresh, 2)  # training continues on the grown net


def test_wrong_order_refused():
    mem = _memory("dgm_w")
    with pytest.raises(RuntimeError):
        mem.begin_task(1, schedule=(2, 2))
    with pytest.raises(ValueError, match="schedule"):  # s would stay at 1/smax: masks never anneal
        mem.begin_task(0)
    with pytest.raises(ValueError):
        GenerativeMemory({**TINY_DGM, "protection": "dgm_w", "dgm": {"smax_typo": 1}}, (1, 32, 32), 2,
                         task_classes=[[0], [1]])


@pytest.mark.parametrize("protection,block", [("replay", {}), ("alignment", {"alignment": {"replay": True}}),
                                              ("si", {"si": {"replay": True}})])
def test_self_replay_of_an_acgan_without_auxiliary_losses_refused(protection, block):
    """DGM's critic does not see the class: under self-replay only the auxiliary losses hold a sample to its class."""
    def build(cfg):
        return GenerativeMemory(cfg, (1, 32, 32), 2, task_classes=[[0], [1]])

    cfg = {**TINY_DGM, "protection": protection, **block}
    with pytest.raises(ValueError, match="aux_g_weight") as err:
        build(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="aux_g_weight"):  # one of the two is not enough
        build({**cfg, "acgan": {"ndf": 8, "aux_weight": 1.0}})
    assert build({**cfg, "acgan": {"ndf": 8, "aux_weight": 1.0, "aux_g_weight": 1.0}}).protection.self_replay  # MeRGAN-JTR's
    build({**cfg, "protection": "dgm_w"})  # masks: one condition trains at a time
    assert not build({**cfg, "protection": "alignment", "alignment": {"replay": False}}).protection.self_replay


# -- runs ---------------------------------------------------------------------------------------------
RUN = ["benchmark=cil_mnist", "scenario=cil", "method=dgm", "benchmark.pad=32", "tracking=none",
       "trainer.batch_size=32", "method.memory.ngf=4", "method.memory.acgan.ndf=8"]


def _cfg(data_root, tmp_path, *over):
    return quick_cfg(data_root, tmp_path, *RUN, *over)


def test_resume_after_expansion_equals_uninterrupted(data_root, tmp_path):
    over = ["benchmark.n_tasks=3", "benchmark.train_limit=96", "benchmark.test_limit=50", "trainer.iters_per_task=6",
            "benchmark.val_size=20", "method.paper_eval_every=1"]
    full = run_experiment(_cfg(data_root, tmp_path, *over), tmp_path / "full")
    run_experiment(_cfg(data_root, tmp_path, *over, "trainer.stop_after=2"), tmp_path / "part")
    resumed = run_experiment(_cfg(data_root, tmp_path, *over, f"resume={tmp_path / 'part'}"), tmp_path / "x")
    assert np.array_equal(full.R, resumed.R, equal_nan=True)
    assert full.param_counts == resumed.param_counts
    assert full.param_counts["generator_width_0"] > 16  # the generator grew (4 * ngf at the start)


@pytest.mark.parametrize("protection", ["hnet", "replay", "none"])
def test_acgan_under_every_protection_runs(data_root, tmp_path, protection):
    aux = ["method.memory.acgan.aux_weight=1", "method.memory.acgan.aux_g_weight=1"] if protection == "replay" else []
    over = ["benchmark.n_tasks=2", "benchmark.train_limit=64", "benchmark.test_limit=40", "trainer.iters_per_task=4",
            f"method.memory.protection={protection}", "method.memory.hnet.chunk_size=4000", *aux]
    r = run_experiment(_cfg(data_root, tmp_path, *over), tmp_path / protection)
    assert np.isfinite(r.R[1, :2]).all() and r.param_counts["memory_generator_target"] > 0


def test_hnet_r_vae_under_dgm_w_keeps_old_decoder(data_root, tmp_path):
    """HNET+R's VAE under DGMw masks: the decoder grows, and the run logs DGM's growth as the DGM method does
    (capacity, widths and a growth plot for each task the memory learned; none for the last, which it skips)."""
    from mlflow.tracking import MlflowClient

    over = ["method=hnet_r", "scenario=cl3", "benchmark.n_tasks=3", "benchmark.train_limit=200",
            "trainer.iters_per_task=20", "method.memory.protection=dgm_w", "method.memory.enc_hidden=[64]",
            "method.memory.dec_hidden=[32,48]", "method.memory.latent_dim=8", "method.memory.emb_lr=0.01"]
    r = run_experiment(quick_cfg(data_root, tmp_path, *over), tmp_path / "hr")
    assert np.isfinite(r.R[2]).all()
    ck = torch.load(tmp_path / "hr" / "checkpoints" / "task_001.pt", weights_only=True)
    mem_state = ck["method"]["memory"]
    assert len(mem_state["growth"]) >= 2  # the MLP decoder grew after its tasks
    assert r.param_counts["memory_generator_target"] > (20 + 100) * 32 + 32 * 48 + 48 * 784  # grown past the start
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for key in ("dgm.new_reserved", "dgm.free", "generator.width_0", "generator.params"):
        assert [m.step for m in client.get_metric_history(r.run_id, key)] == [0, 1], key
    widths = [m.value for m in client.get_metric_history(r.run_id, "generator.width_0")]
    assert widths[1] > widths[0] > 32  # the first hidden layer after each growth
    plots = [f.path for f in client.list_artifacts(r.run_id, "growth")]
    assert plots == ["growth/after_task_00.png", "growth/after_task_01.png"]


@pytest.mark.parametrize("protection", ["dgm_w", "dgm_a"])
def test_short_class_incremental_mnist_far_above_finetune(data_root, tmp_path, protection):
    """2 digits, 150 steps each: the first digit stays recognised through generated replay (measured: DGMw 99.0,
    DGMa 95.7 on it after the second digit with 120 / 200 steps)."""
    over = ["benchmark.n_tasks=2", "benchmark.train_limit=600", "benchmark.test_limit=300",
            "trainer.iters_per_task=150", f"method.memory.protection={protection}", "trainer.batch_size=64",
            "method.memory.ngf=8", "method.memory.acgan.ndf=16", "method.memory.acgan.d_norm=none",
            "trainer.precision=fp32"]  # auto is bf16 on an AMX CPU: DGMa kept 31.7 of its first digit there
    if protection == "dgm_a":
        over += ["method.memory.dgm.smax=100000", "method.memory.dgm.lamb=0.01"]
    r = run_experiment(_cfg(data_root, tmp_path, *over), tmp_path / protection)
    old = r.R[1, 0]
    assert old > 40, r.R  # a classifier without replay scores 0 on the old digits (it only ever saw one class)
    assert r.summary["a_n"] > 60, r.R
    assert math.isfinite(r.param_counts["stored_mask_bits"]) and r.param_counts["stored_mask_bits"] > 0


@pytest.mark.parametrize("preset", ["cil_svhn_dgmw", "cil_svhn_dgma", "cil_cifar10_dgmw", "cil_cifar10_dgmw_short"])
def test_rgb_presets_run(preset, tiny_svhn, cifar10_root, tmp_path):
    """The SVHN presets on small .mat files in the original format, CIFAR-10 on the real files (its presets: the
    residual generator and critic)."""
    root = tiny_svhn.root if "svhn" in preset else cifar10_root
    cfg = quick_cfg(root, tmp_path, f"experiment={preset}", "tracking=none", "benchmark.n_tasks=2",
                    "benchmark.train_limit=5", "benchmark.val_size=1", "benchmark.test_limit=3",
                    "trainer.epochs=null", "trainer.iters_per_task=2", "trainer.batch_size=4",
                    "benchmark.net.hidden=null")
    r = run_experiment(cfg, tmp_path / preset)
    assert np.isfinite(r.R[1, :2]).all()
    assert r.param_counts["memory_generator_target"] > 0


def test_a_n_paper_takes_test_accuracy_at_the_best_validation_point(data_root):
    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.methods.dgm import DGM
    from hyperdgm.scenarios import make_scenario

    bench = build_benchmark("cil_mnist", data_root, n_tasks=2, train_limit=8, test_limit=8, val_size=2, pad=32)
    m = DGM({"memory": dict(TINY_DGM)})
    m.setup(bench, make_scenario("cil", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    seq = iter([([50.0], [10.0]), ([80.0], [20.0]), ([70.0], [90.0])])  # (val, test) at three evaluation points
    pending: dict[str, list[float]] = {}

    def fake(split, upto):
        if split == "val":
            pending["v"], pending["t"] = next(seq)
            return pending["v"]
        return pending["t"]

    m._class_accs = fake
    m.begin_task(bench.tasks[0])
    for _ in range(3):
        m.it += 5
        m._paper_eval(0)
    m.end_task(bench.tasks[0])
    assert m.a_n_paper == [20.0]  # the test accuracy where validation was best, not the best test accuracy
    # the whole curve is logged, at the trainer's step numbering (what the selection hides stays visible)
    logged: list[tuple[dict, int]] = []

    class Rec:
        def log_metrics(self, row, step=None):
            logged.append((dict(row), step))

        def log_figure(self, fig, name):
            pass

        def log_image(self, *a, **k):
            pass

    m.task_iters = 15
    m.log_artifacts(Rec(), bench.tasks[0])
    curve = [(step, row["paper/test_acc"], row["paper/val_acc"]) for row, step in logged if "paper/test_acc" in row]
    assert curve == [(5, 10.0, 50.0), (10, 20.0, 80.0), (15, 90.0, 70.0)]


def test_classifier_ema_averages_the_task_steps_and_predicts(data_root, tmp_path):
    """method.classifier_ema: the classifier predicts with ema <- d ema + (1 - d) live after every step, restarted
    from the classifier when a task begins; training is untouched (same live weights as without it); it is kept in
    checkpoints; a bad decay and the shared hypernetwork are refused."""
    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.methods.dgm import DGM
    from hyperdgm.scenarios import make_scenario

    bench = build_benchmark("cil_mnist", data_root, n_tasks=2, train_limit=32, test_limit=8, val_size=0, pad=32)
    runs = {}
    for ema in (None, 0.5):
        torch.manual_seed(0)
        m = DGM({"memory": dict(TINY_DGM), "classifier_ema": ema})
        m.setup(bench, make_scenario("cil", bench.n_classes_per_task), torch.device("cpu"),
                torch.Generator().manual_seed(0))
        m.plan_task(3, 8)
        m.begin_task(bench.tasks[0])
        d = m.memory.model.discriminator
        expect = [p.detach().clone() for p in d.parameters()]  # the EMA starts at the classifier
        if ema is not None:
            assert all(torch.equal(a, b) for a, b in zip(m.ema.parameters(), expect))
        x, y = bench.tasks[0].batch("train", torch.arange(8))
        for _ in range(3):
            m.step(x, y, 0)
            expect = [0.5 * e + 0.5 * p.detach() for e, p in zip(expect, d.parameters())]
        runs[ema] = (m, [p.detach().clone() for p in d.parameters()], expect)
    (plain, live0, _), (m, live, expect) = runs[None], runs[0.5]
    assert all(torch.equal(a, b) for a, b in zip(live0, live))  # the EMA does not change training
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(m.ema.parameters(), expect))
    m.eval()
    xt, _ = bench.tasks[0].batch("test", torch.arange(8))
    got = m.predict(xt)
    ema_logits = m.ema.aux(m.ema.features(m.pixels.to_unit(xt)))[:, :1]
    assert torch.allclose(got, ema_logits) and not torch.allclose(got, plain.eval().predict(xt))
    state = m.checkpoint_state()
    assert set(state["classifier_ema"]) == set(m.ema.state_dict())
    logged: dict = {}

    class Rec:  # the live classifier's accuracy is logged beside the averaged one's, for comparison
        def log_metrics(self, row, step=None):
            logged.update(row)

        def log_figure(self, *a, **k):
            pass

        def log_image(self, *a, **k):
            pass

    m.end_task(bench.tasks[0])
    m.log_artifacts(Rec(), bench.tasks[0])
    live_acc = m._live_accs(0)[0]
    assert logged["live_classifier/acc.task_0"] == live_acc and logged["live_classifier_acc"] == live_acc
    for bad in (1.0, 0, "x", True):
        with pytest.raises(ValueError, match="classifier_ema"):
            DGM({"memory": dict(TINY_DGM), "classifier_ema": bad}).setup(
                bench, make_scenario("cil", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    with pytest.raises(ValueError, match="classifier_ema"):
        DGM({"memory": {**TINY_DGM, "protection": "hnet"}, "shared_hnet": True, "classifier_ema": 0.9}).setup(
            bench, make_scenario("cil", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())


def test_growth_table_follows_the_widths_per_task():
    from hyperdgm.methods.replay import growth_table

    mem = _memory("dgm_w")
    start = sum(mem.body.widths)
    _train(mem, 0)
    _train(mem, 1)
    rows = growth_table(mem)
    assert [r["task"] for r in rows] == [0.0, 1.0]
    assert rows[-1]["width_sum"] == sum(mem.body.widths) > rows[0]["width_sum"] > start
    assert rows[1]["linear_width_sum"] == 3 * start


def test_class_conditional_vae_in_hnet_r(data_root, tmp_path):
    """The VAE conditioned on class labels (one-hot of the class, not the task) trains and replays."""
    over = ["method=hnet_r", "scenario=cl3", "tracking=none", "benchmark.n_tasks=2", "benchmark.train_limit=200",
            "trainer.iters_per_task=10", "method.memory.condition=class", "method.memory.enc_hidden=[64]",
            "method.memory.dec_hidden=[32]", "method.memory.latent_dim=8", "method.memory.hnet.chunk_size=4000"]
    r = run_experiment(quick_cfg(data_root, tmp_path, *over), tmp_path / "cc")
    assert np.isfinite(r.R[1, :2]).all()
    mem = GenerativeMemory(dict(condition="class", latent_dim=4, dec_hidden=[8], enc_hidden=[8], protection="none"),
                           (1, 28, 28), 2, task_classes=[[0, 1], [2, 3]])
    cond = mem.conditions([(1, 200)], torch.Generator().manual_seed(0))
    assert set(cond.tolist()) == {2, 3}  # rows of task 1 are conditioned on task 1's classes
    with pytest.raises(ValueError):
        GenerativeMemory(dict(condition="class"), (1, 28, 28), 2)  # class conditions need the task's classes


def test_hnet_tir_with_one_hypernetwork_for_classifier_and_decoder(data_root, tmp_path):
    over = ["method=hnet_tir", "scenario=cl3", "tracking=none", "benchmark.n_tasks=3", "benchmark.train_limit=300",
            "trainer.iters_per_task=30", "method.shared_hnet=true", "method.memory.enc_hidden=[64]",
            "method.memory.dec_hidden=[32]", "method.memory.latent_dim=8", "method.hnet.chunk_size=8000",
            "method.tir.hidden=[64]"]
    full = run_experiment(quick_cfg(data_root, tmp_path, *over), tmp_path / "full")
    assert np.isfinite(full.R[2]).all()
    # the memory's hypernetwork is the classifier's: its trainable count is the classifier's alone
    assert full.param_counts["memory_generator_trainable"] == 0
    assert full.param_counts["target"] > 50000 + (8 + 100) * 32  # classifier + decoder generated together
    run_experiment(quick_cfg(data_root, tmp_path, *over, "trainer.stop_after=2"), tmp_path / "part")
    resumed = run_experiment(quick_cfg(data_root, tmp_path, *over, f"resume={tmp_path / 'part'}"), tmp_path / "x")
    assert np.array_equal(full.R, resumed.R, equal_nan=True)


def test_shared_hypernetwork_keeps_old_decoder_weights():
    """Every memory step is regularized: the decoder weights generated for task 0 barely move in task 1."""
    from hyperdgm.hnet import OutputRegularizer, WeightGenerator

    torch.manual_seed(0)
    mem = GenerativeMemory(dict(protection="hnet_shared", latent_dim=4, dec_hidden=[16], enc_hidden=[16], beta=1.0),
                           (1, 8, 8), 2)
    gen = WeightGenerator([[[3, 5]], mem.body.param_shapes], chunk_size=500, hidden=(8,), task_emb_size=8,
                          chunk_emb_size=8)
    reg = OutputRegularizer(1.0, lookahead=True)
    mem.protection.attach(gen, 1, reg)
    x = torch.rand(16, 1, 8, 8)
    for t in range(2):
        reg.begin_task(gen, current_task=t)
        gen.add_task()
        mem.begin_task(t)
        for _ in range(40):
            out = mem.step(x, t)
        if t == 0:
            w0 = [w.detach().clone() for w in mem.protection.weights([0])[0]]
        mem.end_task(t)
    assert out["penalty"] > 0
    drift = sum((a - b).pow(2).sum() for a, b in zip(mem.protection.weights([0])[0], w0)).item()
    moved = sum((a - b).pow(2).sum() for a, b in zip(mem.protection.weights([1])[0], w0)).item()
    assert drift < 0.05 * moved, (drift, moved)



def _shared_hnet_run(data_root, beta: float):
    """A tiny two-digit DGM run with one hypernetwork for generator and classifier head; returns the
    method, the accuracy matrix and how far task 0's generator weights moved during task 1."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from hyperdgm.data import build_benchmark
    from hyperdgm.methods import build_method
    from hyperdgm.scenarios import make_scenario
    from hyperdgm.trainer import Trainer

    torch.manual_seed(0)
    bench = build_benchmark("cil_mnist", str(data_root), n_tasks=2, train_limit=64, test_limit=40, pad=32)
    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "method" / "dgm.yaml"))
    cfg["shared_hnet"] = True
    cfg["memory"].update(protection="hnet", ngf=4, beta=beta)
    cfg["memory"]["acgan"].update(ndf=8, d_norm="none")
    cfg["memory"]["hnet"].update(chunk_size=4000)
    method = build_method(cfg)
    kept: dict = {}
    end_task = method.end_task

    def keep(task):
        end_task(task)
        if task.id == 0:
            kept["w0"] = [w.detach().clone() for w in method.memory.protection.weights([0])[0]]

    method.end_task = keep
    trainer = Trainer(method, bench, make_scenario("cil", bench.n_classes_per_task),
                      cfg={"iters_per_task": 30, "batch_size": 32, "progress": False, "checkpoint": False})
    R = trainer.fit().R
    after = method.memory.protection.weights([0])[0]
    return method, R, sum((a - b).pow(2).sum() for a, b in zip(after, kept["w0"])).item()


def test_dgm_with_one_hypernetwork_for_generator_and_classifier(data_root, tmp_path):
    """shared_hnet: one hypernetwork generates the AC-GAN's generator and the classifier head; task 0's
    generator weights are kept by the output regularizer (without it they drift), the hypernetwork is
    counted once, the classifier learns, and resume reproduces the uninterrupted run."""
    method, R, kept = _shared_hnet_run(data_root, beta=1.0)
    _, _, free = _shared_hnet_run(data_root, beta=0.0)
    assert kept < 0.05 * free, (kept, free)
    counts = method.param_counts()
    assert counts["hnet"] > 0 and counts["memory_generator_trainable"] < counts["hnet"]
    assert [t.shape for t in method._head(1)] == [torch.Size([2, 8 * 4 * 16]), torch.Size([2])]  # 2 classes seen
    assert R[0, 0] > 90.0  # one digit: the generated head separates it from nothing, but must score it
    over = ["benchmark.n_tasks=2", "benchmark.train_limit=64", "benchmark.test_limit=40", "trainer.iters_per_task=6",
            "method.shared_hnet=true", "method.memory.protection=hnet", "method.memory.hnet.chunk_size=4000"]
    full = run_experiment(_cfg(data_root, tmp_path, *over), tmp_path / "full")
    run_experiment(_cfg(data_root, tmp_path, *over, "trainer.stop_after=1"), tmp_path / "part")
    resumed = run_experiment(_cfg(data_root, tmp_path, *over, f"resume={tmp_path / 'part'}"), tmp_path / "x")
    assert np.array_equal(full.R, resumed.R, equal_nan=True)
    with pytest.raises(ValueError, match="memory.protection=hnet"):
        run_experiment(_cfg(data_root, tmp_path, *over[:4], "method.shared_hnet=true",
                            "method.memory.protection=dgm_w"), tmp_path / "bad")


@pytest.mark.parametrize("steps", ["balanced", "per_class"])
def test_classifier_steps_per_iteration(data_root, steps):
    """balanced: one classifier step on the real batch and n_replay generated samples split over the past
    classes; per_class (the official code): t+1 steps of the real batch's size, each class as often as the real one."""
    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.methods.dgm import DGM
    from hyperdgm.scenarios import make_scenario

    bench = build_benchmark("cil_mnist", data_root, n_tasks=3, train_limit=16, test_limit=8, pad=32)
    m = DGM({"memory": {**TINY_DGM, "protection": "none"}, "classifier_steps": steps, "n_replay": 8,
             "paper_eval_every": 0})
    m.setup(bench, make_scenario("cil", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    calls: list[tuple[int, list[int], bool]] = []
    real_step = m.memory.model.classifier_step

    def spy(x, y, n_cls, w=None):
        calls.append((x.shape[0], torch.bincount(y, minlength=3).tolist(), w is not None))
        return real_step(x, y, n_cls, w)

    m.memory.model.classifier_step = spy
    for t in range(3):
        m.plan_task(1, 6)
        m.begin_task(bench.tasks[t])
        x, y = bench.tasks[t].batch("train", torch.arange(6))
        calls.clear()
        m.step(x, y, t)
        m.end_task(bench.tasks[t])
        if t == 0:
            assert calls == [(6, [6, 0, 0], False)]
        elif steps == "balanced":  # 6 real + 8 generated over the t past classes, weighted 1/(t+1) : t/(t+1)
            assert len(calls) == 1 and calls[0][0] == 6 + 8 and calls[0][2]
            assert calls[0][1][t] == 6 and sum(calls[0][1][:t]) == 8
        else:  # t+1 unweighted steps of 6, every seen class 6 times in all
            assert [c[0] for c in calls] == [6] * (t + 1) and not any(c[2] for c in calls)
            totals = [sum(c[1][k] for c in calls) for k in range(3)]
            assert totals[: t + 1] == [6] * (t + 1)


def test_last_a_n_paper_point_is_the_end_of_task_accuracy_in_bf16(data_root, tmp_path):
    """The last evaluation point of a task scores the model the trainer scores after it, in bf16 runs too (the
    point is taken inside a training step, under its autocast)."""
    from mlflow.tracking import MlflowClient

    over = ["benchmark.n_tasks=2", "benchmark.train_limit=64", "benchmark.test_limit=60", "benchmark.val_size=10",
            "trainer.iters_per_task=4", "method.paper_eval_every=0", "trainer.precision=bf16",
            "method.memory.protection=dgm_a"]
    r = run_experiment(quick_cfg(data_root, tmp_path, *RUN[:4], *RUN[5:], *over), tmp_path / "bf16")
    hist = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(r.run_id, "paper.test_acc")
    assert len(hist) == 2
    assert [round(m.value, 6) for m in hist] == [round(float(np.nanmean(r.R[t, : t + 1])), 6) for t in range(2)]
