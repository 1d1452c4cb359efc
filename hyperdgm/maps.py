"""2-D maps of what a method learned, logged after each task (``tracking.maps``).

* ``task_embeddings`` (every hypernetwork of the method: the classifier's, a replay generator's):
  PCA and t-SNE of the learned task embeddings and of the weights generated per task, one point
  per task (as in the hypercl paper's figures), from the second task on.
* ``replay_map`` (methods with a generative memory): PCA and t-SNE of real training samples of
  every task learned so far beside samples the memory replays for them, colour = task, marker =
  real / replayed.

Each is a stepped image (step = task: the UI's step slider), next to ``accuracy_matrix`` and ``replay``.
scikit-learn does the projections; t-SNE runs on a PCA reduction, and only where there are at least
four points (fewer have no neighbourhoods to keep).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from .tracking import Tracker, _pyplot, figure_image

log = logging.getLogger(__name__)

#: Real and replayed samples per task in the replay map (t-SNE's cost grows with their number).
REPLAY_MAP_PER_TASK = 60
TSNE_MIN_POINTS = 4
#: t-SNE's iterations: 600 MNIST images (a replay map after 5 tasks) end at KL 0.744 after 500 against 0.737 after
#: sklearn's default 1000, in half the time (2.9 against 5.4 s on 1 thread).
TSNE_ITERS = 500
#: up to this many points t-SNE runs exactly: faster than Barnes-Hut's trees there (0.13-0.36 against 0.38-1.6 s
#: for 5-120 points, 1 thread), and exact.
TSNE_EXACT_MAX = 100


def same_distances(x: np.ndarray) -> np.ndarray:
    """``[n, d]`` (``d > n``) -> ``[n, n]`` centred points with the same inner products, so the same PCA and t-SNE
    (up to the axes' signs). PCA of ``n`` tasks' generated weights (``d`` ~ 10^5-10^6) took sklearn 0.6 s per
    call; the ``n x n`` Gram matrix and its eigenvectors take milliseconds."""
    xc = x - x.mean(axis=0)
    w, u = np.linalg.eigh(xc @ xc.T)
    w[w < 10 * len(w) * np.finfo(w.dtype).eps * max(float(w.max()), 0.0)] = 0.0  # round-off, not variance
    return (u * np.sqrt(w))[:, ::-1].copy()  # largest variance first


def project(x: np.ndarray, how: str, seed: int = 0) -> np.ndarray | None:
    """``[n, d] -> [n, 2]`` by ``pca`` or ``tsne`` (None where ``x`` has too few points for it)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if n < 2 or (how == "tsne" and n < TSNE_MIN_POINTS):
        return None
    x = x.astype(np.float64)
    if x.shape[1] > n:
        x = same_distances(x)
    if how == "pca":
        y = PCA(n_components=min(2, n, x.shape[1]), random_state=seed).fit_transform(x)
        return np.pad(y, ((0, 0), (0, 2 - y.shape[1])))  # one feature: a line
    reduced = PCA(n_components=min(30, n, x.shape[1]), random_state=seed).fit_transform(x)
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))  # t-SNE needs perplexity < n
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=TSNE_ITERS,
                method="exact" if n <= TSNE_EXACT_MAX else "barnes_hut").fit_transform(reduced)


def hypernetworks(method: Any) -> list[tuple[str, Any]]:
    """``[(name, WeightGenerator)]`` of a method: its classifier's and its memory's, once each."""
    found: list[tuple[str, Any]] = []
    gen = getattr(method, "gen", None)
    if gen is not None:
        found.append(("classifier_hnet", gen))
    memory = getattr(method, "memory", None) if getattr(method, "uses_memory", True) else None
    prot = getattr(memory, "protection", None)
    mgen = getattr(prot, "gen", None) if getattr(prot, "name", "") == "hnet" else None
    if mgen is not None and all(mgen is not g for _, g in found):
        found.append(("generator_hnet", mgen))
    return found


def _scatter(ax: Any, y: np.ndarray | None, groups: np.ndarray, title: str, markers: np.ndarray | None = None,
             annotate: bool = False) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if y is None:
        ax.text(0.5, 0.5, f"needs {TSNE_MIN_POINTS}+ points", ha="center", va="center", transform=ax.transAxes,
                color="grey", fontsize=8)
        return
    cmap = _pyplot().get_cmap("tab10")
    for m in ([None] if markers is None else sorted(set(markers.tolist()))):
        sel = np.ones(len(y), bool) if m is None else markers == m
        ax.scatter(y[sel, 0], y[sel, 1], c=[cmap(int(g) % 10) for g in groups[sel]], s=40 if annotate else 10,
                   marker="o" if m in (None, "real") else "x", linewidths=0.8)
    if annotate:
        for i, (a, b) in enumerate(y):
            ax.annotate(str(int(groups[i])), (a, b), textcoords="offset points", xytext=(4, 3), fontsize=8)
    if markers is not None:  # the marker says real / replayed; the colour (task) is not in the legend
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], ls="", marker="o" if m == "real" else "x", color="k", label=m)
                   for m in sorted(set(markers.tolist()))]
        ax.legend(handles=handles, fontsize=7, loc="best")


def task_embedding_figure(embeddings: np.ndarray, weights: np.ndarray, title: str, seed: int = 0) -> Any:
    """2x2: task embeddings / generated weights (rows) by PCA / t-SNE (columns), one point per task."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(7.0, 6.4))
    tasks = np.arange(embeddings.shape[0])
    for r, (what, x) in enumerate((("task embeddings", embeddings), ("generated weights", weights))):
        for c, how in enumerate(("pca", "tsne")):
            _scatter(axes[r, c], project(x, how, seed), tasks, f"{what}: {how.upper().replace('TSNE', 't-SNE')}",
                     annotate=True)
    fig.suptitle(f"{title}: {len(tasks)} tasks", fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def log_task_embedding_maps(method: Any, tracker: Tracker, task_id: int, seed: int = 0) -> list[str]:
    """Log ``task_embeddings[.generator_hnet]`` for every hypernetwork with two or more tasks; the keys."""
    plt = _pyplot()
    keys = []
    for name, gen in hypernetworks(method):
        n = gen.n_tasks
        if n < 2:
            continue
        emb = torch.stack([gen.task_embedding(i).detach() for i in range(n)]).float().cpu().numpy()
        weights = gen.flat(list(range(n))).detach().float().cpu().numpy()
        fig = task_embedding_figure(emb, weights, name.replace("_", " "), seed)
        key = "task_embeddings" if name == "classifier_hnet" else f"task_embeddings.{name}"
        tracker.log_image(figure_image(fig), key, task_id)
        plt.close(fig)
        keys.append(key)
    return keys


def replay_map_figure(real: np.ndarray, real_tasks: np.ndarray, fake: np.ndarray, fake_tasks: np.ndarray,
                      seed: int = 0, where: str = "") -> Any:
    """Real and replayed samples in one PCA / t-SNE projection, colour = task, marker = real / replayed;
    ``where``: the space they are in, for the title (e.g. "features after layer 2")."""
    plt = _pyplot()
    x = np.concatenate([real.reshape(len(real), -1), fake.reshape(len(fake), -1)])
    tasks = np.concatenate([real_tasks, fake_tasks])
    kind = np.array(["real"] * len(real) + ["replayed"] * len(fake))
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.0))
    for ax, how in zip(axes, ("pca", "tsne")):
        _scatter(ax, project(x, how, seed), tasks, f"samples: {how.upper().replace('TSNE', 't-SNE')}", markers=kind)
    space = f" {where}" if where else ""
    fig.suptitle(f"real vs replayed{space}, tasks 0-{int(tasks.max())} (colour: task)", fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def log_replay_map(method: Any, tracker: Tracker, tasks: Sequence[Any], task_id: int, seed: int = 0) -> bool:
    """Log ``replay_map`` for a method with a generative memory; True if logged."""
    memory = getattr(method, "memory", None) if getattr(method, "uses_memory", True) else None
    if memory is None or memory.n_begun == 0:
        return False
    n = REPLAY_MAP_PER_TASK
    seen = [t for t in tasks if t.id <= min(task_id, memory.n_begun - 1)]
    # latent replay: real and replayed samples as they enter the classifier (features after layer k); else pixels
    space = getattr(method, "space", None)
    latent = space is not None and space.layer > 0
    g = torch.Generator().manual_seed(seed)
    real, real_ids = [], []
    for t in seen:
        idx = torch.randperm(len(t.train), generator=g)[:n].to(t.train.y.device)
        x, _ = t.batch("train", idx)
        real.append((space.at_entry(x) if latent else _unit(x, t)).cpu())
        real_ids += [t.id] * len(idx)
    gd = torch.Generator(device=memory.device).manual_seed(seed)
    fake, fake_ids = memory.sample_tasks([t.id for t in seen], n, generator=gd)
    if latent:
        fake = space.to_input(fake, fake_ids)
    fig = replay_map_figure(torch.cat(real).float().numpy(), np.array(real_ids), fake.float().cpu().numpy(),
                            fake_ids.cpu().numpy(), seed, f"features after layer {space.layer}" if latent else "")
    tracker.log_image(figure_image(fig), "replay_map", task_id)
    _pyplot().close(fig)
    return True


def _unit(x: torch.Tensor, task: Any) -> torch.Tensor:
    """A task's batch in ``[0, 1]`` pixels, as the memory generates them."""
    from .methods.replay import PixelSpace

    return PixelSpace(task, x.device).to_unit(x)


def log_maps(method: Any, tracker: Tracker, tasks: Sequence[Any], task_id: int, seed: int = 0) -> None:
    """Every map this method has after ``task_id`` (a failure costs only the map, never the run)."""
    try:
        log_task_embedding_maps(method, tracker, task_id, seed)
        log_replay_map(method, tracker, tasks, task_id, seed)
    except Exception as err:  # a projection or a plot must not end a run that trained fine
        log.warning("maps after task %d not logged (%s: %s)", task_id + 1, type(err).__name__, err)
