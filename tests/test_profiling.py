"""The profile of a run: nested regions timed exclusively, nothing recorded (or changed) outside profiling."""
from __future__ import annotations

import time

import numpy as np
import pytest

from hyperdgm import profiling
from hyperdgm.bench import main as bench_main
from hyperdgm.experiment import run_experiment
from hyperdgm.profiling import profiling as profile_block, region, table

from .helpers import quick_cfg


def test_regions_nest_and_count_exclusive_time():
    with profile_block() as prof:
        with region("outer"):
            time.sleep(0.05)
            with region("inner"):
                time.sleep(0.1)
            with region("inner"):
                time.sleep(0.1)
    assert set(prof.seconds) == {"outer", "outer/inner"}
    assert prof.calls["outer/inner"] == 2 and prof.calls["outer"] == 1
    assert 0.19 <= prof.seconds["outer/inner"] < 0.3
    assert 0.045 <= prof.seconds["outer"] < 0.1  # without the nested 0.2 s
    assert sum(prof.seconds.values()) <= prof.wall
    rows = table(prof)
    assert rows[2].startswith("| `outer/inner` |") and rows[-1].startswith("| (outside regions")


def test_outside_profiling_a_region_records_nothing():
    assert region("x") is region("y")  # the shared no-op: marking the hot paths costs one global read
    with region("x"):
        pass
    assert profiling._ACTIVE is None
    with profile_block():
        with pytest.raises(RuntimeError, match="already active"):
            with profile_block():
                pass
    assert profiling._ACTIVE is None


def test_a_profiled_run_has_the_same_numbers_and_names_its_regions(tmp_path, capsys):
    over = ("benchmark=synthetic", "method=hnet_r", "scenario=cl3", "tracking=none", "benchmark.n_tasks=3",
            "trainer.iters_per_task=10", "trainer.batch_size=16", "method.memory.enc_hidden=[16]",
            "method.memory.dec_hidden=[16]", "method.memory.latent_dim=4", "benchmark.net.hidden=[16]",
            "trainer.checkpoint=false")
    plain = run_experiment(quick_cfg(tmp_path, tmp_path, *over), tmp_path / "a")
    with profile_block() as prof:
        profiled = run_experiment(quick_cfg(tmp_path, tmp_path, *over), tmp_path / "b")
    np.testing.assert_array_equal(plain.R, profiled.R)
    for path in ("data", "step", "step/backward", "step/optimizer", "step/replay", "step/memory",
                 "step/memory/backward", "step/memory/penalty:HnetProtection", "evaluate"):
        assert prof.calls[path] > 0, (path, dict(prof.calls))
    # replay from the second task on; the generator trains in all but the last task, its penalty from the second
    assert prof.calls["step"] == 30 and prof.calls["step/replay"] == 20 and prof.calls["step/memory"] == 20
    assert prof.calls["step/memory/penalty:HnetProtection"] == 10
    bench_main(["profile", "--run", " ".join(over)])
    assert "| `step/backward` |" in capsys.readouterr().out


def test_counted_flops_are_the_training_steps_products_and_linear_in_iterations(tmp_path):
    """``bench floor`` counts forward and backward matrix products; its extrapolation from two short runs
    is exact, because a run's FLOPs are linear in its iterations per task."""
    from hyperdgm.bench import count_flops, extrapolate

    over = ("benchmark=synthetic", "method=finetune", "scenario=cl3", "tracking=none", "benchmark.n_tasks=3",
            "trainer.batch_size=16", "benchmark.net.hidden=[16]", "trainer.checkpoint=false")
    counts = {k: count_flops(quick_cfg(tmp_path, tmp_path, *over, f"trainer.iters_per_task={k}")) for k in (4, 8, 20)}
    assert {n for _, n in counts.values()} == {3}
    total = {k: sum(c.values()) for k, (c, _) in counts.items()}
    # 784 -> 16 -> 6 (one head over the 6 classes), batch 16: forward 2*B*(784*16 + 16*6); backward the
    # weight gradients of both layers and the input gradient of the second (the data needs none)
    per_step = 2 * 16 * (2 * 784 * 16 + 3 * 16 * 6)
    assert total[8] - total[4] == 4 * 3 * per_step
    assert extrapolate(total[4], total[8], 4, 20) == total[20]


@pytest.mark.parametrize("spec,says", [
    ("benchmark=split_mnist data_root={nowhere}", "MNIST not found: put train-images-idx3-ubyte.gz"),
    ("method=no_such_method", "no_such_method' (available: dgm, dgr, "),
])
def test_bench_refuses_bad_input_in_one_line(spec, says, tmp_path, capsys, monkeypatch):
    """A missing data set or an unknown preset ends `hyperdgm.bench` with one line and exit code 2, as
    `hyperdgm.run` does, not with a traceback."""
    monkeypatch.delenv("HYPERDGM_DATA", raising=False)
    code = bench_main(["profile", "--run", spec.format(nowhere=tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and says in err and "\n" not in err, err
    assert "search path" not in err
