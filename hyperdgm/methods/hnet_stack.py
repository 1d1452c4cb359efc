"""HNET / HNET+ENT learners of several seeds trained as one: stacked parameters, batched steps.

S learners with the same config (one per seed, each set up and begun on the task as a run alone
would be) keep their own task embeddings, regularizer snapshot and data order. For the task's steps
their hypernetwork weights and current embeddings are stacked along a leading seed dimension
(``[S, ...]`` leaves); one step generates every seed's weights and runs every seed's target net
(``torch.func.vmap`` over the single-seed code), sums the per-seed losses (the seeds share no
parameter, so each gets exactly its own gradient), adds the stacked output regularizer at the
stacked Adam lookahead, and steps one Adam over the stacks (Adam is elementwise: the same update as S
separate optimizers). :meth:`finish` writes every seed's weights back into its own learner, which is
then evaluated, checkpointed and tracked as a run alone.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hnet import StackedOutputRegularizer, adam_lookahead
from ..profiling import region
from .base import make_optimizer

if TYPE_CHECKING:  # pragma: no cover
    from .hnet import HNet


def unsupported(m: "HNet") -> str | None:
    """Why learner ``m`` cannot join a seed stack (None: it can)."""
    from .hnet import HNet

    if type(m).step is not HNet.step or type(m).logits is not HNet.logits:
        return f"method {m.name} has its own training step"
    if m.multi_target:
        return "the hypernetwork generates more than the classifier"
    if len(m.regs):
        return "method.ewc / method.si regularize the hypernetwork"
    if m.lr_schedule.active:
        return "method.lr_schedule steps each seed's optimizers"
    if not m.target._plain_mlp:
        return f"net.arch={m.target.arch} (only plain MLP target nets are stacked)"
    return StackedOutputRegularizer.unsupported(m.reg)


class StackedHNet:
    """One task's training of S :class:`~hyperdgm.methods.hnet.HNet` learners as one batched learner."""

    def __init__(self, methods: Sequence["HNet"], task_id: int) -> None:
        for m in methods:
            why = unsupported(m)
            if why:
                raise ValueError(f"cannot stack seeds: {why}")
        self.methods, self.task_id = list(methods), int(task_id)
        m0 = self.methods[0]
        self.m0, self.gen = m0, m0.gen
        per_seed = [m.gen.hnet_parameters() for m in self.methods]
        self.theta = [nn.Parameter(torch.stack([ps[i].detach() for ps in per_seed])) for i in range(len(per_seed[0]))]
        self.emb = nn.Parameter(torch.stack([m.gen.task_embedding(task_id).detach() for m in self.methods]))
        t = self.task_id
        self.past = (torch.stack([m.gen._embeddings(list(range(t))).detach() for m in self.methods]) if t > 0
                     else None)
        self.opt = make_optimizer(self.theta, m0.cfg)
        self.emb_opt = m0.embedding_optimizer([self.emb])
        self.reg = StackedOutputRegularizer([m.reg for m in self.methods])
        self.lookahead = bool(m0.reg.lookahead)
        lay = self.gen._layout()
        self._w_out, self._b_out = lay["weights"][-1], lay["biases"][-1]

    # -- the step ------------------------------------------------------------------------
    def _logits(self, theta: list[Tensor], emb: Tensor, x: Tensor) -> Tensor:
        """One seed's logits on its batch (vmapped over the seeds)."""
        gen, m0 = self.gen, self.m0
        weights = gen.split(gen.flat(None, embeddings=emb, params=theta)[0])
        return m0.logits(x, self.task_id, weights)

    def _hidden(self, theta: list[Tensor], delta: list[Tensor] | None, past: Tensor) -> Tensor:
        return self.gen.hidden_features(past, delta=delta, params=theta)

    def step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """One training step of every seed on its own batch ``x`` ``[S, B, ...]``, ``y`` ``[S, B]``; per-seed losses ``[S]``."""
        self.opt.zero_grad(set_to_none=True)
        self.emb_opt.zero_grad(set_to_none=True)
        with region("forward"):
            logits = torch.func.vmap(self._logits)(self.theta, self.emb, x)
            loss = torch.func.vmap(F.cross_entropy)(logits, y)
        with region("backward"):
            loss.sum().backward()
        out = {"loss": loss.detach()}
        if self.reg.active:
            with region("penalty"):
                delta = adam_lookahead(self.opt, self.theta) if self.lookahead else None
                hidden = torch.func.vmap(self._hidden, in_dims=(0, None if delta is None else 0, 0))(
                    self.theta, delta, self.past)
                wi, bi = self._w_out, self._b_out
                as_w = self.gen.as_output_weight
                pen = self.reg.penalty(as_w(self.theta[wi]), None if bi is None else self.theta[bi],
                                       None if delta is None else as_w(delta[wi]),
                                       None if delta is None or bi is None else delta[bi], hidden)
                pen.sum().backward()
            out["reg"] = pen.detach()
        with region("optimizer"):
            self.opt.step()
            self.emb_opt.step()
        return out

    @torch.no_grad()
    def finish(self) -> None:
        """Write every seed's trained weights and embedding back into its own learner."""
        for s, m in enumerate(self.methods):
            for p, stacked in zip(m.gen.hnet_parameters(), self.theta):
                p.copy_(stacked[s])
            m.gen.task_embedding(self.task_id).copy_(self.emb[s])
