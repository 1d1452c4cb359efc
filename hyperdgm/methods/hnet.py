"""HNET and HNET+ENT (von Oswald et al., ICLR 2020): a task-conditioned hypernetwork generates
the classifier's weights for each task; the output regularizer keeps the weights it generates
for earlier task embeddings fixed.

* ``hnet``     CL1 (the task id picks the embedding); in CL2 the embedding is inferred by entropy.
* ``hnet_ent`` CL2 / CL3: run the input through every task's generated net and take the task whose
  prediction has the lowest entropy; in CL3 a wrong task guess is a wrong answer.

Labels are always local. Head layout (``heads``): ``all`` (default, the paper's and the authors' code)
generates every task's head in CL1 / CL3 and task ``t`` reads its own block (split MNIST: 478,410
generated weights); CL2 has one shared head (475,202). ``own`` generates only a ``k``-way head per
task, in every scenario (fewer generated weights, the same hypernetwork up to a chunk).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hnet import OutputRegularizer, WeightGenerator
from ..hooks import WeightHook, protected_step
from ..profiling import region
from ..nets import TargetNet
from ..regularizers import build_regularizers, empirical_fisher
from .base import Method, make_optimizer
from .inference import assemble, infer_by_entropy

HNET_DEFAULTS = dict(hidden=[10, 10], activation="relu", chunk_size=42000, chunk_emb_size=96, task_emb_size=96,
                     emb_init_std=1.0)


def build_generator(target: Any, cfg: Mapping[str, Any]) -> WeightGenerator:
    """A :class:`WeightGenerator` for ``target`` from an ``hnet`` config block."""
    h = {**HNET_DEFAULTS, **dict(cfg or {})}
    return WeightGenerator(
        target, task_emb_size=int(h["task_emb_size"]), chunk_size=h["chunk_size"] or None,
        chunk_emb_size=int(h["chunk_emb_size"]), hidden=tuple(h["hidden"]), activation=str(h["activation"]),
        emb_init_std=float(h["emb_init_std"]),
    )


class OutputRegHook(WeightHook):
    """The output regularizer of a :class:`WeightGenerator` as a hook (Eq. 2, with Adam lookahead)."""

    def __init__(self, reg: OutputRegularizer, gen: WeightGenerator) -> None:
        self.reg, self.gen = reg, gen
        self.lookahead = reg.lookahead

    def has_penalty(self) -> bool:
        return self.reg.active

    def lookahead_parameters(self) -> list[Tensor]:
        return self.gen.hnet_parameters()

    def penalty(self, *, delta=None) -> Tensor:
        return self.reg.penalty(self.gen, delta=delta)


class HNet(Method):
    """A classifier whose weights come from a task-conditioned hypernetwork."""

    name = "hnet"
    scenarios = frozenset({"cl1", "cl2"})
    default_inference = "given"
    lr_schedulable = True

    def setup(self, benchmark, scenario, device, rng) -> None:
        super().setup(benchmark, scenario, device, rng)
        net = self.cfg.get("net") or {}
        self.k = max(scenario.classes_per_task)
        heads = str(self.cfg.get("heads") or "all")
        if heads not in ("all", "own"):
            raise ValueError(f"method.heads must be 'all' or 'own', got {heads!r}")
        self.all_heads = heads == "all" and not scenario.shared_head
        n_out = sum(scenario.classes_per_task) if self.all_heads else self.k
        self.target = TargetNet(net.get("arch", "mlp"), benchmark.tasks[0].input_shape, n_out,
                                hidden=net.get("hidden", (400, 400)), act=net.get("act", "relu"),
                                no_weights=True).to(device)
        self.gen = build_generator(self.generator_targets(), self.cfg.get("hnet")).to(device)
        self.multi_target = len(self.gen.target_shapes) > 1  # the classifier is target 0
        self.reg = OutputRegularizer(
            float(self.cfg.get("beta", 0.01)), tasks_per_step=self.cfg.get("reg_tasks_per_step"),
            online_targets=bool(self.cfg.get("online_targets", False)),
            lookahead=bool(self.cfg.get("lookahead", True)),
        )
        self.reg_hook = OutputRegHook(self.reg, self.gen)
        # optional online EWC / SI on the hypernetwork's own weights theta (method.ewc / method.si blocks)
        self.regs = nn.ModuleList(build_regularizers(self.cfg, self.gen.hnet_parameters(), self.hnet_fisher))
        self.inference = str(self.cfg.get("task_inference") or self.default_inference)
        self.temperature = float(self.cfg.get("entropy_temperature", 1.0))

    def generator_targets(self) -> Any:
        """What the hypernetwork generates: the classifier (subclasses may add more targets after it)."""
        return self.target.net

    def _classifier(self, w):
        return w[0] if self.multi_target else w

    # -- training ------------------------------------------------------------------------
    def begin_task(self, task) -> None:
        super().begin_task(task)
        t = task.id
        self.reg.begin_task(self.gen, current_task=t)  # targets W_k* for k < t, before anything moves
        while self.gen.n_tasks <= t:
            self.gen.add_task()
        if self.target.has_bn_stats and t > 0:
            self.target.add_bn_stats()  # batch-norm statistics are per task (they cannot be generated)
        self.opt = make_optimizer(self.gen.hnet_parameters(), self.cfg)
        # Only the current embedding is trained (its own Adam, as in the reference code); old ones stay fixed.
        self.emb_opt = self.embedding_optimizer([self.gen.task_embedding(t)])
        for r in self.regs:
            r.begin_task()

    def embedding_optimizer(self, params) -> torch.optim.Optimizer:
        """The current task embedding's optimizer: the method's, at ``emb_lr`` (default: ``lr``)."""
        return make_optimizer(params, {**self.cfg, "lr": self.cfg.get("emb_lr", self.cfg.get("lr", 1e-3))})

    def end_task(self, task) -> None:
        for r in self.regs:
            r.end_task(task.id, task)

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        """The hypernetwork's and the task embedding's (hypercl schedules both)."""
        return [self.opt, self.emb_opt]

    def infers_task(self) -> bool:
        return not (self.scenario.task_id_given and self.inference == "given")

    def hnet_fisher(self, task: Any, n_max: int | None = None) -> tuple[list[Tensor], int]:
        """EWC's Fisher w.r.t. theta: per training sample (batch size 1) the NLL of the predicted label of the
        task's generated net; the weights are generated once and each sample backpropagates through them."""
        params = self.gen.hnet_parameters()
        n = len(task.train) if n_max is None else min(int(n_max), len(task.train))
        dev = params[0].device
        w = self._classifier(self.gen(task.id))

        def losses():
            for i in range(n):
                x, _ = task.batch("train", torch.tensor([i], device=dev))
                logits = self.logits(x, task.id, w)
                yield F.cross_entropy(logits, logits.detach().argmax(1))

        return empirical_fisher(params, losses(), retain_graph=True)

    def logits(self, x: Tensor, task_id: int, weights=None) -> Tensor:
        if weights is None:
            with region("hnet"):
                weights = self._classifier(self.gen(task_id))
        with region("target"):
            out = self.target(x, weights, condition=task_id)
        o = self.scenario.offsets[task_id] if self.all_heads else 0
        return out[:, o : o + self.scenario.classes_per_task[task_id]]

    def step(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        self.opt.zero_grad(set_to_none=True)
        self.emb_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.logits(x, task_id), y)
        out = {"loss": loss.detach()}
        reg = protected_step(loss, [self.opt, self.emb_opt], [self.reg_hook, *self.regs])
        if reg is not None:
            out["reg"] = reg
        return out

    # -- several seeds as one learner ------------------------------------------------------
    def seed_stack_unsupported(self) -> str | None:
        from .hnet_stack import unsupported

        return unsupported(self)

    def stack_seeds(self, methods, task_id: int):
        from .hnet_stack import StackedHNet

        return StackedHNet(methods, task_id)

    # -- prediction ----------------------------------------------------------------------
    @torch.no_grad()
    def per_task_logits(self, x: Tensor) -> list[Tensor]:
        """The input through every seen task's generated net (weights for all tasks in one batched hnet call)."""
        flat = self.gen.flat(list(range(self.n_seen)))
        return [self.logits(x, e, self._classifier(self.gen.split(flat[e]))) for e in range(self.n_seen)]

    @torch.no_grad()
    def infer_task(self, x: Tensor, per_task: list[Tensor] | None = None) -> Tensor:
        """The task per sample: the seen task whose net is the most confident (lowest entropy);
        ``per_task``: those nets' logits when already computed."""
        return infer_by_entropy(self.per_task_logits(x) if per_task is None else per_task, self.temperature)

    @torch.no_grad()
    def predict(self, x: Tensor, task_id: int | None = None) -> Tensor:
        return self.predict_with_task(x, task_id)[0]

    @torch.no_grad()
    def predict_with_task(self, x: Tensor, task_id: int | None = None) -> tuple[Tensor, Tensor | None]:
        if task_id is not None and self.inference == "given":
            return self.logits(x, task_id), None
        per_task = self.per_task_logits(x)
        inferred = self.infer_task(x, per_task)
        if self.scenario.shared_head:
            return assemble(per_task, inferred, None), inferred
        n_classes = self.scenario.n_seen_classes(self.n_seen)
        return assemble(per_task, inferred, self.scenario.offsets, n_classes), inferred

    # -- bookkeeping ---------------------------------------------------------------------
    def param_counts(self) -> dict[str, float]:
        c = self.gen.param_counts()
        return {
            "trainable": c["hnet"] + c["task_embeddings"],
            "hnet": c["hnet"],
            "task_embeddings": c["task_embeddings"],
            "target": c["target"],
            "compression_ratio": c["compression_ratio"],
            "compression_ratio_with_embeddings": c["compression_ratio_with_embeddings"],
        }

    def grow_to(self, n: int) -> None:
        """Add task embeddings (and batch-norm statistics slots) up to ``n`` tasks, e.g. before loading a checkpoint."""
        while self.gen.n_tasks < n:
            self.gen.add_task()
        if self.target.has_bn_stats:
            for _ in range(n - int(self.target.net.batchnorm_layers[0].num_stats)):
                self.target.add_bn_stats()

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.grow_to(int(state["n_seen"]))
        super().load_checkpoint_state(state)


class HNetEnt(HNet):
    """HNET+ENT: task inferred as the task whose generated net is most confident (lowest entropy)."""

    name = "hnet_ent"
    scenarios = frozenset({"cl2", "cl3"})
    default_inference = "entropy"
