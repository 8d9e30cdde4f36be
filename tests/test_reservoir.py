"""ReservoirBuffer: capacity, uniform inclusion (Algorithm R), class balance, state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import ReservoirBuffer
from edgecl.errors import ConfigError, StateFileError


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(0, 12),
    labels=st.lists(st.integers(0, 3), max_size=60),
    policy=st.sampled_from(["reservoir", "class_balanced"]),
    dtype=st.sampled_from(["float16", "float32"]),
    seed=st.integers(0, 2**32),
)
def test_size_never_exceeds_capacity_and_items_come_from_the_stream(
    capacity, labels, policy, dtype, seed
):
    buf = ReservoirBuffer(capacity, 2, dtype=dtype, seed=seed, policy=policy, max_classes=4)
    for i, y in enumerate(labels):
        slot = buf.add(np.array([i, y], dtype=np.float32), y)
        assert -1 <= slot < max(capacity, 1)
        assert len(buf) == min(i + 1, capacity)
        assert buf.seen == i + 1
    X, Y = buf.contents()
    # Every stored row is a stream item with its own label, stored once.
    ids = X[:, 0].astype(int)
    assert len(set(ids.tolist())) == len(ids)
    assert all(labels[i] == y for i, y in zip(ids, Y, strict=True))
    assert np.array_equal(X[:, 1].astype(int), Y)
    if policy == "class_balanced":
        assert buf.class_stored_.sum() == len(buf)
        assert np.array_equal(buf.class_stored_, np.bincount(Y, minlength=4))
    Xs, Ys = buf.sample(5)
    assert len(Ys) == min(5, len(buf)) and Xs.dtype == np.float32


def test_algorithm_r_inclusion_is_uniform_chi_square():
    """Each of n items ends in the buffer with probability m/n (Vitter 1985)."""
    m, n, runs = 5, 20, 4000
    counts = np.zeros(n)
    for seed in range(runs):
        buf = ReservoirBuffer(m, 1, dtype="float32", seed=seed)
        for i in range(n):
            buf.add(np.array([i], dtype=np.float32), 0)
        counts[buf.contents()[0][:, 0].astype(int)] += 1
    expected = runs * m / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # Critical value of χ² with 19 degrees of freedom at p = 0.001 is 43.82.
    assert chi2 < 43.82, (chi2, counts)
    # And the test has teeth: "keep the first m" (no replacement) fails it by far.
    biased = np.zeros(n)
    biased[:m] = runs
    assert float(((biased - expected) ** 2 / expected).sum()) > 43.82


def test_class_balanced_keeps_rare_classes():
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(3000) < 0.95, 0, 1)
    plain = ReservoirBuffer(100, 1, seed=0)
    cbrs = ReservoirBuffer(100, 1, seed=0, policy="class_balanced", max_classes=2)
    for y in labels:
        x = np.array([y], dtype=np.float32)
        plain.add(x, int(y))
        cbrs.add(x, int(y))
    rare_seen = int((labels == 1).sum())
    assert rare_seen > 50
    assert (cbrs.contents()[1] == 1).sum() == 50  # an equal share once the rare class has it
    assert (plain.contents()[1] == 1).sum() < 20  # proportional: ~5 %


def test_sample_is_without_replacement_and_seeded():
    a, b = ReservoirBuffer(50, 1, seed=3), ReservoirBuffer(50, 1, seed=3)
    for i in range(200):
        a.add(np.array([i], np.float32), 0)
        b.add(np.array([i], np.float32), 0)
    Xa, _ = a.sample(20)
    Xb, _ = b.sample(20)
    assert np.array_equal(Xa, Xb)
    assert len(np.unique(Xa)) == 20
    assert len(a.sample(500)[1]) == 50


def test_float16_halves_memory():
    assert ReservoirBuffer(100, 64, "float16").nbytes == 100 * (64 * 2 + 4)
    assert ReservoirBuffer(100, 64, "float32").nbytes == 100 * (64 * 4 + 4)


def test_restore_roundtrip_and_rejects_bad_state():
    a = ReservoirBuffer(10, 3, seed=1)
    for i in range(40):
        a.add(np.full(3, i, np.float32), i % 3)
    b = ReservoirBuffer(10, 3, seed=99)
    b.restore(a.arrays(), a.counters())
    for i in range(40, 80):
        x = np.full(3, i, np.float32)
        assert a.add(x, 0) == b.add(x, 0)
    assert np.array_equal(a.X_, b.X_)
    bad = dict(a.counters(), len=11)
    with pytest.raises(StateFileError):
        b.restore(a.arrays(), bad)
    with pytest.raises(StateFileError):
        b.restore({"X_": a.X_}, a.counters())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(capacity=-1, dim=2),
        dict(capacity=2, dim=0),
        dict(capacity=2, dim=2, dtype="int8"),
        dict(capacity=2, dim=2, policy="fifo"),
        dict(capacity=2, dim=2, policy="class_balanced"),
    ],
)
def test_bad_settings_raise(kwargs):
    with pytest.raises(ConfigError):
        ReservoirBuffer(**kwargs)


def test_sample_subsets_are_uniform_chi_square():
    """Every 2-subset of 5 stored items is drawn equally often (Floyd's algorithm)."""
    buf = ReservoirBuffer(5, 1, dtype="float32", seed=0)
    for i in range(5):
        buf.add(np.array([i], np.float32), i)
    counts: dict[tuple[int, ...], int] = {}
    runs = 10_000
    for _ in range(runs):
        _, Y = buf.sample(2)
        key = tuple(sorted(Y.tolist()))
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 10
    expected = runs / 10
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 27.88, counts  # χ²(9) at p = 0.001


def test_sample_into_matches_sample():
    a, b = ReservoirBuffer(30, 3, seed=5), ReservoirBuffer(30, 3, seed=5)
    for i in range(100):
        x = np.full(3, i, np.float32)
        a.add(x, i % 4)
        b.add(x, i % 4)
    X, Y = np.zeros((8, 3)), np.zeros(8, np.int64)
    assert b.sample_into(X, Y) == 8
    Xs, Ys = a.sample(8)
    assert np.array_equal(X, Xs) and np.array_equal(Y, Ys)
    empty = ReservoirBuffer(4, 3)
    assert empty.sample_into(X, Y) == 0
