"""Online EWC and SI: quadratic penalties on any list of parameters, as hooks of the one hook sequence.

Both keep an anchor ``a`` (the parameters after the last task) and an importance ``w`` per
parameter and add ``strength * sum w (p - a)^2`` to every step (:func:`hyperdgm.hooks.protected_step`).
The same code guards a classifier's weights, a hypernetwork's ``theta`` and a generator's weights.
Settings and quirks follow the three-scenarios code (GMvandeVen/continual-learning, ``preprints``):

* **online EWC** (Schwarz et al. 2018): after a task, ``F = F_task + gamma F_old`` with ``F_task``
  the mean over *every* training sample (batch size 1) of the squared gradient of the NLL of the
  model's *predicted* label; penalty ``lambda / 2 * sum gamma F (p - a)^2`` (the code multiplies by
  ``gamma`` again inside the penalty). The code divides the sum by ``N - 1``; here by ``N``.
* **SI** (Zenke et al. 2017): during a task ``W -= g * (p_after - p_before)`` after every
  optimizer step, ``g`` the gradient the step used (task loss and penalties, as the code); after
  the task ``omega += W / ((p - a)^2 + epsilon)``, ``a = p``; penalty ``c * sum omega (p - a)^2``.

Owners call :meth:`QuadraticPenalty.begin_task` before a task's first step and
``end_task(task_id, data)`` after its last. The hooks are ``nn.Module`` s without parameters of
their own: their state (anchor, importance) travels in the owner's ``state_dict`` as extra state.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .hooks import WeightHook

log = logging.getLogger(__name__)

__all__ = ["EWC_DEFAULTS", "SI_DEFAULTS", "QuadraticPenalty", "OnlineEWC", "SynapticIntelligence",
           "block_config", "build_regularizers", "empirical_fisher", "per_sample_fisher", "mlp_fisher"]

#: Three-scenarios split-MNIST task-IL settings; class-IL presets set lambda 1e9 / c 0.5.
EWC_DEFAULTS: dict[str, Any] = {"lambda": 1.0e8, "gamma": 0.8, "fisher_n": None}
SI_DEFAULTS: dict[str, Any] = {"c": 50.0, "epsilon": 0.1}

#: Fisher estimator: the task's data -> (sum over samples of squared per-sample gradients, number of samples).
FisherFn = Callable[[Any, "int | None"], tuple[list[Tensor], int]]


def block_config(where: str, defaults: Mapping[str, Any], cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated with ``cfg``; unknown keys raise one clear error."""
    cfg = dict(cfg or {})
    bad = sorted(set(cfg) - set(defaults))
    if bad:
        raise ValueError(f"unknown {where} keys {bad} (known: {sorted(defaults)})")
    return {**defaults, **cfg}


class QuadraticPenalty(nn.Module, WeightHook):
    """``strength * sum_i importance_i (p_i - anchor_i)^2`` over ``params`` (no penalty before the first task ends)."""

    def __init__(self, params: Iterable[Tensor], strength: float) -> None:
        nn.Module.__init__(self)
        self.__dict__["params"] = list(params)  # the owner's tensors: not parameters of this module
        if not self.params:
            raise ValueError(f"{type(self).__name__}: no parameters to protect")
        self.strength = float(strength)
        if self.strength < 0:
            raise ValueError(f"{type(self).__name__}: the strength must be >= 0, got {strength}")
        self.anchor: list[Tensor] | None = None
        self.importance: list[Tensor] | None = None

    def begin_task(self) -> None:
        """Before the task's first step."""

    def has_penalty(self) -> bool:
        return self.importance is not None and self.strength > 0

    def scale(self) -> float:
        return self.strength

    def penalty(self, *, delta: Sequence[Tensor] | None = None) -> Tensor:
        assert self.anchor is not None and self.importance is not None
        total = sum((w * (p - a).pow(2)).sum() for p, a, w in zip(self.params, self.anchor, self.importance))
        return self.scale() * total

    def stored_numel(self) -> int:
        """Numbers kept to protect: anchor and importance."""
        return 0 if self.importance is None else 2 * sum(p.numel() for p in self.params)

    def _snapshot(self) -> list[Tensor]:
        return [p.detach().clone() for p in self.params]

    def get_extra_state(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "importance": self.importance}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        def move(ts: list[Tensor] | None) -> list[Tensor] | None:
            if ts is None:
                return None
            # a checkpoint from before the hypernetwork stored its output weight transposed holds [N, H] for [H, N]
            return [(t.mT.contiguous() if t.dim() == 2 and t.shape != p.shape and t.shape == p.shape[::-1] else t)
                    .to(p.device) for t, p in zip(ts, self.params)]

        self.anchor, self.importance = move(state["anchor"]), move(state["importance"])


class OnlineEWC(QuadraticPenalty):
    """Online EWC; ``fisher(data, n_max)`` returns the summed squared per-sample gradients and the sample count."""

    def __init__(self, params: Iterable[Tensor], fisher: FisherFn, lam: float, gamma: float,
                 fisher_n: int | None = None) -> None:
        super().__init__(params, lam)
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"ewc.gamma must be in [0, 1], got {gamma}")
        self.gamma = float(gamma)
        self.fisher_n = None if fisher_n is None else int(fisher_n)
        self.__dict__["fisher_fn"] = fisher

    def scale(self) -> float:
        return 0.5 * self.strength * self.gamma  # the code's lambda/2 * gamma*F

    def end_task(self, task_id: int, data: Any = None) -> None:
        if data is None:
            raise ValueError("online EWC needs the task's data at end_task (its Fisher)")
        sums, n = self.fisher_fn(data, self.fisher_n)
        fisher = [s / max(n, 1) for s in sums]
        if self.importance is not None:
            fisher = [f + self.gamma * old for f, old in zip(fisher, self.importance)]
        self.importance, self.anchor = fisher, self._snapshot()
        log.debug("EWC: Fisher of task %d from %d samples", task_id, n)


class SynapticIntelligence(QuadraticPenalty):
    """SI: the path integral ``W`` of each parameter along the task's trajectory sets its importance."""

    def __init__(self, params: Iterable[Tensor], c: float, epsilon: float) -> None:
        super().__init__(params, c)
        self.epsilon = float(epsilon)
        if self.epsilon <= 0:
            raise ValueError(f"si.epsilon must be > 0, got {epsilon}")
        self.anchor = None  # set at the first begin_task: the parameters before any training
        self.w: list[Tensor] | None = None
        self.p_old: list[Tensor] | None = None

    def begin_task(self) -> None:
        if self.anchor is None:
            self.anchor = self._snapshot()
        self.w = [torch.zeros_like(p) for p in self.params]
        self.p_old = self._snapshot()

    @torch.no_grad()
    def after_step(self) -> None:
        if self.w is None or self.p_old is None:
            raise RuntimeError("SI: begin_task() before the task's first step")
        for p, w, old in zip(self.params, self.w, self.p_old):
            if p.grad is not None:
                w.sub_(p.grad * (p - old))
            old.copy_(p)

    @torch.no_grad()
    def end_task(self, task_id: int, data: Any = None) -> None:
        if self.w is None or self.anchor is None:
            raise RuntimeError("SI: end_task() without begin_task()")
        now = self._snapshot()
        add = [w / ((p - a).pow(2) + self.epsilon) for w, p, a in zip(self.w, now, self.anchor)]
        self.importance = add if self.importance is None else [o + d for o, d in zip(self.importance, add)]
        self.anchor, self.w, self.p_old = now, None, None


# -- Fisher estimators ----------------------------------------------------------------------------
def empirical_fisher(params: Sequence[Tensor], sample_losses: Iterable[Tensor],
                     retain_graph: bool = False) -> tuple[list[Tensor], int]:
    """Sum over samples of the squared gradient of each sample's loss (one backward per sample) and the count.

    ``retain_graph``: the losses share a graph (e.g. weights generated once for every sample)."""
    sums = [torch.zeros_like(p) for p in params]
    n = 0
    for loss in sample_losses:
        grads = torch.autograd.grad(loss, list(params), allow_unused=True, retain_graph=retain_graph)
        for s, g in zip(sums, grads):
            if g is not None:
                s.add_(g.detach().pow(2))
        n += 1
    return sums, n


def per_sample_fisher(params: Sequence[Tensor], logits_fn: Callable[[Sequence[Tensor], Tensor], Tensor],
                      batches: Iterable[Tensor]) -> tuple[list[Tensor], int]:
    """As :func:`empirical_fisher` for a functional net ``logits_fn(weights, x)``, the NLL of the predicted
    label per sample, with per-sample gradients by ``torch.func.vmap`` (batch size 1 in effect, not in cost)."""
    from torch.func import grad, vmap

    def nll(weights: tuple[Tensor, ...], x: Tensor) -> Tensor:
        logp = torch.log_softmax(logits_fn(weights, x.unsqueeze(0)), dim=1)
        label = logp.detach().argmax(1, keepdim=True)
        return -logp.gather(1, label).sum()

    per = vmap(grad(nll), in_dims=(None, 0))
    weights = tuple(p.detach() for p in params)
    sums = [torch.zeros_like(p) for p in params]
    n = 0
    for xb in batches:
        for s, g in zip(sums, per(weights, xb)):
            s.add_(g.pow(2).sum(0))
        n += int(xb.shape[0])
    return sums, n


def mlp_fisher(weights: Sequence[Tensor], act: Callable[[Tensor], Tensor], head: Callable[[Tensor], Tensor],
               batches: Iterable[Tensor]) -> tuple[list[Tensor], int]:
    """As :func:`per_sample_fisher` for a chain of ``F.linear`` layers ``[W0, b0, W1, b1, ...]`` (``act`` between
    them, ``head`` slicing the output), exactly and at the cost of one batched backward: a sample's gradient of
    ``W`` is ``g x^T`` (``g`` its gradient at the layer's output, ``x`` its input), so the sum over samples of its
    square is ``(g^2)^T (x^2)``. Valid where each sample's loss depends on its own row only (no batch statistics)."""
    w = [t.detach() for t in weights]
    n_layers = len(w) // 2
    sums = [torch.zeros_like(t) for t in w]
    n = 0
    for xb in batches:
        h, inputs, outs = xb.flatten(1), [], []
        for i in range(n_layers):
            inputs.append(h)
            z = torch.nn.functional.linear(h, w[2 * i], w[2 * i + 1]).requires_grad_(True)
            outs.append(z)
            h = act(z) if i < n_layers - 1 else z
        logp = torch.log_softmax(head(h), dim=1)
        loss = -logp.gather(1, logp.detach().argmax(1, keepdim=True)).sum()
        grads = torch.autograd.grad(loss, outs)
        for i, (x, g) in enumerate(zip(inputs, grads)):
            g2 = g.pow(2)
            sums[2 * i].add_(g2.T @ x.detach().pow(2))
            sums[2 * i + 1].add_(g2.sum(0))
        n += int(xb.shape[0])
    return sums, n


def build_regularizers(cfg: Mapping[str, Any], params: Sequence[Tensor], fisher: FisherFn | None,
                       where: str = "method") -> list[QuadraticPenalty]:
    """The hooks asked for by the ``ewc`` / ``si`` blocks of ``cfg`` (null or absent: off), over ``params``."""
    hooks: list[QuadraticPenalty] = []
    if cfg.get("ewc") is not None:
        e = block_config(f"{where}.ewc", EWC_DEFAULTS, cfg["ewc"])
        if fisher is None:
            raise ValueError(f"{where}.ewc: this learner has no Fisher estimate")
        hooks.append(OnlineEWC(params, fisher, float(e["lambda"]), float(e["gamma"]), e["fisher_n"]))
    if cfg.get("si") is not None:
        s = block_config(f"{where}.si", SI_DEFAULTS, cfg["si"])
        hooks.append(SynapticIntelligence(params, float(s["c"]), float(s["epsilon"])))
    return hooks
