"""The tests' real-data root: a clone without data skips, CI (data promised) fails on a missing MNIST; no test
file reads data from a path of its own."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import MNIST_FILES, REPO_ROOT, data_expectation, missing_mnist, require_mnist


def _clone(tmp_path: Path, shared: bool) -> Path:
    """A clone at tmp/work/main, with tmp/work/shared/data beside it if ``shared``."""
    repo = tmp_path / "work" / "main"
    repo.mkdir(parents=True)
    if shared:
        (tmp_path / "work" / "shared" / "data").mkdir(parents=True)
    return repo


def _mnist(root: Path, where: str = "MNIST/raw", gz: bool = True) -> None:
    (root / where).mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        (root / where / (name + (".gz" if gz else ""))).write_bytes(b"")


def test_a_clone_without_data_skips(tmp_path):
    repo = _clone(tmp_path, shared=False)
    for env in (None, str(repo / "data")):  # nothing set, or `make test`'s fallback to the clone's ./data
        assert data_expectation(env, repo)[1] is False
        with pytest.raises(pytest.skip.Exception, match="MNIST not found"):
            require_mnist(env, repo)


def test_promised_data_without_mnist_fails_naming_the_files(tmp_path):
    repo = _clone(tmp_path, shared=True)
    shared = tmp_path / "work" / "shared" / "data"
    for env in (None, str(shared), str(tmp_path / "elsewhere")):  # CI: ../shared/data, or an explicit root
        root, promised = data_expectation(env, repo)
        assert promised and root == (shared if env in (None, str(shared)) else tmp_path / "elsewhere")
        with pytest.raises(pytest.fail.Exception) as err:
            require_mnist(env, repo)
        msg = str(err.value)
        assert "\n" not in msg and all(name in msg for name in MNIST_FILES) and str(root) in msg


def test_mnist_found_where_the_reader_looks(tmp_path):
    repo = _clone(tmp_path, shared=True)
    shared = tmp_path / "work" / "shared" / "data"
    _mnist(shared, "MNIST", gz=False)
    assert require_mnist(None, repo) == shared.resolve()
    (shared / "MNIST" / "t10k-labels-idx1-ubyte").unlink()
    assert missing_mnist(shared) == ["t10k-labels-idx1-ubyte"]
    _mnist(tmp_path / "own", ".")  # the files in the data root itself, gzipped
    assert require_mnist(str(tmp_path / "own"), repo) == (tmp_path / "own").resolve()


def test_no_test_reads_data_from_its_own_path():
    """Real data comes through the data_root fixture ($HYPERDGM_DATA / ../shared/data), never a path in a test."""
    hard = re.compile(r"shared/data|/work/|['\"]~?/?data/(MNIST|cifar|SVHN)")
    found = []
    for path in sorted((REPO_ROOT / "tests").glob("*.py")):
        if path.name in ("conftest.py", Path(__file__).name):
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if hard.search(line.split("#")[0]):
                found.append(f"{path.name}:{no}: {line.strip()}")
    assert not found, found
