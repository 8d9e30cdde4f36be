"""Sliding windows: shapes, counts, and never crossing a recording boundary."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl.runtime.windowing import n_windows, sliding_windows, windows_by_segment


def test_sliding_windows_content_and_view():
    rows = np.arange(20, dtype=np.float32).reshape(10, 2)
    w = sliding_windows(rows, length=4, hop=3)
    assert w.shape == (3, 4, 2)
    np.testing.assert_array_equal(w[1], rows[3:7])
    np.testing.assert_array_equal(w[2], rows[6:10])
    assert np.shares_memory(w, rows)  # a view, not a copy
    assert not w.flags.writeable


def test_sliding_windows_too_short_gives_empty():
    w = sliding_windows(np.zeros((3, 5)), length=4, hop=1)
    assert w.shape == (0, 4, 5)


@pytest.mark.parametrize("length,hop", [(0, 1), (1, 0), (2.5, 1), (True, 1)])
def test_bad_length_or_hop(length, hop):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        sliding_windows(np.zeros((10, 1)), length=length, hop=hop)


def test_rows_must_be_2d():
    with pytest.raises(ValueError, match="2-D"):
        sliding_windows(np.zeros(10), 2, 1)


def test_windows_by_segment_metadata():
    rows = np.arange(10, dtype=np.float64)[:, None]
    groups = np.array([7, 7, 7, 7, 3, 3, 3, 3, 3, 3])
    subjects = np.array([1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 5, 5, 5])
    w = windows_by_segment(rows, labels, groups, 3, 2, subjects=subjects)
    assert w.start.tolist() == [0, 4, 6]
    assert w.group.tolist() == [7, 3, 3]
    assert w.subject.tolist() == [1, 2, 2]
    assert w.y.tolist() == [0, 2, 5]  # majority: [0,0,1] -> 0, [2,2,2] -> 2, [2,5,5] -> 5
    assert len(w) == 3
    np.testing.assert_array_equal(w.x[:, :, 0], [[0, 1, 2], [4, 5, 6], [6, 7, 8]])


def test_majority_tie_goes_to_smaller_label_and_negative_labels_work():
    rows = np.zeros((4, 1))
    w = windows_by_segment(rows, np.array([3, -1, -1, 3]), np.zeros(4, int), 4, 1)
    assert w.y.tolist() == [-1]
    w = windows_by_segment(rows, np.array([3, 3, 1, 1]), np.zeros(4, int), 4, 1)
    assert w.y.tolist() == [1]


def test_last_row_label_rule():
    rows = np.zeros((4, 1))
    w = windows_by_segment(rows, np.array([0, 0, 0, 1]), np.zeros(4, int), 4, 1, label="last")
    assert w.y.tolist() == [1]
    with pytest.raises(ValueError, match="label"):
        windows_by_segment(rows, np.zeros(4, int), np.zeros(4, int), 2, 1, label="first")


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="groups"):
        windows_by_segment(np.zeros((4, 1)), np.zeros(4, int), np.zeros(3, int), 2, 1)


def test_reappearing_group_id_is_a_new_segment():
    groups = np.array([1, 1, 2, 2, 1, 1])
    w = windows_by_segment(np.zeros((6, 1)), np.zeros(6, int), groups, 2, 1)
    assert w.start.tolist() == [0, 2, 4]  # never a window over rows 1-2 or 3-4


@settings(max_examples=60, deadline=None)
@given(
    seg_lengths=st.lists(st.integers(0, 30), min_size=1, max_size=8),
    length=st.integers(1, 12),
    hop=st.integers(1, 12),
)
def test_windows_never_cross_a_recording(seg_lengths, length, hop):
    groups = np.repeat(np.arange(len(seg_lengths)), seg_lengths)
    rows = np.stack([np.arange(groups.size), groups], axis=1).astype(np.float64)
    labels = groups * 10
    w = windows_by_segment(rows, labels, groups, length, hop)
    # Count formula: each recording contributes its own full windows.
    assert len(w) == sum(n_windows(n, length, hop) for n in seg_lengths)
    assert w.x.shape == (len(w), length, 2)
    # Every row of a window belongs to that window's recording; rows are consecutive.
    assert np.all(w.x[:, :, 1] == w.group[:, None])
    assert np.all(np.diff(w.x[:, :, 0], axis=1) == 1)
    assert np.all(w.y == w.group * 10)
    # Window starts within a recording are hop apart.
    for g in np.unique(w.group):
        starts = w.start[w.group == g]
        assert np.all(np.diff(starts) == hop)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), length=st.integers(1, 50), hop=st.integers(1, 50))
def test_sliding_window_count_formula(n, length, hop):
    w = sliding_windows(np.zeros((n, 1)), length, hop)
    expected = 0 if n < length else (n - length) // hop + 1
    assert w.shape[0] == expected == n_windows(n, length, hop)
    if expected:
        assert (w.shape[0] - 1) * hop + length <= n  # the last window fits
