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
import hashlib
import json
import logging
import os
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .data.synthetic import fingerprint
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


def benchmark_digest(bench: Any) -> str:
    """Fingerprint of what a benchmark feeds the run: per task its classes, the sample indices and
    labels of every split, the permutation and the preprocessing (the files themselves: the data root; a
    generated data set's samples: their hash)."""
    h = hashlib.sha256(bench.name.encode())
    for t in bench.tasks:
        h.update(json.dumps([t.name, t.classes, t.dataset, t.normalize, t.pad, t.augment]).encode())
        generated = fingerprint(t.dataset)
        if generated is not None:  # no files behind it (hyperdgm.data.synthetic): the samples themselves
            h.update(generated)
        for data in (t.train, t.val, t.test):
            if data is not None:
                h.update(data.idx.cpu().numpy().tobytes())
                h.update(data.y.cpu().numpy().tobytes())
        if t.permutation is not None:
            h.update(t.permutation.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


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


class TrackingError(ConfigError):
    """The tracking store cannot be opened or written."""


def _interrupted(error: BaseException | None) -> bool:
    return isinstance(error, (Interrupted, KeyboardInterrupt))


class Tracker:
    """No-op tracker; the interface every tracker implements."""

    run_id: str | None = None
    maps: bool = False  # 2-D maps of task embeddings and replay after each task (hyperdgm.maps)

    def start(self, experiment: str, run_name: str, params: Mapping[str, Any], run_id: str | None = None) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None: ...

    def log_text(self, text: str, name: str) -> None: ...

    def log_figure(self, fig: Any, name: str) -> None: ...

    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_benchmark(self, bench: Any, data_root: str | os.PathLike) -> None: ...

    def finish(self, error: BaseException | None = None) -> None: ...


class MLflowTracker(Tracker):
    """Tracks into an MLflow store; ``uri`` may be any tracking URI (sqlite file, remote server)."""

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

    def start(self, experiment: str, run_name: str, params: Mapping[str, Any], run_id: str | None = None) -> None:
        try:
            with store_lock(self.uri):
                self._open(experiment, run_name, run_id)
                if run_id is None:
                    items = sorted(flatten(params).items())
                    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                        self._mlflow.log_params(dict(items[i : i + 100]))
        except Exception as err:  # MLflow and SQLAlchemy raise many types; the run cannot be tracked
            if self._mlflow.active_run() is not None:
                self._mlflow.end_run(status="FAILED")
            first = (str(err).strip().splitlines() or [""])[0][:300]
            raise TrackingError(f"MLflow store {self.uri}: cannot open run ({type(err).__name__}: {first})") from err
        log.info("MLflow run %s in experiment '%s' (%s)", self.run_id, experiment, self.uri)

    def _open(self, experiment: str, run_name: str, run_id: str | None) -> None:
        mlflow = self._mlflow
        mlflow.set_tracking_uri(self.uri)
        if run_id is not None:
            mlflow.get_run(run_id)  # a run this store does not hold fails here, in one line
        if mlflow.get_experiment_by_name(experiment) is None:
            self._create_experiment(experiment)
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name)
        self.run_id = run.info.run_id

    def _create_experiment(self, experiment: str) -> None:
        """Create it unless another job just did: jobs on a tracking server race between the lookup
        and the creation (a sqlite store's lock already orders them)."""
        from mlflow.exceptions import MlflowException

        loc = (self.artifact_root / experiment).as_uri() if self.artifact_root else None
        try:
            # model training; MLflow 3.17's UI ignores the tag (the address decides: hyperdgm/ui.py), others read it
            self._mlflow.create_experiment(experiment, artifact_location=loc,
                                           tags={"mlflow.experimentKind": "custom_model_development"})
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or self._mlflow.get_experiment_by_name(experiment) is None:
                raise
            log.info("experiment '%s' was created by another job meanwhile", experiment)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {metric_key(k): metric_value(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | os.PathLike, subdir: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=subdir)

    def log_text(self, text: str, name: str) -> None:
        self._mlflow.log_text(text, name)

    def log_figure(self, fig: Any, name: str) -> None:
        self._mlflow.log_figure(fig, name)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """A stepped image (``key`` once per task): the UI's image-grid chart and its step slider."""
        self._mlflow.log_image(image, key=key, step=step, synchronous=True)  # on disk before the run ends

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))

    def log_benchmark(self, bench: Any, data_root: str | os.PathLike) -> None:
        """The benchmark as the run's dataset input (the runs table's Dataset column)."""
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.types import Schema, TensorSpec

        shape = tuple(bench.tasks[0].input_shape)
        schema = Schema([TensorSpec(np.dtype(np.float32), (-1, *shape), "x"), TensorSpec(np.dtype(np.int64), (-1,), "y")])
        ds = MetaDataset(LocalArtifactDatasetSource(str(Path(data_root).expanduser().resolve())), name=bench.name,
                         digest=benchmark_digest(bench), schema=schema)
        sizes = {s: sum(len(t.split(s)) for t in bench.tasks) for s in ("train", "val", "test")
                 if all(getattr(t, s) is not None for t in bench.tasks)}
        self._mlflow.log_input(ds, context="training", tags={"n_tasks": str(bench.n_tasks),
                                                             **{f"n_{k}": str(v) for k, v in sizes.items()}})

    def finish(self, error: BaseException | None = None) -> None:
        mlflow = self._mlflow
        if mlflow.active_run() is None:
            return
        if error is None:
            mlflow.end_run(status="FINISHED")
            return
        if _interrupted(error):
            try:
                mlflow.set_tag("interrupted", str(error) or "KeyboardInterrupt")
            finally:
                mlflow.end_run(status="KILLED")
            return
        msg = f"{type(error).__name__}: {error}"
        try:
            mlflow.set_tag("error", msg[:5000])
            mlflow.log_text("".join(traceback.format_exception(error)), "error.txt")
        finally:
            mlflow.end_run(status="FAILED")


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
