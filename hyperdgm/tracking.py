"""Experiment tracking: MLflow (default) or nothing.

One MLflow experiment per benchmark; params are the flattened config (floats rounded); metrics per
task under the names of :mod:`hyperdgm.naming` (7 significant digits); artifacts are the resolved config, the accuracy
matrix (CSV + heatmap) and whatever a method adds (e.g. replay sample grids). A crashed run is marked FAILED with its error, an interrupted one
(SIGINT / SIGTERM) KILLED. Opening a sqlite store holds a file lock beside it, so runs started
together on a store that does not exist yet do not race in MLflow's schema creation. A sqlite
store keeps its artifacts beside it (``<store dir>/mlartifacts``), wherever the command runs; the
benchmark is logged as the run's dataset input (name, digest of the samples it selects, data root).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .errors import ConfigError, Interrupted
from .naming import metric_key, metric_value, param_value

log = logging.getLogger(__name__)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}} -> {"a.b": "1"}``; floats rounded, lists in their string form (:func:`param_value`)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = param_value(v)
    return out


def _abs_sqlite(uri: str) -> str:
    """Make a relative ``sqlite:///path`` absolute so the store does not depend on the cwd."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return uri


def artifact_root_for(uri: str, root: str | os.PathLike | None = None) -> Path | None:
    """Where a sqlite store's new experiments keep artifacts: ``root`` (relative to the store's
    directory), by default ``<store dir>/mlartifacts``; None for other URIs (a server decides)."""
    if not uri.startswith("sqlite:///"):
        return None
    store_dir = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
    return (store_dir / Path(root).expanduser()).resolve() if root else store_dir / "mlartifacts"


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive file lock ``<db>.lock`` around opening a sqlite store (other URIs: nothing)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri[len("sqlite:///"):] + ".lock")
    with open(lock, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes
        yield


class _Writes:
    depth = 0
    pending: int | None = None


@contextlib.contextmanager
def store_write() -> Iterator[None]:
    """A SIGINT / SIGTERM arriving during a write to the store interrupts the run once the write is done
    (:func:`defer_interrupt`): a sqlite write cut short leaves the store locked for the run's last writes."""
    _Writes.depth += 1
    try:
        yield
    except BaseException:
        _Writes.depth -= 1
        if _Writes.depth == 0:
            _Writes.pending = None  # the write failed on its own: that error is the one to report
        raise
    _Writes.depth -= 1
    if _Writes.depth == 0 and _Writes.pending is not None:
        signum, _Writes.pending = _Writes.pending, None
        raise Interrupted(signum)


def defer_interrupt(signum: int) -> bool:
    """For a signal handler: True (the interrupt is raised when the store write ends) while one runs."""
    if _Writes.depth > 0:
        _Writes.pending = signum
        return True
    return False


def _uninterrupted(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with store_write():
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__, wrapper.__qualname__ = fn.__name__, fn.__doc__, fn.__qualname__
    return wrapper


class TrackingError(ConfigError):
    """The tracking store cannot be opened or written."""


def _interrupted(error: BaseException | None) -> bool:
    return isinstance(error, (Interrupted, KeyboardInterrupt))


class Tracker:
    """No-op tracker; the interface every tracker implements."""

    run_id: str | None = None
    maps: bool = False  # 2-D maps of task embeddings and replay after each task (hyperdgm.maps)

    def start(self, experiment: str, run_name: str, params: Mapping[str, Any], run_id: str | None = None,
              tags: Mapping[str, str] | None = None) -> None: ...

    def spawn(self) -> "Tracker":
        """A tracker of the same kind and store for another run (not started)."""
        return type(self)()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None: ...

    def log_text(self, text: str, name: str) -> None: ...

    def log_figure(self, fig: Any, name: str) -> None: ...

    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_benchmark(self, bench: Any, data_root: str | os.PathLike) -> None: ...

    def finish(self, error: BaseException | None = None) -> None: ...


class MLflowTracker(Tracker):
    """Tracks into an MLflow store; ``uri`` may be any tracking URI (sqlite file, remote server).

    Every call names its run (``MlflowClient``, no fluent "active run"): several trackers can hold runs
    open in one process at once (the seeds of a seed-batched run, each its own run under one parent).
    """

    def __init__(self, uri: str = "sqlite:///runs/mlflow.db", artifact_root: str | None = None, maps: bool = True) -> None:
        import mlflow

        self.maps = bool(maps)
        self._mlflow = mlflow
        try:
            self.uri = _abs_sqlite(uri)
        except OSError as err:
            raise TrackingError(f"MLflow store {uri}: cannot create its directory ({err.strerror}: {err.filename})") from err
        self.artifact_root = artifact_root_for(self.uri, artifact_root)
        self.run_id = None
        self._client: Any = None
        self._open_run = False

    def spawn(self) -> "MLflowTracker":
        """A tracker on the same store for another run (not started)."""
        twin = MLflowTracker.__new__(MLflowTracker)
        twin.__dict__.update(maps=self.maps, _mlflow=self._mlflow, uri=self.uri, artifact_root=self.artifact_root,
                             run_id=None, _client=None, _open_run=False)
        return twin

    @_uninterrupted
    def start(self, experiment: str, run_name: str, params: Mapping[str, Any], run_id: str | None = None,
              tags: Mapping[str, str] | None = None) -> None:
        try:
            with store_lock(self.uri):
                self._open(experiment, run_name, run_id, dict(tags or {}))
                if run_id is None:
                    self._log_params(params)
        except Exception as err:  # MLflow and SQLAlchemy raise many types; the run cannot be tracked
            if self._open_run:
                self._end("FAILED")
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise TrackingError(f"MLflow store {self.uri}: cannot open run ({type(err).__name__}: {first})") from err
        log.info("MLflow run %s in experiment '%s' (%s)", self.run_id, experiment, self.uri)

    def _log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = sorted(flatten(params).items())
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])

    def _open(self, experiment: str, run_name: str, run_id: str | None, tags: dict[str, str]) -> None:
        from mlflow.tracking.context.registry import resolve_tags

        client = self._store()
        if run_id is not None:
            client.get_run(run_id)  # a run this store does not hold fails here, in one line
            client.update_run(run_id, status="RUNNING")
            self.run_id = run_id
            if tags:
                self.set_tags(tags)
        else:
            exp = client.get_experiment_by_name(experiment)
            exp_id = exp.experiment_id if exp is not None else self._create_experiment(experiment)
            # the fluent API's default tags (user, source, git commit) and ours
            run = client.create_run(exp_id, run_name=run_name, tags=resolve_tags(tags))
            self.run_id = run.info.run_id
        self._open_run = True

    def _store(self) -> Any:
        """The store's client (made on first use: opening a new sqlite store creates its tables)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _create_experiment(self, experiment: str) -> str:
        """Create it unless another job just did: jobs on a tracking server race between the lookup
        and the creation (a sqlite store's lock already orders them)."""
        from mlflow.exceptions import MlflowException

        loc = (self.artifact_root / experiment).as_uri() if self.artifact_root else None
        try:
            # model training; MLflow 3.17's UI ignores the tag (the address decides: hyperdgm/ui.py), others read it
            return self._store().create_experiment(experiment, artifact_location=loc,
                                                   tags={"mlflow.experimentKind": "custom_model_development"})
        except MlflowException as err:
            exp = self._store().get_experiment_by_name(experiment)
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or exp is None:
                raise
            log.info("experiment '%s' was created by another job meanwhile", experiment)
            return exp.experiment_id

    @_uninterrupted
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        clean = {metric_key(k): metric_value(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
        if clean:
            now = int(time.time() * 1000)
            self._client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(step or 0)) for k, v in clean.items()])

    @_uninterrupted
    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path=subdir)

    @_uninterrupted
    def log_text(self, text: str, name: str) -> None:
        self._client.log_text(self.run_id, text, name)

    @_uninterrupted
    def log_figure(self, fig: Any, name: str) -> None:
        self._client.log_figure(self.run_id, fig, name)

    @_uninterrupted
    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """A stepped image (``key`` once per task): the UI's image-grid chart and its step slider."""
        self._client.log_image(self.run_id, image, key=key, step=step, synchronous=True)  # on disk before the run ends

    @_uninterrupted
    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    @_uninterrupted
    def log_benchmark(self, bench: Any, data_root: str | os.PathLike) -> None:
        """The benchmark as the run's dataset input (the runs table's Dataset column)."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.types import Schema, TensorSpec

        shape = tuple(bench.tasks[0].input_shape)
        schema = Schema([TensorSpec(np.dtype(np.float32), (-1, *shape), "x"), TensorSpec(np.dtype(np.int64), (-1,), "y")])
        ds = MetaDataset(LocalArtifactDatasetSource(str(Path(data_root).expanduser().resolve())), name=bench.name,
                         digest=bench.digest, schema=schema)
        sizes = {s: sum(len(t.split(s)) for t in bench.tasks) for s in ("train", "val", "test")
                 if all(getattr(t, s) is not None for t in bench.tasks)}
        tags = {"mlflow.data.context": "training", "n_tasks": str(bench.n_tasks), **{f"n_{k}": str(v) for k, v in sizes.items()}}
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(ds._to_mlflow_entity(),
                                                                    [InputTag(k, v) for k, v in tags.items()])])

    @_uninterrupted
    def _end(self, status: str) -> None:
        self._open_run = False
        self._client.set_terminated(self.run_id, status=status)

    def finish(self, error: BaseException | None = None) -> None:
        if not self._open_run:
            return
        if error is None:
            self._end("FINISHED")
            return
        if _interrupted(error):
            try:
                self.set_tags({"interrupted": str(error) or "KeyboardInterrupt"})
            finally:
                self._end("KILLED")
            return
        msg = f"{type(error).__name__}: {error}"
        try:
            self.set_tags({"error": msg[:5000]})
            self.log_text("".join(traceback.format_exception(error)), "error.txt")
        finally:
            self._end("FAILED")


def build_tracker(cfg: Mapping[str, Any] | None) -> Tracker:
    """``tracking.backend``: ``mlflow`` (default) or ``none``."""
    if not cfg or cfg.get("backend", "mlflow") in ("none", None, False):
        return Tracker()
    if cfg.get("backend", "mlflow") != "mlflow":
        raise ValueError(f"unknown tracking backend '{cfg.get('backend')}' (choose from mlflow, none)")
    return MLflowTracker(cfg.get("uri", "sqlite:///runs/mlflow.db"), cfg.get("artifact_root"), cfg.get("maps", True))


def figure_image(fig: Any) -> np.ndarray:
    """A drawn matplotlib figure as an RGB ``uint8`` array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def task_labels(tasks: Any) -> list[str]:
    """Axis labels of a benchmark's tasks: ``"0: 0,1"`` (its classes, few) or ``"3: permutation 3"`` (its name)."""
    out = []
    for t in tasks:
        what = ",".join(map(str, t.classes)) if len(t.classes) <= 3 else str(t.name)
        out.append(f"{t.id}: {what}"[:18])
    return out


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_matrix_figure(R: np.ndarray, labels: Sequence[str] | None = None) -> Any:
    """Heatmap of the accuracy matrix (NaN, not yet evaluated, left blank), axes labelled by task
    (its classes where ``labels`` are given: :func:`task_labels`)."""
    plt = _pyplot()
    n = R.shape[0]
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * n, 1.2 + 0.6 * n))
    im = ax.imshow(np.ma.masked_invalid(R), vmin=0, vmax=100, cmap="viridis")
    for i in range(n):
        for j in range(n):
            if not np.isnan(R[i, j]):
                ax.text(j, i, f"{R[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if R[i, j] < 60 else "black")
    ax.set_xlabel("evaluated task" + (" (classes)" if labels else ""))
    ax.set_ylabel("after training task")
    ax.set_xticks(range(n), labels=list(labels) if labels else None)
    ax.set_yticks(range(n), labels=list(labels) if labels else None)
    if labels:
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_title("test accuracy (%)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def forgetting_curves_figure(R: np.ndarray, labels: Sequence[str] | None = None) -> Any:
    """One curve per task: its accuracy after each later task was learned (``R[i, j]``, i >= j)."""
    plt = _pyplot()
    n = R.shape[0]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for j in range(n):
        after = np.arange(j, n)
        acc = R[j:, j]
        if np.isfinite(acc).any():
            ax.plot(after, acc, marker="o", ms=3, label=labels[j] if labels else f"task {j}")
    ax.set_xlabel("after training task")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(range(n))
    ax.set_xlim(-0.3, n - 0.7)
    ax.set_title("forgetting: each task's accuracy as later tasks are learned")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if n > 5 else 1)
    fig.tight_layout()
    return fig


def log_accuracy_matrix_image(R: np.ndarray, task_id: int, tracker: Tracker, labels: Sequence[str] | None = None) -> None:
    """The accuracy matrix so far as the stepped image ``accuracy_matrix`` (step = task)."""
    plt = _pyplot()
    fig = accuracy_matrix_figure(R, labels)
    tracker.log_image(figure_image(fig), "accuracy_matrix", task_id)
    plt.close(fig)


def accuracy_matrix_artifacts(R: np.ndarray, task_names: list[str], tracker: Tracker, out_dir: str | os.PathLike | None = None) -> Path:
    """Write the accuracy matrix as CSV, a heatmap PNG and the forgetting curves (axes labelled with
    ``task_names``), log them, return the CSV path."""
    plt = _pyplot()
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "accuracy_matrix.csv"
    n = R.shape[0]
    header = "after_task," + ",".join(f"task_{j}" for j in range(n))
    rows = [f"{i}," + ",".join("" if np.isnan(v) else f"{v:.4f}" for v in R[i]) for i in range(n)]
    csv.write_text(header + "\n" + "\n".join(rows) + "\n")
    tracker.log_artifact(csv)
    for name, draw in (("accuracy_matrix.png", accuracy_matrix_figure), ("forgetting_curves.png", forgetting_curves_figure)):
        fig = draw(R, task_names)
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        tracker.log_artifact(out / name)
    return csv
