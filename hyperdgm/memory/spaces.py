"""Replay spaces: what a generative memory models, and where its samples enter the classifier.

* :class:`PixelSpace` (``memory.space=pixels``): images in ``[0, 1]`` (Bernoulli likelihood); a
  task's normalised inputs are mapped to ``[0, 1]`` for the memory and replayed images back.
* :class:`FeatureSpace` (``memory.space=features``, ``memory.layer=k``): the classifier's
  features after layer ``k`` (Gaussian likelihood); replayed features enter the classifier after
  layer ``k`` (latent replay; van de Ven, Siegelmann & Tolias 2020's internal replay).

A space's ``classify(net, x)`` runs a classifier from the space's entry point, so the same replay
loss serves both. The memory stays unaware of the space: it is built for ``space.shape`` with
``space.likelihood``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data.tensors import DATASET_STATS

__all__ = ["ReplaySpace", "PixelSpace", "FeatureSpace", "ClassifierTrunk", "SPACES", "DRIFTS", "ENCODERS"]

SPACES = ("pixels", "features")
#: How the feature extractor's drift is handled in feature space: nothing, layers 1..k frozen after
#: the first task, or a feature-distillation term towards the classifier before the task.
DRIFTS = ("none", "freeze", "align")
#: The feature VAE's encoder: its own MLP, or the classifier's layers above ``k`` (BI-R-like feedback path).
ENCODERS = ("own", "classifier")

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

    def to_memory(self, x: Tensor) -> Tensor:
        """A batch of the task's inputs -> what the memory models (no grad)."""
        return x

    def to_input(self, m: Tensor) -> Tensor:
        """Memory samples -> what the classifier reads at its entry point."""
        return m

    def classify(self, net: Any, x: Tensor) -> Tensor:
        """Logits of ``net`` run from the entry point on ``x`` (a :meth:`to_input` result)."""
        return net(x)


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

    def to_memory(self, x: Tensor) -> Tensor:
        return self.to_unit(x)

    def to_input(self, m: Tensor) -> Tensor:
        return self.from_unit(m)

    def classify(self, net: Any, x: Tensor) -> Tensor:
        return net(x)


class FeatureSpace(ReplaySpace):
    """The features of a classifier (a :class:`~hyperdgm.nets.TargetNet`) after layer ``k``.

    ``net`` is the live classifier: the memory learns the features the extractor gives *now*
    (see ``memory.drift`` for what keeps them valid later). :meth:`to_input` projects a Gaussian
    sample onto the range of the layer's activation (ReLU features are never negative).
    """

    name = "features"
    likelihood = "gaussian"

    def __init__(self, net: Any, layer: int, act: str = "relu") -> None:
        net.check_split(layer)
        self.__dict__["net"] = net
        self.layer = int(layer)
        self.shape = (net.feature_dim(self.layer),)
        # ZenkeNet's cut points all follow a ReLU (max-pool and dropout keep the sign)
        self.act = "relu" if net.arch == "zenke" else str(act).lower()
        self.lo, self.hi = _RANGES.get(self.act, (None, None))

    @torch.no_grad()
    def to_memory(self, x: Tensor) -> Tensor:
        was = self.net.training
        self.net.eval()  # the features themselves, without dropout noise
        try:
            return self.net.features(x, self.layer)
        finally:
            self.net.train(was)

    def to_input(self, m: Tensor) -> Tensor:
        if self.lo is None and self.hi is None:
            return m
        return m.clamp(self.lo, self.hi)

    def classify(self, net: Any, x: Tensor) -> Tensor:
        return net.head(x, self.layer)


class ClassifierTrunk(nn.Module):
    """The classifier's layers ``k+1 .. L-1`` (its head without the output layer) as a VAE encoder trunk:
    the encoder of a BI-R-like memory *is* the classifier's feed-forward path above layer ``k``, and the
    generator its feedback path. The classifier is referenced, not owned (its weights are the classifier's:
    they are neither saved nor optimised with the memory), so the VAE loss reaches them only when the
    method steps the classifier after the memory (``memory.encoder=classifier``)."""

    def __init__(self, net: Any, layer: int) -> None:
        super().__init__()
        if net.arch != "mlp":
            raise ValueError(f"memory.encoder=classifier needs net.arch=mlp, got {net.arch}")
        if layer >= net.split_points:
            raise ValueError(f"memory.encoder=classifier needs a hidden layer above memory.layer={layer} "
                             f"(the net has {net.split_points}): use a smaller memory.layer")
        self.__dict__["net"] = net
        self.layer = int(layer)
        self.out_features = int(net.feature_dim(net.split_points))

    def forward(self, h: Tensor) -> Tensor:
        return self.net.hidden_from(h, self.layer)
