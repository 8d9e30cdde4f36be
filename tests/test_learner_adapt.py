"""User adaptation in the learner: weighted NCM/SLDA, per-user standardisation, state v1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import ConfigError, InputError, LearnerConfig, StreamingLearner
from edgecl.learner.state import VERSION, read_container, state_bytes
from edgecl.learner.usernorm import EPS, UserNorm

DATA = Path(__file__).parent / "data"


def _stream(seed: int, n: int, dim: int, k: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 2
    y = rng.integers(0, k, n)
    X = centres[y] + rng.normal(size=(n, dim)) * rng.uniform(0.3, 2.0, dim)
    w = rng.uniform(0.1, 10.0, n)
    return X, y, w


def _weighted_lda(X, y, w, k, shrinkage):
    """Batch reference: weighted class means, weighted pooled scatter / Σw, shrinkage."""
    d = X.shape[1]
    mus = np.zeros((k, d))
    scatter = np.zeros((d, d))
    for c in range(k):
        m = y == c
        if m.any():
            mus[c] = (w[m, None] * X[m]).sum(0) / w[m].sum()
            D = X[m] - mus[c]
            scatter += (w[m, None] * D).T @ D
    cov = scatter / w.sum()
    cov = (1 - shrinkage) * cov + shrinkage * np.eye(d)
    return mus, cov


# -- weighted heads equal their batch formulas -------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), dim=st.integers(1, 7))
def test_weighted_ncm_equals_weighted_class_means(seed, n, dim):
    X, y, w = _stream(seed, n, dim, 3)
    lr = StreamingLearner(LearnerConfig(dim=dim, max_classes=3, head="ncm", budget_bytes=10**6))
    for xi, yi, wi in zip(X, y, w, strict=True):
        lr.learn_one(xi, int(yi), w=wi)
    for c in range(3):
        m = y == c
        if m.any():
            want = (w[m, None] * X[m]).sum(0) / w[m].sum()
            np.testing.assert_allclose(lr.head.means_[c], want, rtol=1e-10, atol=1e-12)
            assert lr.head.weights_[c] == pytest.approx(w[m].sum(), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 80), dim=st.integers(1, 6))
def test_weighted_slda_equals_weighted_batch_lda(seed, n, dim):
    X, y, w = _stream(seed, n, dim, 3)
    cfg = LearnerConfig(dim=dim, max_classes=3, head="slda", budget_bytes=10**6, slda_batch=5)
    lr = StreamingLearner(cfg)
    for xi, yi, wi in zip(X, y, w, strict=True):
        lr.learn_one(xi, int(yi), w=wi)
    mus, cov = _weighted_lda(X, y, w, 3, cfg.slda_shrinkage)
    seen = [c for c in range(3) if (y == c).any()]
    np.testing.assert_allclose(lr.head.means_[seen], mus[seen], rtol=1e-9, atol=1e-10)
    got = lr.head.covariance() * (1 - cfg.slda_shrinkage)
    got[np.diag_indices_from(got)] += cfg.slda_shrinkage
    np.testing.assert_allclose(got, cov, rtol=1e-8, atol=1e-10)


def test_label_weight_is_the_default_weight_and_outweighs_the_prior():
    X, y, _ = _stream(1, 40, 4, 2)
    base = LearnerConfig(dim=4, max_classes=2, head="slda", budget_bytes=10**6)
    a = StreamingLearner(base.replace(label_weight=5.0))
    b = StreamingLearner(base)
    a.learn_many(X, y)
    for xi, yi in zip(X, y, strict=True):
        b.learn_one(xi, int(yi), w=5.0)
    assert state_bytes(a)[:-300] != b""  # both wrote something
    np.testing.assert_array_equal(a.head.means_, b.head.means_)
    np.testing.assert_array_equal(a.head.scatter_, b.head.scatter_)
    # A heavy new label moves the class mean most of the way to itself.
    a.learn_one(np.full(4, 100.0), 0)
    m = y == 0
    want = (X[m].sum(0) * 5 + 100.0 * 5) / (5 * m.sum() + 5)
    np.testing.assert_allclose(a.head.means_[0], want, rtol=1e-10)


def test_bad_weights_are_rejected_and_change_nothing():
    lr = StreamingLearner(LearnerConfig(dim=2, max_classes=2, head="ncm", budget_bytes=10**5))
    lr.learn_one([1.0, 2.0], 0)
    before = state_bytes(lr)
    for w in (0.0, -1.0, float("nan"), float("inf"), "2", True):
        with pytest.raises(InputError):
            lr.learn_one([1.0, 2.0], 1, w=w)
    assert state_bytes(lr) == before
    with pytest.raises(ConfigError, match="softmax head learns by SGD"):
        LearnerConfig(dim=2, max_classes=2, head="softmax", label_weight=2.0)
    soft = StreamingLearner(LearnerConfig(dim=2, max_classes=2, head="softmax", budget_bytes=10**5))
    with pytest.raises(InputError, match="no sample weight"):
        soft.learn_one([1.0, 2.0], 0, w=3.0)


# -- per-user standardisation --------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(0, 50),
    dim=st.integers(1, 6),
    prior_n=st.sampled_from([0.0, 1.0, 7.5, 100.0]),
)
def test_user_statistics_equal_the_pooled_batch_formula(seed, n, dim, prior_n):
    rng = np.random.default_rng(seed)
    X = rng.normal(3.0, 2.0, size=(n, dim))
    m0, v0 = rng.normal(size=dim), rng.uniform(0.5, 3.0, dim)
    u = UserNorm(dim, prior_n)
    u.set_prior(m0, v0)
    half = n // 2
    for x in X[:half]:
        u.observe_one(x)
    u.observe_many(X[half:])
    if prior_n + n == 0:
        np.testing.assert_allclose(u.mean(), m0)
        return
    # Pool the prior as prior_n pseudo-windows with mean m0 and variance v0.
    mean = (prior_n * m0 + X.sum(0)) / (prior_n + n)
    second = (prior_n * (v0 + (m0 - mean) ** 2) + ((X - mean) ** 2).sum(0)) / (prior_n + n)
    np.testing.assert_allclose(u.mean(), mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(u.var(), second, rtol=1e-8, atol=1e-9)
    z = u.transform(X[:3])
    np.testing.assert_allclose(z, (X[:3] - mean) / np.sqrt(second + EPS), rtol=1e-7, atol=1e-7)


def _std_cfg(**kw):
    base = dict(dim=3, max_classes=3, head="slda", budget_bytes=10**6, standardize=True)
    return LearnerConfig(**{**base, **kw})


def test_observe_updates_the_state_and_reset_user_keeps_labels(tmp_path):
    rng = np.random.default_rng(0)
    lr = StreamingLearner(_std_cfg(standardize_prior_n=0.0))
    X = rng.normal(size=(30, 3))
    y = rng.integers(0, 3, 30)
    lr.learn_many(X, y)
    unobserved = state_bytes(lr)
    shifted = 10 * X + 50
    lr.observe_many(shifted)
    assert lr.memory_report()["user_windows"] == 30
    assert state_bytes(lr) != unobserved
    np.testing.assert_allclose(lr.user.mean(), shifted.mean(0), rtol=1e-12)
    path = tmp_path / "s.safetensors"
    lr.save(path)
    back = StreamingLearner.load(path)
    assert state_bytes(back) == state_bytes(lr)
    np.testing.assert_array_equal(back.predict_many(shifted), lr.predict_many(shifted))
    np.testing.assert_array_equal(back.user.mean(), lr.user.mean())
    lr.reset_user()
    assert lr.memory_report()["user_windows"] == 0
    np.testing.assert_array_equal(lr.head.means_, back.head.means_)  # the labels stay
    assert state_bytes(lr) == unobserved  # the user part is back where it started


def test_standardisation_undoes_a_per_user_affine_shift():
    """Two users, one movement vocabulary, different scales: standardised per user, one
    head fitted on user A classifies user B's windows; unstandardised it cannot."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 4)) * 2
    ya, yb = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    A = centres[ya] + rng.normal(size=(300, 4))
    B = (centres[yb] + rng.normal(size=(300, 4))) * [4.0, 0.3, 2.0, 1.0] + [-9.0, 4.0, 6.0, -5.0]
    plain = StreamingLearner(LearnerConfig(dim=4, max_classes=3, head="slda", budget_bytes=10**6))
    plain.learn_many(A, ya)
    std = StreamingLearner(_std_cfg(dim=4, standardize_prior_n=0.0))
    std.learn_many(A, ya, groups=np.zeros(300, dtype=np.int64))
    std.observe_many(B)
    acc_plain = float(np.mean(plain.predict_many(B) == yb))
    acc_std = float(np.mean(std.predict_many(B) == yb))
    assert acc_std > 0.85 and acc_std > acc_plain + 0.2, (acc_std, acc_plain)


def test_learn_many_with_groups_is_per_group_standardisation():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, -3.0]
    y = rng.integers(0, 3, 60)
    g = np.repeat([4, 9, 2], 20)
    lr = StreamingLearner(_std_cfg())
    lr.learn_many(X, y, groups=g)
    ref = StreamingLearner(LearnerConfig(dim=3, max_classes=3, head="slda", budget_bytes=10**6))
    Z = np.empty_like(X)
    means, variances = [], []
    for s in (4, 9, 2):
        m = g == s
        means.append(X[m].mean(0))
        variances.append(X[m].var(0))
        Z[m] = (X[m] - means[-1]) / np.sqrt(variances[-1] + EPS)
    ref.learn_many(Z, y)
    np.testing.assert_allclose(lr.head.means_, ref.head.means_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lr.user.prior_mean_, np.mean(means, 0), rtol=1e-12)
    np.testing.assert_allclose(lr.user.prior_var_, np.mean(variances, 0), rtol=1e-12)
    assert lr.user.n_ == 0 and lr.n_learned == 60
    with pytest.raises(ConfigError, match="standardize"):
        ref.learn_many(X, y, groups=g)
    with pytest.raises(InputError, match="groups"):
        lr.learn_many(X, y, groups=g[:-1])


def test_observe_validates_and_is_a_no_op_without_standardize():
    lr = StreamingLearner(LearnerConfig(dim=2, max_classes=2, head="ncm", budget_bytes=10**5))
    before = state_bytes(lr)
    lr.observe_one([1.0, 2.0])
    lr.observe_many(np.ones((3, 2)))
    lr.reset_user()
    assert state_bytes(lr) == before
    with pytest.raises(InputError):
        lr.observe_one([np.nan, 1.0])
    std = StreamingLearner(_std_cfg(dim=2))
    before = state_bytes(std)
    with pytest.raises(InputError):
        std.observe_many(np.array([[1.0, 2.0], [np.inf, 0.0]]))
    assert state_bytes(std) == before


# -- heads own their memory; previous-version state files ------------------------------


def test_slda_checkpoint_is_its_head_only():
    """An SLDA learner with a generous budget no longer fills a buffer it never reads."""
    cfg = LearnerConfig(dim=64, max_classes=32, head="slda", budget_bytes=8_000_000)
    lr = StreamingLearner(cfg)
    rep = lr.memory_report()
    assert rep["buffer_bytes"] == rep["buffer_capacity"] == 0
    assert len(state_bytes(lr)) <= 2 * rep["head_bytes"]


@pytest.mark.parametrize("head", ["ncm", "slda", "softmax"])
def test_version_1_state_files_load_and_predict_as_before(head, tmp_path):
    ref = json.loads((DATA / "state_v1.json").read_text())
    Q = np.array(ref["queries"])
    lr = StreamingLearner.load(DATA / f"state_v1_{head}.safetensors")
    assert lr.predict_many(Q).tolist() == ref["expected"][head]["pred"]
    np.testing.assert_allclose(
        lr.predict_proba_many(Q), ref["expected"][head]["proba"], rtol=1e-9, atol=1e-11
    )
    assert lr.user is None and lr.n_learned == 60
    if head != "softmax":
        assert lr.buffer is None
        np.testing.assert_array_equal(lr.head.weights_, lr.head.counts_)
    # Saved again, it is a version-2 file that loads to the same bytes.
    path = tmp_path / "v2.safetensors"
    lr.save(path)
    _, meta = read_container(path.read_bytes(), str(path))
    assert json.loads(meta)["body"]["version"] == VERSION == 2
    assert state_bytes(StreamingLearner.load(path)) == state_bytes(lr)
