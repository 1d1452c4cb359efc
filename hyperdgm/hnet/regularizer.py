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
from torch import Tensor

from .generator import WeightGenerator

__all__ = ["OutputRegularizer", "adam_lookahead", "trainable_parameters"]


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
    """

    def __init__(self, beta: float, *, tasks_per_step: int | None = None, online_targets: bool = False,
                 lookahead: bool = False) -> None:
        if tasks_per_step is not None and tasks_per_step <= 0:
            tasks_per_step = None
        self.beta = float(beta)
        self.tasks_per_step = tasks_per_step
        self.online_targets = bool(online_targets)
        self.lookahead = bool(lookahead)
        self.n_past = 0
        self.targets: Tensor | None = None
        self.frozen: WeightGenerator | None = None

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
        self.targets, self.frozen = None, None
        if n == 0:
            return
        if self.online_targets:
            self.frozen = gen.frozen_copy()
        else:
            was_training = gen.training
            gen.eval()
            self.targets = gen.flat(list(range(n))).detach().clone()
            gen.train(was_training)

    def _subset(self, generator: torch.Generator | None) -> Tensor | None:
        k = self.tasks_per_step
        if k is None or k >= self.n_past:
            return None
        return torch.randperm(self.n_past, generator=generator)[:k]

    def penalty(self, gen: WeightGenerator, *, delta: Sequence[Tensor] | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """``beta/|S| * sum_{k in S} ||gen(e_k; theta + delta) - W_k*||^2`` as a 0-dim tensor (a zero leaf if no past tasks or beta == 0).

        One batched generator call; no host-device synchronisation. ``generator`` seeds the subset draw.
        """
        if self.n_past == 0 or self.beta == 0.0:
            p = next(iter(gen.hnet_parameters()))
            return torch.zeros((), device=p.device, dtype=p.dtype, requires_grad=True)
        idx = self._subset(generator)
        ids: Sequence[int] | Tensor = list(range(self.n_past)) if idx is None else idx
        pred = gen.flat(ids, delta=delta)
        if self.online_targets:
            assert self.frozen is not None
            with torch.no_grad():
                target = self.frozen.flat(ids)
        else:
            assert self.targets is not None
            target = self.targets if idx is None else self.targets.index_select(0, idx.to(self.targets.device))
        n_sel = self.n_past if idx is None else int(idx.numel())
        return (pred - target).pow(2).sum() * (self.beta / n_sel)

    def state_dict(self) -> dict[str, Any]:
        """Plain dict (``torch.load(weights_only=True)``-safe) incl. the stored targets or frozen generator."""
        return {
            "beta": self.beta,
            "tasks_per_step": self.tasks_per_step,
            "online_targets": self.online_targets,
            "lookahead": self.lookahead,
            "n_past": self.n_past,
            "targets": None if self.targets is None else self.targets.clone(),
            "frozen": None if self.frozen is None else self.frozen.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.beta = float(state["beta"])
        self.tasks_per_step = state["tasks_per_step"]
        self.online_targets = bool(state["online_targets"])
        self.lookahead = bool(state["lookahead"])
        self.n_past = int(state["n_past"])
        self.targets = state["targets"]
        self.frozen = None
        if state["frozen"] is not None:
            self.frozen = WeightGenerator.from_dict(state["frozen"])
            self.frozen.to(next(iter(state["frozen"]["state_dict"].values())).device)
            self.frozen = self.frozen.frozen_copy()


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
            beta1, beta2 = (_scalar(b) for b in g["betas"])
            decoupled = g.get("decoupled_weight_decay", False) or isinstance(optimizer, torch.optim.AdamW)
            change = torch.zeros_like(p)
            if wd != 0:
                if decoupled:
                    change = -lr * wd * p.detach()
                else:
                    grad = grad + wd * p.detach()
            if len(state) == 0 or "exp_avg" not in state:
                step = 1.0
                m = (1 - beta1) * grad
                v = (1 - beta2) * grad * grad
                vmax = v
            else:
                step = _scalar(state["step"]) + 1.0
                m = torch.lerp(state["exp_avg"], grad, 1 - beta1)
                v = state["exp_avg_sq"] * beta2 + (1 - beta2) * grad * grad
                vmax = torch.maximum(state["max_exp_avg_sq"], v) if g.get("amsgrad", False) else v
            if not g.get("amsgrad", False):
                vmax = v
            bc1 = 1 - beta1 ** step
            bc2 = 1 - beta2 ** step
            denom = vmax.sqrt() / math.sqrt(bc2) + g["eps"]
            out.append(change - (lr / bc1) * m / denom)
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
