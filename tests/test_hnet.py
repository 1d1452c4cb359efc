"""Tests of the hypernetwork core (hyperdgm.hnet)."""
from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hypnettorch.mnets import MLP
from hyperdgm.hnet import OutputRegularizer, WeightGenerator, adam_lookahead, trainable_parameters

def _tiny(n_tasks: int = 3, seed: int = 0) -> WeightGenerator:
    torch.manual_seed(seed)
    return WeightGenerator([[3, 2], [3]], chunk_size=None, hidden=(8,), task_emb_size=4, n_tasks=n_tasks)


def _hand_penalty(gen: WeightGenerator, targets: torch.Tensor, beta: float, ids: list[int]) -> torch.Tensor:
    """beta/|ids| * sum_k ||gen(k) - W_k*||^2 using one unbatched forward per task."""
    total = torch.zeros(())
    for k in ids:
        w = torch.cat([t.reshape(-1) for t in gen(k)])
        total = total + ((w - targets[k]) ** 2).sum()
    return beta / len(ids) * total


def test_regularizer_matches_hand_computation():
    gen = _tiny(n_tasks=2)
    reg = OutputRegularizer(0.3)
    reg.begin_task(gen)  # tasks 0, 1 are past
    gen.add_task()
    assert reg.n_past == 2
    torch.manual_seed(1)
    known = torch.randn(2, 9)
    reg.targets = known.clone()
    got = reg.penalty(gen)
    assert got.dim() == 0
    torch.testing.assert_close(got, _hand_penalty(gen, known, 0.3, [0, 1]))
    # explicit formula beta/(t-1) * sum of squared differences, all written out
    w0 = torch.cat([gen(0)[0].reshape(-1), gen(0)[1]])
    w1 = torch.cat([gen(1)[0].reshape(-1), gen(1)[1]])
    manual = 0.3 / 2 * (((w0 - known[0]) ** 2).sum() + ((w1 - known[1]) ** 2).sum())
    torch.testing.assert_close(got, manual)
    # lookahead: evaluated at theta + delta == a copy whose weights were shifted by delta
    delta = [0.1 * torch.randn_like(p) for p in gen.hnet_parameters()]
    shifted = copy.deepcopy(gen)
    with torch.no_grad():
        for p, d in zip(shifted.hnet_parameters(), delta):
            p.add_(d)
    torch.testing.assert_close(reg.penalty(gen, delta=delta), _hand_penalty(shifted, known, 0.3, [0, 1]))
    assert not torch.allclose(reg.penalty(gen, delta=delta), got)
    # right after the snapshot the penalty is zero; with no past tasks it is 0.
    reg.begin_task(gen, current_task=2)
    assert reg.penalty(gen).abs().item() < 1e-10
    first = OutputRegularizer(1.0)
    first.begin_task(_tiny(n_tasks=0))
    assert first.penalty(_tiny(n_tasks=1)).item() == 0.0


def test_subsampled_penalty_is_unbiased():
    gen = _tiny(n_tasks=5)
    torch.manual_seed(3)
    known = torch.randn(5, 9)
    full = OutputRegularizer(0.7)
    sub = OutputRegularizer(0.7, tasks_per_step=2)
    for r in (full, sub):
        r.begin_task(gen)
        r.targets = known.clone()
    full_val = full.penalty(gen)
    per_subset = torch.stack([_hand_penalty(gen, known, 0.7, list(s)) for s in itertools.combinations(range(5), 2)])
    torch.testing.assert_close(per_subset.mean(), full_val)  # exact expectation over all subsets
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = torch.stack([sub.penalty(gen, generator=g) for _ in range(2000)])
    # every draw is exactly one of the subset values, and all subsets occur
    dist = (draws[:, None] - per_subset[None, :]).abs()
    assert dist.min(dim=1).values.max().item() < 1e-5 * full_val.item()
    assert len(set(dist.argmin(dim=1).tolist())) == 10
    assert abs(draws.mean().item() - full_val.item()) < 0.02 * full_val.item()


def test_online_targets_equal_stored_targets():
    gen = _tiny(n_tasks=4)
    stored = OutputRegularizer(0.5)
    online = OutputRegularizer(0.5, online_targets=True)
    stored.begin_task(gen)
    online.begin_task(gen)
    assert online.targets is None and online.frozen is not None
    cur = gen.add_task()
    opt = torch.optim.Adam(trainable_parameters(gen, cur), lr=1e-2)
    for _ in range(5):  # move the generator so the penalty is non-zero
        opt.zero_grad()
        torch.cat([w.reshape(-1) for w in gen(cur)]).pow(2).sum().backward()
        opt.step()
    a, b = stored.penalty(gen), online.penalty(gen)
    assert a.item() > 1e-4
    torch.testing.assert_close(a, b)
    delta = [0.05 * torch.randn_like(p) for p in gen.hnet_parameters()]
    torch.testing.assert_close(stored.penalty(gen, delta=delta), online.penalty(gen, delta=delta))
    stored.tasks_per_step = online.tasks_per_step = 2
    for seed in range(3):
        torch.testing.assert_close(stored.penalty(gen, generator=torch.Generator().manual_seed(seed)),
                                   online.penalty(gen, generator=torch.Generator().manual_seed(seed)))
    # round trip through state_dict keeps the online targets
    online.tasks_per_step = None
    restored = OutputRegularizer(0.0)
    restored.load_state_dict(online.state_dict())
    torch.testing.assert_close(restored.penalty(gen), b)


def _teacher_data(seed: int, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=g)
    w = torch.randn(20, generator=g)
    return x, (x @ w > 0).long()


def _continual_drift(beta: float) -> tuple[float, float]:
    """Train task 0, then task 1 with the output regulariser; return (relative drift of W_0, task-0 acc)."""
    torch.manual_seed(0)
    mnet = MLP(n_in=20, n_out=2, hidden_layers=(20,), no_weights=True, verbose=False)
    gen = WeightGenerator(mnet, chunk_size=200, chunk_emb_size=8, hidden=(32, 32), task_emb_size=8)
    reg = OutputRegularizer(beta, lookahead=True)
    data = [_teacher_data(1), _teacher_data(2)]
    for task, (x, y) in enumerate(data):
        reg.begin_task(gen)
        if task == 1:
            w0_star = gen.flat([0]).detach().clone()
        tid = gen.add_task()
        opt = torch.optim.Adam(trainable_parameters(gen, tid), lr=1e-3)
        for _ in range(100):
            opt.zero_grad()
            F.cross_entropy(mnet.forward(x, weights=gen(tid)), y).backward()
            if reg.n_past:
                delta = adam_lookahead(opt, gen.hnet_parameters())
                reg.penalty(gen, delta=delta).backward()
            opt.step()
    with torch.no_grad():
        w0 = gen.flat([0])
        x0, y0 = data[0]
        acc0 = (mnet.forward(x0, weights=gen(0)).argmax(1) == y0).float().mean().item()
    return ((w0 - w0_star).norm() / w0_star.norm()).item(), acc0


def test_regularizer_protects_previous_task_weights():
    drift_reg, acc_reg = _continual_drift(0.05)
    drift_free, _ = _continual_drift(0.0)
    assert drift_free > 0.1, drift_free  # without protection task-0 weights move a lot
    assert drift_reg < 0.02, drift_reg
    assert drift_reg < 0.05 * drift_free
    assert acc_reg > 0.85


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.Adam(p, lr=1e-2),
    lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=1e-2, amsgrad=True),
    lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
])
def test_adam_lookahead_equals_actual_step(make_opt):
    gen = _tiny(n_tasks=1)
    params = trainable_parameters(gen, 0)
    opt = make_opt(params)
    for it in range(4):  # step 1 checks the empty-state case, later ones use the state
        opt.zero_grad()
        (torch.cat([w.reshape(-1) for w in gen(0)]) - 1.0).pow(2).sum().backward()
        pred = adam_lookahead(opt, params)
        before = [p.detach().clone() for p in params]
        opt.step()
        for p, b, d in zip(params, before, pred):
            assert not d.requires_grad
            torch.testing.assert_close(p.detach() - b, d, rtol=1e-4, atol=1e-7)
        assert sum(d.abs().sum().item() for d in pred) > 0


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.Adam(p, lr=1e-3),
                                      lambda p: torch.optim.AdamW(p, lr=1e-3, betas=(0.8, 0.99), weight_decay=0.1)])
def test_fused_lookahead_of_a_large_tensor_equals_the_step_and_the_eager_form(make_opt, monkeypatch):
    from hyperdgm.hnet import fused

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(fused.FUSE_MIN // 16, 16).T.contiguous().T)  # column-major, as the hnet's
    small = torch.nn.Parameter(torch.randn(10))
    opt = make_opt([w, small])
    calls = []
    real = fused.adam_change
    monkeypatch.setattr(fused, "adam_change", lambda *a, **k: calls.append(a[1].numel()) or real(*a, **k))
    for it in range(3):
        opt.zero_grad()
        ((w - 1.0).pow(2).sum() + small.pow(2).sum() * it).backward()
        fused.set_mode("off")
        eager = adam_lookahead(opt, [w, small])
        fused.set_mode("auto")
        pred = adam_lookahead(opt, [w, small])
        before = w.detach().clone()
        opt.step()
        torch.testing.assert_close(pred[0], eager[0], rtol=1e-5, atol=1e-9)  # the same arithmetic, one loop
        # the step read back as a difference of weights up to ~5 carries their rounding (ulp(4) = 4.8e-7)
        torch.testing.assert_close(w.detach() - before, pred[0], rtol=1e-4, atol=5e-7)
    assert fused.FUSE_MIN in calls and not fused._state["failed"]  # the large tensor went through the kernel


def test_deterministic_flag_set_without_the_compiler_and_handed_to_it_before_compiling():
    """A run sets torch's deterministic flag without importing torch._inductor (1.5 s of every start); the fused
    kernel passes the flag on to the compiler before it compiles. A fresh interpreter: this one may have both."""
    import subprocess
    import sys

    code = (
        "import sys, torch, hyperdgm.experiment as e\n"
        "e._deterministic_algorithms()\n"
        "assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "assert 'torch._inductor' not in sys.modules, 'the compiler was imported'\n"
        "from hyperdgm.hnet import fused\n"
        "fused._kernel()\n"
        "import torch._inductor.config as ic\n"
        "assert ic.deterministic is True\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_fused_lookahead_falls_back_to_eager_with_one_warning_when_compiling_fails(monkeypatch, caplog):
    from hyperdgm.hnet import fused

    def broken(*a, **k):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(fused, "_state", {"mode": "auto", "kernel": broken, "failed": False})
    w = torch.nn.Parameter(torch.zeros(fused.FUSE_MIN))
    opt = torch.optim.Adam([w], lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        (w - 1.0).pow(2).sum().backward()
        pred = adam_lookahead(opt, [w])
        before = w.detach().clone()
        opt.step()
        torch.testing.assert_close(w.detach() - before, pred[0], rtol=1e-4, atol=1e-7)
    assert fused._state["failed"]
    assert [r.message for r in caplog.records].count(next(r.message for r in caplog.records)) == 1
    assert "no C++ compiler" in caplog.text
    with pytest.raises(ValueError, match="trainer.fuse must be one of auto, off"):
        fused.set_mode("always")


def _mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from hyperdgm.data.readers import read_mnist

    x, y = read_mnist(root, train)
    return torch.as_tensor(x), torch.as_tensor(y)


def _two_digits(root: Path, train: bool, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _mnist(root, train)
    keep = (y == 3) | (y == 5)
    x, y = x[keep][:n].float() / 255.0, (y[keep][:n] == 5).long()
    return x, y


def test_plain_module_on_mnist_through_functional(data_root):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 2))
    gen = WeightGenerator(net, chunk_size=1000, chunk_emb_size=16, hidden=(32, 32), task_emb_size=16)
    gen.add_task()
    tid = gen.add_task()  # train task 1; task 0's embedding must receive no gradient
    xtr, ytr = _two_digits(data_root, True, 1000)
    xte, yte = _two_digits(data_root, False, 1000)
    opt = torch.optim.Adam(trainable_parameters(gen, tid), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(150):
        idx = torch.randint(0, len(xtr), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(gen.functional(net, tid, xtr[idx]), ytr[idx]).backward()
        if step == 0:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.hnet_parameters())
            assert gen.task_embedding(tid).grad.abs().sum() > 0
            assert gen.task_embedding(0).grad is None
            assert all(p.grad is None for p in net.parameters())  # module's own params unused
        opt.step()
    with torch.no_grad():
        acc = (gen.functional(net, tid, xte).argmax(1) == yte).float().mean().item()
    assert acc > 0.9, acc


def _bn_two_tasks(data_root: Path, per_task_buffers: bool):
    """A BN module trained through the generator on two tasks (3 vs 5, then the same digits inverted:
    other input statistics); returns the generator, the module and task 0's test data, outputs and
    weights right after task 0."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 2))
    gen = WeightGenerator(net, chunk_size=2000, chunk_emb_size=16, hidden=(32,), task_emb_size=16,
                          per_task_buffers=per_task_buffers)
    reg = OutputRegularizer(beta=0.05)
    xtr, ytr = _two_digits(data_root, True, 2000)
    xte, yte = _two_digits(data_root, False, 1000)
    g = torch.Generator().manual_seed(0)
    after0 = None
    for task, f in enumerate((lambda x: x, lambda x: 1.0 - x)):
        reg.begin_task(gen, current_task=task)
        gen.add_task()
        opt = torch.optim.Adam(trainable_parameters(gen, task), lr=1e-3)
        net.train()
        for _ in range(150):
            idx = torch.randint(0, len(xtr), (64,), generator=g)
            opt.zero_grad()
            loss = F.cross_entropy(gen.functional(net, task, f(xtr[idx])), ytr[idx])
            if reg.active:
                loss = loss + reg.penalty(gen)
            loss.backward()
            opt.step()
        if task == 0:
            net.eval()
            with torch.no_grad():
                w0 = [w.detach().clone() for w in gen(0)]
                after0 = gen.functional(net, 0, xte, weights=w0)
    net.eval()
    return gen, net, xte, yte, w0, after0


def test_plain_module_batch_norm_statistics_kept_per_task(data_root, tmp_path):
    """Task 1's training leaves task 0's running statistics, hence its outputs and accuracy, as they were."""
    gen, net, xte, yte, w0, after0 = _bn_two_tasks(data_root, per_task_buffers=True)
    with torch.no_grad():
        assert torch.equal(gen.functional(net, 0, xte, weights=w0), after0)  # same weights + own stats: bit-identical
        acc0 = (after0.argmax(1) == yte).float().mean().item()
        acc_now = (gen.functional(net, 0, xte).argmax(1) == yte).float().mean().item()
    assert acc0 > 0.9 and acc_now > acc0 - 0.01, (acc0, acc_now)
    s0, s1 = gen.task_buffers_of(0), gen.task_buffers_of(1)
    assert list(s0) == ["2.running_mean", "2.running_var", "2.num_batches_tracked"]
    assert int(s0["2.num_batches_tracked"]) == 150 and int(s1["2.num_batches_tracked"]) == 150
    assert not torch.allclose(s0["2.running_mean"], s1["2.running_mean"])
    assert torch.equal(net[2].running_mean, torch.zeros(32))  # the module's own buffers are never touched
    gen.save(str(tmp_path / "g.pt"))
    loaded = WeightGenerator.load(str(tmp_path / "g.pt"))
    with torch.no_grad():
        assert torch.equal(loaded.functional(net, 0, xte), gen.functional(net, 0, xte))


def test_plain_module_batch_norm_shared_statistics_drift(data_root):
    """The counterfactual: with the module's own (shared) buffers, task 1 moves task 0's outputs."""
    gen, net, xte, yte, w0, after0 = _bn_two_tasks(data_root, per_task_buffers=False)
    with torch.no_grad():
        out = gen.functional(net, 0, xte, weights=w0)
    assert not torch.allclose(out, after0, atol=1e-3)
    acc = [(o.argmax(1) == yte).float().mean().item() for o in (after0, out)]
    assert acc[1] < acc[0] - 0.01, acc  # measured: 97.5% -> 93.5%


def test_two_targets_split_and_param_counts():
    torch.manual_seed(0)
    mnet = MLP(n_in=5, n_out=3, hidden_layers=(4,), no_weights=True, verbose=False)
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    gen = WeightGenerator([mnet, conv], chunk_size=50, chunk_emb_size=8, hidden=(16,), task_emb_size=6, n_tasks=2)
    conv_shapes = [list(p.shape) for p in conv.parameters()]
    assert gen.target_shapes == [[list(s) for s in mnet.param_shapes], conv_shapes]
    row = gen.flat([1])[0]
    n_mnet = sum(math.prod(s) for s in mnet.param_shapes)
    n_conv = sum(p.numel() for p in conv.parameters())
    assert row.numel() == n_mnet + n_conv
    w_mnet, w_conv = gen.split(row)
    assert [list(w.shape) for w in w_mnet] == [list(s) for s in mnet.param_shapes]
    assert [list(w.shape) for w in w_conv] == conv_shapes
    torch.testing.assert_close(torch.cat([w.reshape(-1) for w in w_mnet]), row[:n_mnet])
    torch.testing.assert_close(torch.cat([w.reshape(-1) for w in w_conv]), row[n_mnet:])
    fw = gen(1)
    for a, b in zip(fw[0] + fw[1], w_mnet + w_conv):
        torch.testing.assert_close(a, b)
    assert mnet.forward(torch.randn(7, 5), weights=fw[0]).shape == (7, 3)
    assert gen.functional(conv, 1, torch.randn(7, 2, 6, 6), target_index=1).shape == (7, 2)
    counts = gen.param_counts()
    n_hnet = sum(p.numel() for p in gen.hnet.parameters())  # unique params incl. chunk embeddings
    assert counts["hnet"] == n_hnet and counts["target"] == n_mnet + n_conv
    assert counts["task_embeddings"] == 2 * 6
    assert counts["compression_ratio"] == n_hnet / (n_mnet + n_conv)
    assert counts["compression_ratio_with_embeddings"] == (n_hnet + 12) / (n_mnet + n_conv)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    gen = WeightGenerator(net, chunk_size=16, chunk_emb_size=4, hidden=(10, 10), task_emb_size=5,
                          activation="elu", n_tasks=3)
    path = tmp_path / "gen.pt"
    gen.save(str(path))
    raw = torch.load(path, weights_only=True)
    assert raw["n_tasks"] == 3 and raw["kwargs"]["activation"] == "elu"
    loaded = WeightGenerator.load(str(path))
    assert loaded.n_tasks == 3 and loaded.target_shapes == gen.target_shapes
    assert torch.equal(loaded.flat([0, 1, 2]), gen.flat([0, 1, 2]))
    x = torch.randn(3, 4)
    assert torch.equal(loaded.functional(net, 2, x), gen.functional(net, 2, x))
    fresh = WeightGenerator(net, chunk_size=16, chunk_emb_size=4, hidden=(10, 10), task_emb_size=5,
                            activation="elu", n_tasks=3)
    assert not torch.equal(fresh.flat([0]), gen.flat([0]))  # the comparison above is not trivial



def test_output_weight_stored_transposed_through_training_copies_and_checkpoints(tmp_path):
    """The output layer's weight is a contiguous ``[H, chunk_size]`` parameter (fused Adam then copies nothing)
    seen as ``[chunk_size, H]``: it generates what hypnettorch generates with the same weights, the layout
    survives Adam, ``frozen_copy`` and save / load, and a state dict in hypnettorch's layout loads into it."""
    torch.manual_seed(0)
    gen = WeightGenerator([[40, 30]], chunk_size=400, chunk_emb_size=4, hidden=(6, 5), task_emb_size=3, n_tasks=2)
    i = gen._layout()["weights"][-1]
    p = gen.hnet_parameters()[i]
    assert p.shape == (5, 400) and p.is_contiguous()
    w = gen.output_layer()[0]
    assert w.shape == (400, 5) and w.stride() == (1, 400) and w.data_ptr() == p.data_ptr()
    ref = gen.hnet.forward(cond_input=gen._embeddings([0, 1]), weights=gen.hypnettorch_weights(), ret_format="flattened")
    assert torch.equal(gen.flat([0, 1]), ref)
    opt = torch.optim.Adam(gen.hnet_parameters(), lr=1e-2, fused=True)
    for _ in range(3):
        opt.zero_grad()
        gen.flat([0, 1]).pow(2).sum().backward()
        assert p.grad.shape == p.shape and p.grad.is_contiguous()
        opt.step()
    assert gen.hnet_parameters()[i] is p and p.is_contiguous()
    assert gen.frozen_copy().hnet_parameters()[i].is_contiguous()
    old = {k: (v.T.contiguous() if v.data_ptr() == p.data_ptr() else v) for k, v in gen.state_dict().items()}
    assert any(v.shape == (400, 5) for v in old.values())  # a checkpoint written in hypnettorch's layout
    for sd in (old, gen.state_dict()):
        fresh = WeightGenerator([[40, 30]], chunk_size=400, chunk_emb_size=4, hidden=(6, 5), task_emb_size=3, n_tasks=2)
        fresh.load_state_dict(sd)
        assert fresh.hnet_parameters()[i].shape == (5, 400) and torch.equal(fresh.flat([0, 1]), gen.flat([0, 1]))
    gen.save(str(tmp_path / "g.pt"))
    loaded = WeightGenerator.load(str(tmp_path / "g.pt"))
    assert loaded.hnet_parameters()[i].is_contiguous() and torch.equal(loaded.flat([0, 1]), gen.flat([0, 1]))


# ---------------------------------------------------------------- functional forward / fast penalty
_GEN_KWARGS = [
    dict(chunk_size=37, chunk_emb_size=5, hidden=(9, 7), activation="elu", task_emb_size=4),   # truncated last chunk
    dict(chunk_size=30, chunk_emb_size=3, hidden=(6,), activation="relu", task_emb_size=5),    # exact chunks (120 = 4*30)
    dict(chunk_size=None, hidden=(8, 8), activation="tanh", task_emb_size=4),                   # unchunked HMLP
    dict(chunk_size=50, chunk_emb_size=4, hidden=(6,), activation="sigmoid", task_emb_size=3, use_bias=False),
    dict(chunk_size=200, chunk_emb_size=4, hidden=(6,), activation="relu", task_emb_size=3),   # one chunk, rows unused
]


def _gen_120(kw: dict, n_tasks: int = 4, seed: int = 0) -> WeightGenerator:
    torch.manual_seed(seed)
    return WeightGenerator([[10, 11], [10]], n_tasks=n_tasks, **kw)  # 120 target weights


@pytest.mark.parametrize("kw", _GEN_KWARGS)
def test_functional_forward_equals_hypnettorch(kw):
    gen = _gen_120(kw)
    delta = [0.1 * torch.randn_like(p) for p in gen.hnet_parameters()]
    for d in (None, delta):
        ref = gen.hnet.forward(cond_input=gen._embeddings([2, 0, 3]), weights=gen.hypnettorch_weights(d),
                               ret_format="flattened")
        assert torch.equal(gen.flat([2, 0, 3], delta=d), ref)


def _drifted(kw: dict, online: bool, tasks_per_step=None) -> tuple[WeightGenerator, OutputRegularizer, list]:
    gen = _gen_120(kw)
    reg = OutputRegularizer(0.3, tasks_per_step=tasks_per_step, online_targets=online)
    reg.begin_task(gen)
    assert reg.has_snapshot
    cur = gen.add_task()
    opt = torch.optim.Adam(trainable_parameters(gen, cur), lr=3e-2)
    for _ in range(3):  # the generator moves away from the snapshot
        opt.zero_grad()
        (gen.flat([cur]) - 0.5).pow(2).sum().backward()
        opt.step()
    delta = [0.05 * torch.randn_like(p) for p in gen.hnet_parameters()]
    return gen, reg, delta


def _value_and_grads(gen, reg, fast, delta=None, seed=None):
    for p in gen.parameters():
        p.grad = None
    g = None if seed is None else torch.Generator().manual_seed(seed)
    val = reg.penalty(gen, delta=delta, generator=g, fast=fast)
    val.backward()
    return val.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in gen.parameters()]


@pytest.mark.parametrize("kw", _GEN_KWARGS)
@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("tps", [None, 2])
def test_fast_penalty_equals_direct(kw, online, tps):
    gen, reg, delta = _drifted(kw, online, tps)
    for d in (None, delta):
        for seed in (0, 1):
            vf, gf = _value_and_grads(gen, reg, True, d, seed)
            vd, gd = _value_and_grads(gen, reg, False, d, seed)
            assert vd.item() > 1e-3
            torch.testing.assert_close(vf, vd, rtol=1e-5, atol=0)
            for a, b in zip(gf, gd):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * max(b.abs().max().item(), 1e-12))
    # ... and the direct form is the hand computation on a shifted copy
    shifted = copy.deepcopy(gen)
    with torch.no_grad():
        for p, d in zip(shifted.hnet_parameters(), delta):
            p.add_(d)
    targets = reg.targets if reg.targets is not None else reg.frozen.flat(list(range(reg.n_past)))
    if tps is None:
        torch.testing.assert_close(reg.penalty(gen, delta=delta), _hand_penalty(shifted, targets, 0.3, [0, 1, 2, 3]))


@pytest.mark.parametrize("threads", [2, 3])
def test_gram_products_split_over_threads_equal_the_plain_products(threads, monkeypatch):
    """The fast penalty's Gram products run as one slice of the chunk per thread (3 threads: a remainder too):
    the products, and the penalty's value and gradients, equal the plain ones and the direct form."""
    from hyperdgm.hnet import products, regularizer as R

    monkeypatch.setattr(products, "MIN_SPLIT", 4)  # split the tests' small chunks too
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        db, ab = torch.randn(7, 1001, dtype=torch.float64), torch.randn(7, 1001, dtype=torch.float64)
        g_dd, g_da = R._grams(db, ab)
        torch.testing.assert_close(g_dd, db @ db.T)
        torch.testing.assert_close(g_da, db @ ab.T)
        gen, reg, delta = _drifted(_GEN_KWARGS[0], online=False)
        split_calls = []
        monkeypatch.setattr(products.torch, "bmm", lambda *a, **k: split_calls.append(1) or torch.matmul(*a, **k))
        vf, gf = _value_and_grads(gen, reg, True, delta)
        assert split_calls  # the split path ran
        vd, gd = _value_and_grads(gen, reg, False, delta)
    finally:
        torch.set_num_threads(old)
    torch.testing.assert_close(vf, vd, rtol=1e-5, atol=0)
    for a, b in zip(gf, gd):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * max(b.abs().max().item(), 1e-12))


def test_fast_penalty_precision_against_float64():
    """Gradients of the fast form are as accurate as the direct float32 form (reference: float64)."""
    kw = dict(chunk_size=700, chunk_emb_size=8, hidden=(25, 25), activation="elu", task_emb_size=24)
    torch.manual_seed(0)
    gen = WeightGenerator([[40, 50], [50]], n_tasks=3, **kw)
    reg = OutputRegularizer(0.01)
    reg.begin_task(gen)
    cur = gen.add_task()
    opt = torch.optim.Adam(trainable_parameters(gen, cur), lr=1e-3)
    opt.zero_grad()
    gen.flat([cur]).pow(2).sum().backward()
    delta = adam_lookahead(opt, gen.hnet_parameters())  # first step after the snapshot: small residuals
    ref_gen = copy.deepcopy(gen).double()
    ref_reg = OutputRegularizer(0.01, fast=False)
    ref_reg.n_past, ref_reg.targets = reg.n_past, reg.targets.double()
    vr, gr = _value_and_grads(ref_gen, ref_reg, False, [d.double() for d in delta])
    vf, gf = _value_and_grads(gen, reg, True, delta)
    assert abs(vf.item() - vr.item()) < 1e-4 * vr.item()
    for a, r in zip(gf, gr):
        if r.norm() > 0:
            assert ((a.double() - r).norm() / r.norm()).item() < 1e-3


def test_snapshot_survives_state_dict_and_is_dropped_by_new_targets():
    gen, reg, delta = _drifted(_GEN_KWARGS[0], online=False)
    restored = OutputRegularizer(0.0)
    restored.load_state_dict(reg.state_dict())
    assert restored.has_snapshot and restored.fast
    torch.testing.assert_close(restored.penalty(gen, delta=delta), reg.penalty(gen, delta=delta))
    restored.targets = restored.targets.to("cpu")  # same values: the snapshot stays
    assert restored.has_snapshot
    restored.targets = torch.zeros_like(restored.targets)  # other targets: back to the direct form
    assert not restored.has_snapshot
    torch.testing.assert_close(restored.penalty(gen), 0.3 / 4 * gen.flat([0, 1, 2, 3]).pow(2).sum())
    old = reg.state_dict()
    del old["snapshot"], old["fast"]  # dicts written before the fast form
    restored.load_state_dict(old)
    assert not restored.has_snapshot
    torch.testing.assert_close(restored.penalty(gen, delta=delta), reg.penalty(gen, delta=delta))
    online = _drifted(_GEN_KWARGS[0], online=True)[1]
    state = online.state_dict()
    del state["snapshot"]
    restored.load_state_dict(state)
    assert restored.has_snapshot  # rebuilt from the frozen generator
