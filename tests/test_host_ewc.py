"""EWC: the penalty and its closed-form gradient against autograd; empirical vs true Fisher."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from edgecl.errors import ConfigError  # noqa: E402
from edgecl.host.strategies import EWC, OnlineEWC, TaskView, diagonal_fisher  # noqa: E402


def _view(x, y, batch_size, mask=None):
    x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)

    def batches():
        for i in range(0, len(y), batch_size):
            yield (
                x[i : i + batch_size],
                y[i : i + batch_size],
                torch.zeros(len(y[i : i + batch_size]), dtype=torch.long),
            )

    return TaskView(index=0, classes=(0, 1, 2), mask=mask, batches=batches)


def _data(n=30, d=5, c=3, seed=0):
    g = np.random.default_rng(seed)
    return g.normal(size=(n, d)).astype(np.float32), g.integers(0, c, size=n)


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))


def _consolidated(strategy, tasks=2):
    net = _net()
    for t in range(tasks):
        x, y = _data(seed=t)
        strategy.after_task(net, _view(x, y, 10))
        with torch.no_grad():  # move away from the anchor
            for p in net.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("cls", [EWC, OnlineEWC])
def test_penalty_is_zero_at_the_anchor(cls):
    s = cls(ewc_lambda=50.0, fisher_batches=3)
    net = _net()
    x, y = _data()
    s.after_task(net, _view(x, y, 10))
    pen = s.penalty(net, None, None)
    assert pen is not None and float(pen.detach()) == 0.0
    with torch.no_grad():
        net[0].weight[0, 0] += 1.0
    assert float(s.penalty(net, None, None).detach()) > 0


@pytest.mark.parametrize("cls", [EWC, OnlineEWC])
def test_closed_form_gradient_matches_autograd(cls):
    s = cls(ewc_lambda=123.0, fisher_batches=4)
    net = _consolidated(s)
    pen = s.penalty(net, None, None)
    params = [p for p in net.parameters()]
    auto = torch.autograd.grad(pen, params)
    closed = s.penalty_grad(net)
    for (name, _), g in zip(net.named_parameters(), auto, strict=True):
        torch.testing.assert_close(closed[name], g, rtol=1e-5, atol=1e-7)
    # ...and the penalty is λ/2 Σ_tasks Σ F (θ − θ*)², computed by hand.
    by_hand = sum(
        0.5 * 123.0 * (f[n] * (p.detach() - a[n]) ** 2).sum()
        for f, a in zip(s.fishers_, s.anchors_, strict=True)
        for n, p in net.named_parameters()
    )
    torch.testing.assert_close(pen.detach(), by_hand)


def test_ewc_keeps_one_term_per_task_and_online_ewc_one_decayed():
    e, o = EWC(fisher_batches=2), OnlineEWC(fisher_batches=2, fisher_decay=0.5)
    _consolidated(e, tasks=3)
    _consolidated(o, tasks=3)
    assert len(e.fishers_) == 3 and len(o.fishers_) == 1
    # Online: F = 0.5·(0.5·F0 + F1) + F2 with the same per-task Fishers as EWC.
    want = {
        n: 0.25 * e.fishers_[0][n] + 0.5 * e.fishers_[1][n] + e.fishers_[2][n]
        for n in e.fishers_[0]
    }
    for n in want:
        torch.testing.assert_close(o.fishers_[0][n], want[n])


def test_empirical_fisher_is_the_squared_gradient_of_the_batch_mean_loss():
    """The documented scale: one batch of everything = (∇ mean loss)², exactly."""
    net = _net().eval()
    x, y = _data()
    f = diagonal_fisher(net, _view(x, y, batch_size=len(y)), n_batches=1)
    loss = nn.functional.cross_entropy(net(torch.as_tensor(x)), torch.as_tensor(y))
    grads = torch.autograd.grad(loss, list(net.parameters()))
    for (n, _), g in zip(net.named_parameters(), grads, strict=True):
        torch.testing.assert_close(f[n], g**2)
    # With batches of one sample it is the per-sample Fisher, far larger.
    per_sample = diagonal_fisher(net, _view(x, y, batch_size=1), n_batches=len(y))
    total = sum(float(v.sum()) for v in f.values())
    assert sum(float(v.sum()) for v in per_sample.values()) > 5 * total


def _softmax_regression(w_scale=1.0, seed=0):
    torch.manual_seed(seed)
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.mul_(w_scale)
    return lin


def test_true_fisher_matches_its_expectation():
    """Sampled-label Fisher → E_y~p[(∇ℓ)²]; closed form for softmax regression."""
    g = np.random.default_rng(1)
    x = g.normal(size=(6, 4)).astype(np.float32)
    lin = _softmax_regression(1.5)
    with torch.no_grad():
        p = torch.softmax(lin(torch.as_tensor(x)), dim=1)
    v = p * (1 - p)  # E_y[(p_k − 1[y=k])²] per sample and class
    want_w = (v[:, :, None] * torch.as_tensor(x)[:, None, :] ** 2).mean(0)
    want_b = v.mean(0)
    gen = torch.Generator().manual_seed(0)
    passes = 500
    got = diagonal_fisher(lin, _view(x, np.zeros(6, int), 1), 6 * passes, "true", gen)
    torch.testing.assert_close(got["weight"], want_w, rtol=0.15, atol=2e-3)
    torch.testing.assert_close(got["bias"], want_b, rtol=0.15, atol=2e-3)


def test_empirical_exceeds_true_fisher_on_wrong_labels_and_matches_on_right_ones():
    g = np.random.default_rng(2)
    x = g.normal(size=(40, 4)).astype(np.float32)
    lin = _softmax_regression(20.0)  # confident
    with torch.no_grad():
        pred = lin(torch.as_tensor(x)).argmax(1).numpy()
    gen = torch.Generator().manual_seed(0)

    def total(labels, mode):
        f = diagonal_fisher(lin, _view(x, labels, 1), 40 * 10, mode, gen)
        return sum(float(v.sum()) for v in f.values())

    true = total(pred, "true")  # labels unused by the true Fisher
    right = total(pred, "empirical")
    wrong = total((pred + 1) % 3, "empirical")
    assert wrong > 5 * true  # wrong labels: large gradients the model does not expect
    assert right < true  # right labels: only the confident, tiny gradients remain
    assert right > 0


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="fisher"):
        EWC(fisher="exact")
    with pytest.raises(ConfigError, match="ewc_lambda"):
        EWC(ewc_lambda=-1)
    with pytest.raises(ConfigError, match="fisher_decay"):
        OnlineEWC(fisher_decay=1.5)


def test_true_fisher_is_seeded():
    x, y = _data()
    a = diagonal_fisher(_net(), _view(x, y, 5), 6, "true", torch.Generator().manual_seed(3))
    b = diagonal_fisher(_net(), _view(x, y, 5), 6, "true", torch.Generator().manual_seed(3))
    assert all(torch.equal(a[n], b[n]) for n in a)
