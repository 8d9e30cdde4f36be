"""Heads against references computed in batch: NCM vs class means, SLDA vs batch LDA."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, StreamingLearner
from edgecl.learner.checks import blobs


def _stream(seed: int, n: int, dim: int, k: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim))
    y = rng.integers(0, k, n)
    X = centres[y] + 0.8 * rng.normal(size=(n, dim)) * rng.uniform(0.2, 2.0, dim)
    return X, y


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 80), dim=st.integers(1, 9))
def test_ncm_means_equal_batch_class_means(seed, n, dim):
    X, y = _stream(seed, n, dim, 4)
    lr = StreamingLearner(LearnerConfig(dim=dim, max_classes=4, head="ncm", budget_bytes=10**6))
    lr.learn_many(X, y)
    for c in range(4):
        if (y == c).any():
            np.testing.assert_allclose(
                lr.head.means_[c], X[y == c].mean(axis=0), rtol=1e-12, atol=1e-12
            )
        else:
            assert lr.head.counts_[c] == 0


def batch_lda_predict(X, y, Xq, shrinkage, k):
    """Reference LDA: class means, pooled within-class covariance / N, shrinkage."""
    mus = np.zeros((k, X.shape[1]))
    scatter = np.zeros((X.shape[1], X.shape[1]))
    for c in range(k):
        Xc = X[y == c]
        if len(Xc):
            mus[c] = Xc.mean(axis=0)
            D = Xc - mus[c]
            scatter += D.T @ D
    cov = scatter / len(X)
    cov = (1 - shrinkage) * cov + shrinkage * np.eye(X.shape[1])
    P = np.linalg.inv(cov)
    W = mus @ P
    b = -0.5 * np.sum(W * mus, axis=1)
    s = Xq @ W.T + b
    s[:, [c for c in range(k) if not (y == c).any()]] = -np.inf
    return np.argmax(s, axis=1), s


@pytest.mark.parametrize("refresh,batch", [(1, 1), (1, 7), (10**6, 32)])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 120), dim=st.integers(1, 8))
def test_slda_equals_batch_lda(refresh, batch, seed, n, dim):
    X, y = _stream(seed, n, dim, 3)
    cfg = LearnerConfig(
        dim=dim,
        max_classes=3,
        head="slda",
        budget_bytes=10**6,
        slda_shrinkage=1e-2,
        slda_refresh_every=refresh,
        slda_batch=batch,
    )
    lr = StreamingLearner(cfg)
    lr.learn_many(X, y)
    Xq = _stream(seed + 1, 50, dim, 3)[0]
    ref_pred, ref_scores = batch_lda_predict(X, y, Xq, 1e-2, 3)
    scores = lr.head.scores(Xq)
    finite = np.isfinite(ref_scores)
    assert np.array_equal(finite, np.isfinite(scores))
    np.testing.assert_allclose(scores[finite], ref_scores[finite], rtol=1e-7, atol=1e-7)
    # Labels agree except on numerical near-ties.
    top2 = np.sort(np.where(finite, ref_scores, -np.inf), axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-6
    assert np.array_equal(lr.predict_many(Xq)[clear], ref_pred[clear])


def test_slda_refresh_is_lazy_and_bounded():
    cfg = LearnerConfig(dim=4, max_classes=3, head="slda", budget_bytes=10**5, slda_refresh_every=5)
    lr = StreamingLearner(cfg)
    X, y = blobs(cfg, 40, classes=3)
    lr.learn_many(X[:20], y[:20])
    lr.predict_one(X[0])
    p0 = lr.head.precision_.copy()
    lr.learn_many(X[20:24], y[20:24])  # 4 < 5 new samples: the cached precision is reused
    lr.predict_one(X[0])
    assert np.array_equal(p0, lr.head.precision_)
    lr.learn_one(X[24], int(y[24]))  # the 5th: refreshed at the next predict
    lr.predict_one(X[0])
    assert not np.array_equal(p0, lr.head.precision_)
    np.testing.assert_allclose(
        np.linalg.inv(lr.head.precision_),
        (1 - 1e-4) * lr.head.covariance() + 1e-4 * np.eye(4),
        rtol=1e-8,
        atol=1e-10,
    )


def test_softmax_without_replay_forgets_and_replay_remembers():
    """The textbook failure and its textbook fix, on a tiny class-incremental stream."""
    cfg = LearnerConfig(dim=8, max_classes=4, head="softmax", budget_bytes=10**6, replay_k=0)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 1.5
    y = np.repeat(np.arange(4), 300)
    X = centres[y] + 0.5 * rng.normal(size=(len(y), 8))
    Xt = centres[y] + 0.5 * rng.normal(size=(len(y), 8))
    plain = StreamingLearner(cfg)
    plain.learn_many(X, y)
    replay = StreamingLearner(cfg.replace(replay_k=8))
    replay.learn_many(X, y)
    old = y < 2
    acc_plain = (plain.predict_many(Xt[old]) == y[old]).mean()
    acc_replay = (replay.predict_many(Xt[old]) == y[old]).mean()
    assert acc_plain < 0.5 < 0.9 < acc_replay
