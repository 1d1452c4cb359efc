"""Generator bodies: weightless decoders / generators that declare their parameters and can grow.

A body takes its protected weights as an argument (a protection decides where they come from:
a hypernetwork, own weights with a frozen copy, masked own weights, ...). It declares
:attr:`Body.param_meta`, one :class:`ParamMeta` per weight tensor (its layer, kind, which axes are
the layer's in / out units), checked once when built, so protections can mask, count and widen
layers without knowing the architecture.

Growth is a lifecycle step: :meth:`Body.grow` rebuilds the body with wider hidden layers; each
task keeps the widths it was trained with (:meth:`Body.begin_task` records them), and its forward
slices the weights to those widths, so an old task never sees capacity added later.

Task- or class-specific modules that cannot be shared (DGM's per-task batch norm, per-class output
heads) are the body's own parameters, created when their task begins
(:meth:`Body.own_parameters`).

Output: logits ``[B, C, H, W]``; ``sigmoid`` gives images in ``[0, 1]`` (``sigmoid(2x)`` is the
``tanh`` output of the DCGAN papers mapped to ``[0, 1]``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nets import activation

__all__ = ["ParamMeta", "Body", "MLPBody", "ConvBody", "DCGANBody", "ResNetBody", "build_body", "BODIES", "CONV_NORMS",
           "image_32"]

Shape = list[int]


def image_32(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of ``shape``, refused unless the images are 32x32 (the conv nets' only size)."""
    c, h, w = (int(s) for s in shape)
    if (h, w) != (32, 32):
        raise ValueError(f"{what} needs 32x32 images, got {h}x{w} (set benchmark.pad=32)")
    return c, h, w


@dataclass(frozen=True)
class ParamMeta:
    """One weight tensor of a body.

    ``layer``: index of its layer, i.e. of the group of output units it writes (tensors that add into
    the same units, as a residual block's last conv and its shortcut, share a layer); ``kind``:
    ``weight`` | ``bias``; ``out_dim`` / ``in_dim``: axes holding the layer's output / input units
    (``None``: no such axis); ``growable``: whether the layer's output units may be widened;
    ``maskable``: whether masking protections (DGM) mask it; ``init``: a fixed initial value where the
    default (Xavier for matrices, zeros for vectors) is wrong; ``in_layer``: the layer whose output
    units the ``in_dim`` axis reads (``None``: ``layer - 1``, a chain; ``-1``: the body's input).
    """

    name: str
    layer: int
    kind: str
    shape: tuple[int, ...]
    out_dim: int | None
    in_dim: int | None
    growable: bool = False
    maskable: bool = True
    init: str | None = None  # None: the protection's default; "ones" / "zeros" (normalisation scales / offsets)
    in_layer: int | None = None

    @property
    def source(self) -> int:
        """The layer whose output units feed the ``in_dim`` axis (``-1``: the body's input)."""
        return self.layer - 1 if self.in_layer is None else self.in_layer

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class Body(nn.Module):
    """Base class: declared weights, per-task widths, optional growth and own (per-task) modules.

    Subclasses implement :meth:`_meta` (meta for given widths) and :meth:`_forward`.
    """

    kind = "base"
    per_task_modules = False  # own per-task modules: rows of different tasks run separately
    rows_independent = False  # each row's output depends on that row alone (no batch statistics): batches can merge

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.widths: list[int] = [int(w) for w in widths]
        self.task_widths: dict[int, list[int]] = {}
        self.task_conds: dict[int, list[int]] = {}  # the conditions (classes) of each begun task
        self._check(self._meta(self.widths))

    # -- declaration ------------------------------------------------------------------------
    def _meta(self, widths: Sequence[int]) -> list[ParamMeta]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def param_meta(self) -> list[ParamMeta]:
        """Meta of every protected weight at the current widths (in the order weights are passed)."""
        return self._meta(self.widths)

    @property
    def param_shapes(self) -> list[Shape]:
        return [list(m.shape) for m in self.param_meta]

    @property
    def can_grow(self) -> bool:
        return any(m.growable for m in self.param_meta)

    @staticmethod
    def _check(meta: Sequence[ParamMeta]) -> None:
        names = [m.name for m in meta]
        if len(set(names)) != len(names):
            raise ValueError(f"body declares duplicate parameter names: {names}")
        for m in meta:
            if m.kind not in ("weight", "bias"):
                raise ValueError(f"{m.name}: kind must be weight or bias, got {m.kind!r}")
            for d in (m.out_dim, m.in_dim):
                if d is not None and not 0 <= d < len(m.shape):
                    raise ValueError(f"{m.name}: unit axis {d} outside shape {m.shape}")
            if m.in_layer is not None and not -1 <= m.in_layer < m.layer:
                raise ValueError(f"{m.name}: in_layer {m.in_layer} must be an earlier layer (or -1, the input)")
        # units of a growable layer: every tensor writing them agrees on their number, and so does every
        # tensor reading them (what masks and growth rely on)
        units: dict[int, int] = {}
        for m in meta:
            if m.growable and m.kind == "weight" and m.out_dim is not None:
                if units.setdefault(m.layer, m.shape[m.out_dim]) != m.shape[m.out_dim]:
                    raise ValueError(f"{m.name}: {m.shape[m.out_dim]} output units, but layer {m.layer} has "
                                     f"{units[m.layer]}")
        for m in meta:
            if m.kind == "weight" and m.in_dim is not None and m.source in units \
                    and m.shape[m.in_dim] != units[m.source]:
                raise ValueError(f"{m.name}: {m.shape[m.in_dim]} input units, but layer {m.source} has "
                                 f"{units[m.source]}")

    # -- lifecycle --------------------------------------------------------------------------
    def begin_task(self, task_id: int, conds: Sequence[int]) -> None:
        """Record the widths and conditions task ``task_id`` is trained with; create its own modules."""
        self.task_widths[int(task_id)] = list(self.widths)
        self.task_conds[int(task_id)] = [int(c) for c in conds]

    def grow(self, widths: Sequence[int]) -> None:
        """Widen the growable layers to ``widths`` (never narrower)."""
        widths = [int(w) for w in widths]
        if len(widths) != len(self.widths) or any(n < o for n, o in zip(widths, self.widths)):
            raise ValueError(f"cannot grow widths {self.widths} to {widths}")
        if widths != self.widths and not self.can_grow:
            raise ValueError(f"body {self.kind} cannot grow")
        self._check(self._meta(widths))
        self.widths = widths

    def own_parameters(self, task_id: int) -> list[nn.Parameter]:
        """The body's own parameters trained while ``task_id`` is learned (per-task / per-class modules)."""
        return []

    def own_numel(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def arch_state(self) -> dict[str, Any]:
        """What rebuilds this body's architecture: widths now and per task (plain python)."""
        return {"widths": list(self.widths), "task_widths": {int(k): list(v) for k, v in self.task_widths.items()},
                "conds": {int(k): list(v) for k, v in self.task_conds.items()}}

    def load_arch(self, state: Mapping[str, Any]) -> None:
        """Rebuild the architecture of :meth:`arch_state` (before loading weights)."""
        task_widths = {int(k): [int(w) for w in v] for k, v in state["task_widths"].items()}
        conds = {int(k): [int(c) for c in v] for k, v in state.get("conds", {}).items()}
        for t in sorted(task_widths):
            self.widths = list(task_widths[t])
            self.begin_task(t, conds.get(t, [t]))
        self.widths = [int(w) for w in state["widths"]]

    # -- forward ----------------------------------------------------------------------------
    def sliced(self, weights: Sequence[Tensor], task_id: int | None) -> list[Tensor]:
        """``weights`` cut to the widths ``task_id`` was trained with (no-op where they are the same)."""
        w = list(weights)
        tw = self.task_widths.get(int(task_id)) if task_id is not None else None
        if tw is None or tw == self.widths:
            return w
        meta = self._meta(tw)
        return [t[tuple(slice(0, s) for s in m.shape)] for t, m in zip(w, meta)]

    def forward(self, h: Tensor, weights: Sequence[Tensor], task_id: int | None = None,
                cond: Tensor | None = None, batch_stats: bool = False) -> Tensor:
        """Logits for inputs ``h`` ``[B, in_dim]`` (all rows of one task) with the protection's ``weights``.

        ``batch_stats``: normalisation layers use (and update) batch statistics, as when training the
        task; otherwise their running statistics (replay, sampling).
        """
        return self._forward(h, self.sliced(weights, task_id), task_id, cond, batch_stats)

    def _forward(self, h: Tensor, w: list[Tensor], task_id: int | None, cond: Tensor | None,
                 batch_stats: bool) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class MLPBody(Body):
    """MLP ``[B, in_dim] -> logits [B, *out_shape]`` as a chain of ``F.linear`` (hypnettorch's
    ``MLP`` layout ``W0, b0, W1, b1, ...``; same numbers as its forward). Hidden layers can grow."""

    kind = "mlp"
    rows_independent = True

    def __init__(self, in_dim: int, out_shape: Sequence[int], hidden: Sequence[int], act: str = "relu") -> None:
        self.in_dim = int(in_dim)
        self.out_shape = tuple(int(s) for s in out_shape)
        super().__init__(hidden)
        self.act = activation(act)

    def _meta(self, widths: Sequence[int]) -> list[ParamMeta]:
        dims = [self.in_dim, *widths, math.prod(self.out_shape)]
        meta = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            grow = i < len(dims) - 2
            meta += [ParamMeta(f"fc{i}.weight", i, "weight", (b, a), 0, 1, grow),
                     ParamMeta(f"fc{i}.bias", i, "bias", (b,), 0, None, grow)]
        return meta

    def _forward(self, h: Tensor, w: list[Tensor], task_id: int | None, cond: Tensor | None,
                 batch_stats: bool) -> Tensor:
        n = len(w) // 2
        for i in range(n):
            h = F.linear(h, w[2 * i], w[2 * i + 1])
            if i < n - 1:
                h = self.act(h)
        return h.view(-1, *self.out_shape)


#: The conv generator's normalisation: none | cbn (class-conditional batch norm, running moments when sampling) |
#: cbn_batch (class-conditional batch norm, always the batch's moments of each condition, as the official MeRGAN)
CONV_NORMS = ("none", "cbn", "cbn_batch")


class ConvBody(Body):
    """DCGAN-style generator ``[B, in_dim] -> logits [B, C, 32, 32]``: linear to ``4ch x 4 x 4``, then
    transposed convs (``kernel`` 4: ``k=4, s=2, p=1``; 5: ``k=5, s=2, p=2``, output padding 1, as
    TF's ``SAME``) to 8, 16, 32 pixels (``4ch -> 2ch -> ch -> C``), ReLU between. Fixed widths.

    ``norm="none"``: no normalisation (weights generated per task cannot share running statistics).
    ``norm="cbn"``: class-conditional batch norm (Dumoulin et al. 2017; MeRGAN's generator) after the
    linear layer and each hidden deconv: a scale and an offset per condition, declared in
    :attr:`param_meta` (so protections keep them like any weight). Statistics are per condition: a
    training batch normalises the rows of each condition with their own moments (MeRGAN generates
    one class per batch) and updates that condition's running moments; sampling uses the running
    moments (``n_cond`` rows of buffers).
    ``norm="cbn_batch"``: the same, but every forward (sampling and alignment included) normalises each
    condition's rows with their own batch moments, as the official MeRGAN code does (its cBN has no running
    statistics in use): a shift or scale of a channel by the shared layers is then normalised away for
    every class, old ones included, instead of reaching their samples.
    """

    kind = "conv"

    def __init__(self, in_dim: int, out_shape: Sequence[int], channels: int = 64, kernel: int = 4,
                 norm: str = "none", n_cond: int = 0) -> None:
        self.in_dim = int(in_dim)
        self.out_shape = image_32(out_shape, "the conv decoder")
        if int(kernel) not in (4, 5):
            raise ValueError(f"conv generator kernel must be 4 or 5, got {kernel!r}")
        if norm not in CONV_NORMS:
            raise ValueError(f"generator norm must be one of {', '.join(CONV_NORMS)}, got {norm!r}")
        if norm != "none" and int(n_cond) < 1:
            raise ValueError("class-conditional batch norm needs the number of conditions")
        self.kernel, self.norm, self.n_cond = int(kernel), norm, int(n_cond)
        self.cbn, self.batch_moments = norm != "none", norm == "cbn_batch"
        self.rows_independent = not self.cbn
        c = self.out_shape[0]
        self.ch = [4 * int(channels), 2 * int(channels), int(channels), c]
        super().__init__([])
        if self.cbn:
            for i, w in enumerate(self.ch[:-1]):  # per-condition running moments (buffers: not protected)
                self.register_buffer(f"cbn{i}_mean", torch.zeros(self.n_cond, w))
                self.register_buffer(f"cbn{i}_var", torch.ones(self.n_cond, w))

    def _meta(self, widths: Sequence[int]) -> list[ParamMeta]:
        ch, k = self.ch, self.kernel
        meta = [ParamMeta("fc.weight", 0, "weight", (ch[0] * 16, self.in_dim), 0, 1),
                ParamMeta("fc.bias", 0, "bias", (ch[0] * 16,), 0, None)]
        for i, (cin, cout) in enumerate(zip(ch[:-1], ch[1:])):
            meta += [ParamMeta(f"deconv{i}.weight", i + 1, "weight", (cin, cout, k, k), 1, 0),
                     ParamMeta(f"deconv{i}.bias", i + 1, "bias", (cout,), 0, None)]
        if self.cbn:  # after the protected layers, so the layout of the others is unchanged
            for i, w in enumerate(ch[:-1]):
                meta += [ParamMeta(f"cbn{i}.scale", i, "weight", (self.n_cond, w), 1, None, maskable=False,
                                   init="ones"),
                         ParamMeta(f"cbn{i}.offset", i, "bias", (self.n_cond, w), 1, None, maskable=False,
                                   init="zeros")]
        return meta

    def _cbn(self, x: Tensor, i: int, scale: Tensor, offset: Tensor, cond: Tensor | None,
             batch_stats: bool, eps: float = 1e-5, momentum: float = 0.1) -> Tensor:
        """Class-conditional batch norm of ``x`` ``[B, C, H, W]``: moments per condition (batch or running);
        ``batch_stats`` (a training forward) also updates the running moments of the conditions present."""
        if cond is None:
            raise ValueError("class-conditional batch norm needs the condition of every row")
        rmean, rvar = getattr(self, f"cbn{i}_mean"), getattr(self, f"cbn{i}_var")
        if batch_stats or self.batch_moments:
            onehot = torch.eye(self.n_cond, device=x.device, dtype=x.dtype).index_select(0, cond)  # [B, K]
            per = x.shape[2] * x.shape[3]
            count = onehot.sum(0) * per                                      # [K]
            s1 = onehot.t() @ x.sum((2, 3))                                  # [K, C]
            mean_k = s1 / count.clamp_min(1.0).unsqueeze(1)
            mean = mean_k.index_select(0, cond)[:, :, None, None]
            var_k = onehot.t() @ (x - mean).pow(2).sum((2, 3)) / count.clamp_min(1.0).unsqueeze(1)
            var = var_k.index_select(0, cond)[:, :, None, None]
            if batch_stats:
                self._update_running(rmean, rvar, mean_k, var_k, count, momentum)
        else:
            mean = rmean.index_select(0, cond)[:, :, None, None]
            var = rvar.index_select(0, cond)[:, :, None, None]
        xn = (x - mean) * torch.rsqrt(var + eps)
        return xn * scale.index_select(0, cond)[:, :, None, None] + offset.index_select(0, cond)[:, :, None, None]

    @staticmethod
    @torch.no_grad()
    def _update_running(rmean: Tensor, rvar: Tensor, mean_k: Tensor, var_k: Tensor, count: Tensor,
                        momentum: float) -> None:
        """Running moments of the conditions present (unbiased variance, as torch's batch norm)."""
        seen = (count > 0).unsqueeze(1).to(rmean.dtype)
        unbiased = var_k * (count / (count - 1).clamp_min(1.0)).unsqueeze(1)
        rmean.mul_(1 - momentum * seen).add_(momentum * seen * mean_k)
        rvar.mul_(1 - momentum * seen).add_(momentum * seen * unbiased)

    def _forward(self, h: Tensor, w: list[Tensor], task_id: int | None, cond: Tensor | None,
                 batch_stats: bool) -> Tensor:
        n = len(self.ch) - 1
        cbn = w[2 + 2 * n:] if self.cbn else None
        x = F.linear(h, w[0], w[1]).view(-1, self.ch[0], 4, 4)
        pad, opad = (1, 0) if self.kernel == 4 else (2, 1)
        for i in range(n + 1):
            if i > 0:
                x = F.conv_transpose2d(x, w[2 * i], w[2 * i + 1], stride=2, padding=pad, output_padding=opad)
            if i < n:
                if cbn is not None:
                    x = self._cbn(x, i, cbn[2 * i], cbn[2 * i + 1], cond, batch_stats)
                x = F.relu(x)
        return x


class _PerTaskGenerator(Body):
    """A GAN generator with DGM's per-task modules: batch norm **per task** (one per growable layer, at
    the task's widths) and a **per-class** output head on the last layer's units (the body's own,
    unmasked). Subclasses give :meth:`_new_head`."""

    per_task_modules = True

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__(widths)
        self.norms = nn.ModuleDict()   # task id -> ModuleList of BatchNorm2d, one per growable layer
        self.heads = nn.ModuleDict()   # class id -> output head

    def _new_head(self, units: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def begin_task(self, task_id: int, conds: Sequence[int]) -> None:
        super().begin_task(task_id, conds)
        key = str(int(task_id))
        dev = next((p.device for p in self.parameters()), None)
        if key not in self.norms:
            bns = nn.ModuleList([nn.BatchNorm2d(w) for w in self.widths])
            for bn in bns:  # official init: weight ~ N(1, 0.02), bias 0
                nn.init.normal_(bn.weight, 1.0, 0.02)
                nn.init.zeros_(bn.bias)
            self.norms[key] = bns.to(dev) if dev is not None else bns
        for c in conds:
            if str(int(c)) not in self.heads:
                head = self._new_head(self.widths[-1])
                self.heads[str(int(c))] = head.to(dev) if dev is not None else head

    def own_parameters(self, task_id: int) -> list[nn.Parameter]:
        ps = list(self.norms[str(int(task_id))].parameters())
        for c in self.task_conds.get(int(task_id), []):
            ps += list(self.heads[str(c)].parameters())
        return ps

    def _task_norms(self, task_id: int | None) -> nn.ModuleList:
        if task_id is None or str(int(task_id)) not in self.norms:
            raise RuntimeError(f"the {self.kind} body needs a begun task (per-task batch norm)")
        return self.norms[str(int(task_id))]

    @staticmethod
    def _bn_relu(x: Tensor, bn: nn.BatchNorm2d, batch_stats: bool) -> Tensor:
        return F.relu(F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, batch_stats,
                                   bn.momentum, bn.eps))

    def _heads(self, x: Tensor, task_id: int, cond: Tensor | None) -> Tensor:
        """Each row through the head of its class (the task's only class, or ``cond``)."""
        classes = self.task_conds.get(int(task_id), [])
        if len(classes) == 1:
            return self.heads[str(classes[0])](x)
        if cond is None:
            raise ValueError(f"the {self.kind} body needs the class of every row when a task has several classes")
        outs = torch.stack([self.heads[str(c)](x) for c in classes])  # [K, B, C, H, W]
        pos = torch.zeros(int(max(classes)) + 1, dtype=torch.long, device=x.device)
        pos[torch.tensor(classes, device=x.device)] = torch.arange(len(classes), device=x.device)
        return outs[pos[cond], torch.arange(x.shape[0], device=x.device)]


class DCGANBody(_PerTaskGenerator):
    """DGM's generator (Ostapenko et al. 2019, official ``net_DGMw.py``): 32x32 images.

    ``z ++ onehot(cond)`` ``[B, in_dim, 1, 1]`` -> ConvTranspose(4, s1, p0) to ``4ngf x 4 x 4``
    ("the projection by a convolution") -> ConvTranspose(4, s2, p1) to ``2ngf x 8 x 8`` -> to
    ``ngf x 16 x 16``; no biases; batch norm **per task** and ReLU after each; a **per-class**
    output head ConvTranspose(4, s2, p1) to ``C x 32 x 32`` (the body's own, unmasked). The three
    hidden layers grow.
    """

    kind = "dcgan"

    def __init__(self, in_dim: int, out_shape: Sequence[int], ngf: int = 6) -> None:
        self.in_dim = int(in_dim)
        self.out_shape = image_32(out_shape, "the dcgan generator")
        super().__init__([4 * int(ngf), 2 * int(ngf), int(ngf)])

    def _meta(self, widths: Sequence[int]) -> list[ParamMeta]:
        dims = [self.in_dim, *widths]
        return [ParamMeta(f"conv{i + 1}.weight", i, "weight", (a, b, 4, 4), 1, 0, True)
                for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))]

    def _new_head(self, units: int) -> nn.Module:
        return nn.ConvTranspose2d(units, self.out_shape[0], 4, 2, 1, bias=False)

    def _forward(self, h: Tensor, w: list[Tensor], task_id: int | None, cond: Tensor | None,
                 batch_stats: bool) -> Tensor:
        bns = self._task_norms(task_id)
        x = h.view(h.shape[0], -1, 1, 1)
        for i, (wi, bn) in enumerate(zip(w, bns)):
            x = F.conv_transpose2d(x, wi, stride=1 if i == 0 else 2, padding=0 if i == 0 else 1)
            x = self._bn_relu(x, bn, batch_stats)
        return self._heads(x, task_id, cond)


class ResNetBody(_PerTaskGenerator):
    """A residual generator for 32x32 images (the WGAN-GP CIFAR-10 ResNet, Gulrajani et al. 2017, that
    DGM uses for CIFAR-10; made growable and maskable as DGM's DCGAN).

    ``z ++ onehot(cond)`` -> ConvTranspose(4, s1, p0) to ``c0 x 4 x 4`` (the projection by a convolution,
    as DGM's DCGAN) -> three up-blocks to 8, 16, 32 pixels, each ``BN -> ReLU -> upsample(nearest) ->
    conv3x3 -> BN -> ReLU -> conv3x3``, plus a shortcut ``upsample -> conv1x1`` -> BN -> ReLU -> a
    **per-class** output head conv3x3 to ``C`` channels (the body's own, unmasked). No biases in the
    protected layers; batch norm **per task** (the body's own), one before every use of a layer's units.

    Seven growable layers, widths ``[c0, m1, c1, m2, c2, m3, c3]`` (``m_b``: block ``b``'s inner conv,
    ``c_b``: its output, written by its second conv and its shortcut together); all start at ``ngf``.
    """

    kind = "resnet"

    def __init__(self, in_dim: int, out_shape: Sequence[int], ngf: int = 32) -> None:
        self.in_dim = int(in_dim)
        self.out_shape = image_32(out_shape, "the resnet generator")
        super().__init__([int(ngf)] * 7)

    def _meta(self, widths: Sequence[int]) -> list[ParamMeta]:
        w = list(widths)
        meta = [ParamMeta("proj.weight", 0, "weight", (self.in_dim, w[0], 4, 4), 1, 0, True)]
        for b in range(3):
            src, mid, out = 2 * b, 2 * b + 1, 2 * b + 2
            meta += [ParamMeta(f"block{b}.conv1.weight", mid, "weight", (w[mid], w[src], 3, 3), 0, 1, True),
                     ParamMeta(f"block{b}.conv2.weight", out, "weight", (w[out], w[mid], 3, 3), 0, 1, True),
                     ParamMeta(f"block{b}.shortcut.weight", out, "weight", (w[out], w[src], 1, 1), 0, 1, True,
                               in_layer=src)]
        return meta

    def _new_head(self, units: int) -> nn.Module:
        return nn.Conv2d(units, self.out_shape[0], 3, 1, 1)

    def _forward(self, h: Tensor, w: list[Tensor], task_id: int | None, cond: Tensor | None,
                 batch_stats: bool) -> Tensor:
        bns = self._task_norms(task_id)
        x = F.conv_transpose2d(h.view(h.shape[0], -1, 1, 1), w[0])  # [B, c0, 4, 4]
        for b in range(3):
            conv1, conv2, short = w[1 + 3 * b: 4 + 3 * b]
            y = F.interpolate(self._bn_relu(x, bns[2 * b], batch_stats), scale_factor=2, mode="nearest")
            y = F.conv2d(self._bn_relu(F.conv2d(y, conv1, padding=1), bns[2 * b + 1], batch_stats), conv2, padding=1)
            x = y + F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), short)
        return self._heads(self._bn_relu(x, bns[6], batch_stats), task_id, cond)


BODIES = ("mlp", "conv", "dcgan", "resnet")


def build_body(arch: str, in_dim: int, shape: Sequence[int], hidden: Sequence[int], act: str = "relu",
               channels: int = 64, ngf: int = 6, *, kernel: int = 4, norm: str = "none", n_cond: int = 0) -> Body:
    """The weightless decoder / generator of ``arch`` (``mlp`` | ``conv`` | ``dcgan`` | ``resnet``); ``kernel``,
    ``norm`` (:data:`CONV_NORMS`: class-conditional batch norm over ``n_cond`` conditions): conv only."""
    if arch != "conv" and (norm != "none" or int(kernel) != 4):
        raise ValueError(f"generator kernel / class-conditional batch norm are options of arch=conv, not {arch!r}")
    if arch == "mlp":
        return MLPBody(in_dim, shape, hidden, act)
    if arch == "conv":
        return ConvBody(in_dim, shape, channels, kernel, norm, n_cond)
    if arch == "dcgan":
        return DCGANBody(in_dim, shape, ngf)
    if arch == "resnet":
        return ResNetBody(in_dim, shape, ngf)
    raise ValueError(f"unknown generator arch {arch!r} (choose from {', '.join(BODIES)})")
