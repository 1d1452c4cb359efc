"""2-D maps after each task (task embeddings, generated weights, real vs replayed), forgetting curves
and the accuracy heatmap's task labels."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hyperdgm import maps
from hyperdgm.experiment import run_experiment
from hyperdgm.tracking import Tracker, forgetting_curves_figure, task_labels

from .helpers import quick_cfg


class Recorder(Tracker):
    """Keeps the stepped images it is handed."""

    def __init__(self) -> None:
        self.images: dict[str, list[tuple[int, tuple[int, ...]]]] = {}

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        self.images.setdefault(key, []).append((step, image.shape))


def test_projections():
    rng = np.random.default_rng(0)
    line = np.outer(np.arange(6.0), rng.normal(size=50))  # six points on a line through the origin
    y = maps.project(line, "pca")
    assert y.shape == (6, 2) and np.allclose(y[:, 1], 0, atol=1e-8)
    assert np.allclose(np.abs(np.diff(y[:, 0])), np.linalg.norm(line[1]))  # distances along the line kept
    a, b = rng.normal(0, 0.1, (10, 20)), rng.normal(5, 0.1, (10, 20))
    t = maps.project(np.concatenate([a, b]), "tsne")
    d = np.linalg.norm(t[:, None] - t[None], axis=-1)
    assert d[:10, :10].max() < d[:10, 10:].min()  # the two clusters stay apart
    assert maps.project(a[:3], "tsne") is None and maps.project(a[:1], "pca") is None
    assert maps.project(a[:2], "pca").shape == (2, 2)


def test_wide_points_project_as_sklearn_projects_them():
    """Few points in many dimensions (tasks' generated weights) go through their Gram matrix: the same PCA
    coordinates as sklearn's on the raw points, up to each axis' sign."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3000)) * np.linspace(3.0, 0.1, 3000) + rng.normal(size=3000)
    red = maps.same_distances(x)
    assert red.shape == (5, 5)
    gram = lambda z: (z - z.mean(0)) @ (z - z.mean(0)).T  # noqa: E731
    assert np.allclose(gram(red), gram(x))  # every distance and angle kept
    ours, ref = maps.project(x, "pca"), PCA(n_components=2).fit_transform(x)
    assert np.allclose(np.abs(ours), np.abs(ref), atol=1e-8)
    assert np.allclose(np.abs(ours[:, 0] * ref[:, 0]).sum(), np.abs((ours[:, 0] * ref[:, 0]).sum()))  # one sign per axis


def test_task_labels_and_forgetting_curves():
    tasks = [SimpleNamespace(id=0, classes=[0, 1], name="classes 0,1"),
             SimpleNamespace(id=1, classes=list(range(10)), name="permutation 1")]
    assert task_labels(tasks) == ["0: 0,1", "1: permutation 1"]
    R = np.array([[99.0, np.nan], [80.0, 97.0]])
    fig = forgetting_curves_figure(R, task_labels(tasks))
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [[99.0, 80.0], [97.0]]  # each task from its own on
    assert [list(line.get_xdata()) for line in lines] == [[0, 1], [1]]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["0: 0,1", "1: permutation 1"]


def test_replay_map_figure_marks_real_and_replayed():
    rng = np.random.default_rng(1)
    real, fake = rng.random((20, 1, 4, 4)), rng.random((20, 1, 4, 4))
    ids = np.repeat([0, 1], 10)
    fig = maps.replay_map_figure(real, ids, fake, ids)
    pca, tsne = fig.axes
    assert [t.get_text() for t in pca.get_legend().get_texts()] == ["real", "replayed"]
    assert sum(len(c.get_offsets()) for c in pca.collections) == 40 == sum(len(c.get_offsets()) for c in tsne.collections)


def test_a_failing_map_never_ends_the_run(caplog):
    class Broken:
        n_tasks = 3

        def task_embedding(self, i):
            raise RuntimeError("boom")

    with caplog.at_level("WARNING"):
        maps.log_maps(SimpleNamespace(gen=Broken()), Recorder(), [], 2)
    assert "maps after task 3 not logged (RuntimeError: boom)" in caplog.text


def test_hnet_run_logs_its_task_embedding_maps(data_root, tmp_path):
    from mlflow.tracking import MlflowClient

    cfg = quick_cfg(data_root, tmp_path, "method=hnet", "scenario=cl1", "benchmark.n_tasks=4", "benchmark.train_limit=100",
                    "benchmark.test_limit=50", "trainer.iters_per_task=5", "trainer.checkpoint=false", "tracking.maps=true")
    result = run_experiment(cfg, tmp_path / "run")
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    steps: dict[str, list[int]] = {}
    for a in client.list_artifacts(result.run_id, "images"):
        m = re.fullmatch(r"images/(.+)\+step\+(\d+)\+timestamp\+\d+\+[0-9a-f-]+\.png", a.path)
        if m:
            steps.setdefault(m.group(1), []).append(int(m.group(2)))
    assert {k: sorted(v) for k, v in steps.items()} == {"accuracy_matrix": [0, 1, 2, 3], "task_embeddings": [1, 2, 3]}
    assert (tmp_path / "run" / "forgetting_curves.png").stat().st_size > 5000


def test_maps_of_a_method_with_a_memory_hypernetwork():
    """Both hypernetworks of a method (classifier and generator), each once; the figure per task."""
    from hyperdgm.hnet import WeightGenerator

    def gen(n_tasks: int) -> WeightGenerator:
        g = WeightGenerator(torch.nn.Linear(6, 3), chunk_size=8, hidden=(5,), task_emb_size=4, chunk_emb_size=2)
        for _ in range(n_tasks):
            g.add_task()
        return g

    g1, g2 = gen(4), gen(1)
    method = SimpleNamespace(gen=g1, memory=SimpleNamespace(protection=SimpleNamespace(name="hnet", gen=g2)))
    assert [n for n, _ in maps.hypernetworks(method)] == ["classifier_hnet", "generator_hnet"]
    rec = Recorder()
    assert maps.log_task_embedding_maps(method, rec, 3) == ["task_embeddings"]  # the memory's has one task
    (step, shape), = rec.images["task_embeddings"]
    assert step == 3 and shape[2] == 3 and min(shape[:2]) > 300
    shared = SimpleNamespace(gen=g1, memory=SimpleNamespace(protection=SimpleNamespace(name="hnet", gen=g1)))
    assert [n for n, _ in maps.hypernetworks(shared)] == ["classifier_hnet"]


@pytest.mark.parametrize("n", [2, 5])
def test_task_embedding_figure_has_every_task(n):
    rng = np.random.default_rng(n)
    fig = maps.task_embedding_figure(rng.normal(size=(n, 8)), rng.normal(size=(n, 40)), "classifier hnet")
    pca_emb, tsne_emb = fig.axes[0], fig.axes[1]
    assert len(pca_emb.collections[0].get_offsets()) == n
    assert len(tsne_emb.collections) == (1 if n >= maps.TSNE_MIN_POINTS else 0)
    assert [t.get_text() for t in pca_emb.texts] == [str(i) for i in range(n)]
