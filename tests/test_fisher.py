"""OnlineFisher: EWC++ running average of outer products, proximal step, task-free triggers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, OnlineFisher, StreamingLearner


def test_update_outer_is_the_ewc_plus_plus_average_of_outer_products():
    """F ← γF + (1−γ)·u vᵀ, the first update setting F, against explicit outer products."""
    rng = np.random.default_rng(0)
    f = OnlineFisher((3, 4), lam=1.0, decay=0.9)
    us, vs = rng.random((5, 3)), rng.random((5, 4))
    expected = np.outer(us[0], vs[0])
    f.update_outer(us[0], vs[0])
    np.testing.assert_array_equal(f.fisher_, expected)
    for u, v in zip(us[1:], vs[1:], strict=True):
        f.update_outer(u, v)
        expected = 0.9 * expected + 0.1 * u[:, None] * v[None, :]
    np.testing.assert_allclose(f.fisher_, expected, rtol=1e-14)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.01, 1e4), lr=st.floats(1e-4, 1.0))
def test_proximal_step_minimises_the_proximal_objective(seed, lam, lr):
    """θ = (θ' + ηλFθ*)/(1 + ηλF) is where ∇[‖θ−θ'‖²/2η + λ/2·ΣF(θ−θ*)²] vanishes."""
    rng = np.random.default_rng(seed)
    f = OnlineFisher((2, 3), lam=lam, decay=0.5)
    f.update_outer(rng.random(2), rng.random(3))
    theta = rng.normal(size=(2, 3))
    before = theta.copy()
    f.proximal_step(theta, lr)
    np.testing.assert_array_equal(theta, before)  # no anchors yet: no pull
    anchor = rng.normal(size=(2, 3))
    f.consolidate(anchor)
    f.proximal_step(theta, lr)
    grad = (theta - before) / lr + lam * f.fisher_ * (theta - anchor)
    scale = np.abs(before - anchor) * (1 / lr + lam * f.fisher_)
    assert (np.abs(grad) <= 1e-12 * scale).all()
    # The pull never crosses the anchor, however stiff: θ stays between θ' and θ*.
    assert (np.sign(theta - anchor) * np.sign(before - anchor) >= 0).all()
    assert (np.abs(theta - anchor) <= np.abs(before - anchor)).all()


def test_consolidate_every_n():
    f = OnlineFisher((1,), lam=1.0, consolidate_every=10, on_plateau=False)
    fired = [i for i in range(1, 51) if f.observe_loss(1.0)]
    assert fired == [10, 20, 30, 40, 50]


def _decay_then_flat(start, end, n, rng):
    """A loss that decays from ``start`` to ``end`` over n/2 samples then stays flat (1% noise)."""
    curve = np.concatenate([np.linspace(start, end, n // 2), np.full(n - n // 2, end)])
    return curve * (1 + 0.01 * rng.standard_normal(n))


def test_plateau_after_peak_triggers_once_per_shift():
    f = OnlineFisher((1,), lam=1.0, window=10, peak_ratio=0.5, plateau_tol=0.05)
    rng = np.random.default_rng(0)
    phases = [(2.0, 0.2), (2.5, 0.3), (3.0, 0.2)]
    losses = np.concatenate([_decay_then_flat(a, b, 200, rng) for a, b in phases])
    fired = [i for i, loss in enumerate(losses) if f.observe_loss(float(loss))]
    # One consolidation in each phase, after its loss has flattened.
    assert len(fired) == 3, fired
    for k, i in enumerate(fired):
        assert 200 * k + 100 <= i < 200 * (k + 1), fired


@pytest.mark.parametrize("level", [0.0, 0.5, 3.0])
def test_a_flat_loss_never_consolidates(level):
    """No peak, no plateau: a constant loss (learned, or unlearnable) never fires."""
    f = OnlineFisher((1,), lam=1.0, window=10)
    assert not any(f.observe_loss(level) for _ in range(500))
    assert f.consolidations == 0 and not f.anchored


def test_a_peak_then_a_plateau_fires_once():
    """Flat, then a jump (new data) that is learned down to a new plateau: exactly one
    consolidation, in the first window after the loss stopped falling."""
    f = OnlineFisher((1,), lam=1.0, window=10, peak_ratio=0.5, plateau_tol=0.05)
    flat = np.full(100, 0.5)
    learn = np.linspace(2.0, 0.4, 50)  # the jump, learned over 5 windows
    losses = np.concatenate([flat, learn, np.full(200, 0.4)])
    fired = [i for i, loss in enumerate(losses) if f.observe_loss(float(loss))]
    assert fired == [169], fired  # 150–159 still falls from 140–149; 160–169 does not


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
