"""Target networks: the papers' MLPs, ResNet-32 and the ZenkeNet, built from ``hypnettorch.mnets``.

All of them take images as ``[B, C, H, W]`` float tensors; :class:`TargetNet` adapts that to
hypnettorch's conventions (flat input for MLPs, flattened channels-last for its conv nets) and
lets the same net run with its own weights or with weights handed in (e.g. from a hypernetwork).
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

# hypnettorch's own forward passes read a deprecated attribute on every call; silence that one warning.
warnings.filterwarnings("ignore", message='Use attribute "internal_params"', category=DeprecationWarning)

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation '{name}' (choose from {', '.join(_ACTIVATIONS)})") from None


#: ZenkeNet's outputs after its cut points (conv block 1, conv block 2, the hidden fc layer), unflattened.
_ZENKE_FEATURES = ((32, 15, 15), (64, 6, 6), (512,))


class TargetNet(nn.Module):
    """A hypnettorch main network behind a ``[B, C, H, W] -> logits`` interface.

    ``no_weights=True`` builds the net without parameters of its own: pass ``weights`` (a list
    of tensors in ``param_shapes`` order) to :meth:`forward`.
    """

    def __init__(
        self,
        arch: str,
        input_shape: Sequence[int],
        n_out: int,
        *,
        hidden: Sequence[int] = (400, 400),
        act: str = "relu",
        no_weights: bool = False,
        batch_norm: bool = True,
        dropout: float = -1,
    ) -> None:
        super().__init__()
        from hypnettorch import mnets

        self.arch = arch.lower()
        self.input_shape = tuple(int(s) for s in input_shape)
        c, h, w = self.input_shape
        self._act = activation(act)
        # plain MLPs run as a chain of F.linear (hypnettorch's forward adds per-call Python overhead)
        self._plain_mlp = self.arch == "mlp" and dropout == -1
        if self.arch == "mlp":
            self.net = mnets.MLP(
                n_in=c * h * w, n_out=n_out, hidden_layers=tuple(hidden if hidden is not None else (400, 400)), activation_fn=activation(act),
                no_weights=no_weights, dropout_rate=dropout, verbose=False,
            )
        elif self.arch == "resnet32":
            self.net = mnets.ResNet(
                in_shape=(h, w, c), num_classes=n_out, n=5, no_weights=no_weights,
                use_batch_norm=batch_norm, bn_track_stats=True, verbose=False,
            )
        elif self.arch == "zenke":
            self.net = mnets.ZenkeNet(in_shape=(h, w, c), num_classes=n_out, arch="cifar", no_weights=no_weights,
                                      verbose=False)
        else:
            raise ValueError(f"unknown target net '{arch}' (choose from mlp, resnet32, zenke)")
        self.n_out = n_out
        self._hidden = tuple(int(h) for h in (hidden if hidden is not None else (400, 400)))

    @property
    def param_shapes(self) -> list[list[int]]:
        """Shapes of every weight the net needs (generated or its own)."""
        return [list(s) for s in self.net.param_shapes]

    @property
    def n_params(self) -> int:
        return int(sum(torch.Size(s).numel() for s in self.param_shapes))

    @property
    def has_bn_stats(self) -> bool:
        """Whether the net keeps batch-norm running statistics (which a hypernetwork cannot generate)."""
        return bool(getattr(self.net, "batchnorm_layers", None))

    def add_bn_stats(self) -> None:
        """Open a new slot of batch-norm running statistics (one per task; selected by ``condition``)."""
        for bn in self.net.batchnorm_layers:
            bn.checkpoint_stats()

    def forward(self, x: Tensor, weights: Sequence[Tensor] | None = None, condition: int | None = None) -> Tensor:
        if self._plain_mlp:
            w = list(self.net.internal_params) if weights is None else weights
            h = x.flatten(1)
            n = len(w) // 2
            for i in range(n):  # hypnettorch's layout: W0, b0, W1, b1, ...
                h = F.linear(h, w[2 * i], w[2 * i + 1])
                if i < n - 1:
                    h = self._act(h)
            return h
        if self.arch == "mlp":
            x = x.flatten(1)
        else:  # hypnettorch conv nets read flattened channels-last images
            x = x.permute(0, 2, 3, 1).flatten(1)
        w = None if weights is None else list(weights)
        if condition is not None and self.has_bn_stats:
            return self.net.forward(x, weights=w, condition=int(condition))
        return self.net.forward(x, weights=w)

    # -- feature / head split (latent replay) ------------------------------------------------
    @property
    def split_points(self) -> int:
        """How many layers ``k`` the net can be cut after (``features(x, k)`` / ``head(h, k)``); 0: none.

        MLP: after each hidden layer (its activation included). ZenkeNet: after conv block 1, conv
        block 2 (max-pool and dropout included), and the hidden fully connected layer. ResNet-32: none.
        """
        if self.arch == "mlp":
            return len(self._hidden) if self._plain_mlp else 0  # (hypnettorch's dropout MLP: no split)
        if self.arch == "zenke":
            return 3
        return 0

    def check_split(self, k: int) -> None:
        """Raise one clear ``ValueError`` unless the net can be cut after layer ``k``."""
        n = self.split_points
        if n == 0:
            raise ValueError(f"net.arch={self.arch} has no feature/head split; latent replay needs net.arch=mlp "
                             "or zenke")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise ValueError(f"memory.layer={k!r} is out of range: net.arch={self.arch} can be cut after layer "
                             f"1..{n} (0 would be pixels: use memory.space=pixels)")

    def _n_split_tensors(self, k: int) -> int:
        """How many of the weight tensors (``param_shapes`` order) belong to layers ``1..k``."""
        return 2 * k if self.arch == "mlp" else (0, 4, 8, 10)[k]

    def feature_dim(self, k: int) -> int:
        """Size of the (flattened) features after layer ``k``."""
        self.check_split(k)
        if self.arch == "mlp":
            return self._hidden[k - 1]
        return math.prod(_ZENKE_FEATURES[k - 1])

    def _weights(self, weights: Sequence[Tensor] | None) -> list[Tensor]:
        return list(self.net.internal_params) if weights is None else list(weights)

    def feature_parameters(self, k: int) -> list[nn.Parameter]:
        """The net's own parameters of layers ``1..k`` (what ``memory.drift=freeze`` freezes)."""
        self.check_split(k)
        return list(self.net.internal_params)[: self._n_split_tensors(k)]

    def features(self, x: Tensor, k: int, weights: Sequence[Tensor] | None = None, dropout: bool = True) -> Tensor:
        """``[B, C, H, W]`` images -> the flattened output of layer ``k`` ``[B, feature_dim(k)]``
        (``forward(x) == head(features(x, k), k)``). ``dropout=False``: layers ``1..k`` without their dropout
        in training too (the deterministic features a latent memory learns and replays; see :meth:`entry_dropout`)."""
        w = self._weights(weights)
        if self.arch == "mlp":
            h = x.flatten(1)
            for i in range(k):
                h = self._act(F.linear(h, w[2 * i], w[2 * i + 1]))
            return h
        if self.arch != "zenke":
            self.check_split(k)
        net = self.net
        h = x.view(-1, *self.input_shape)
        for b in range(min(k, 2)):  # ZenkeNet's conv blocks: conv 'same', conv 'valid', max-pool, dropout
            h = F.relu(F.conv2d(h, w[4 * b], w[4 * b + 1], padding=1))
            h = F.max_pool2d(F.relu(F.conv2d(h, w[4 * b + 2], w[4 * b + 3])), 2)
            if net._use_dropout and dropout:
                h = net._drop_conv(h)
        h = h.flatten(1)
        if k == 3:
            h = F.relu(F.linear(h, w[8], w[9]))
            if net._use_dropout and dropout:
                h = net._drop_fc1(h)
        return h

    def entry_dropout(self, h: Tensor, k: int) -> Tensor:
        """The dropout that ends layer ``k``, on flattened features ``[B, feature_dim(k)]`` (identity in eval mode
        and for nets without dropout): ``head(entry_dropout(features(x, k, dropout=False), k), k)`` is the forward
        of latent replay, the same for real and replayed features. (Dropout inside layers ``1..k`` would mark the
        real features, which replays never carry, and a head would learn to tell the two apart by it.)"""
        self.check_split(k)
        if self.arch != "zenke" or not self.net._use_dropout or not self.net.training:
            return h
        if k == 3:
            return self.net._drop_fc1(h)
        return self.net._drop_conv(h.view(h.shape[0], *_ZENKE_FEATURES[k - 1])).flatten(1)

    def head(self, h: Tensor, k: int, weights: Sequence[Tensor] | None = None) -> Tensor:
        """Features after layer ``k`` ``[B, feature_dim(k)]`` -> logits (layers ``k+1..``)."""
        w = self._weights(weights)
        return F.linear(self.hidden_from(h, k, w), w[-2], w[-1])

    def hidden_from(self, h: Tensor, k: int, weights: Sequence[Tensor] | None = None) -> Tensor:
        """Features after layer ``k`` -> the last hidden layer's output (the head without its output
        layer; ZenkeNet: its hidden fully connected layer): the trunk a BI-R-like encoder shares with the
        classifier."""
        w = self._weights(weights)
        if self.arch == "mlp":
            for i in range(k, len(w) // 2 - 1):
                h = self._act(F.linear(h, w[2 * i], w[2 * i + 1]))
            return h
        if self.arch != "zenke":
            self.check_split(k)
        net = self.net
        if k == 1:
            h = h.view(-1, *_ZENKE_FEATURES[0])
            h = F.relu(F.conv2d(h, w[4], w[5], padding=1))
            h = F.max_pool2d(F.relu(F.conv2d(h, w[6], w[7])), 2)
            if net._use_dropout:
                h = net._drop_conv(h)
            h = h.flatten(1)
        if k <= 2:
            h = F.relu(F.linear(h, w[8], w[9]))
            if net._use_dropout:
                h = net._drop_fc1(h)
        return h
