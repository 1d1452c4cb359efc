"""Replay spaces: what a generative memory models, and where its samples enter the classifier.

* :class:`PixelSpace` (``memory.space=pixels``): images in ``[0, 1]`` (Bernoulli likelihood); a
  task's normalised inputs are mapped to ``[0, 1]`` for the memory and replayed images back.
* :class:`FeatureSpace` (``memory.space=features``, ``memory.layer=k``): the classifier's
  features after layer ``k`` (Gaussian likelihood); replayed features enter the classifier after
  layer ``k`` (latent replay; van de Ven, Siegelmann & Tolias 2020's internal replay). Layers
  ``1..k`` run without dropout for real inputs too, and the dropout that ends layer ``k`` applies to
  real and replayed features alike, so nothing but their content tells the two apart.

A space's ``classify(net, x)`` runs a classifier from the space's entry point, so the same replay
loss serves both. The memory stays unaware of the space: it is built for ``space.shape`` with
``space.likelihood``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.tensors import DATASET_STATS

__all__ = ["ReplaySpace", "PixelSpace", "FeatureSpace", "ClassifierTrunk", "SPACES", "DRIFTS", "ENCODERS",
           "FEATURE_NORMS"]

SPACES = ("pixels", "features")
#: How the feature extractor's drift is handled in feature space: nothing, layers 1..k frozen after
#: the first task, or a feature-distillation term towards the classifier before the task.
DRIFTS = ("none", "freeze", "align")
#: The feature VAE's encoder: its own MLP, or the classifier's layers above ``k`` (BI-R-like feedback path).
ENCODERS = ("own", "classifier")
#: What the feature memory models: the features as they are, or each unit standardised by running moments of the
#: features of the task being learned (each task's replays mapped back with that task's moments).
FEATURE_NORMS = ("none", "standardize")

#: The range of each activation's output: replayed features (a Gaussian's mean) are projected onto it.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "relu": (0.0, None), "elu": (-1.0, None), "sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "leaky_relu": (None, None),
}


class ReplaySpace:
    """Base class, and the plain input space (inputs as the data gives them, read by the whole net).
    ``layer``: the classifier layer after which samples enter (0: the input)."""

    name: ClassVar[str] = "input"
    likelihood: ClassVar[str] = "bernoulli"
    layer: int = 0
    shape: tuple[int, ...] = ()

    def to_memory(self, x: Tensor, learn: bool = False) -> Tensor:
        """A batch of the task's inputs -> what the memory models (no grad). ``learn``: the memory trains on
        this batch now (a space with statistics updates them)."""
        return x

    def to_input(self, m: Tensor, ids: Tensor | None = None) -> Tensor:
        """Memory samples (of tasks ``ids``, one per row) -> what the classifier reads at its entry point."""
        return m

    def at_entry(self, x: Tensor) -> Tensor:
        """A batch of real inputs as the classifier reads them at the entry point (no grad): what
        :meth:`to_input` of a replay stands beside (the replay map compares the two)."""
        return x

    def end_task(self, task_id: int) -> None:
        """The memory finished learning task ``task_id``."""

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the space (plain tensors and python)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state`."""

    def classify(self, net: Any, x: Tensor) -> Tensor:
        """Logits of ``net`` run from the entry point on ``x`` (a :meth:`to_input` result)."""
        return net(x)

    def entry(self, net: Any, x: Tensor) -> Tensor:
        """A batch of real inputs at the entry point, with gradient (the classifier's training forward)."""
        return x

    def logits(self, net: Any, x: Tensor) -> Tensor:
        """Logits of ``net`` on real inputs in training: through :meth:`entry` and :meth:`classify`, the path
        replays take from the entry point on."""
        return self.classify(net, self.entry(net, x))


class PixelSpace(ReplaySpace):
    """Maps a task's normalised inputs to ``[0, 1]`` and back (identity for unit-normalised data)."""

    name = "pixels"
    likelihood = "bernoulli"

    def __init__(self, task: Any, device: torch.device) -> None:
        self.shape = tuple(int(s) for s in task.input_shape)
        self.identity = task.normalize == "unit"
        if not self.identity:
            mean, std = DATASET_STATS[task.dataset]
            self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
            self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def to_unit(self, x: Tensor) -> Tensor:
        return x if self.identity else (x * self.std + self.mean).clamp(0, 1)

    def from_unit(self, x: Tensor) -> Tensor:
        return x if self.identity else (x - self.mean) / self.std

    def to_memory(self, x: Tensor, learn: bool = False) -> Tensor:
        return self.to_unit(x)

    def to_input(self, m: Tensor, ids: Tensor | None = None) -> Tensor:
        return self.from_unit(m)

    def classify(self, net: Any, x: Tensor) -> Tensor:
        return net(x)


class FeatureSpace(ReplaySpace):
    """The features of a classifier (a :class:`~hyperdgm.nets.TargetNet`) after layer ``k``.

    ``net`` is the live classifier: the memory learns the features the extractor gives *now*
    (see ``memory.drift`` for what keeps them valid later). :meth:`to_input` projects a Gaussian
    sample onto the range of the layer's activation (ReLU features are never negative).

    ``norm="standardize"``: the memory models every unit standardised, ``(f - mean) / std``, so that units of
    small variance weigh in the Gaussian likelihood as much as large ones. The moments are running averages
    (momentum ``momentum``) over the batches the memory learns from; when a task ends its moments are kept, and
    that task's replays are mapped back with them (a task's generator never sees another task's moments).
    """

    name = "features"
    likelihood = "gaussian"

    def __init__(self, net: Any, layer: int, act: str = "relu", norm: str = "none", momentum: float = 0.01,
                 min_std: float = 0.01) -> None:
        net.check_split(layer)
        if norm not in FEATURE_NORMS:  # memory configs are checked by space_config first; this guards direct use
            raise ValueError(f"memory.feature_norm must be one of {', '.join(FEATURE_NORMS)}, got {norm!r}")
        self.__dict__["net"] = net
        self.layer = int(layer)
        self.shape = (net.feature_dim(self.layer),)
        # ZenkeNet's cut points all follow a ReLU (max-pool and dropout keep the sign)
        self.act = "relu" if net.arch == "zenke" else str(act).lower()
        self.lo, self.hi = _RANGES.get(self.act, (None, None))
        self.norm, self.momentum, self.min_std = norm, float(momentum), float(min_std)
        self.mean: Tensor | None = None  # running moments of the task being learned
        self.var: Tensor | None = None
        self.task_mean: Tensor | None = None  # [finished tasks, units]: the moments each task was learned with
        self.task_std: Tensor | None = None

    @torch.no_grad()
    def at_entry(self, x: Tensor) -> Tensor:
        was = self.net.training
        self.net.eval()  # the features themselves, without dropout noise
        try:
            return self.net.features(x, self.layer)
        finally:
            self.net.train(was)

    @torch.no_grad()
    def to_memory(self, x: Tensor, learn: bool = False) -> Tensor:
        f = self.at_entry(x)
        if self.norm == "none":
            return f
        if learn:  # running moments (the first batch of a run sets them)
            mean, var = f.mean(0), f.var(0, unbiased=False)
            if self.mean is None or self.var is None:
                self.mean, self.var = mean, var
            else:
                self.mean.lerp_(mean, self.momentum)
                self.var.lerp_(var, self.momentum)
        if self.mean is None or self.var is None:
            raise RuntimeError("memory.feature_norm=standardize: no moments yet (the memory has not learned a batch)")
        return (f - self.mean) / self.var.sqrt().clamp_min(self.min_std)

    def end_task(self, task_id: int) -> None:
        if self.norm == "none" or self.mean is None or self.var is None:
            return
        done = 0 if self.task_mean is None else self.task_mean.shape[0]
        if int(task_id) != done:
            raise RuntimeError(f"memory.feature_norm=standardize: task {task_id} ended after {done} finished tasks")
        row = (self.mean.clone()[None], self.var.sqrt().clamp_min(self.min_std)[None])  # copies: the running moments move on
        if self.task_mean is None or self.task_std is None:
            self.task_mean, self.task_std = row
        else:
            self.task_mean, self.task_std = torch.cat([self.task_mean, row[0]]), torch.cat([self.task_std, row[1]])

    def to_input(self, m: Tensor, ids: Tensor | None = None) -> Tensor:
        if self.norm != "none":
            if ids is None:
                raise ValueError("memory.feature_norm=standardize maps replays back with their task's moments: "
                                 "it needs the task of every row")
            if self.task_mean is None or self.task_std is None:
                raise RuntimeError("memory.feature_norm=standardize: no task has finished, there is nothing to replay")
            m = m * self.task_std.index_select(0, ids) + self.task_mean.index_select(0, ids)
        if self.lo is None and self.hi is None:
            return m
        return m.clamp(self.lo, self.hi)

    def state(self) -> dict[str, Any]:
        if self.norm == "none":
            return {}
        return {"mean": self.mean, "var": self.var, "task_mean": self.task_mean, "task_std": self.task_std}

    def load_state(self, state: Mapping[str, Any]) -> None:
        if self.norm == "none":
            return
        self.mean, self.var = state.get("mean"), state.get("var")
        self.task_mean, self.task_std = state.get("task_mean"), state.get("task_std")

    def classify(self, net: Any, x: Tensor) -> Tensor:
        # the dropout that ends layer k applies to real and replayed features alike
        return net.head(net.entry_dropout(x, self.layer), self.layer)

    def entry(self, net: Any, x: Tensor) -> Tensor:
        # no dropout below the entry point: replays are deterministic features, and a head would learn to tell
        # real features from replayed ones by the dropout's zeros (it then read every test image as an old class)
        return net.features(x, self.layer, dropout=False)


class ClassifierTrunk(nn.Module):
    """The classifier's layers ``k+1 .. L-1`` (its head without the output layer) as a VAE encoder trunk:
    the encoder of a BI-R-like memory *is* the classifier's feed-forward path above layer ``k``, and the
    generator its feedback path. The classifier is referenced, not owned (its weights are the classifier's:
    they are neither saved nor optimised with the memory), so the VAE loss reaches them only when the
    method steps the classifier after the memory (``memory.encoder=classifier``)."""

    def __init__(self, net: Any, layer: int) -> None:
        super().__init__()
        net.check_split(layer)
        if layer >= net.split_points:
            raise ValueError(f"memory.encoder=classifier needs a hidden layer above memory.layer={layer} "
                             f"(the net has {net.split_points}): use a smaller memory.layer")
        self.__dict__["net"] = net
        self.layer = int(layer)
        self.out_features = int(net.feature_dim(net.split_points))

    def forward(self, h: Tensor) -> Tensor:
        return self.net.hidden_from(h, self.layer)
