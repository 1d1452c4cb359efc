"""Online EWC and SI (hyperdgm.regularizers) against hand computations; on a classifier, a generator and
short real split-MNIST runs; the three-scenarios DGR (unconditional memory, every previous head in CL1)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hyperdgm.experiment import run_experiment
from hyperdgm.hooks import protected_step
from hyperdgm.methods import build_method
from hyperdgm.methods.replay import REPLAY_DEFAULTS, distillation
from hyperdgm.regularizers import OnlineEWC, SynapticIntelligence, empirical_fisher, mlp_fisher, per_sample_fisher
from hyperdgm.scenarios import make_scenario

from .helpers import assert_resume_equals_uninterrupted, quick_cfg


class FakeTask:
    """The part of a benchmark Task the regularizers read: a training split and ``batch``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, task_id: int = 0) -> None:
        self.x, self.y, self.id = x, y, task_id
        self.train = x  # len() = number of samples
        self.normalize, self.dataset = "unit", "mnist"
        self.input_shape = tuple(x.shape[1:])
        self.n_classes = 2

    def batch(self, split, idx=None, **_):
        return (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])


def hand_fisher_linear(W: torch.Tensor, b: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over samples of (dNLL/dW)^2, (dNLL/db)^2 of a linear softmax classifier at its predicted label:
    dNLL/dz = p - onehot(argmax p), dNLL/dW = (p - e) x^T."""
    FW, Fb = torch.zeros_like(W), torch.zeros_like(b)
    for x in X:
        z = W @ x + b
        p = torch.exp(z - z.max()) / torch.exp(z - z.max()).sum()
        e = torch.zeros_like(p)
        e[int(z.argmax())] = 1.0
        g = p - e
        FW += torch.outer(g, x) ** 2
        Fb += g**2
    return FW / len(X), Fb / len(X)


def test_fisher_estimators_match_hand_computation():
    torch.manual_seed(0)
    W, b = torch.randn(3, 4, requires_grad=True), torch.randn(3, requires_grad=True)
    X = torch.randn(5, 4)
    FW, Fb = hand_fisher_linear(W.detach(), b.detach(), X)

    def losses():
        for x in X:
            logits = (W @ x + b)[None]
            yield torch.nn.functional.cross_entropy(logits, logits.detach().argmax(1))

    (sW, sb), n = empirical_fisher([W, b], losses())
    assert n == 5
    torch.testing.assert_close(sW / n, FW)
    torch.testing.assert_close(sb / n, Fb)
    (vW, vb), n = per_sample_fisher([W, b], lambda w, x: x @ w[0].T + w[1], [X[:2], X[2:]])  # vmap, two chunks
    torch.testing.assert_close(vW / n, FW)
    torch.testing.assert_close(vb / n, Fb)
    (mW, mb), n = mlp_fisher([W, b], torch.relu, lambda z: z, [X[:3], X[3:]])  # (g^2)^T (x^2), two chunks
    torch.testing.assert_close(mW / n, FW)
    torch.testing.assert_close(mb / n, Fb)


def test_mlp_fisher_equals_one_backward_per_sample():
    """Hidden layers and a sliced head: the batched estimate equals batch-size-1 backward passes."""
    torch.manual_seed(0)
    ws = [torch.randn(5, 4), torch.randn(5), torch.randn(3, 5), torch.randn(3), torch.randn(6, 3), torch.randn(6)]
    ws = [w.requires_grad_(True) for w in ws]
    X = torch.randn(7, 4)

    def net(x):
        h = torch.relu(x @ ws[0].T + ws[1])
        h = torch.relu(h @ ws[2].T + ws[3])
        return (h @ ws[4].T + ws[5])[:, 2:4]

    def losses():
        for x in X:
            logits = net(x[None])
            yield torch.nn.functional.cross_entropy(logits, logits.detach().argmax(1))

    loop, n = empirical_fisher(ws, losses())
    fast, m = mlp_fisher(ws, torch.relu, lambda z: z[:, 2:4], [X[:4], X[4:]])
    assert n == m == 7
    for a, b in zip(loop, fast):
        torch.testing.assert_close(a, b)


def test_classifier_fisher_on_the_cl1_head():
    """The ewc method's Fisher: every training sample, batch size 1, predicted label on the task's own head."""
    torch.manual_seed(0)
    x = torch.rand(6, 1, 2, 2)
    task = FakeTask(x, torch.zeros(6, dtype=torch.long), task_id=1)
    bench = SimpleNamespace(tasks=[task, task], n_tasks=2)
    m = build_method({"name": "ewc", "net": {"arch": "mlp", "hidden": []}, "ewc": {"lambda": 1.0}})
    m.setup(bench, make_scenario("cl1", [2, 2]), torch.device("cpu"), torch.Generator())
    m.n_seen = 2
    W, b = list(m.net.parameters())  # one linear layer 4 -> 4, task 1 reads outputs 2, 3
    FW, Fb = hand_fisher_linear(W.detach()[2:], b.detach()[2:], x.flatten(1))
    (sW, sb), n = m.classifier_fisher(task)
    assert n == 6
    torch.testing.assert_close(sW[2:] / n, FW)
    torch.testing.assert_close(sb[2:] / n, Fb)
    assert sW[:2].abs().sum() == 0 and sb[:2].abs().sum() == 0  # task 0's head plays no part


def test_online_ewc_gamma_decay_and_penalty():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    fishers = iter([torch.tensor([4.0, 2.0]), torch.tensor([1.0, 3.0])])
    ewc = OnlineEWC([p], lambda data, n_max: ([next(fishers) * 2], 2), lam=10.0, gamma=0.5)
    assert not ewc.has_penalty()
    ewc.end_task(0, data="task 0")
    torch.testing.assert_close(ewc.importance[0], torch.tensor([4.0, 2.0]))
    with torch.no_grad():
        p.copy_(torch.tensor([0.0, 5.0]))
    ewc.end_task(1, data="task 1")
    F = torch.tensor([1.0 + 0.5 * 4.0, 3.0 + 0.5 * 2.0])  # F_task + gamma F_old
    torch.testing.assert_close(ewc.importance[0], F)
    torch.testing.assert_close(ewc.anchor[0], torch.tensor([0.0, 5.0]))
    assert ewc.penalty().item() == 0.0  # at the anchor
    with torch.no_grad():
        p.add_(torch.tensor([1.0, -2.0]))
    expect = 0.5 * 10.0 * 0.5 * (F * torch.tensor([1.0, 4.0])).sum()  # lambda/2 * gamma F (p - a)^2 (the code's)
    assert ewc.penalty().item() == pytest.approx(expect.item())


def test_ewc_state_from_before_the_transposed_output_weight_loads():
    """A checkpoint written when the hypernetwork's output weight was stored ``[N, H]`` holds its EWC anchor and
    Fisher in that shape: they load transposed onto today's ``[H, N]`` parameter, other tensors as they are."""
    w, b = torch.nn.Parameter(torch.randn(3, 50)), torch.nn.Parameter(torch.randn(50))
    ewc = OnlineEWC([w, b], lambda data, n_max: ([torch.ones(3, 50), torch.ones(50)], 1), lam=1.0, gamma=1.0)
    old_anchor, old_fisher = [torch.randn(50, 3), torch.randn(50)], [torch.rand(50, 3), torch.rand(50)]
    ewc.set_extra_state({"anchor": old_anchor, "importance": old_fisher})
    assert torch.equal(ewc.anchor[0], old_anchor[0].T) and ewc.anchor[0].is_contiguous()
    assert torch.equal(ewc.importance[0], old_fisher[0].T) and torch.equal(ewc.anchor[1], old_anchor[1])
    expect = 0.5 * ((old_fisher[0].T * (w - old_anchor[0].T) ** 2).sum() + (old_fisher[1] * (b - old_anchor[1]) ** 2).sum())
    assert ewc.penalty().item() == pytest.approx(expect.item(), rel=1e-5)


def test_si_path_integral_matches_hand_computation():
    """SGD on 0.5 |p - t|^2: W = -sum g dp; omega = W / (Delta^2 + eps); task 2's W uses the whole step's gradient."""
    lr, c, eps = 0.1, 2.0, 0.1
    p = torch.nn.Parameter(torch.tensor([0.0, 1.0]))
    si = SynapticIntelligence([p], c=c, epsilon=eps)
    opt = torch.optim.SGD([p], lr=lr)
    targets = [torch.tensor([1.0, -1.0]), torch.tensor([-1.0, 2.0])]
    ph = p.detach().clone()  # the hand-computed trajectory
    omega, anchor = torch.zeros(2), ph.clone()
    for t, tgt in enumerate(targets):
        si.begin_task()
        w = torch.zeros(2)
        for _ in range(5):
            opt.zero_grad()
            loss = 0.5 * (p - tgt).pow(2).sum()
            protected_step(loss, [opt], [si])
            g = (ph - tgt) + (2 * c * omega * (ph - anchor) if t > 0 else 0)
            step = -lr * g
            w -= g * step
            ph = ph + step
        torch.testing.assert_close(p.detach(), ph)
        si.end_task(t)
        omega = omega + w / ((ph - anchor) ** 2 + eps)
        anchor = ph.clone()
        torch.testing.assert_close(si.importance[0], omega)
        torch.testing.assert_close(si.anchor[0], anchor)
    assert si.penalty().item() == 0.0
    with torch.no_grad():
        p.add_(0.5)
    assert si.penalty().item() == pytest.approx((c * omega * 0.25).sum().item())


def _tiny_memory(protection: str, **block):
    from hyperdgm.memory import GenerativeMemory

    cfg = {"model": "vae", "arch": "mlp", "latent_dim": 4, "enc_hidden": [16], "dec_hidden": [16], "cond_dim": 2,
           "protection": protection}
    if block:
        cfg[protection] = block
    return GenerativeMemory(cfg, (1, 4, 4), n_tasks=2)


@pytest.mark.parametrize("protection,block", [("ewc", {"lambda": 1e4}), ("si", {"c": 1e3})])
def test_generator_protection_penalty_zero_at_anchor_and_holds_weights(protection, block):
    torch.manual_seed(0)
    x0, x1 = torch.rand(32, 1, 4, 4) * 0.3, 0.7 + torch.rand(32, 1, 4, 4) * 0.3
    task0 = FakeTask(x0, torch.zeros(32, dtype=torch.long))

    def drift(mem):
        mem.begin_task(0)
        for _ in range(30):
            mem.step(x0, 0)
        mem.end_task(0, task0)
        before = [p.detach().clone() for p in mem.protection.theta_parameters()]
        mem.begin_task(1)
        pen0 = mem.protection.penalty().item() if mem.protection.has_penalty() else None
        for _ in range(30):
            out = mem.step(x1, 1)
        moved = sum((p.detach() - b).pow(2).sum() for p, b in zip(mem.protection.theta_parameters(), before))
        return pen0, float(out["penalty"]), float(moved), mem

    torch.manual_seed(1)
    pen0, pen, moved, mem = drift(_tiny_memory(protection, **block))
    torch.manual_seed(1)
    _, _, moved_free, _ = drift(_tiny_memory("none"))
    assert pen0 == 0.0 and pen > 0.0  # zero at the anchor, positive once the generator moved
    assert moved < 0.5 * moved_free, (moved, moved_free)
    # the importance and anchor travel with the memory's checkpoint
    again = _tiny_memory(protection, **block)
    again.load_checkpoint_state(mem.checkpoint_state())
    assert again.protection.penalty().item() == pytest.approx(mem.protection.penalty().item(), rel=1e-6)


def test_generator_ewc_refuses_a_gan():
    from hyperdgm.memory import GenerativeMemory

    with pytest.raises(ValueError, match="memory.model=vae"):
        GenerativeMemory({"model": "gan", "protection": "ewc"}, (1, 4, 4), n_tasks=2)


def test_dgr_cl1_scores_every_replayed_sample_on_every_previous_head():
    m = build_method({"name": "dgr"})
    m.scenario = make_scenario("cl1", [2, 2, 2])
    m.rcfg = {**REPLAY_DEFAULTS, **m.method_defaults}
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 6), torch.randn(4, 6)
    m.net, m.teacher = (lambda x: student), (lambda x: teacher)
    loss = m.replay_loss(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), task_id=2)
    expect = (distillation(student[:, :2], teacher[:, :2], 2.0) + distillation(student[:, 2:4], teacher[:, 2:4], 2.0)) / 2
    assert loss.item() == pytest.approx(expect.item())
    assert build_method({"name": "dgr_conditional"}).method_defaults["cl1_heads"] == "own"


def test_unconditional_memory_has_one_condition(data_root):
    from hyperdgm.data.benchmarks import build_benchmark
    from hyperdgm.methods.replay import build_memory

    bench = build_benchmark("split_mnist", data_root, n_tasks=3, train_limit=8, test_limit=8)
    mem = build_memory({"conditional": False, "enc_hidden": [8], "dec_hidden": [8], "latent_dim": 4}, bench,
                       torch.device("cpu"))
    assert not mem.conditional and mem.cond_dim == 1
    assert mem.conditions([(0, 3), (2, 2)]).tolist() == [0] * 5
    with pytest.raises(ValueError, match="memory.conditional"):
        build_memory({"conditional": "no"}, bench, torch.device("cpu"))


# Split MNIST CL1 barely forgets at the papers' settings (finetune 97.55%); a large step size and many steps
# per task make finetune forget enough to measure (seeds 42 / 1 / 2: EWC +4 to +7, SI +5 to +12 points on old tasks).
CL1 = ["scenario=cl1", "tracking=none", "benchmark.n_tasks=5", "benchmark.train_limit=1000", "benchmark.test_limit=300",
       "trainer.iters_per_task=600", "trainer.batch_size=32", "method.lr=0.02", "trainer.checkpoint=false",
       "benchmark.net.hidden=[100]"]


def test_ewc_and_si_beat_finetune_in_cl1(data_root, tmp_path):
    ft = run_experiment(quick_cfg(data_root, tmp_path, "method=finetune", *CL1), tmp_path / "f")
    ewc = run_experiment(quick_cfg(data_root, tmp_path, "experiment=splitmnist_ewc_cl1", *CL1), tmp_path / "e")
    si = run_experiment(quick_cfg(data_root, tmp_path, "experiment=splitmnist_si_cl1", *CL1), tmp_path / "s")
    old = lambda r: r.R[4, :4].mean()  # noqa: E731
    assert old(ewc) > old(ft) + 2 and old(si) > old(ft) + 2, (ft.R, ewc.R, si.R)
    assert min(ewc.summary["acc_avg"], si.summary["acc_avg"]) > ft.summary["acc_avg"] + 1


@pytest.mark.parametrize("method", ["ewc", "si"])
def test_resume_equals_uninterrupted(method, data_root, tmp_path):
    """Importance, anchor and the optimizer kept across tasks travel in the checkpoints."""
    over = [f"method={method}", "scenario=cl3", "tracking=none", "benchmark.n_tasks=3", "benchmark.train_limit=300",
            "trainer.iters_per_task=30"]
    assert_resume_equals_uninterrupted(data_root, tmp_path, *over)


@pytest.mark.parametrize("block", [{"ewc": {"lambda": 10.0, "fisher_n": 20}}, {"si": {"c": 1.0}}])
def test_regularizer_on_a_hypernetwork(block, data_root):
    """The same hooks guard HNET's theta: importance shaped as theta after a task, zero penalty at the anchor."""
    from omegaconf import OmegaConf

    from hyperdgm.data.benchmarks import build_benchmark

    from .helpers import train_directly

    torch.manual_seed(0)
    bench = build_benchmark("split_mnist", data_root, n_tasks=2, train_limit=100, test_limit=10)
    cfg = OmegaConf.to_container(OmegaConf.load("conf/method/hnet.yaml"))
    cfg.update(net={"arch": "mlp", "hidden": [10]}, **block)
    cfg["hnet"].update(chunk_size=1000, hidden=[5], chunk_emb_size=4, task_emb_size=4)
    m = build_method(cfg)
    m.setup(bench, make_scenario("cl1", bench.n_classes_per_task), torch.device("cpu"), torch.Generator())
    train_directly(m, SimpleNamespace(tasks=bench.tasks[:1]), iters=5)  # task 0 only
    (reg,) = m.regs
    theta = m.gen.hnet_parameters()
    assert [w.shape for w in reg.importance] == [p.shape for p in theta]
    assert sum(float(w.sum()) for w in reg.importance) > 0
    m.begin_task(bench.tasks[1])
    assert reg.penalty().item() == 0.0
    x, y = bench.tasks[1].batch("train", torch.arange(32))
    for _ in range(3):
        m.step(x, y, 1)
    assert reg.penalty().item() > 0.0


@pytest.mark.parametrize("replay", [False, True])
def test_generator_si_combines_with_self_replay(replay):
    """``memory.si.replay``: the SI-guarded generator also trains on its own samples from the snapshot."""
    torch.manual_seed(0)
    mem = _tiny_memory("si", c=1.0, replay=replay)
    x = torch.rand(8, 1, 4, 4)
    mem.begin_task(0)
    mem.step(x, 0)
    mem.end_task(0)
    mem.begin_task(1)
    rep = mem.protection.replay(1, 8)
    assert (rep is not None) == replay
    out = mem.step(x, 1)
    assert ("replay_loss" in out) == replay and float(out["penalty"]) == 0.0  # at the anchor on the first step
