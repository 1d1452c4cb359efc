"""HNET+TIR (von Oswald et al., 2020): a hypernetwork-generated classifier per task plus a
task-inference network.

The task-inference network is a plain classifier over tasks (a growing softmax), trained from the
second task on with the current task's data (label: its task id) and replayed data of earlier tasks
from a hypernetwork-protected generative memory (hard labels: the replayed task). At test time it
picks the task; that task's generated weights classify the input.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nets import TargetNet
from .base import make_optimizer
from .hnet import HNet
from .replay import (PixelSpace, begin_memory_task, build_memory, log_memory, replay_from_memory,
                     train_memory_step)


class HNetTIR(HNet):
    """HNET+TIR: task inferred by a replay-trained task-inference network."""

    name = "hnet_tir"
    scenarios = frozenset({"cl2", "cl3"})
    default_inference = "tir"

    def generator_targets(self):
        """With ``shared_hnet``: one hypernetwork generates the classifier and the memory's decoder."""
        mcfg = dict(self.cfg.get("memory") or {})
        self.shared = bool(self.cfg.get("shared_hnet", False))
        if self.shared:
            if mcfg.get("protection", "hnet") not in ("hnet", "hnet_shared"):
                raise ValueError("hnet_tir shared_hnet=true needs memory.protection=hnet (the shared hypernetwork "
                                 f"protects the decoder), got {mcfg.get('protection')!r}")
            mcfg["protection"] = "hnet_shared"
        if not self.shared:
            return self.target.net
        self.memory = build_memory(mcfg, self.benchmark, self.device)
        return [self.target.net, self.memory.body.param_shapes]

    def setup(self, benchmark, scenario, device, rng) -> None:
        super().setup(benchmark, scenario, device, rng)  # with shared_hnet, builds the memory first
        if self.shared:
            self.memory.protection.attach(self.gen, 1, self.reg)
        tcfg = dict(self.cfg.get("tir") or {})
        net = self.cfg.get("net") or {}
        self.tir = TargetNet(net.get("arch", "mlp"), benchmark.tasks[0].input_shape, benchmark.n_tasks,
                             hidden=tcfg.get("hidden", net.get("hidden", (400, 400))),
                             act=net.get("act", "relu")).to(device)
        self.tir_cfg = {"lr": tcfg.get("lr", self.cfg.get("lr", 1e-3)), "n_replay": tcfg.get("n_replay", 128),
                        "w_replay": tcfg.get("w_replay", 0.5)}
        if not self.shared:  # built after the task-inference net (the order of the random initialisations)
            self.memory = build_memory(self.cfg.get("memory"), benchmark, device)
        self.pixels = PixelSpace(benchmark.tasks[0], device)

    def begin_task(self, task) -> None:
        super().begin_task(task)
        self.tir_opt = make_optimizer(self.tir.parameters(), self.tir_cfg)
        self.train_memory = begin_memory_task(self.memory, task, self.benchmark.n_tasks, self.task_schedule(task))

    def end_task(self, task) -> None:
        super().end_task(task)
        if self.train_memory:
            self.memory.end_task(task.id, task)

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        """The classifier hypernetwork's, its task embedding's and the task-inference net's (not the memory's)."""
        return [*super().scheduled_optimizers(), self.tir_opt]

    def step(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        out = super().step(x, y, task_id)  # the hnet classifier, as in CL1 (no replay)
        if task_id > 0:  # one task alone gives the task-inference net nothing to separate
            self.tir_opt.zero_grad(set_to_none=True)
            n_seen = task_id + 1
            cur = F.cross_entropy(self.tir(x)[:, :n_seen],
                                  torch.full_like(y, task_id))
            xr, ids = replay_from_memory(self.memory, self.pixels, task_id, self.tir_cfg["n_replay"], self.rng)
            rep = F.cross_entropy(self.tir(xr)[:, :n_seen], ids)
            w = float(self.tir_cfg["w_replay"])
            loss = (1 - w) * cur + w * rep
            loss.backward()
            self.tir_opt.step()
            out["tir_loss"] = loss.detach()
        if self.train_memory:
            train_memory_step(self.memory, self.pixels, x, task_id, out, self.memory.real_conditions(task_id, y))
        return out

    @torch.no_grad()
    def infer_task(self, x: Tensor, per_task: list[Tensor] | None = None) -> Tensor:
        """The task per sample, by the task-inference network (``per_task`` is not needed)."""
        if self.n_seen == 1:
            return torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.tir(x)[:, : self.n_seen].argmax(1)

    @torch.no_grad()
    def predict_with_task(self, x: Tensor, task_id: int | None = None) -> tuple[Tensor, Tensor | None]:
        """As :class:`HNet`'s, but each sample goes through its inferred task's net only: the other tasks' nets
        are not needed (their logits would be ``-inf`` or unused), so evaluating after task ``t`` costs O(t)
        target-net passes instead of O(t^2)."""
        if self.inference != "tir":  # given, or inferred by entropy over every task's net
            return super().predict_with_task(x, task_id)
        inferred = self.infer_task(x)
        tasks = inferred.unique().tolist()  # evaluation only: one host sync per batch
        flat = self.gen.flat(tasks)  # the inferred tasks' weights in one batched call
        shared = self.scenario.shared_head
        n = self.k if shared else self.scenario.n_seen_classes(self.n_seen)
        out = x.new_full((x.shape[0], n), float("-inf"))
        for e, row in zip(tasks, flat):
            idx = (inferred == e).nonzero().squeeze(1)
            logits = self.logits(x.index_select(0, idx), e, self._classifier(self.gen.split(row)))
            o = 0 if shared else self.scenario.offsets[e]
            out[idx, o : o + logits.shape[1]] = logits
        return out, inferred

    def param_counts(self) -> dict[str, float]:
        out = super().param_counts()
        n_tir = sum(p.numel() for p in self.tir.parameters())
        m = self.memory.param_counts()
        out.update({f"memory_{k}": v for k, v in m.items()})
        out["tir"] = float(n_tir)
        out["trainable"] = out["trainable"] + n_tir + m["trainable"]
        return out

    def log_artifacts(self, tracker, task) -> None:
        log_memory(self.memory, tracker, task)

    def checkpoint_state(self) -> dict[str, Any]:
        module = {k: v for k, v in self.state_dict().items() if not k.startswith("memory.")}
        return {"module": module, "n_seen": self.n_seen, "memory": self.memory.checkpoint_state()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.grow_to(int(state["n_seen"]))  # first: a shared hypernetwork serves the memory too
        self.memory.load_checkpoint_state(state["memory"])
        self.n_seen = int(state["n_seen"])
        missing, unexpected = self.load_state_dict(state["module"], strict=False)
        bad = [k for k in missing if not k.startswith("memory.")] + list(unexpected)
        if bad:
            raise ValueError(f"checkpoint does not match hnet_tir: {bad[:5]}")
