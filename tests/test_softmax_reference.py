"""The softmax head's step against torch autograd: SGD on the replay batch, Fisher, EWC.

One ``learn_one`` with replayed rows must be exactly one SGD step on the mean
cross-entropy of the ``m = 1 + replay_k`` rows (masked logits of unseen classes,
weight decay ``wd/2·‖θ‖²``), followed, with EWC, by the running Fisher update
from the new sample's squared gradient and the proximal pull toward the anchors.
The reference recomputes all of it with autograd in float64.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from edgecl import LearnerConfig, OnlineFisher, StreamingLearner

torch = pytest.importorskip("torch")

DIM, CLASSES, REPLAY = 5, 6, 8


def _learner(**settings) -> StreamingLearner:
    """A softmax learner that has seen classes 0-3 (4 and 5 are still masked)."""
    cfg = LearnerConfig(
        dim=DIM,
        max_classes=CLASSES,
        head="softmax",
        budget_bytes=100_000,
        buffer_capacity=20,
        replay_k=REPLAY,
        consolidate_on_plateau=False,
        seed=1,
        **settings,
    )
    lr = StreamingLearner(cfg)
    rng = np.random.default_rng(0)
    centres = 2.0 * rng.normal(size=(4, DIM))
    for i in range(40):
        y = i % 4
        lr.learn_one(centres[y] + rng.normal(size=DIM), y)
    return lr


def _autograd_step(theta, X, Y, seen, lr, wd):
    """θ − η∇[mean CE of the rows + wd/2·‖θ‖²], and the new sample's squared gradient."""
    t = torch.tensor(theta, requires_grad=True)
    Xt = torch.cat([torch.tensor(X), torch.ones(len(X), 1, dtype=torch.float64)], dim=1)
    logits = (Xt @ t.T).masked_fill(~torch.tensor(seen), float("-inf"))
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(Y), reduction="none")
    loss = ce.mean() + 0.5 * wd * (t * t).sum()
    (grad,) = torch.autograd.grad(loss, t, retain_graph=True)
    (g0,) = torch.autograd.grad(ce[0], t)
    return (t - lr * grad).detach().numpy(), (g0 * g0).numpy()


def _batch(lr: StreamingLearner, x: np.ndarray, y: int):
    """The rows the next ``learn_one(x, y)`` trains on: x, then the buffer's next draw."""
    Xr, Yr = copy.deepcopy(lr.head.buffer).sample(lr.config.replay_k)
    assert len(Yr) == REPLAY
    seen = lr.head.seen_mask.copy()
    seen[y] = True
    return np.vstack([x, Xr]), np.concatenate([[y], Yr]), seen


def _close(got: np.ndarray, want: np.ndarray, before: np.ndarray, rtol: float = 1e-12) -> None:
    """Parameters within ``rtol`` of the reference, relative to the size of the step."""
    step = np.abs(want - before).max()
    assert step > 1e-6  # the step is resolved, not lost under the tolerance
    err = np.abs(got - want).max()
    assert err <= rtol * step, f"max |Δ| {err:.3g} vs step {step:.3g}"


@pytest.mark.parametrize("new_class", [False, True], ids=["seen-class", "new-class"])
@pytest.mark.parametrize("wd", [0.0, 0.01], ids=["no-decay", "decay"])
def test_learn_one_is_one_autograd_sgd_step_on_the_replay_batch(wd, new_class):
    lr = _learner(weight_decay=wd)
    head = lr.head
    x = np.linspace(-1.0, 1.5, DIM)
    y = 4 if new_class else 2
    X, Y, seen = _batch(lr, x, y)
    before = head.theta_.copy()
    want, _ = _autograd_step(before, X, Y, seen, lr.config.lr, wd)
    lr.learn_one(x, y)
    _close(head.theta_, want, before)
    assert not head.theta_[5].any()  # class 5 is masked: no gradient reaches its row


def test_learn_one_with_ewc_is_sgd_then_fisher_update_then_proximal_pull():
    lam, decay = 50.0, 0.9
    lr = _learner(ewc_lambda=lam, fisher_decay=decay)
    head, fisher = lr.head, lr.head.fisher
    rng = np.random.default_rng(5)
    anchor = head.theta_ + 0.3 * rng.normal(size=head.theta_.shape)
    fisher.consolidate(anchor)
    F_before = fisher.fisher_.copy()
    x, y = np.linspace(-1.0, 1.5, DIM), 1
    X, Y, seen = _batch(lr, x, y)
    before = head.theta_.copy()
    sgd, g2 = _autograd_step(before, X, Y, seen, lr.config.lr, 0.0)
    F = decay * F_before + (1 - decay) * g2  # EWC++ with the new sample's squared gradient
    k = lr.config.lr * lam * F
    assert k.max() > 0.05  # the pull is far from negligible: the proximal form matters
    want = (sgd + k * anchor) / (1 + k)
    lr.learn_one(x, y)
    np.testing.assert_allclose(fisher.fisher_, F, rtol=1e-12, atol=1e-300)
    _close(head.theta_, want, before)


def test_fisher_is_the_new_samples_squared_autograd_gradient():
    """With γ = 0 the Fisher is exactly (∂CE(x₀)/∂θ)², not a batch mean over replayed rows."""
    lr = _learner(ewc_lambda=1.0, fisher_decay=0.0)
    x, y = np.linspace(-1.0, 1.5, DIM), 3
    X, Y, seen = _batch(lr, x, y)
    _, g2 = _autograd_step(lr.head.theta_.copy(), X, Y, seen, lr.config.lr, 0.0)
    lr.learn_one(x, y)
    np.testing.assert_allclose(lr.head.fisher.fisher_, g2, rtol=1e-12, atol=1e-300)


def _penalty_gradient_step(theta, fisher: OnlineFisher, lr: float) -> np.ndarray:
    """θ − η∇[λ/2·ΣF(θ−θ*)²] by autograd: the explicit step the proximal one replaces."""
    t = torch.tensor(theta, requires_grad=True)
    F, a = torch.tensor(fisher.fisher_), torch.tensor(fisher.anchor_)
    pen = 0.5 * fisher.lam * (F * (t - a) ** 2).sum()
    (g,) = torch.autograd.grad(pen, t)
    return (t - lr * g).detach().numpy()


def test_proximal_step_agrees_with_the_autograd_gradient_step_to_first_order():
    rng = np.random.default_rng(2)
    theta, anchor = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    u, v, eta = rng.random(3), rng.random(4), 0.05
    gaps = []
    for lam in (1.0, 0.1):
        f = OnlineFisher((3, 4), lam=lam)
        f.update_outer(u, v)
        f.consolidate(anchor)
        grad_step = _penalty_gradient_step(theta, f, eta)
        prox = theta.copy()
        f.proximal_step(prox, eta)
        k = eta * lam * f.fisher_
        # prox − θ' = −k/(1+k)·(θ'−θ*) and grad − θ' = −k·(θ'−θ*) differ by k²/(1+k)·|θ'−θ*|.
        gap = np.abs(prox - grad_step)
        assert k.max() < 0.05  # small ηλF
        assert (gap <= k * np.abs(grad_step - theta) + 1e-15).all()
        gaps.append(gap.max())
    assert 90 < gaps[0] / gaps[1] < 110  # second order in λ: 10× smaller λ, 100× smaller gap
