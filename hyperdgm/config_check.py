"""Check a whole run config before any work, and merge ``resume=`` overrides safely.

Everything here raises :class:`~hyperdgm.errors.ConfigError` with one line: unknown top-level,
trainer, benchmark, scenario or tracking keys; out-of-range trainer values; a device this machine
does not have; a method that does not support the scenario (before the data loads); a run dir or
tracking store that cannot be written. ``method.*`` (and ``memory.*``) keys belong to the methods,
which check their own config.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .lr_schedule import PLATEAU_NEEDS_VAL, parse as parse_lr_schedule
from .hnet.fused import MODES as FUSE_MODES
from .precision import PRECISIONS
from .tracking import artifact_root_for

TOP_LEVEL_KEYS = frozenset({"seed", "seeds", "device", "threads", "deterministic", "data_root", "download", "resume", "fork", "run_name",
                            "benchmark", "scenario", "method", "memory", "trainer", "tracking"})
BENCHMARK_KEYS = frozenset({"name", "n_tasks", "class_order", "val_size", "pad", "normalize", "augment",
                            "train_limit", "test_limit", "net", "first_unpermuted"})
SCENARIO_KEYS = frozenset({"name"})
TRACKING_KEYS = frozenset({"backend", "uri", "artifact_root", "maps"})
#: What ``resume=`` may change: where and how the run executes, not what it computes.
SAFE_RESUME_KEYS = ("device", "threads", "tracking", "data_root", "download", "trainer.progress",
                    "trainer.stop_after", "launcher", "local")  # the last two choose config groups that set only hydra.* / the above


# -- values ----------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_at_least(lo: int, optional: bool = False) -> Callable[[Any], bool]:
    return lambda v: (optional and v is None) or (_is_int(v) and v >= lo)


def _positive_number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)


def _boolean(v: Any) -> bool:
    return isinstance(v, bool)


#: trainer key -> (check, what a valid value is)
TRAINER_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "iters_per_task": (_int_at_least(1), "an integer >= 1"),
    "epochs": (_positive_number_or_none, "null or a number > 0"),
    "batch_size": (_int_at_least(1), "an integer >= 1"),
    "eval_batch_size": (_int_at_least(1), "an integer >= 1"),
    "log_every": (_int_at_least(0, optional=True), "an integer >= 0 (0: never)"),
    "progress": (_boolean, "true or false"),
    "checkpoint": (_boolean, "true or false"),
    "stop_after": (_int_at_least(1, optional=True), "null or an integer >= 1"),
    "precision": (lambda v: str(v).lower() in PRECISIONS, "fp32, bf16 or auto"),
    "eval_split": (lambda v: v in ("test", "val"), "test or val"),
    "fuse": (lambda v: str(v).lower() in FUSE_MODES, "auto or off"),
}


def _unknown(section: str, keys: Any, known: frozenset[str] | Mapping[str, Any]) -> None:
    extra = sorted(set(keys) - set(known))
    if extra:
        where = f"{section}." if section else ""
        raise ConfigError(f"unknown config key{'s' if len(extra) > 1 else ''} {', '.join(where + k for k in extra)} "
                          f"(known: {', '.join(sorted(known))})")


def check_trainer(t: Mapping[str, Any]) -> None:
    """Trainer keys and values (``TrainerConfig``'s fields)."""
    _unknown("trainer", t, TRAINER_SCHEMA)
    for key, value in t.items():
        ok, what = TRAINER_SCHEMA[key]
        if not ok(value):
            raise ConfigError(f"trainer.{key} must be {what}, got {value!r}")


def check_lr_schedule(spec: Any, val_size: Any) -> None:
    """``method.lr_schedule`` must parse; ``plateau`` needs a validation split (it never reads test data)."""
    try:
        name, _ = parse_lr_schedule(spec)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if name == "plateau" and not val_size:
        raise ConfigError(PLATEAU_NEEDS_VAL)


def _choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(choices)}")


def validate(cfg: DictConfig) -> dict[str, Any]:
    """Check every key the run's own code reads; returns the resolved config as plain python."""
    from .data.benchmarks import BENCHMARKS
    from .methods import METHODS
    from .scenarios import SCENARIOS

    try:
        c = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config cannot be resolved: {str(err).splitlines()[0]}") from err
    _unknown("", c, TOP_LEVEL_KEYS)
    for section in ("benchmark", "scenario", "method", "trainer"):
        if not isinstance(c.get(section), dict):
            raise ConfigError(f"config has no {section} section")
    if not _is_int(c.get("seed")):
        raise ConfigError(f"seed must be an integer, got {c.get('seed')!r}")
    seeds = c.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(_is_int(v) for v in seeds)
                              or len(set(seeds)) != len(seeds)):
        raise ConfigError(f"seeds must be null or a list of distinct integers (seeds=[0,1,2]), got {seeds!r}")
    if c.get("fork") is not None:
        if seeds is not None:
            raise ConfigError("fork= starts one run from a checkpoint: it cannot be combined with seeds=[...]")
        if not Path(str(c["fork"])).expanduser().exists():
            raise ConfigError(f"fork={c['fork']}: no such checkpoint or run dir")
    if not _int_at_least(1, optional=True)(c.get("threads")):
        raise ConfigError(f"threads must be null or an integer >= 1, got {c.get('threads')!r}")
    if not _boolean(c.get("deterministic", False)):
        raise ConfigError(f"deterministic must be true or false, got {c.get('deterministic')!r}")
    _unknown("benchmark", c["benchmark"], BENCHMARK_KEYS)
    _choice("benchmark.name", c["benchmark"].get("name"), BENCHMARKS)
    _unknown("scenario", c["scenario"], SCENARIO_KEYS)
    _choice("scenario.name", c["scenario"].get("name"), SCENARIOS)
    _choice("method.name", c["method"].get("name"), sorted(METHODS))
    check_trainer(c["trainer"])
    if c["trainer"].get("eval_split") == "val" and not c["benchmark"].get("val_size"):
        raise ConfigError("trainer.eval_split=val needs a validation split: set benchmark.val_size > 0 "
                          "(training samples per task held out)")
    check_lr_schedule(c["method"].get("lr_schedule"), c["benchmark"].get("val_size"))
    tracking = c.get("tracking") or {}
    _unknown("tracking", tracking, TRACKING_KEYS)
    _choice("tracking.backend", tracking.get("backend", "mlflow"), ("mlflow", "none"))
    return c


# -- devices -------------------------------------------------------------------------------
def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str | None) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an explicit device must exist on this machine."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        dev = torch.device(str(name))
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device={name!r} is not a device (use auto, cpu, cuda, cuda:N or mps)") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name} but CUDA is not available here (torch {torch.__version__}, "
                              f"CUDA build {torch.version.cuda}); use device=cpu or device=auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not _mps_available():
            raise ConfigError(f"device={name} but MPS is not available here; use device=cpu or device=auto")
    elif dev.type != "cpu":
        raise ConfigError(f"device={name!r} is not supported (use auto, cpu, cuda, cuda:N or mps)")
    return dev


# -- method and scenario, before the data loads -----------------------------------------------------
def check_method_scenario(method: Any, c: Mapping[str, Any]) -> None:
    """The method must support the scenario, and the scenario the benchmark's task sizes."""
    from .data.benchmarks import _SPECS
    from .scenarios import make_scenario

    bench = c["benchmark"]
    spec = _SPECS[bench["name"]]
    n = bench.get("n_tasks")
    n = n if _is_int(n) and n >= 1 else spec.default_tasks
    scenario = make_scenario(c["scenario"]["name"], [spec.classes_per_task] * n)
    scenario.check(method.name, method.scenarios)


# -- files -----------------------------------------------------------------------------------------
def check_writable_dir(path: Path, what: str) -> None:
    """Create ``path`` if needed and write, fsync and delete a probe file in it."""
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"{what} {path} is not writable: {err.strerror or err} ({err.filename or path})") from err


def check_free_space(path: Path, need: int, what: str) -> None:
    """Refuse when the file system of ``path`` has less than ``need`` bytes free."""
    free = shutil.disk_usage(path).free
    if free < need:
        raise ConfigError(f"{what} {path}: {free / 2**20:.0f} MiB free, a checkpoint needs about {need / 2**20:.0f} MiB")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser().resolve()


def check_tracking_store(tracking: Mapping[str, Any] | None) -> None:
    """A local MLflow store (sqlite file or directory) and its artifact root must be writable."""
    if not tracking or tracking.get("backend", "mlflow") != "mlflow":
        return
    uri = str(tracking.get("uri", "sqlite:///runs/mlflow.db"))
    db = sqlite_path(uri)
    local = db.parent if db else None
    if db is None and urlparse(uri).scheme in ("", "file"):
        local = Path(urlparse(uri).path or uri).expanduser().resolve()
    if local is not None:
        check_writable_dir(local, "tracking store directory")
    if db is not None and db.exists() and (not db.is_file() or not os.access(db, os.R_OK | os.W_OK)):
        raise ConfigError(f"tracking store {db} is not a writable file (tracking.uri={uri})")
    root = artifact_root_for(uri, tracking.get("artifact_root"))
    if root is not None:
        check_writable_dir(root, "tracking artifact root")


# -- identity and resume ---------------------------------------------------------------------------
def _drop(c: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        c = c.get(p) if isinstance(c, dict) else None
        if c is None:
            return
    if isinstance(c, dict):
        c.pop(leaf, None)


def config_hash(cfg: DictConfig) -> str:
    """Digest of what the run computes: the resolved config without the safe-to-change keys."""
    c = OmegaConf.to_container(cfg, resolve=True)
    for key in (*SAFE_RESUME_KEYS, "resume"):
        _drop(c, key)
    return hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode()).hexdigest()[:16]


_MISSING = object()


def _lookup(c: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(c, dict) or part not in c:
            return _MISSING
        c = c[part]
    return c


def _leaf_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += _leaf_keys(a.get(k, _MISSING), b.get(k, _MISSING), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix[:-1]]


def override_keys(overrides: Sequence[str]) -> list[str]:
    """``["+trainer.iter=5", "method=hnet", "~seed"]`` -> ``["trainer.iter", "method", "seed"]``."""
    keys = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("~+").split("@", 1)[0].split("[", 1)[0]
        keys.append(key.replace("/", "."))
    return keys


def _set(cfg: DictConfig, key: str, value: Any) -> None:
    """``cfg[key] = value``; ``_MISSING`` deletes the key."""
    if value is not _MISSING:
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node:
        del node[leaf]


def _is_safe(key: str) -> bool:
    return key in SAFE_RESUME_KEYS or key.startswith("tracking.")


def resume_config(saved: DictConfig, cmd: DictConfig, overrides: Sequence[str] | None) -> DictConfig:
    """The saved config with the command's safe overrides applied; refuses overrides that change the run.

    ``overrides`` are the command line's (Hydra's task overrides); ``None`` (a config passed in
    code) compares the whole of ``cmd`` with ``saved``. ``trainer.stop_after`` always comes from
    ``cmd``: the resuming command decides where to stop.
    """
    s = OmegaConf.to_container(saved, resolve=False)
    c = OmegaConf.to_container(cmd, resolve=False)
    keys = override_keys(overrides) if overrides is not None else _leaf_keys(s, c)
    out = saved.copy()
    refused = []
    for key in dict.fromkeys(keys):
        if key == "resume" or key.startswith("resume."):
            continue
        new, old = _lookup(c, key), _lookup(s, key)
        if old is _MISSING and new is None:
            continue  # a key added after the run was saved, left at null: not added, so the run's digest holds
        if _is_safe(key):
            _set(out, key, new)
        elif new is _MISSING or new != old:
            refused.append(key)
    refused = [k for k in refused if not any(r.startswith(k + ".") for r in refused)]
    if refused:
        raise ConfigError(f"resume= continues a run with its saved config; refusing to change {', '.join(refused)} "
                          f"(resume may change only {', '.join(SAFE_RESUME_KEYS).replace('tracking', 'tracking.*')})")
    stop = _lookup(c, "trainer.stop_after")
    _set(out, "trainer.stop_after", None if stop is _MISSING else stop)
    out.resume = None
    return out


__all__ = ["validate", "check_trainer", "check_lr_schedule", "resolve_device", "check_method_scenario",
           "check_writable_dir", "check_free_space", "check_tracking_store", "config_hash", "resume_config",
           "override_keys", "SAFE_RESUME_KEYS", "TRAINER_SCHEMA"]
