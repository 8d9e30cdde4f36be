"""SLDA with Woodbury-updated precision, folded in panels spread over learn calls: against a
fresh inverse, against batch LDA, bounded staleness, statistics, state and budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import ConfigError, LearnerConfig, StreamingLearner
from edgecl.learner.merge import HeadStats
from edgecl.learner.slda_woodbury import WoodburySLDAHead, fold_plan
from edgecl.learner.state import state_bytes


def _cfg(**kw):
    base = dict(dim=6, max_classes=4, head="slda", budget_bytes=10**7, slda_update="woodbury")
    return LearnerConfig(**{**base, **kw})


def _stream(seed, n, dim, k=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 2
    y = rng.integers(0, k, n)
    X = centres[y] + rng.normal(size=(n, dim)) * rng.uniform(0.2, 2.0, dim)
    return X, y


def _batch(X, y, classes):
    """Batch class means and pooled within-class scatter."""
    mus = np.zeros((classes, X.shape[1]))
    S = np.zeros((X.shape[1], X.shape[1]))
    for c in range(classes):
        if (y == c).any():
            mus[c] = X[y == c].mean(0)
            D = X[y == c] - mus[c]
            S += D.T @ D
    return mus, S


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 1000),
    dim=st.integers(2, 8),
    batch=st.sampled_from([1, 7, 32]),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_precision_stays_the_inverse_after_ten_thousand_updates(seed, dim, batch, dtype):
    """10⁴ updates with no exact inversion after the first few: the Woodbury-kept precision
    equals a fresh inverse of S + r_ref·I to 1e-9 (float64) / 1e-3 (float32) relative."""
    X, y = _stream(seed, 10_000, dim)
    lr = StreamingLearner(_cfg(dim=dim, slda_batch=batch, slda_dtype=dtype, slda_exact_every=0))
    lr.learn_many(X, y)
    head = lr.head
    assert isinstance(head, WoodburySLDAHead)
    # The 4× growth rule inverted exactly only O(log n) times; the rest were Woodbury steps.
    assert head.exact_inversions <= 10
    assert head.drift() <= (1e-9 if dtype == "float64" else 1e-3)


def test_precision_stays_the_inverse_on_a_rank_deficient_scatter(monkeypatch):
    """Random ReLU-like features of a small embedding span few directions: the scatter is far
    from full rank and S + rI badly conditioned (κ ~ 1e7). Woodbury steps and exact
    inversions keep the float64 precision the inverse all the same (a block inverse by
    explicit Schur complements, 2.5× faster, drifted to 0.3 here). float32 cannot hold such a
    precision to 1e-3 (κ·2⁻²⁴ ~ 0.5): its predictions still agree with float64's."""
    rng = np.random.default_rng(0)
    d, rank, n = 600, 40, 2000
    y = rng.integers(0, 10, n)
    X = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) + rng.normal(size=(10, d))[y]
    cfg = _cfg(dim=d, max_classes=10, slda_batch=64, slda_exact_every=0)
    lr, lr32 = StreamingLearner(cfg), StreamingLearner(cfg.replace(slda_dtype="float32"))
    head = lr.head
    real, free = [], []  # samples at each exact inversion that had to invert (S ≠ 0) / not
    exact = type(head)._exact
    monkeypatch.setattr(
        head,
        "_exact",
        lambda: (
            (real if head.scatter_.any() else free).append(head._n_updates),
            exact(head),
        ),
    )
    lr.learn_many(X, y)
    lr32.learn_many(X, y)
    # The first sample and the first block (S = 0) cost nothing; then at most one O(d³)
    # per d samples.
    assert len(free) == 2 and free[1] > cfg.slda_batch
    assert real and all(b - a >= d for a, b in zip(real, real[1:], strict=False))
    assert real[0] >= d
    assert head.drift() <= 1e-8
    lr32.head.settle()
    assert np.mean(lr.predict_many(X) == lr32.predict_many(X)) >= 0.99


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 150),
    dim=st.integers(1, 7),
    batch=st.sampled_from([1, 3, 8]),
)
def test_settled_scores_equal_batch_lda_with_the_same_ridge(seed, n, dim, batch):
    """After settle(), scores are exactly batch LDA's, with the ridge of the last exact
    inversion (r = ε/(1−ε)·N_ref) and the current means."""
    X, y = _stream(seed, n, dim)
    eps = 1e-2
    lr = StreamingLearner(_cfg(dim=dim, slda_batch=batch, slda_shrinkage=eps))
    lr.learn_many(X, y)
    head = lr.head
    head.settle()
    mus, S = _batch(X, y, 4)
    r = eps / (1 - eps) * head._ref_weight
    P = len(y) / (1 - eps) * np.linalg.inv(S + r * np.eye(dim))
    seen = [c for c in range(4) if (y == c).any()]
    Xq, _ = _stream(seed + 1, 20, dim)
    want = Xq @ (mus[seen] @ P).T - 0.5 * np.einsum("cd,cd->c", mus[seen] @ P, mus[seen])
    got = head.scores(Xq)[:, seen]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7 * np.abs(want).max())


def test_float32_settled_scores_match_batch_lda_to_float32_round_off():
    X, y = _stream(5, 3000, 32)
    lr = StreamingLearner(_cfg(dim=32, slda_batch=16, slda_dtype="float32"))
    lr.learn_many(X, y)
    lr.head.settle()
    mus, S = _batch(X, y, 4)
    eps = lr.config.slda_shrinkage
    P = np.linalg.inv(S + eps / (1 - eps) * lr.head._ref_weight * np.eye(32))
    Xq, _ = _stream(6, 200, 32)
    want = Xq @ (mus @ P).T - 0.5 * np.einsum("cd,cd->c", mus @ P, mus)
    got = lr.head.scores(Xq) * (1 - eps) / len(y)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * np.abs(want).max())


def test_published_coefficients_lag_at_most_two_blocks():
    """At every call the published coefficients are exactly LDA's for the scatter and the
    means of some earlier moment t_s ≤ t_m within the last 2k − 1 samples (bounded staleness),
    with the current ridge."""
    d, k, C = 4, 4, 3
    cfg = _cfg(dim=d, max_classes=C, slda_batch=k, slda_exact_every=0)
    rng = np.random.default_rng(0)
    y = np.r_[np.arange(C), rng.integers(0, C, 120)]  # every class seen at once
    X = rng.normal(size=(len(y), d)) + 3 * np.eye(C, d)[y]
    lr = StreamingLearner(cfg)
    head = lr.head
    eps = cfg.slda_shrinkage
    hist = []  # (scatter, means) after each call
    for t, (x, c) in enumerate(zip(X, y, strict=True)):
        lr.learn_one(x, int(c))
        hist.append(_batch(X[: t + 1], y[: t + 1], C)[::-1])
        if t < 2 * k + C:
            continue
        r = eps / (1 - eps) * head._ref_weight
        window = hist[max(0, t - 2 * k + 2) : t + 1]
        invs = [np.linalg.inv(S + r * np.eye(d)) for S, _ in window]
        ok = any(
            np.allclose(head.coef_, mu @ P, rtol=1e-7, atol=1e-9 * np.abs(mu @ P).max())
            for i, P in enumerate(invs)
            for _, mu in window[i:]
        )
        assert ok, f"call {t}: coefficients match no state of the last {2 * k - 1} samples"


def _into_phase_c(lr, X, y):
    """Learn until a fold is in flight, then step it into phase C (a few panels done);
    returns the published precision (before the fold) and the next index of the stream."""
    head = lr.head
    i = 0
    while not head._fold_n or head._fold_step != 1:
        lr.learn_one(X[i], int(y[i]))
        i += 1
    q_pub = head.precision()
    a, c = head._plan
    while head._fold_step < len(a) + 2:  # A panels, B, then two C panels
        head._step()
    assert len(c) > 3  # the fold is mid-phase-C: some Q rows new, some old
    return q_pub, i


def test_a_new_class_scores_at_once_even_mid_fold():
    X, y = _stream(2, 400, 64, 3)
    lr = StreamingLearner(_cfg(dim=64, max_classes=5, slda_batch=32))
    q_pub, i = _into_phase_c(lr, X, y)
    head = lr.head
    x_new = X[i] + 7.0
    lr.learn_one(x_new, 4)  # brand new class, one sample
    np.testing.assert_allclose(head.coef_[4], x_new @ q_pub, rtol=1e-9)
    assert lr.predict_one(x_new) == 4
    head.settle()  # published again: against the new precision
    np.testing.assert_allclose(head.coef_[4], x_new @ head.precision(), rtol=1e-9)


def test_idle_new_class_mid_block():
    lr = StreamingLearner(_cfg(dim=3, slda_batch=50))
    lr.learn_many(np.array([[5.0, 0, 0], [5.1, 0, 0]]), np.array([0, 0]))
    lr.learn_one(np.array([0.0, 5.0, 0.0]), 2)
    assert lr.predict_one(np.array([0.0, 4.8, 0.1])) == 2
    assert lr.head._n_pending == 1  # nothing folded yet


def test_each_call_does_at_most_one_panel_and_a_fold_ends_before_the_next_block(monkeypatch):
    d, k = 256, 32
    cfg = _cfg(dim=d, max_classes=10, slda_batch=k, slda_dtype="float32", slda_exact_every=0)
    lr = StreamingLearner(cfg)
    head = lr.head
    a, c = fold_plan(d, k, 10)
    assert len(a) + len(c) <= k
    calls = []
    step = type(head)._step
    monkeypatch.setattr(head, "_step", lambda: (calls.append(1), step(head)))
    finish = type(head)._finish_fold
    late = []
    monkeypatch.setattr(head, "_finish_fold", lambda: (late.append(head._fold_n), finish(head)))
    X, y = _stream(0, 1500, d, 10)
    per_call = []
    for x, c_ in zip(X, y, strict=True):
        calls.clear()
        lr.learn_one(x, int(c_))
        per_call.append(len(calls))
    assert max(per_call) == 1
    assert not any(late)  # every fold was done when the next block filled


def test_roundtrip_mid_fold_is_bit_for_bit(tmp_path):
    X, y = _stream(4, 600, 48, 4)
    lr = StreamingLearner(_cfg(dim=48, slda_batch=24, slda_dtype="float32"))
    _, i = _into_phase_c(lr, X, y)
    path = tmp_path / "mid.safetensors"
    lr.save(path)
    back = StreamingLearner.load(path)
    assert state_bytes(back) == state_bytes(lr) == path.read_bytes()
    lr.learn_many(X[i:], y[i:])
    back.learn_many(X[i:], y[i:])
    assert state_bytes(back) == state_bytes(lr)
    Xq, _ = _stream(5, 50, 48, 4)
    np.testing.assert_array_equal(back.predict_proba_many(Xq), lr.predict_proba_many(Xq))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_statistics_are_exact_at_every_step_of_a_fold(dtype):
    X, y = _stream(7, 400, 40, 4)
    lr = StreamingLearner(_cfg(dim=40, slda_batch=16, slda_dtype=dtype))
    head = lr.head
    tol = 1e-12 if dtype == "float64" else 1e-6
    seen_steps = set()
    for t in range(len(y)):
        lr.learn_one(X[t], int(y[t]))
        seen_steps.add(head._fold_step)
        if t % 7 == 0 or t == len(y) - 1:
            st = lr.statistics().validate()  # symmetric, finite: what a merge accepts
            mus, S = _batch(X[: t + 1], y[: t + 1], 4)
            np.testing.assert_allclose(st.scatter, S, rtol=0, atol=tol * np.abs(S).max())
            np.testing.assert_allclose(st.means, mus, rtol=1e-12, atol=1e-12)
    assert len(seen_steps) > 3  # sampled in several phases


def test_refresh_force_rebuilds_from_statistics_changed_outside():
    """What a merge does: statistics replaced mid-fold, then every derived array is rebuilt
    exactly — equal to a learner fed the union and refreshed."""
    X, y = _stream(8, 500, 24, 4)
    a, b, union = (StreamingLearner(_cfg(dim=24, slda_batch=8)) for _ in range(3))
    a.learn_many(X[:230], y[:230])  # mid-fold, rows queued
    b.learn_many(X[230:], y[230:])
    union.learn_many(X, y)
    assert a.head._fold_n or a.head._n_pending
    a.head.set_statistics(a.statistics() + b.statistics())
    union.head.refresh(force=True)
    assert a.head._fold_n == a.head._n_pending == 0
    np.testing.assert_allclose(a.head.precision(), union.head.precision(), rtol=1e-9)
    np.testing.assert_allclose(a.head.coef_, union.head.coef_, rtol=1e-8, atol=1e-12)
    Xq, _ = _stream(9, 300, 24, 4)
    np.testing.assert_array_equal(a.predict_many(Xq), union.predict_many(Xq))
    # The arrays changed directly (statistics alone), then refresh(force=True).
    h = union.head
    h.scatter_ *= 2.0
    h.refresh(force=True)
    eps = union.config.slda_shrinkage
    A = 2.0 * _batch(X, y, 4)[1] + eps / (1 - eps) * len(y) * np.eye(24)
    np.testing.assert_allclose(h.precision(), np.linalg.inv(A), rtol=1e-8)
    # An emptied head starts afresh.
    h.set_statistics(HeadStats.empty(4, 24, scatter=True))
    union.learn_one(X[0], int(y[0]))
    assert union.predict_one(X[0]) == y[0]


def test_agrees_with_the_lazy_head_on_separable_data():
    X, y = _stream(3, 2000, 16)
    Xq, yq = _stream(3, 500, 16)  # same centres (seed), same scales
    lazy = StreamingLearner(_cfg(dim=16, slda_update="lazy"))
    wood = StreamingLearner(_cfg(dim=16, slda_dtype="float32"))
    lazy.learn_many(X, y)
    wood.learn_many(X, y)
    agree = float(np.mean(lazy.predict_many(Xq) == wood.predict_many(Xq)))
    assert agree >= 0.99, agree


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("m", [256, 512, 1024, 2048, 3072])
def test_budget_counts_every_array_at_every_m(m, dtype):
    cfg = _cfg(dim=m, max_classes=10, slda_dtype=dtype, slda_batch=64, budget_bytes=1 << 30)
    lr = StreamingLearner(cfg)  # np.zeros: the pages are not touched
    head = lr.head
    every = {**head.arrays(), **head.cache_arrays()}
    assert sum(a.nbytes for a in every.values()) == WoodburySLDAHead.nbytes_for(cfg)
    assert lr.memory_report()["head_bytes"] == WoodburySLDAHead.nbytes_for(cfg)
    size = np.dtype(dtype).itemsize
    assert WoodburySLDAHead.nbytes_for(cfg) > (8 + size) * m * m  # scatter + precision


def test_state_holds_the_precision_and_the_budget_counts_it(tmp_path):
    cfg = _cfg(dim=64, max_classes=8, slda_dtype="float32", budget_bytes=200_000)
    lr = StreamingLearner(cfg)
    X, y = _stream(0, 300, 64, 8)
    lr.learn_many(X, y)
    rep = lr.memory_report()
    assert rep["head_bytes"] == WoodburySLDAHead.nbytes_for(cfg) <= cfg.budget_bytes
    assert lr.head.precision_.dtype == np.float32
    path = tmp_path / "w.safetensors"
    lr.save(path)
    back = StreamingLearner.load(path)
    np.testing.assert_array_equal(back.head.precision_, lr.head.precision_)
    Xq, yq = _stream(1, 100, 64, 8)
    np.testing.assert_array_equal(back.predict_proba_many(Xq), lr.predict_proba_many(Xq))


def test_woodbury_needs_a_shrinkage():
    with pytest.raises(ConfigError, match="shrinkage in"):
        _cfg(slda_shrinkage=0.0)
    with pytest.raises(ConfigError, match="slda_update"):
        _cfg(slda_update="eager")
