"""Continual-learning metrics against hand-computed matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edgecl.eval.metrics import avg_accuracy, bwt, forgetting, fwt, percentiles

# Three tasks; row i = after task i. Task 0 drops 0.9 -> 0.5, task 1 drops 0.8 -> 0.7.
R3 = np.array(
    [
        [0.9, 0.2, 0.1],
        [0.6, 0.8, 0.3],
        [0.5, 0.7, 0.95],
    ]
)


def test_hand_computed_three_tasks():
    assert avg_accuracy(R3) == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    # BWT: ((0.5 - 0.9) + (0.7 - 0.8)) / 2
    assert bwt(R3) == pytest.approx(-0.25)
    # FWT: ((R[0,1] - b1) + (R[1,2] - b2)) / 2 with b = (0, 0.1, 0.1)
    assert fwt(R3, [0.0, 0.1, 0.1]) == pytest.approx(((0.2 - 0.1) + (0.3 - 0.1)) / 2)
    # Forgetting: task 0 max(0.9, 0.6) - 0.5 = 0.4; task 1 max(0.2, 0.8) - 0.7 = 0.1
    assert forgetting(R3) == pytest.approx(0.25)


def test_signs_when_later_tasks_help():
    R = np.array([[0.5, 0.6], [0.8, 0.9]])
    assert bwt(R) == pytest.approx(0.3)  # positive: backward transfer
    assert forgetting(R) == pytest.approx(-0.3)  # negative: nothing forgotten, gained
    assert fwt(R, [0.0, 0.7]) == pytest.approx(-0.1)  # worse than the untrained baseline


def test_forgetting_uses_the_best_earlier_row_not_just_the_diagonal():
    # Task 0 peaks after task 1 (0.95), then falls to 0.6.
    R = np.array([[0.7, 0.0, 0.0], [0.95, 0.8, 0.0], [0.6, 0.8, 0.9]])
    assert forgetting(R) == pytest.approx(((0.95 - 0.6) + 0.0) / 2)
    assert bwt(R) == pytest.approx(((0.6 - 0.7) + 0.0) / 2)


def test_no_forgetting_for_perfect_memory():
    R = np.tril(np.ones((4, 4)))  # every task perfect once learned, never forgotten
    assert bwt(R) == 0.0
    assert forgetting(R) == 0.0
    assert avg_accuracy(R) == 1.0
    assert fwt(R, np.zeros(4)) == 0.0


def test_single_task_is_undefined_not_zero():
    R = [[0.8]]
    assert avg_accuracy(R) == pytest.approx(0.8)
    assert math.isnan(bwt(R)) and math.isnan(fwt(R, [0.0])) and math.isnan(forgetting(R))


@pytest.mark.parametrize("bad", [np.zeros((2, 3)), np.zeros(3), np.zeros((0, 0))])
def test_non_square_matrix_is_rejected(bad):
    with pytest.raises(ValueError, match="square"):
        bwt(bad)


def test_baseline_length_must_match():
    with pytest.raises(ValueError, match="baseline"):
        fwt(np.eye(3), [0.0, 0.0])


def test_percentiles():
    v = np.arange(1, 101, dtype=float)
    p = percentiles(v)
    assert set(p) == {"p50", "p99"}
    assert p["p50"] == pytest.approx(50.5)
    assert p["p99"] == pytest.approx(99.01)
    assert all(math.isnan(x) for x in percentiles([]).values())


square = st.integers(2, 6).flatmap(
    lambda t: arrays(np.float64, (t, t), elements=st.floats(0.0, 1.0, allow_nan=False))
)


@settings(max_examples=80, deadline=None)
@given(R=square)
def test_metric_ranges_and_relations(R):
    t = R.shape[0]
    assert 0.0 <= avg_accuracy(R) <= 1.0
    assert -1.0 <= bwt(R) <= 1.0
    # The best earlier accuracy is at least the diagonal one, so forgetting >= -BWT.
    assert forgetting(R) >= -bwt(R) - 1e-9
    assert -1.0 <= fwt(R, np.zeros(t)) <= 1.0
