"""Output regulariser of hypernetwork continual learning (von Oswald et al., ICLR 2020, Eq. 2).

    L_reg = beta / |S| * sum_{k in S} || h(e_k, Theta + dTheta) - W_k* ||^2,   S subset of {0..t-1}

``W_k*`` are the weights generated for task ``k`` just before the current task started; the norm
is the squared L2 norm of the whole flattened generated vector (sum over all elements). With
``S`` = all past tasks this is ``beta/(t-1) * sum_{k<t}`` of the paper (1-based ``t``).

Checked against hypnettorch ``utils.hnet_regularizer.calc_fix_target_reg`` (v0.0.4): it sums
``(W_target - W_predicted).pow(2).sum()`` over the regularised tasks and returns ``reg / num_regs``
(``num_regs`` = number of past tasks, or ``batch_size`` when a random subset drawn without
replacement is used); ``beta`` is multiplied by the caller. Targets computed on the fly
(``prev_theta``) are evaluated in eval mode under ``no_grad``. We match this exactly.

Training protocol (as in the reference code): after ``task_loss.backward()``, optionally compute
``delta = adam_lookahead(opt, gen.hnet_parameters())`` (detached), add ``reg.penalty(gen, delta=delta)``
and back-propagate it, then ``opt.step()``. Embeddings of previous tasks must stay fixed: only
optimise :func:`trainable_parameters` (hnet weights + the current task's embedding).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fused
from .products import split_k_mm
from .generator import WeightGenerator

__all__ = ["OutputRegularizer", "StackedOutputRegularizer", "adam_lookahead", "trainable_parameters"]


class _Snapshot:
    """Factorised targets: ``W_k*`` chunk ``j`` is ``A* [h*_kj; 1]`` (the hypernetwork's output layer is linear).

    ``a`` = ``[A* | b*]`` ``[chunk_size, m]``, ``h`` = ``[h*_kj; 1]`` ``[K, n_chunks, m]`` (no ``1`` column
    without biases), ``aa_head``/``aa_tail`` = ``a^T a`` over the rows used / unused by the last chunk.
    """

    def __init__(self, a: Tensor, h: Tensor, rows_last: int) -> None:
        self.a, self.h, self.rows_last = a, h, int(rows_last)
        self.a_t = a.T.contiguous()  # the layout the penalty computes in (see _GramQuadratic)
        a64 = a.double()
        self.aa_head = (a64[:rows_last].T @ a64[:rows_last]).to(a.dtype)
        self.aa_tail = (a64[rows_last:].T @ a64[rows_last:]).to(a.dtype)

    @classmethod
    @torch.no_grad()
    def of(cls, gen: WeightGenerator, n: int) -> "_Snapshot":
        was_training = gen.training
        gen.eval()
        h = gen.hidden_features(gen._embeddings(list(range(n))))
        weight, bias = gen.output_layer()
        gen.train(was_training)
        return cls(_augment_layer(weight, bias).detach().clone(), _augment_hidden(h, bias is not None).detach().clone(),
                   gen.chunk_layout()[2])

    def to(self, device: Any) -> "_Snapshot":
        return _Snapshot(self.a.to(device), self.h.to(device), self.rows_last)

    def state(self) -> dict[str, Any]:
        return {"a": self.a.clone(), "h": self.h.clone(), "rows_last": self.rows_last}


def _augment_layer(weight: Tensor, bias: Tensor | None) -> Tensor:
    return weight if bias is None else torch.cat([weight, bias[:, None]], dim=1)


def _augment_hidden(h: Tensor, bias: bool) -> Tensor:
    return torch.cat([h, h.new_ones(h.shape[:-1] + (1,))], dim=-1) if bias else h


def _grams(db: Tensor, ab: Tensor) -> tuple[Tensor, Tensor]:
    """``(db db^T, db ab^T)`` for ``[m, K]`` blocks (``m`` ~ 10, ``K`` ~ 10^4-10^5), threaded over ``K``."""
    return split_k_mm(db, db.mT), split_k_mm(db, ab.mT)


class _GramQuadratic(torch.autograd.Function):
    """``sum_B <d_B^T d_B, S_hh^B> + 2 <d_B^T a_B, S_hu^B>`` over row blocks ``B`` of ``d = [W|b] + delta - a*``.

    Computed on the transposed layout ``d^T`` ``[m, chunk_size]`` (``a*^T`` is stored so): with ``m`` ~ 11,
    the products ``[m, N] @ [N, m]`` and ``[m, m] @ [m, N]`` run ~3x faster on a CPU than the same products
    in ``[N, m]`` layout (measured: 4 vs 14 ms and 5.6 vs 15 ms at N = 42,000). Gradients w.r.t. ``W``, ``b``
    (through ``d``) and the small ``S`` matrices, two matmuls per block. Every input may carry one leading
    batch dimension (independent learners, one per seed): the result is then one value per learner.
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, bias: Tensor | None, dw: Tensor | None, dbias: Tensor | None,
                a_t: Tensor, rows_last: int, *s: Tensor) -> Tensor:
        n_h = weight.shape[-1]
        d_t = torch.empty_like(a_t)
        torch.sub(weight.mT, a_t[..., :n_h, :], out=d_t[..., :n_h, :])
        if dw is not None:
            d_t[..., :n_h, :].add_(dw.mT)  # in place on the view (``d[i] += x`` would copy it back onto itself)
        if bias is not None:
            torch.sub(bias, a_t[..., n_h, :], out=d_t[..., n_h, :])
            if dbias is not None:
                d_t[..., n_h, :].add_(dbias)
        blocks = [slice(0, rows_last), slice(rows_last, None)][: len(s) // 2]
        grams = []
        total = a_t.new_zeros(a_t.shape[:-2])
        for i, cols in enumerate(blocks):
            g_dd, g_da = _grams(d_t[..., cols], a_t[..., cols])
            grams += [g_dd, g_da]
            total = total + (g_dd * s[2 * i]).sum((-2, -1)) + 2 * (g_da * s[2 * i + 1]).sum((-2, -1))
        ctx.save_for_backward(d_t, a_t, *s, *grams)
        ctx.rows_last, ctx.n_h, ctx.has_bias = rows_last, n_h, bias is not None
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        d_t, a_t, *rest = ctx.saved_tensors
        n = len(rest) // 2
        s, grams = rest[:n], rest[n:]
        blocks = [slice(0, ctx.rows_last), slice(ctx.rows_last, None)][: n // 2]
        g = grad[..., None, None]  # one value per learner (a 0-dim grad without a batch dimension)

        # (S_hh + S_hh^T) d_B^T + 2 S_hu a_B^T per block, written into its columns of one uninitialised tensor
        grad_d = torch.empty_like(d_t)
        for i, cols in enumerate(blocks):
            s_hh, s_hu = s[2 * i], s[2 * i + 1]
            out = grad_d[..., cols]
            torch.matmul((s_hh + s_hh.mT) * g, d_t[..., cols], out=out)
            (out.addmm_ if out.dim() == 2 else out.baddbmm_)(s_hu * (2 * g), a_t[..., cols])
        if len(blocks) == 1 and ctx.rows_last < d_t.shape[-1]:
            # one chunk wider than the target: its unused rows get no gradient (a garbage row there would
            # turn every hidden gradient NaN)
            grad_d[..., ctx.rows_last:].zero_()
        grad_s: list[Tensor | None] = []
        for i in range(n // 2):
            grad_s += [grams[2 * i] * g, grams[2 * i + 1] * (2 * g)]
        grad_w = grad_d[..., : ctx.n_h, :].mT if ctx.needs_input_grad[0] else None
        grad_b = grad_d[..., ctx.n_h, :] if ctx.has_bias and ctx.needs_input_grad[1] else None
        return (grad_w, grad_b, None, None, None, None, *grad_s)


def _gram_penalty(weight: Tensor, bias: Tensor | None, delta_w: Tensor | None, delta_b: Tensor | None,
                  snap: "_Snapshot", h: Tensor, u: Tensor) -> Tensor:
    """``sum_kj ||(d h_kj + a* u_kj)[rows of chunk j]||^2`` from ``m x m`` Gram matrices (no generated weights).

    ``d = [W|b] + delta - a*`` ``[chunk_size, m]``; ``h``, ``u = h - h*``: ``[K, n_chunks, m]``. Every chunk
    uses all rows except the last one (its first ``rows_last`` rows); the two row blocks are summed separately.
    With a leading batch dimension on every tensor (and on ``snap``): one value per learner.
    """
    m = h.shape[-1]
    lead = h.shape[:-3]
    blocks = [(snap.aa_head, h.reshape(*lead, -1, m), u.reshape(*lead, -1, m))]
    if snap.rows_last < snap.a_t.shape[-1] and h.shape[-2] > 1:  # tail rows: all chunks but the last
        blocks.append((snap.aa_tail, h[..., :-1, :].reshape(*lead, -1, m), u[..., :-1, :].reshape(*lead, -1, m)))
    s: list[Tensor] = []
    const = h.new_zeros(lead)
    for aa, hb, ub in blocks:
        s += [hb.mT @ hb, hb.mT @ ub]
        const = const + (aa * (ub.mT @ ub)).sum((-2, -1))
    return _GramQuadratic.apply(weight, bias, delta_w, delta_b, snap.a_t, snap.rows_last, *s) + const


class OutputRegularizer:
    """Keeps the generator's outputs for past task embeddings fixed.

    Args:
        beta: regularisation strength.
        tasks_per_step: if set and smaller than the number of past tasks, each :meth:`penalty`
            uses a random subset of that size (without replacement), scaled by ``beta/|S|`` so the
            expectation equals the full penalty.
        online_targets: instead of storing ``W_k*`` (memory O(t * |W|)), keep a frozen copy of the
            generator (memory O(|hnet|)) and recompute targets under ``no_grad``.
        lookahead: whether the training loop should pass ``delta`` (see :func:`adam_lookahead`);
            stored as configuration, not enforced.
        fast: evaluate the penalty without generating any weights. The hypernetwork's output layer
            is linear, so with ``d = [A|b](theta+delta) - [A*|b*]`` and ``u_kj = h_kj - h*_kj``
            (hidden features ``[h; 1]`` of chunk ``j``, task ``k``, now and at the snapshot),
            ``||W_k - W_k*||^2 = sum_j ||d h_kj + A* u_kj||^2`` is a quadratic form in ``m x m`` Gram
            matrices of ``d`` and ``A*`` (``m`` = last hidden size + 1): cost O(chunk_size * m^2) per
            step whatever the number of past tasks. Same value and gradients as the direct form up to
            float32 round-off (the residual form avoids cancellation). Needs the snapshot taken by
            :meth:`begin_task` (or restored by :meth:`load_state_dict`); targets assigned by hand
            fall back to the direct form. ``fast=False`` always generates the weights.
    """

    def __init__(self, beta: float, *, tasks_per_step: int | None = None, online_targets: bool = False,
                 lookahead: bool = False, fast: bool = True) -> None:
        if tasks_per_step is not None and tasks_per_step <= 0:
            tasks_per_step = None
        self.beta = float(beta)
        self.tasks_per_step = tasks_per_step
        self.online_targets = bool(online_targets)
        self.lookahead = bool(lookahead)
        self.fast = bool(fast)
        self.n_past = 0
        self._targets: Tensor | None = None
        self._snapshot: _Snapshot | None = None
        self.frozen: WeightGenerator | None = None

    @property
    def targets(self) -> Tensor | None:
        """Stored ``W_k*`` ``[n_past, n_target_params]`` (``None`` with online targets). Treat as read-only:
        assigning a tensor with other values drops the factorised snapshot (``fast`` then falls back)."""
        return self._targets

    @targets.setter
    def targets(self, value: Tensor | None) -> None:
        old, snap = self._targets, self._snapshot
        keep = (snap is not None and old is not None and value is not None and value.shape == old.shape
                and (value is old or torch.equal(value.detach().to(old.device), old)))
        self._targets = value
        if not keep:
            self._snapshot = None
        elif value is not old and value.device != old.device:
            self._snapshot = snap.to(value.device)

    @property
    def active(self) -> bool:
        """Whether :meth:`penalty` is non-zero: past tasks to protect and ``beta > 0``."""
        return self.n_past > 0 and self.beta > 0

    @property
    def has_snapshot(self) -> bool:
        """Whether :meth:`penalty` can use the fast (factorised) form."""
        return self._snapshot is not None

    @torch.no_grad()
    def begin_task(self, gen: WeightGenerator, current_task: int | None = None) -> None:
        """Snapshot targets for tasks ``0..current_task-1`` (default: all tasks existing now).

        Call it when a new task starts, before training it (before or after ``gen.add_task()``
        if ``current_task`` is given; before ``add_task`` otherwise).
        """
        n = gen.n_tasks if current_task is None else int(current_task)
        if not 0 <= n <= gen.n_tasks:
            raise ValueError(f"current_task={n} out of range (n_tasks={gen.n_tasks})")
        self.n_past = n
        self._targets, self._snapshot, self.frozen = None, None, None
        if n == 0:
            return
        if self.online_targets:
            self.frozen = gen.frozen_copy()
            self._snapshot = _Snapshot.of(self.frozen, n)
        else:
            was_training = gen.training
            gen.eval()
            self._targets = gen.flat(list(range(n))).detach().clone()
            gen.train(was_training)
            self._snapshot = _Snapshot.of(gen, n)

    def _subset(self, generator: torch.Generator | None) -> Tensor | None:
        k = self.tasks_per_step
        if k is None or k >= self.n_past:
            return None
        return torch.randperm(self.n_past, generator=generator)[:k]

    def penalty(self, gen: WeightGenerator, *, delta: Sequence[Tensor] | None = None,
                generator: torch.Generator | None = None, fast: bool | None = None) -> Tensor:
        """``beta/|S| * sum_{k in S} ||gen(e_k; theta + delta) - W_k*||^2`` as a 0-dim tensor (a zero leaf if no past tasks or beta == 0).

        No host-device synchronisation. ``generator`` seeds the subset draw; ``fast`` overrides
        the constructor's choice for this call. Always computed in fp32 (also under autocast).
        """
        dev = next(iter(gen.hnet_parameters())).device
        with torch.autocast(device_type=dev.type, enabled=False):
            return self._penalty(gen, delta=delta, generator=generator, fast=fast)

    def _penalty(self, gen: WeightGenerator, *, delta: Sequence[Tensor] | None,
                 generator: torch.Generator | None, fast: bool | None) -> Tensor:
        if self.n_past == 0 or self.beta == 0.0:
            p = next(iter(gen.hnet_parameters()))
            return torch.zeros((), device=p.device, dtype=p.dtype, requires_grad=True)
        idx = self._subset(generator)
        n_sel = self.n_past if idx is None else int(idx.numel())
        use_fast = self.fast if fast is None else bool(fast)
        if use_fast and self._snapshot is not None:
            return self._fast_penalty(gen, idx, delta) * (self.beta / n_sel)
        ids: Sequence[int] | Tensor = list(range(self.n_past)) if idx is None else idx
        pred = gen.flat(ids, delta=delta)
        if self.online_targets:
            assert self.frozen is not None
            with torch.no_grad():
                target = self.frozen.flat(ids)
        else:
            assert self._targets is not None
            target = self._targets if idx is None else self._targets.index_select(0, idx.to(self._targets.device))
        return F.mse_loss(pred, target, reduction="sum") * (self.beta / n_sel)

    def _fast_penalty(self, gen: WeightGenerator, idx: Tensor | None, delta: Sequence[Tensor] | None) -> Tensor:
        snap = self._snapshot
        assert snap is not None
        ids: Sequence[int] | Tensor = list(range(self.n_past)) if idx is None else idx
        weight, bias = gen.output_layer()  # theta; delta is added inside (never materialise theta + delta)
        h = _augment_hidden(gen.hidden_features(gen._embeddings(ids), delta=delta), bias is not None)
        h_star = snap.h if idx is None else snap.h.index_select(0, idx.to(snap.h.device))
        delta_w = delta_b = None
        if delta is not None:
            lay = gen._layout()
            delta_w = gen.as_output_weight(delta[lay["weights"][-1]])
            delta_b = None if bias is None else delta[lay["biases"][-1]]
        return _gram_penalty(weight, bias, delta_w, delta_b, snap, h, h - h_star)

    def state_dict(self) -> dict[str, Any]:
        """Plain dict (``torch.load(weights_only=True)``-safe) incl. the stored targets or frozen generator."""
        return {
            "beta": self.beta,
            "tasks_per_step": self.tasks_per_step,
            "online_targets": self.online_targets,
            "lookahead": self.lookahead,
            "fast": self.fast,
            "n_past": self.n_past,
            "targets": None if self._targets is None else self._targets.clone(),
            "frozen": None if self.frozen is None else self.frozen.to_dict(),
            "snapshot": None if self._snapshot is None else self._snapshot.state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (older dicts without ``snapshot`` use the direct form for stored targets)."""
        self.beta = float(state["beta"])
        self.tasks_per_step = state["tasks_per_step"]
        self.online_targets = bool(state["online_targets"])
        self.lookahead = bool(state["lookahead"])
        self.fast = bool(state.get("fast", True))
        self.n_past = int(state["n_past"])
        self._targets = state["targets"]
        self._snapshot = None
        snap = state.get("snapshot")
        if snap is not None:
            self._snapshot = _Snapshot(snap["a"], snap["h"], snap["rows_last"])
        self.frozen = None
        if state["frozen"] is not None:
            self.frozen = WeightGenerator.from_dict(state["frozen"])
            self.frozen.to(next(iter(state["frozen"]["state_dict"].values())).device)
            self.frozen = self.frozen.frozen_copy()
            if self._snapshot is None and self.n_past > 0:
                self._snapshot = _Snapshot.of(self.frozen, self.n_past)


class StackedOutputRegularizer:
    """The fast output regularizers of S independent learners (one seed each) as one batched call.

    Built from each learner's :class:`OutputRegularizer` after its ``begin_task``: their snapshots are
    stacked along a leading seed dimension, and :meth:`penalty` returns one value per learner, equal to
    each learner's own ``penalty`` (up to float round-off).
    """

    def __init__(self, regs: Sequence[OutputRegularizer]) -> None:
        for r in regs:
            why = self.unsupported(r)
            if why:
                raise ValueError(f"cannot stack output regularizers: {why}")
        r0 = regs[0]
        if any(r.beta != r0.beta or r.n_past != r0.n_past for r in regs):
            raise ValueError("cannot stack output regularizers with different beta or numbers of past tasks")
        self.beta, self.n_past = r0.beta, r0.n_past
        self.snap: _Snapshot | None = None
        if self.active:
            snaps = [r._snapshot for r in regs]
            snap = _Snapshot.__new__(_Snapshot)
            for name in ("a", "a_t", "h", "aa_head", "aa_tail"):
                setattr(snap, name, torch.stack([getattr(x, name) for x in snaps]))
            snap.rows_last = snaps[0].rows_last
            self.snap = snap

    @staticmethod
    def unsupported(reg: OutputRegularizer) -> str | None:
        """Why ``reg`` cannot be stacked (None: it can): only the fast form over every past task stacks."""
        if reg.tasks_per_step is not None and reg.tasks_per_step < reg.n_past:
            return "method.reg_tasks_per_step draws a random subset of past tasks each step"
        if reg.online_targets:
            return "method.online_targets recomputes the targets with a frozen generator"
        if reg.n_past > 0 and reg.beta > 0 and not (reg.fast and reg.has_snapshot):
            return "the output regularizer has no factorised snapshot (direct form)"
        return None

    @property
    def active(self) -> bool:
        return self.n_past > 0 and self.beta > 0

    def penalty(self, weight: Tensor, bias: Tensor | None, delta_w: Tensor | None, delta_b: Tensor | None,
                hidden: Tensor) -> Tensor:
        """``[S]`` penalties from the stacked output layer ``weight`` ``[S, chunk_size, H]`` / ``bias``, their
        lookahead changes and the hidden features of every past task ``[S, K, n_chunks, H]`` (at theta + delta)."""
        assert self.snap is not None
        with torch.autocast(device_type=weight.device.type, enabled=False):
            h = _augment_hidden(hidden.float(), bias is not None)
            return _gram_penalty(weight, bias, delta_w, delta_b, self.snap, h, h - self.snap.h) * (self.beta / self.n_past)


def trainable_parameters(gen: WeightGenerator, task_id: int) -> list[Tensor]:
    """Parameters to optimise while learning ``task_id``: hnet weights + that task's embedding only."""
    return [*gen.hnet_parameters(), gen.task_embedding(task_id)]


def _scalar(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


def _group_of(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    return {id(p): g for g in optimizer.param_groups for p in g["params"]}


@torch.no_grad()
def adam_lookahead(optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> list[Tensor]:
    """Detached change ``p_new - p`` that ``optimizer.step()`` would apply to each of ``params`` now.

    Uses the current ``.grad`` (after ``task_loss.backward()``) and the optimizer state without
    modifying it. Exact for ``Adam``/``AdamW`` (incl. first step, weight decay, amsgrad, maximize)
    and ``SGD`` (momentum, dampening, nesterov, weight decay); other optimizers fall back to
    ``-lr * grad``. Parameters without gradient get a zero change.
    """
    groups = _group_of(optimizer)
    out: list[Tensor] = []
    for p in params:
        g = groups.get(id(p))
        if g is None:
            raise ValueError("parameter is not managed by the optimizer")
        if p.grad is None:
            out.append(torch.zeros_like(p))
            continue
        grad = p.grad.detach()
        lr = _scalar(g["lr"])
        if g.get("maximize", False):
            grad = -grad
        wd = _scalar(g.get("weight_decay", 0.0))
        state = optimizer.state.get(p, {})
        if isinstance(optimizer, torch.optim.Adam):  # AdamW subclasses Adam
            # Few temporaries, updated in place: the hnet's output layer is large and every fresh
            # multi-MB CPU tensor costs page faults (this runs once per training step).
            beta1, beta2 = (_scalar(b) for b in g["betas"])
            decoupled = g.get("decoupled_weight_decay", False) or isinstance(optimizer, torch.optim.AdamW)
            if wd != 0 and not decoupled:
                grad = grad + wd * p.detach()
            has_state = len(state) > 0 and "exp_avg" in state
            change = None
            if has_state and not g.get("amsgrad", False):  # a large tensor: one compiled loop (trainer.fuse)
                step = _scalar(state["step"]) + 1.0
                change = fused.adam_change(state["exp_avg"], grad, state["exp_avg_sq"], beta1=beta1, beta2=beta2,
                                           bias_correction2=1 - beta2 ** step, eps=_scalar(g["eps"]),
                                           scale=-lr / (1 - beta1 ** step))
            if change is None:
                if not has_state:
                    step = 1.0
                    m = grad * (1 - beta1)
                    v = grad * grad
                    v.mul_(1 - beta2)
                else:
                    step = _scalar(state["step"]) + 1.0
                    m = torch.lerp(state["exp_avg"], grad, 1 - beta1)
                    v = state["exp_avg_sq"] * beta2
                    v.addcmul_(grad, grad, value=1 - beta2)
                    if g.get("amsgrad", False):
                        torch.maximum(state["max_exp_avg_sq"], v, out=v)
                bc1 = 1 - beta1 ** step
                bc2 = 1 - beta2 ** step
                denom = v.sqrt_().div_(math.sqrt(bc2)).add_(g["eps"])
                change = m.div_(denom).mul_(-lr / bc1)
            if wd != 0 and decoupled:
                change.add_(p.detach(), alpha=-lr * wd)
            out.append(change)
        elif isinstance(optimizer, torch.optim.SGD):
            if wd != 0:
                grad = grad + wd * p.detach()
            mom = g.get("momentum", 0.0)
            if mom != 0:
                buf = state.get("momentum_buffer")
                buf = grad.clone() if buf is None else buf * mom + (1 - g.get("dampening", 0.0)) * grad
                grad = grad + mom * buf if g.get("nesterov", False) else buf
            out.append(-lr * grad)
        else:
            out.append(-lr * grad)
    return out
