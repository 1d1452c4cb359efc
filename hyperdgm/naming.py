"""The names a user sees in MLflow: metric keys, the size metrics per component, run names.

One home for them, so the UI, ``search_runs`` filters and the README agree. The code keeps its
``group/name`` keys (``final/acc_avg``, ``train/loss``); :func:`metric_key` turns them into
``final.acc_avg``, since MLflow's filter grammar takes ``metrics.final.acc_avg > 50`` as typed
but refuses ``metrics.final/acc_avg`` unquoted. No key starts with ``params``, ``tags`` or
``metrics``: those prefixes mean something else in a filter.

Size metrics (:func:`size_metrics`, the table in the README): ``size.<component>`` counts numbers,
``ratio.<component>`` divides a learned generator by what it generates (below 1: it compresses).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

#: Prefixes of a filter string; a metric key starting with one would read as something else.
_RESERVED = ("params", "param", "metrics", "metric", "tags", "tag", "attributes", "attribute", "attr", "run")


def metric_key(name: str) -> str:
    """The logged name of an internal metric key: ``final/acc_avg -> final.acc_avg``."""
    key = name.replace("/", ".")
    head = key.split(".", 1)[0]
    if head in _RESERVED:
        raise ValueError(f"metric {name!r}: '{head}' is a prefix of MLflow's search grammar; name it otherwise")
    return key


def metric_value(value: float) -> float:
    """A metric as logged: 7 significant digits (``99.12``, not float32's ``99.1199951``)."""
    return float(f"{float(value):.7g}")


def param_value(value: Any) -> str:
    """A config value as a param: floats to 6 significant digits (``0.05``, not ``0.04999999``)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(param_value(v) for v in value) + "]"
    return str(value)


# -- sizes per component -------------------------------------------------------------------------
def _numel(module: Any) -> float:
    return float(sum(p.numel() for p in module.parameters())) if module is not None else 0.0


def _ratio(num: float, den: float) -> float:
    return round(num / den, 4) if den else float("nan")


def size_metrics(method: Any) -> dict[str, float]:
    """``size.*`` / ``ratio.*`` of a built method, one name per component (see the README table).

    Read from the method's structure (its classifier hypernetwork ``gen``, its ``memory`` and that
    memory's protection), so every method reports the same component under the same name.
    """
    counts = method.param_counts()
    out: dict[str, float] = {"size.trainable": float(counts["trainable"])}
    memory = getattr(method, "memory", None) if getattr(method, "uses_memory", True) else None
    gen = getattr(method, "gen", None)
    if gen is not None:  # a hypernetwork generates the classifier (and, shared, the generator body)
        c = gen.param_counts()
        per = [float(n) for n in c["per_target"]]
        shared = len(per) > 1
        name = "shared_hnet" if shared else "classifier_hnet"
        out["size.classifier"] = per[0]
        out[f"size.{name}"] = float(c["hnet"])
        out[f"size.{name}_task_embeddings"] = float(c["task_embeddings"])
        out[f"ratio.{name}"] = _ratio(c["hnet"], c["target"])
        out[f"ratio.{name}_with_embeddings"] = _ratio(c["hnet"] + c["task_embeddings"], c["target"])
        if shared:
            out["size.generator"] = float(sum(per[1:]))
    elif getattr(method, "net", None) is not None:
        out["size.classifier"] = _numel(method.net)
    elif memory is not None and getattr(memory.model, "discriminator", None) is not None:
        out["size.classifier"] = _numel(memory.model.discriminator)  # DGM: the AC-GAN's discriminator classifies
    if memory is not None:
        out.update(_memory_sizes(memory))
    tir = getattr(method, "tir", None)
    if tir is not None:
        out["size.task_inference"] = _numel(tir)
    return out


def _memory_sizes(memory: Any) -> dict[str, float]:
    m = memory.param_counts()
    prot = memory.protection
    out = {"size.generator": m["generator_target"]}
    if m["encoder"]:
        out["size.encoder"] = m["encoder"]
    if m["discriminator"]:
        out["size.discriminator"] = m["discriminator"]
    if prot.name == "hnet":
        c = prot.gen.param_counts()
        out["size.generator_hnet"] = float(c["hnet"])
        out["size.generator_hnet_task_embeddings"] = float(c["task_embeddings"])
        out["ratio.generator_hnet"] = _ratio(c["hnet"], m["generator_target"])
        out["ratio.generator_hnet_with_embeddings"] = _ratio(c["hnet"] + c["task_embeddings"], m["generator_target"])
    elif prot.name.startswith("dgm"):
        out["size.masks"] = m["generator_stored"]  # one bit each
        out["ratio.masks"] = _ratio(m["generator_stored"], 32.0 * m["generator_target"])  # against float32 weights
    return out


# -- run names -----------------------------------------------------------------------------------
#: Overrides that do not change what a run computes (where it runs, logs or reads from).
_NOT_IN_NAME = re.compile(r"^(hydra|tracking|data_root|device|threads|resume|run_name|trainer\.progress"
                          r"|launcher|local|sweep|search)(\.|$)")
_BASE_GROUPS = ("method", "benchmark", "scenario")


def run_name(c: Mapping[str, Any], overrides: Sequence[str] | None = None, limit: int = 100) -> str:
    """``<method>-<benchmark>-<scenario>`` (or the preset) and the command's overrides, keys shortened.

    ``hnet_r-split_mnist-cl3 lr=0.001 seed=3``; ``experiment=pmnist_hnet`` names the run
    ``pmnist_hnet`` followed by what the command changed in it.
    """
    experiment, pairs = _computing(overrides)
    if experiment:
        base = experiment
    else:
        base = "-".join(str((c.get(g) or {}).get("name", "")) for g in _BASE_GROUPS)
        pairs = [(k, v) for k, v in pairs if k not in _BASE_GROUPS]
    parts = [base, *(_short(k, [p[0] for p in pairs]) + ("=" + _value(v) if v else "") for k, v in pairs)]
    name = " ".join(parts)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _computing(overrides: Sequence[str] | None) -> tuple[str | None, list[tuple[str, str]]]:
    """The ``experiment=`` preset of a command's overrides, and its other ``(key, value)`` overrides that change what
    the run computes."""
    pairs: list[tuple[str, str]] = []
    experiment = None
    for o in overrides or ():
        key, sep, value = o.lstrip("+").partition("=")
        if key.startswith("~"):
            key, value = key, ""
        if not sep and not key.startswith("~") or _NOT_IN_NAME.match(key.lstrip("~")):
            continue
        if key == "experiment":
            experiment = value
            continue
        pairs.append((key, value))
    return experiment, pairs


#: What a run may set and still be a run of its preset (the reproduction table has a row per scenario).
PRESET_KEYS = ("seed", "seeds", "scenario")


def preset_changes(overrides: Sequence[str] | None) -> str:
    """The overrides by which a run differs from its ``experiment=`` preset beyond :data:`PRESET_KEYS`, space
    separated as typed ('' for none): ``trainer.precision=bf16`` makes a run that is not the preset's."""
    _, pairs = _computing(overrides)
    return " ".join(f"{k}={v}" if v else k for k, v in pairs if k not in PRESET_KEYS)


def name_changes_preset(name: str) -> bool:
    """Whether a run name (:func:`run_name`) shows overrides beyond :data:`PRESET_KEYS` (or is cut short, so it may):
    for runs recorded before the ``preset.changes`` tag."""
    words = name.split(" ")[1:]
    return name.endswith("…") or any(w.partition("=")[0] not in PRESET_KEYS for w in words)


def _value(v: str) -> str:
    """A number as :func:`param_value` writes it (``0.0049999999 -> 0.005``), anything else as typed."""
    try:
        return param_value(float(v)) if any(ch in v for ch in ".eE") else v
    except ValueError:
        return v


def _short(key: str, keys: Sequence[str]) -> str:
    """The shortest dotted suffix of ``key`` that no other key ends with (``method.lr -> lr``)."""
    tilde, key = ("~", key[1:]) if key.startswith("~") else ("", key)
    parts = key.split(".")
    others = [k.lstrip("~") for k in keys if k.lstrip("~") != key]
    for n in range(1, len(parts) + 1):
        tail = ".".join(parts[-n:])
        if not any(o == tail or o.endswith("." + tail) for o in others):
            return tilde + tail
    return tilde + key
