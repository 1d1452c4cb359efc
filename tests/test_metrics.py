"""Metric formulas on hand-computed accuracy matrices."""
import numpy as np
import pytest

from hyperdgm import metrics

NAN = np.nan
R = np.array(
    [
        [90.0, NAN, NAN],
        [80.0, 95.0, NAN],
        [70.0, 85.0, 99.0],
    ]
)


def test_average_and_during():
    assert metrics.average_accuracy(R) == pytest.approx((70 + 85 + 99) / 3)
    assert metrics.average_accuracy(R, after=1) == pytest.approx((80 + 95) / 2)
    assert metrics.during_accuracy(R) == pytest.approx((90 + 95 + 99) / 3)


def test_forgetting_uses_best_earlier_accuracy():
    # task 0: best earlier 90 -> 70 = 20 ; task 1: best earlier 95 -> 85 = 10
    assert metrics.forgetting(R) == pytest.approx(15.0)
    R2 = R.copy()
    R2[1, 0] = 92.0  # a better intermediate value is the reference
    assert metrics.forgetting(R2) == pytest.approx(((92 - 70) + 10) / 2)
    assert metrics.forgetting(R, after=0) == 0.0


def test_backward_transfer():
    assert metrics.backward_transfer(R) == pytest.approx(((70 - 90) + (85 - 95)) / 2)
    assert metrics.backward_transfer(R, after=1) == pytest.approx(80 - 90)


def test_a_n_weighted_by_test_size():
    sizes = [100, 300, 600]
    assert metrics.a_n(R, sizes) == pytest.approx((70 * 100 + 85 * 300 + 99 * 600) / 1000)
    assert metrics.a_n(R, sizes, after=1) == pytest.approx((80 * 100 + 95 * 300) / 400)


def test_summary_keys():
    s = metrics.summary(R, [1, 1, 1])
    assert set(s) == {"acc_avg", "acc_during", "forgetting", "bwt", "a_n"}
    assert s["a_n"] == pytest.approx(s["acc_avg"])
