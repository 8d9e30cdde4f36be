"""Exact merging of NCM/SLDA statistics: merged == a learner fed the union (fleet issue)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecl import ConfigError, LearnerConfig, StreamingLearner
from edgecl.errors import StateFileError
from edgecl.learner.merge import HeadStats

DIM, C = 6, 5


def _cfg(head: str = "slda", **kw) -> LearnerConfig:
    kw.setdefault("budget_bytes", 1_000_000)
    return LearnerConfig(dim=DIM, max_classes=C, head=head, tag="bundle:" + "ab" * 32, **kw)


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    X = rng.normal(size=(n, DIM)) + 3.0 * np.eye(C, DIM)[y] + 5.0  # offset: cancellation
    return X, y


def _close(a: np.ndarray, b: np.ndarray, rel: float = 1e-9, scale: float = 0.0) -> bool:
    """|a − b| ≤ rel · max(|b|, scale) elementwise-max (scale: that of the whole state)."""
    scale = max(float(np.abs(b).max()), scale, 1e-300)
    return float(np.abs(a - b).max()) <= rel * scale


def _assert_same_head(merged: StreamingLearner, union: StreamingLearner) -> None:
    a, b = merged.statistics(), union.statistics()
    np.testing.assert_array_equal(a.counts, b.counts)
    assert _close(a.weights, b.weights)
    assert _close(a.means, b.means)
    if b.scatter is not None:
        assert _close(a.scatter, b.scatter)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 120),
    parts=st.integers(1, 5),
    head=st.sampled_from(["ncm", "slda"]),
    weighted=st.booleans(),
)
def test_merge_of_any_partition_equals_the_union(seed, n, parts, head, weighted):
    X, y = _data(seed, n)
    rng = np.random.default_rng(seed + 1)
    w = rng.uniform(0.25, 4.0, n) if weighted else np.ones(n)
    owner = rng.integers(0, parts, n)
    union = StreamingLearner(_cfg(head, slda_batch=3))
    for i in rng.permutation(n):  # the union in yet another order
        union.learn_one(X[i], y[i], w=float(w[i]))
    learners = [StreamingLearner(_cfg(head, slda_batch=3)) for _ in range(parts)]
    for i in range(n):
        learners[owner[i]].learn_one(X[i], y[i], w=float(w[i]))
    order = rng.permutation(parts)
    first, rest = learners[order[0]], [learners[j] for j in order[1:]]
    first.merge(*rest)
    _assert_same_head(first, union)
    assert first.n_learned == n


def test_merged_predictions_identical_on_ten_thousand_inputs():
    X, y = _data(0, 3000)
    union = StreamingLearner(_cfg())
    union.learn_many(X, y)
    parts = [StreamingLearner(_cfg()) for _ in range(7)]
    for k, lr in enumerate(parts):
        lr.learn_many(X[k::7], y[k::7])
    parts[3].merge(*parts[:3], *parts[4:])
    Q, _ = _data(1, 10_000)
    np.testing.assert_array_equal(parts[3].predict_many(Q), union.predict_many(Q))
    _assert_same_head(parts[3], union)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n0=st.integers(0, 60), n1=st.integers(0, 60))
def test_delta_plus_snapshot_gives_back_the_state(seed, n0, n1):
    X, y = _data(seed, n0 + n1)
    lr = StreamingLearner(_cfg(slda_batch=4))
    lr.learn_many(X[:n0], y[:n0]) if n0 else None
    snapshot = lr.statistics()
    lr.learn_many(X[n0:], y[n0:]) if n1 else None
    delta = lr.statistics() - snapshot
    assert delta.n == n1
    fresh = StreamingLearner(_cfg())
    if n1:
        fresh.learn_many(X[n0:], y[n0:])
    ref = fresh.statistics()
    now = lr.statistics()
    s_mu, s_sc = float(np.abs(now.means).max()), float(np.abs(now.scatter).max())
    assert _close(delta.means, ref.means, 1e-9, s_mu)
    assert _close(delta.scatter, ref.scatter, 1e-9, s_sc)
    back = snapshot + delta
    assert _close(back.means, now.means) and _close(back.scatter, now.scatter)


def test_fleet_of_deltas_equals_the_union_of_every_device():
    """Pre-trained head H0 on every device; each learns its own windows; the server
    adds their deltas to H0: the result is H0's data + every device's data."""
    X, y = _data(3, 900)
    pre = StreamingLearner(_cfg())
    pre.learn_many(X[:300], y[:300])
    base = pre.statistics()
    devices = [StreamingLearner(_cfg()) for _ in range(3)]
    total = base
    for k, dev in enumerate(devices):
        dev.apply_statistics(base)
        sl = slice(300 + 200 * k, 500 + 200 * k)
        dev.learn_many(X[sl], y[sl])
        total = total + (dev.statistics() - base)
    union = StreamingLearner(_cfg())
    union.learn_many(X, y)
    devices[0].apply_statistics(total)
    _assert_same_head(devices[0], union)


def test_a_delta_against_the_wrong_snapshot_is_refused():
    X, y = _data(0, 50)
    a = StreamingLearner(_cfg())
    a.learn_many(X[:10], y[:10])
    b = StreamingLearner(_cfg())
    b.learn_many(X, y)
    with pytest.raises(StateFileError, match="wrong snapshot|more weight"):
        _ = a.statistics() - b.statistics()


def test_other_bundle_or_config_is_refused_and_nothing_changes():
    X, y = _data(0, 40)
    a = StreamingLearner(_cfg())
    a.learn_many(X, y)
    before = a.statistics()
    other = StreamingLearner(_cfg().replace(tag="bundle:" + "cd" * 32))
    other.learn_many(X, y)
    with pytest.raises(ConfigError, match="different bundles"):
        a.merge(other)
    shrink = StreamingLearner(_cfg(slda_shrinkage=0.2))
    with pytest.raises(ConfigError, match="slda_shrinkage"):
        a.merge(shrink)
    ncm = StreamingLearner(_cfg("ncm"))
    with pytest.raises(ConfigError, match="different configs"):
        a.merge(ncm)
    after = a.statistics()
    np.testing.assert_array_equal(after.scatter, before.scatter)
    np.testing.assert_array_equal(after.counts, before.counts)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("weights", np.nan, "finite"),
        ("counts", -1, "negative"),
        ("weights", 0.0, "add up"),
        ("scatter", np.inf, "finite"),
    ],
)
def test_invalid_statistics_are_refused(field, value, match):
    X, y = _data(0, 40)
    a = StreamingLearner(_cfg())
    a.learn_many(X, y)
    arrays = {k: v.copy() for k, v in a.statistics().arrays().items()}
    arrays[field].flat[0] = value
    with pytest.raises(StateFileError, match=match):
        HeadStats.from_arrays(arrays)
    bad = HeadStats(**{k: arrays[k] for k in ("counts", "weights", "sums", "scatter")})
    before = a.statistics()
    with pytest.raises(StateFileError):
        a.apply_statistics(bad)
    np.testing.assert_array_equal(a.statistics().sums, before.sums)


def test_merge_keeps_each_devices_user_statistics_and_checks_the_prior():
    X, y = _data(0, 80)
    a = StreamingLearner(_cfg(standardize=True))
    b = StreamingLearner(_cfg(standardize=True))
    a.observe_many(X[:40])
    b.observe_many(X[40:] * 2)
    a.learn_many(X[:40], y[:40])
    b.learn_many(X[40:], y[40:])
    user_before = a.user.sum_.copy()
    a.merge(b)
    np.testing.assert_array_equal(a.user.sum_, user_before)
    c = StreamingLearner(_cfg(standardize=True))
    c.user.set_prior(np.ones(DIM), np.ones(DIM))
    with pytest.raises(ConfigError, match="priors"):
        a.merge(c)


def test_softmax_merge_is_an_average_and_statistics_are_refused():
    X, y = _data(0, 200)
    a = StreamingLearner(_cfg("softmax", ewc_lambda=1.0, lr=0.05))
    b = StreamingLearner(_cfg("softmax", ewc_lambda=1.0, lr=0.05))
    a.learn_many(X[:100], y[:100])
    b.learn_many(X[100:], y[100:])
    lo = np.minimum(a.head.theta_, b.head.theta_) - 1e-12
    hi = np.maximum(a.head.theta_, b.head.theta_) + 1e-12
    a.merge(b)
    assert ((a.head.theta_ >= lo) & (a.head.theta_ <= hi)).all()  # a convex combination
    assert int(a.head.counts_.sum()) == 200
    with pytest.raises(ConfigError, match="no sufficient statistics"):
        a.statistics()


def test_woodbury_slda_merges_exactly_too():
    """The large-dimension SLDA (Woodbury updates, rows in flight) merges like the lazy one."""
    X, y = _data(5, 700)
    cfg = _cfg(slda_update="woodbury", slda_batch=8)
    union = StreamingLearner(cfg)
    union.learn_many(X, y)
    a, b = StreamingLearner(cfg), StreamingLearner(cfg)
    a.learn_many(X[:333], y[:333])  # leaves rows queued / a fold half done
    b.learn_many(X[333:], y[333:])
    a.merge(b)
    _assert_same_head(a, union)
    np.testing.assert_array_equal(a.predict_many(X), union.predict_many(X))
    a.learn_many(X[:50], y[:50])  # and keeps learning from the rebuilt precision
    union.learn_many(X[:50], y[:50])
    _assert_same_head(a, union)


def test_merged_state_saves_and_loads(tmp_path):
    X, y = _data(0, 100)
    a, b = StreamingLearner(_cfg()), StreamingLearner(_cfg())
    a.learn_many(X[:50], y[:50])
    b.learn_many(X[50:], y[50:])
    a.merge(b)
    a.save(tmp_path / "m.safetensors")
    back = StreamingLearner.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(back.predict_many(X), a.predict_many(X))
    back.learn_one(X[0], y[0])  # keeps learning after a merge
