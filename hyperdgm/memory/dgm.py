"""Dynamic Generative Memory (Ostapenko et al., CVPR 2019): learned binary masks with dynamic expansion.

* ``dgm_w`` (DGMw): a real-valued embedding per weight and task; the mask ``m = sigmoid(s e)``
  multiplies the weights.
* ``dgm_a`` (DGMa): an embedding per unit and task (HAT-style activation masks); a unit's mask
  scales the weights into it and out of it (the generator's layers have no bias), so both variants
  hand out masked weights.

While task ``t`` trains, ``s`` is annealed (DGMw: per batch inside an epoch and across epochs;
DGMa: per epoch), the embedding gradients get HAT's compensation, every weight's gradient is
multiplied by ``1 - (cumulative binary mask of earlier tasks)`` (DGMa: ``1 - min(m_out, m_in)``),
and a sparsity term ``lambda_t * sum m (1 - m_<t) / sum (1 - m_<t)`` (reserved capacity not
penalised; ``lambda_t = lamb * (units now) / (units at the start)``) is added to the generator loss.
When the task ends its mask is binarised (``sigmoid(smax e) >= 0.5``), joined into the cumulative
mask, and the body grows by exactly the newly reserved capacity (DGMw: weights over fan-in per
layer, DGMa: units), so the free capacity stays constant; earlier tasks keep their widths and
masks (zero on capacity added later), so their weights never change.

Official code: ``SAP/machine-learning-dgm`` (``approaches/DGMw.py``, ``DGMa.py``, ``networks/``);
``../shared/reference/dgm-mergan-official-code.md`` §3-4 lists the formulas this follows.
``anneal=official`` reproduces its epoch-0 quirk (``s`` falls during the first epoch);
``anneal=paper`` (default) uses ``(epoch + 1) / epochs`` so that ``s`` rises in every epoch and
reaches ``smax`` in the last one (as the official ImageNet code does).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .bodies import Body, ParamMeta
from .protection import Protection, register_protection

__all__ = ["DgmW", "DgmA", "anneal_s"]


def anneal_s(smax: float, epoch: int, frac: float, n_epochs: int, *, per_batch: bool, mode: str = "paper") -> tuple[float, float]:
    """``(s, s_max(epoch))`` of DGM's annealing at ``frac`` of epoch ``epoch`` of ``n_epochs``.

    ``s_max(e) = (smax - 1/smax) e' / n + 1/smax`` with ``e' = e`` (``official``) or ``e + 1``
    (``paper``); per batch ``s = (s_max(e) - 1/s_max(e)) frac + 1/s_max(e)``, else ``s = s_max(e)``.
    """
    if mode not in ("paper", "official"):
        raise ValueError(f"dgm.anneal must be paper or official, got {mode!r}")
    e = epoch + 1 if mode == "paper" else epoch
    e = min(e, n_epochs)
    se = (smax - 1.0 / smax) * e / n_epochs + 1.0 / smax
    if not per_batch:
        return se, se
    return (se - 1.0 / se) * frac + 1.0 / se, se


class _Masks(Protection):
    """Shared machinery of DGMw / DGMa: own weights, per-task binary masks, cumulative mask, growth."""

    shared_weights = False
    needs_schedule = True  # s is annealed over the task's epochs
    per_batch = True  # annealing inside an epoch

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        d = dict(cfg.get("dgm") or {})
        self.smax = float(d.get("smax", 1e4))
        self.lamb = float(d.get("lamb", 0.08))
        self.anneal = str(d.get("anneal", "paper"))
        self.thres_cosh = float(d.get("thres_cosh", 50.0))
        self.do_expand = bool(d.get("expand", True))
        self.init_gain = float(d.get("init_gain", math.sqrt(2.0)))
        self.expand_std = float(d.get("expand_std", 0.02))
        self.expand_init = str(d.get("expand_init", "normal"))
        if self.expand_init not in ("normal", "xavier"):
            raise ValueError(f"dgm.expand_init must be normal or xavier, got {self.expand_init!r}")
        self.init = str(d.get("init", "xavier"))
        anneal_s(self.smax, 0, 0.0, 1, per_batch=True, mode=self.anneal)  # validates the mode
        self.masks: list[list[Tensor]] = []   # per finished task: binary masks (float 0/1) per mask tensor
        self.cum: list[Tensor] | None = None  # cumulative binary mask of finished tasks
        self.history: list[dict[str, Any]] = []  # per task: reserved / reused / free capacity, sparsity
        self.phase = "idle"                   # idle -> training -> binarised (explicit states)
        self._gmask: list[Tensor | None] | None = None

    # -- layout (implemented by the variants) ----------------------------------------------
    def _mask_shapes(self, meta: Sequence[ParamMeta]) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def _param_masks(self, masks: Sequence[Tensor]) -> list[Tensor | None]:
        """Multiplicative mask per body tensor (``None``: unmasked) from the mask tensors."""
        raise NotImplementedError

    def _grad_masks(self, cum: Sequence[Tensor]) -> list[Tensor | None]:
        """``1 - reserved`` per body tensor (``None``: never frozen)."""
        raise NotImplementedError

    def _new_capacity(self, new: Sequence[Tensor], old: Sequence[Tensor]) -> list[int]:
        raise NotImplementedError

    def _widths_after(self, body: Body, n_new: Sequence[int]) -> list[int]:
        raise NotImplementedError

    # -- storage ---------------------------------------------------------------------------
    def _setup(self, meta: Sequence[ParamMeta]) -> None:
        if not self._mask_shapes(meta):  # nothing to mask would leave the generator unprotected, silently
            raise ValueError(f"memory.protection={self.name} finds nothing to mask in this generator "
                             f"({'units of growable layers: use arch=dcgan, resnet or mlp' if self.name == 'dgm_a' else 'no maskable weights'})")
        self.params = nn.ParameterList([nn.Parameter(torch.empty(*m.shape)) for m in meta])
        with torch.no_grad():
            for p, m in zip(self.params, meta):
                if m.init is not None:  # normalisation scales / offsets
                    nn.init.ones_(p) if m.init == "ones" else nn.init.zeros_(p)
                elif p.dim() >= 2 and self.init == "xavier":
                    nn.init.xavier_uniform_(p, gain=self.init_gain)  # official weights_init_g (DGMw)
                elif p.dim() >= 2:
                    nn.init.normal_(p, 0.0, 0.02)  # official DGMa init
                else:
                    nn.init.zeros_(p)
        self.units0 = self._units(meta)
        self.emb = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in self._mask_shapes(meta)])

    @staticmethod
    def _layers(meta: Sequence[ParamMeta]) -> dict[int, list[ParamMeta]]:
        """Growable layers in order: layer -> the weight tensors writing its output units."""
        out: dict[int, list[ParamMeta]] = {}
        for m in meta:
            if m.growable and m.kind == "weight" and m.out_dim is not None:
                out.setdefault(m.layer, []).append(m)
        return out

    @classmethod
    def _units(cls, meta: Sequence[ParamMeta]) -> int:
        return sum(ms[0].shape[ms[0].out_dim] for ms in cls._layers(meta).values())

    def theta_parameters(self) -> list[nn.Parameter]:
        return list(self.params)

    def task_parameters(self, task_id: int) -> list[nn.Parameter]:
        return list(self.emb)

    def trainable_numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def stored_numel(self) -> int:
        """Binary mask entries kept for the finished tasks (one bit each)."""
        return sum(m.numel() for task in self.masks for m in task)

    # -- masks -----------------------------------------------------------------------------
    def current_s(self) -> tuple[float, float]:
        """``(s, s_max(epoch))`` now (host floats: no device sync)."""
        e, frac, n = self.view.progress()
        return anneal_s(self.smax, e, frac, n, per_batch=self.per_batch, mode=self.anneal)

    def soft_masks(self, s: float) -> list[Tensor]:
        return [torch.sigmoid(s * e) for e in self.emb]

    def _masked(self, masks: Sequence[Tensor]) -> list[Tensor]:
        return [p if m is None else p * m for p, m in zip(self.params, self._param_masks(masks))]

    def weights(self, task_ids: Sequence[int], *, delta: Sequence[Tensor] | None = None) -> list[list[Tensor]]:
        out = []
        for t in task_ids:
            t = int(t)
            if t < len(self.masks):
                out.append(self._masked(self.masks[t]))
            elif t == self.current_task and self.phase == "training":
                out.append(self._masked(self.soft_masks(self.current_s()[0])))
            else:
                raise RuntimeError(f"{self.name}: task {t} has no mask (finished tasks: {len(self.masks)})")
        return out

    # -- lifecycle -------------------------------------------------------------------------
    def begin_task(self, task_id: int) -> None:
        if task_id != len(self.masks):
            raise RuntimeError(f"{self.name}: task {task_id} begun after {len(self.masks)} finished tasks "
                               "(tasks are learned once, in order)")
        super().begin_task(task_id)
        dev = self.params[0].device
        # a fresh embedding (init 0, i.e. mask 0.5) for the new task; the optimizer is built after
        self.emb = nn.ParameterList([nn.Parameter(torch.zeros(s, device=dev)) for s in self._mask_shapes(self.meta)])
        if self.cum is None:
            self.cum = [torch.zeros(s, device=dev) for s in self._mask_shapes(self.meta)]
        self._gmask = self._grad_masks(self.cum) if task_id > 0 else None
        self.phase = "training"

    def has_penalty(self) -> bool:
        return self.phase == "training" and self.lamb > 0

    def penalty(self, *, delta: Sequence[Tensor] | None = None) -> Tensor:
        """DGM's sparsity term: masked capacity not yet reserved, over the free capacity."""
        assert self.cum is not None
        m = self.soft_masks(self.current_s()[0])
        num = sum((mi * (1 - ci)).sum() for mi, ci in zip(m, self.cum))
        den = sum((1 - ci).sum() for ci in self.cum).clamp_min(1.0)
        lam = self.lamb * self._units(self.meta) / max(self.units0, 1)
        return lam * num / den

    @torch.no_grad()
    def after_backward(self) -> None:
        if self.phase != "training":
            raise RuntimeError(f"{self.name}: step outside a task")
        if self._gmask is not None:  # reserved capacity of earlier tasks is frozen
            for p, gm in zip(self.params, self._gmask):
                if gm is not None and p.grad is not None:
                    p.grad.mul_(gm)
        s, se = self.current_s()
        thr = self.thres_cosh
        for e in self.emb:  # HAT's compensation: the gradient of sigmoid(s e) vanishes for large s
            if e.grad is not None:
                num = torch.cosh(torch.clamp(s * e, -thr, thr)) + 1
                den = torch.cosh(e) + 1
                e.grad.mul_(num.div_(den).mul_(se / s))

    @torch.no_grad()
    def end_task(self, task_id: int, data: Any = None) -> None:
        if self.phase != "training" or task_id != self.current_task:
            raise RuntimeError(f"{self.name}: end_task({task_id}) without a task in training")
        assert self.cum is not None
        binary = [(torch.sigmoid(self.smax * e) >= 0.5).float() for e in self.emb]
        old = self.cum
        self.cum = [torch.maximum(c, b) for c, b in zip(old, binary)]
        self.masks.append(binary)
        new = self._new_capacity(self.cum, old)
        used = sum(int(b.sum().item()) for b in binary)
        total = sum(b.numel() for b in binary)
        reused = sum(int((b * c).sum().item()) for b, c in zip(binary, old))
        reserved = sum(int(c.sum().item()) for c in self.cum)
        self.history.append({
            "task": int(task_id), "new_reserved": used - reused, "reused": reused,
            "free": total - reserved, "reserved": reserved, "total": total,
            "mask_sparsity": 1.0 - used / max(total, 1), "new_per_layer": new,
        })
        self.phase = "binarised"
        self._gmask = None

    def new_widths(self, body: Body) -> list[int] | None:
        if not (self.do_expand and body.can_grow and self.history):
            return None
        return self._widths_after(body, self.history[-1]["new_per_layer"])

    @torch.no_grad()
    def expand(self, old: Sequence[ParamMeta], new: Sequence[ParamMeta]) -> None:
        """Widen weights (new entries ~ N(0, expand_std), or xavier at the new shape with ``init_gain``
        when ``expand_init=xavier``; biases 0) and masks (new capacity: 0 for every finished task, free
        for the next); a fresh embedding at the new shapes."""
        dev = self.params[0].device
        for i, (mo, mn) in enumerate(zip(old, new)):
            if mo.shape == mn.shape:
                continue
            if mn.kind == "bias":
                w = torch.zeros(mn.shape, device=dev)
            elif self.expand_init == "xavier" and len(mn.shape) >= 2:
                w = nn.init.xavier_uniform_(torch.empty(mn.shape, device=dev), gain=self.init_gain)
            else:
                w = torch.randn(mn.shape, device=dev) * self.expand_std
            w[tuple(slice(0, s) for s in mo.shape)] = self.params[i].detach()
            self.params[i] = nn.Parameter(w)
        self.meta = list(new)
        shapes = self._mask_shapes(new)

        def pad(t: Tensor, shape: tuple[int, ...]) -> Tensor:
            out = torch.zeros(shape, device=t.device, dtype=t.dtype)
            out[tuple(slice(0, s) for s in t.shape)] = t
            return out

        self.masks = [[pad(m, s) for m, s in zip(task, shapes)] for task in self.masks]
        if self.cum is not None:
            self.cum = [pad(c, s) for c, s in zip(self.cum, shapes)]
        self.emb = nn.ParameterList([nn.Parameter(torch.zeros(s, device=dev)) for s in shapes])

    def stats(self) -> dict[str, float]:
        if not self.history:
            return {}
        h = self.history[-1]
        return {f"dgm/{k}": float(v) for k, v in h.items() if not isinstance(v, list) and k != "task"}

    # -- checkpoints -----------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"masks": [[m.bool() for m in task] for task in self.masks],
                "cum": None if self.cum is None else [c.bool() for c in self.cum],
                "history": [dict(h) for h in self.history],
                "phase": self.phase, "current_task": self.current_task, "units0": self.units0}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        dev = self.params[0].device
        self.masks = [[m.to(dev).float() for m in task] for task in state["masks"]]
        self.cum = None if state["cum"] is None else [c.to(dev).float() for c in state["cum"]]
        self.history = [dict(h) for h in state["history"]]
        self.phase = str(state["phase"])
        self.current_task = state["current_task"]
        self.units0 = int(state["units0"])
        self._gmask = None


@register_protection
class DgmW(_Masks):
    """DGMw: masks on weights. Every ``maskable`` body tensor has a mask of its own shape."""

    name = "dgm_w"

    def _mask_shapes(self, meta: Sequence[ParamMeta]) -> list[tuple[int, ...]]:
        return [tuple(m.shape) for m in meta if m.maskable]

    def _index(self) -> list[int | None]:
        out, j = [], 0
        for m in self.meta:
            out.append(j if m.maskable else None)
            j += int(m.maskable)
        return out

    def _param_masks(self, masks: Sequence[Tensor]) -> list[Tensor | None]:
        return [None if j is None else masks[j] for j in self._index()]

    def _grad_masks(self, cum: Sequence[Tensor]) -> list[Tensor | None]:
        return [None if j is None else 1 - cum[j] for j in self._index()]

    def _new_capacity(self, new: Sequence[Tensor], old: Sequence[Tensor]) -> list[int]:
        """Newly reserved weights per growable layer (over the weight tensors writing its units)."""
        idx = {m.name: j for m, j in zip(self.meta, self._index())}
        return [sum(0 if idx[m.name] is None else int(new[idx[m.name]].sum().item() - old[idx[m.name]].sum().item())
                    for m in ms)
                for ms in self._layers(self.meta).values()]

    def _widths_after(self, body: Body, n_new: Sequence[int]) -> list[int]:
        """Official ``extand``: layer ``l`` gains ``d_l = ceil((n_l - a_l) / f_l)`` output units, where
        ``a_l = sum_t d_src(t) out_l k_t`` weights came already with the inputs its tensors ``t`` gained
        and ``f_l = sum_t (in_t + d_src(t)) k_t`` is one new output unit's weights (a chain: one tensor,
        ``src = l - 1``)."""
        widths, d = [], {}
        for (layer, ms), n in zip(self._layers(self.meta).items(), n_new):
            out_u = ms[0].shape[ms[0].out_dim]
            came, per_unit = 0, 0
            for m in ms:
                in_u = m.shape[m.in_dim] if m.in_dim is not None else 1
                k = m.numel // (out_u * in_u)
                g = d.get(m.source, 0)
                came += g * out_u * k
                per_unit += (in_u + g) * k
            d[layer] = max(math.ceil((n - came) / per_unit), 0)
            widths.append(out_u + d[layer])
        return widths


@register_protection
class DgmA(_Masks):
    """DGMa: masks on units (the output units of every growable layer)."""

    name = "dgm_a"
    per_batch = False  # s is held within an epoch

    def _unit_layers(self, meta: Sequence[ParamMeta]) -> list[ParamMeta]:
        """One weight tensor per growable layer (the first writing its units)."""
        return [ms[0] for ms in self._layers(meta).values()]

    def _mask_shapes(self, meta: Sequence[ParamMeta]) -> list[tuple[int, ...]]:
        return [(m.shape[m.out_dim],) for m in self._unit_layers(meta)]

    def _layer_pos(self) -> dict[int, int]:
        return {m.layer: j for j, m in enumerate(self._unit_layers(self.meta))}

    @staticmethod
    def _along(v: Tensor, m: ParamMeta, dim: int) -> Tensor:
        shape = [1] * len(m.shape)
        shape[dim] = v.numel()
        return v.view(shape)

    def _param_masks(self, masks: Sequence[Tensor]) -> list[Tensor | None]:
        """A weight is scaled by the mask of its output unit and of its input unit (a masked unit sends
        nothing on). The official code masks before the per-task batch norm, so a masked unit still
        emits ``relu(beta)`` while its outgoing weights stay trainable, and old tasks drift."""
        pos, out = self._layer_pos(), []
        for m in self.meta:
            f = self._along(masks[pos[m.layer]], m, m.out_dim) if m.layer in pos else None
            if m.kind == "weight" and m.in_dim is not None and m.source in pos:
                g = self._along(masks[pos[m.source]], m, m.in_dim)
                f = g if f is None else f * g
            out.append(f)
        return out

    def _grad_masks(self, cum: Sequence[Tensor]) -> list[Tensor | None]:
        """HAT: a weight is frozen where its output unit and its input unit are both reserved
        (first layer: its output unit; a last, unmasked layer: its input unit)."""
        pos, out = self._layer_pos(), []
        for m in self.meta:
            r_out = self._along(cum[pos[m.layer]], m, m.out_dim) if m.layer in pos else None
            r_in = None
            if m.kind == "weight" and m.in_dim is not None and m.source in pos:
                r_in = self._along(cum[pos[m.source]], m, m.in_dim)
            if r_out is None and r_in is None:
                out.append(None)
            elif r_in is None:
                out.append(1 - r_out)
            elif r_out is None:
                out.append(1 - r_in)
            else:
                out.append(1 - torch.minimum(r_out, r_in))
        return out

    def _new_capacity(self, new: Sequence[Tensor], old: Sequence[Tensor]) -> list[int]:
        return [int(n.sum().item() - o.sum().item()) for n, o in zip(new, old)]

    def _widths_after(self, body: Body, n_new: Sequence[int]) -> list[int]:
        return [m.shape[m.out_dim] + max(int(n), 0) for m, n in zip(self._unit_layers(self.meta), n_new)]
