"""The method interface the trainer talks to, and the plain-classifier base the baselines share."""
from __future__ import annotations

import logging
import math
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import protected_step
from ..lr_schedule import LRSchedule
from ..nets import TargetNet
from ..regularizers import build_regularizers, empirical_fisher, mlp_fisher
from ..scenarios import Scenario

log = logging.getLogger(__name__)


class Method(nn.Module):
    """A continual learner.

    The trainer calls, per task: :meth:`begin_task`, then :meth:`step` on batches of the current
    task (inputs, *local* labels), then :meth:`end_task`; after each task it scores every seen
    task through :meth:`predict`. Methods list the scenarios they support in ``scenarios``.

    ``predict(x, task_id)`` returns logits in the scenario's label space: the task's head (CL1,
    ``task_id`` given), the shared head (CL2) or every class seen so far (CL3 / class-IL). A
    method that infers the task fills the inferred task's block and leaves the rest at ``-inf``.
    """

    name: ClassVar[str] = "method"
    scenarios: ClassVar[frozenset[str]] = frozenset({"cl1", "cl2", "cl3", "cil"})
    #: Whether ``method.lr_schedule`` can drive it (:meth:`scheduled_optimizers` returns its optimizers).
    lr_schedulable: ClassVar[bool] = False
    #: The run's directory (set by the trainer before :meth:`setup`; ``None`` outside a run): a place to
    #: cache what a method derives from the data alone (MeRGAN's evaluator).
    run_dir: Any = None

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        self.n_seen = 0
        self.current_task: int | None = None
        self.step_base = 0  # the trainer's step of the current task's first iteration (train/* numbering)
        self.lr_schedule = LRSchedule(self.cfg.get("lr_schedule"))
        if self.lr_schedule.active and not self.lr_schedulable:
            raise ValueError(f"method {self.name} has no optimizer that method.lr_schedule can drive; "
                             "use method.lr_schedule=none")

    # -- lifecycle -----------------------------------------------------------------------
    def setup(self, benchmark: Any, scenario: Scenario, device: torch.device, rng: torch.Generator) -> None:
        """Build networks once the benchmark and scenario are known (called before training and before resume)."""
        self.benchmark = benchmark
        self.scenario = scenario
        self.device = device
        self.rng = rng

    def plan_task(self, n_iters: int, batch_size: int) -> None:
        """Told by the trainer before :meth:`begin_task`: steps and batch size of the coming task."""
        self.task_iters = int(n_iters)
        self.batch_size = int(batch_size)

    def task_schedule(self, task: Any) -> tuple[int, int]:
        """``(iterations, iterations per epoch)`` of ``task`` as :meth:`plan_task` announced it."""
        bs = int(getattr(self, "batch_size", 64))
        return int(getattr(self, "task_iters", 1)), max(1, math.ceil(len(task.train) / bs))

    def begin_task(self, task: Any) -> None:
        self.current_task = task.id
        self.n_seen = task.id + 1

    def step(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def end_task(self, task: Any) -> None:
        pass

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers of the current task that ``method.lr_schedule`` drives (after :meth:`begin_task`)."""
        return []

    def infers_task(self) -> bool:
        """Whether :meth:`predict` infers the task itself in this scenario (its "during" accuracy then
        infers among the tasks seen so far; see :func:`hyperdgm.metrics.summary`)."""
        return False

    @torch.no_grad()
    def predict(self, x: Tensor, task_id: int | None = None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def predict_with_task(self, x: Tensor, task_id: int | None = None) -> tuple[Tensor, Tensor | None]:
        """:meth:`predict`'s logits and, when the method inferred the task (:meth:`infers_task`), the task
        it chose per sample (else ``None``): the trainer scores task inference from the same forward pass."""
        return self.predict(x, task_id), None

    def param_counts(self) -> dict[str, float]:
        """``trainable`` (what the method learns and keeps), ``target`` (the weights of the nets it uses
        to predict) and ``compression_ratio`` = trainable / target."""
        raise NotImplementedError

    def log_artifacts(self, tracker: Any, task: Any) -> None:
        """Hook for method-specific artifacts after a task (e.g. replay sample grids)."""

    # -- several seeds as one learner (hyperdgm.seed_batch) ------------------------------------
    def seed_stack_unsupported(self) -> str | None:
        """Why this learner's seeds cannot train as one batched learner (None: they can, see :meth:`stack_seeds`)."""
        return f"method {self.name} has no seed-batched step"

    def stack_seeds(self, methods: list["Method"], task_id: int) -> Any:
        """A learner training ``methods`` (this one first; one per seed, each begun on the task) in batched
        steps: ``step(x [S, B, ...], y [S, B]) -> {name: [S] losses}`` and ``finish()`` writing each seed's
        weights back into its own method."""
        raise NotImplementedError(self.seed_stack_unsupported() or "")

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue after the current task (tensors and plain python only)."""
        return {"module": self.state_dict(), "n_seen": self.n_seen}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.n_seen = int(state["n_seen"])
        self.load_state_dict(state["module"])


def make_optimizer(params, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Adam (default) or SGD from ``lr``, ``optimizer``, ``adam_beta1``, ``weight_decay`` keys."""
    name = str(cfg.get("optimizer", "adam")).lower()
    lr = float(cfg.get("lr", 1e-3))
    wd = float(cfg.get("weight_decay", 0.0))
    if name == "adam":
        params = list(params)
        # The fused kernel is ~15% faster per step on CPU and GPU; it needs floating tensors on one device type.
        fused = bool(cfg.get("fused", True)) and bool(params) and params[0].device.type in ("cpu", "cuda")
        return torch.optim.Adam(params, lr=lr, betas=(float(cfg.get("adam_beta1", 0.9)), 0.999), weight_decay=wd,
                                fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=float(cfg.get("momentum", 0.0)), weight_decay=wd)
    raise ValueError(f"unknown optimizer '{name}' (choose from adam, sgd)")


def count(params) -> int:
    return int(sum(p.numel() for p in params))


class ClassifierMethod(Method):
    """One ordinary classifier (its own weights) with the scenario's heads; baselines build on it.

    ``method.ewc`` / ``method.si`` blocks (absent or null: off) put online EWC / SI on the
    classifier's weights (:mod:`hyperdgm.regularizers`); subclasses run :attr:`regs` in their step.
    ``method.keep_optimizer``: one optimizer for the whole run (the three-scenarios code), saved in
    the checkpoints; else a fresh one per task (the hypercl code).
    """

    lr_schedulable = True

    def setup(self, benchmark, scenario, device, rng) -> None:
        super().setup(benchmark, scenario, device, rng)
        net = self.cfg.get("net") or {}
        self.net = TargetNet(
            net.get("arch", "mlp"), benchmark.tasks[0].input_shape, scenario.n_outputs(),
            hidden=net.get("hidden", (400, 400)), act=net.get("act", "relu"),
        ).to(device)
        self.regs = nn.ModuleList(build_regularizers(self.cfg, list(self.net.parameters()), self.classifier_fisher))
        self.keep_optimizer = bool(self.cfg.get("keep_optimizer", False))
        self.opt: torch.optim.Optimizer | None = None

    def begin_task(self, task) -> None:
        super().begin_task(task)
        if self.opt is None or not self.keep_optimizer:
            self.opt = make_optimizer(self.net.parameters(), self.cfg)
        for r in self.regs:
            r.begin_task()

    def end_task(self, task) -> None:
        for r in self.regs:
            r.end_task(task.id, task)

    def scheduled_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt]

    def classifier_fisher(self, task: Any, n_max: int | None = None) -> tuple[list[Tensor], int]:
        """Summed squared per-sample gradients of the NLL of the predicted label over the task's training
        samples (the first ``n_max``), on the head the task trained (the three-scenarios EWC Fisher)."""
        params = list(self.net.parameters())
        n = len(task.train) if n_max is None else min(int(n_max), len(task.train))
        dev = params[0].device
        was_training = self.net.training
        self.net.eval()
        try:
            if self.net._plain_mlp:  # a chain of F.linear: per-sample squared gradients from one batched backward
                batches = (task.batch("train", torch.arange(s, min(n, s + 1000), device=dev))[0]
                           for s in range(0, n, 1000))
                head = lambda z: self.scenario.head(z, task.id, self.n_seen)  # noqa: E731
                return mlp_fisher(params, self.net._act, head, batches)

            def losses():
                for i in range(n):
                    x, _ = task.batch("train", torch.tensor([i], device=dev))
                    logits = self.scenario.head(self.net(x), task.id, self.n_seen)
                    yield F.cross_entropy(logits, logits.detach().argmax(1))

            return empirical_fisher(params, losses())
        finally:
            self.net.train(was_training)

    def regularized_step(self, loss: Tensor, out: dict[str, Tensor]) -> None:
        """Backward ``loss`` with the regularizers in the hook sequence, step; the penalty into ``out``."""
        pen = protected_step(loss, [self.opt], self.regs)
        if pen is not None:
            out["penalty"] = pen

    def optimizer_state(self) -> dict[str, Any]:
        """The optimizer's state for a checkpoint, when it lives across tasks."""
        return {"opt": self.opt.state_dict()} if self.keep_optimizer and self.opt is not None else {}

    def load_optimizer_state(self, state: Mapping[str, Any]) -> None:
        if self.keep_optimizer and "opt" in state:
            self.opt = make_optimizer(self.net.parameters(), self.cfg)
            self.opt.load_state_dict(state["opt"])

    def checkpoint_state(self) -> dict[str, Any]:
        return {**super().checkpoint_state(), **self.optimizer_state()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        super().load_checkpoint_state(state)
        self.load_optimizer_state(state)

    def loss(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        return self.loss_from(self.net(x), y, task_id)

    def loss_from(self, logits: Tensor, y: Tensor, task_id: int) -> Tensor:
        """The current task's loss from the classifier's logits over every unit."""
        return F.cross_entropy(self.scenario.head(logits, task_id, self.n_seen), self.scenario.target(y, task_id))

    @torch.no_grad()
    def predict(self, x: Tensor, task_id: int | None = None) -> Tensor:
        return self.scenario.head(self.net(x), task_id, self.n_seen)

    def param_counts(self) -> dict[str, float]:
        n = count(self.net.parameters())
        return {"trainable": n, "target": n, "compression_ratio": 1.0}
