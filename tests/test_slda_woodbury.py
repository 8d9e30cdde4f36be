"""SLDA with Woodbury-updated precision: against a fresh inverse and against batch LDA."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import ConfigError, LearnerConfig, StreamingLearner
from edgecl.learner.slda_woodbury import WoodburySLDAHead


def _cfg(**kw):
    base = dict(dim=6, max_classes=4, head="slda", budget_bytes=10**6, slda_update="woodbury")
    return LearnerConfig(**{**base, **kw})


def _stream(seed, n, dim, k=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 2
    y = rng.integers(0, k, n)
    X = centres[y] + rng.normal(size=(n, dim)) * rng.uniform(0.2, 2.0, dim)
    return X, y


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


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 150), dim=st.integers(1, 7))
def test_scores_equal_batch_lda_with_the_same_ridge(seed, n, dim):
    """With one row per block nothing is stale: scores are exactly batch LDA's, with the
    ridge of the last exact inversion (r = ε/(1−ε)·N_ref) and the current means."""
    X, y = _stream(seed, n, dim)
    eps = 1e-2
    lr = StreamingLearner(_cfg(dim=dim, slda_batch=1, slda_shrinkage=eps))
    lr.learn_many(X, y)
    head = lr.head
    N = len(y)
    mus = np.zeros((4, dim))
    S = np.zeros((dim, dim))
    for c in range(4):
        if (y == c).any():
            mus[c] = X[y == c].mean(0)
            D = X[y == c] - mus[c]
            S += D.T @ D
    r = eps / (1 - eps) * head._ref_weight
    P = N / (1 - eps) * np.linalg.inv(S + r * np.eye(dim))
    seen = [c for c in range(4) if (y == c).any()]
    Xq, _ = _stream(seed + 1, 20, dim)
    want = Xq @ (mus[seen] @ P).T - 0.5 * np.einsum("cd,cd->c", mus[seen] @ P, mus[seen])
    got = head.scores(Xq)[:, seen]
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7 * np.abs(want).max())


def test_agrees_with_the_lazy_head_on_separable_data():
    X, y = _stream(3, 2000, 16)
    Xq, yq = _stream(3, 500, 16)  # same centres (seed), same scales
    lazy = StreamingLearner(_cfg(dim=16, slda_update="lazy"))
    wood = StreamingLearner(_cfg(dim=16, slda_dtype="float32"))
    lazy.learn_many(X, y)
    wood.learn_many(X, y)
    agree = float(np.mean(lazy.predict_many(Xq) == wood.predict_many(Xq)))
    assert agree >= 0.99, agree


def test_a_new_class_scores_at_once_and_blocks_refresh_the_rest():
    lr = StreamingLearner(_cfg(dim=3, slda_batch=50))
    lr.learn_many(np.array([[5.0, 0, 0], [5.1, 0, 0]]), np.array([0, 0]))
    lr.learn_one(np.array([0.0, 5.0, 0.0]), 2)  # mid-block: a brand-new class
    assert lr.predict_one(np.array([0.0, 4.8, 0.1])) == 2
    assert lr.head._n_pending == 1  # nothing flushed yet


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
