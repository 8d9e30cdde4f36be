"""OnlineFisher: EWC++ running average, penalty/gradient, task-free triggers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, OnlineFisher, StreamingLearner


def test_running_fisher_is_the_ewc_plus_plus_average():
    f = OnlineFisher((3,), lam=1.0, decay=0.9)
    g = [np.array([1.0, 2.0, 0.0]), np.array([3.0, 0.0, 1.0]), np.array([0.5, 0.5, 0.5])]
    expected = g[0] ** 2
    f.update(g[0] ** 2)
    for gi in g[1:]:
        f.update(gi**2)
        expected = 0.9 * expected + 0.1 * gi**2
    np.testing.assert_allclose(f.fisher_, expected)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.01, 1e4))
def test_penalty_zero_at_anchor_and_gradient_matches_finite_differences(seed, lam):
    rng = np.random.default_rng(seed)
    f = OnlineFisher((2, 3), lam=lam, decay=0.5)
    f.update(rng.random((2, 3)))
    theta = rng.normal(size=(2, 3))
    assert f.penalty(theta) == 0.0 and not f.gradient(theta).any()  # no anchor yet
    f.consolidate(theta)
    assert f.penalty(theta) == 0.0
    assert not f.gradient(theta).any()
    t = theta + rng.normal(size=(2, 3))
    num = np.zeros_like(t)
    h = 1e-6
    for idx in np.ndindex(t.shape):
        e = np.zeros_like(t)
        e[idx] = h
        num[idx] = (f.penalty(t + e) - f.penalty(t - e)) / (2 * h)
    np.testing.assert_allclose(f.gradient(t), num, rtol=1e-5, atol=1e-6 * lam)
    assert f.penalty(t) >= 0


def test_consolidate_every_n():
    f = OnlineFisher((1,), lam=1.0, consolidate_every=10, on_plateau=False)
    fired = [i for i in range(1, 51) if f.observe_loss(1.0)]
    assert fired == [10, 20, 30, 40, 50]


def test_plateau_after_peak_triggers_once_per_shift():
    f = OnlineFisher((1,), lam=1.0, window=10, peak_ratio=0.5, plateau_tol=0.05)
    rng = np.random.default_rng(0)

    def phase(start, end, n):  # a loss that decays from start to end then stays flat
        curve = np.concatenate([np.linspace(start, end, n // 2), np.full(n - n // 2, end)])
        return curve * (1 + 0.01 * rng.standard_normal(n))

    losses = np.concatenate([phase(2.0, 0.2, 200), phase(2.5, 0.3, 200), phase(3.0, 0.2, 200)])
    fired = [i for i, loss in enumerate(losses) if f.observe_loss(float(loss))]
    # One consolidation in each phase, after its loss has flattened.
    assert len(fired) == 3, fired
    for k, i in enumerate(fired):
        assert 200 * k + 100 <= i < 200 * (k + 1), fired
    flat = OnlineFisher((1,), lam=1.0, window=10)
    assert not any(flat.observe_loss(0.5) for _ in range(500)) or flat.consolidations == 0


def test_true_and_empirical_fisher_match_their_formulas_and_differ_as_expected():
    """Empirical = (p − onehot)²·x̃², true = p(1−p)·x̃² (x̃ = [x, 1]).

    With fisher_decay = 0 the Fisher is exactly the last sample's term. On a sample
    the model already gets right with confidence, the empirical Fisher is the
    smaller one ((1−p_y)² < p_y(1−p_y) when p_y > ½).
    """
    base = LearnerConfig(
        dim=3,
        max_classes=3,
        head="softmax",
        budget_bytes=20_000,
        ewc_lambda=1.0,
        replay_k=0,
        fisher_decay=0.0,
    )
    x = np.array([1.0, -2.0, 0.5])
    xt = np.append(x, 1.0)
    out = {}
    for mode in ("empirical", "true"):
        lr = StreamingLearner(base.replace(fisher_mode=mode))
        for _ in range(10):
            lr.learn_one(x, 0)
            lr.learn_one(-x, 1)
        p = lr.predict_proba_many(x[None, :])[0]
        assert p[0] > 0.5
        lr.learn_one(x, 0)
        onehot = np.array([1.0, 0.0, 0.0])
        want = (p - onehot) ** 2 if mode == "empirical" else p * (1 - p)
        np.testing.assert_allclose(lr.fisher.fisher_, np.outer(want, xt**2), rtol=1e-12)
        out[mode] = lr.fisher.fisher_
    assert (out["empirical"][:2] < out["true"][:2]).all()


def test_ewc_pulls_the_softmax_head_toward_its_anchors():
    cfg = LearnerConfig(
        dim=4,
        max_classes=4,
        head="softmax",
        budget_bytes=50_000,
        replay_k=0,
        ewc_lambda=0.0,
    )
    rng = np.random.default_rng(0)
    c = rng.normal(size=(4, 4)) * 2
    y1 = np.repeat([0, 1], 200)
    y2 = np.repeat([2, 3], 200)
    X1 = c[y1] + 0.3 * rng.normal(size=(400, 4))
    X2 = c[y2] + 0.3 * rng.normal(size=(400, 4))
    drift = {}
    for lam in (0.0, 1000.0):
        lr = StreamingLearner(cfg.replace(ewc_lambda=lam, consolidate_on_plateau=False))
        lr.learn_many(X1, y1)
        if lr.fisher is not None:
            lr.fisher.consolidate(lr.head.theta_)
        before = lr.head.theta_[:2].copy()
        lr.learn_many(X2, y2)
        drift[lam] = float(np.abs(lr.head.theta_[:2] - before).sum())
    assert drift[1000.0] < 0.5 * drift[0.0]
