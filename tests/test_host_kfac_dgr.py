"""KFAC-EWC, feature distillation and generative replay: every scenario, plus each mechanism."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from host_helpers import blobs  # noqa: E402
from test_host_strategies import _tasks  # noqa: E402
from torch import nn  # noqa: E402

from edgecl.host.data import SCENARIOS  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.strategies import TaskView, diagonal_fisher  # noqa: E402
from edgecl.host.strategies.dgr import DGR, IGNORE  # noqa: E402
from edgecl.host.strategies.feature_distill import FeatureDistill  # noqa: E402
from edgecl.host.strategies.kfac import KFACEWC, kronecker_factors  # noqa: E402
from edgecl.host.train import TrainConfig, resolve_bn_policy, train_tasks  # noqa: E402

MAKERS = {
    "kfac-ewc": lambda: KFACEWC(ewc_lambda=100.0, fisher_batches=5),
    "feature-distill": lambda: FeatureDistill(distill_lambda=1.0),
    "feature-distill-cosine": lambda: FeatureDistill(feature_distance="cosine"),
    "dgr": lambda: DGR(vae_latent=4, vae_hidden=16, vae_epochs=2),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("key", sorted(MAKERS))
def test_each_new_strategy_runs_every_scenario(key, scenario):
    tasks = _tasks(scenario)
    torch.manual_seed(0)
    n_out = 2 if scenario == "domain-il" else 6
    model = build_model("mlp", (6,), n_out, embed_dim=16, width=16)
    strategy = MAKERS[key]()
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.01, scenario=scenario, bn_policy="train",
                      device="cpu", progress=False)  # fmt: skip
    res = train_tasks(model, tasks, strategy, cfg)
    R = res.accuracy_matrix
    assert R.shape == (3, 3) and ((R >= 0) & (R <= 1)).all()
    assert R[0, 0] > 0.8
    out = res.to_json()
    assert out["strategy"] == strategy.name and out["scenario"] == scenario
    assert out["buffer_bytes"] > 0  # factors, a frozen copy or a generator are counted
    if key == "dgr":
        assert out["generator_params"] == sum(p.numel() for p in strategy.vae_.parameters()) > 0
    assert resolve_bn_policy("auto", strategy) == ("freeze" if key == "kfac-ewc" else "train")


# --- KFAC-EWC -------------------------------------------------------------------------------


def _view(batches, mask=None):
    return TaskView(0, (0, 1, 2), mask, lambda: iter(batches))


def _brute_force_fisher(net, batches):
    """``mean_b vec∇ vec∇ᵀ`` of the batch-mean loss, ``vec`` of ``[W | b]`` column-major."""
    total = 0.0
    for x, y, _ in batches:
        gw, gb = torch.autograd.grad(nn.functional.cross_entropy(net(x), y), [net.weight, net.bias])
        v = torch.cat([gw, gb[:, None]], dim=1).T.reshape(-1)  # column-major vec
        total = total + torch.outer(v, v)
    return total / len(batches)


def test_kfac_equals_the_exact_fisher_of_a_linear_model_with_one_sample_per_batch():
    """Identity of the batch-mean definition: one sample per batch and one input ⇒ exact."""
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    x0 = torch.randn(1, 4)
    zero = torch.zeros(1, dtype=torch.long)
    batches = [(x0, torch.tensor([c]), zero) for c in (0, 1, 2, 2)]  # same input, many labels
    (A, G), = kronecker_factors(net, _view(batches), len(batches)).values()  # fmt: skip
    exact = _brute_force_fisher(net, batches)
    torch.testing.assert_close(torch.kron(A, G), exact, rtol=1e-5, atol=1e-7)
    # ... so its diagonal is EWC's diagonal Fisher, the same scale (DESIGN §9)
    diag = diagonal_fisher(net, _view(batches), len(batches))
    want = torch.cat([diag["weight"], diag["bias"][:, None]], dim=1).T.reshape(-1)
    torch.testing.assert_close(torch.diagonal(torch.kron(A, G)), want, rtol=1e-5, atol=1e-7)
    # one sample of any input is exact too
    one = [(torch.randn(1, 4), torch.tensor([1]), zero)]
    (A1, G1), = kronecker_factors(net, _view(one), 1).values()  # fmt: skip
    torch.testing.assert_close(torch.kron(A1, G1), _brute_force_fisher(net, one))


def test_kfac_factors_are_batch_means_of_inputs_and_output_gradients():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    batches = [(x[:4], y[:4], y[:4]), (x[4:], y[4:], y[4:])]
    (A, G), = kronecker_factors(net, _view(batches), 2).values()  # fmt: skip
    a = torch.cat([x, torch.ones(8, 1)], dim=1)
    torch.testing.assert_close(A, a.T @ a / 8)
    want = 0.0
    for xb, yb, _ in batches:
        s = net(xb)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(s, yb), [s])  # g_i = ∇ℓ_i / B
        want = want + g.T @ g
    torch.testing.assert_close(G, want / 2)


def test_kfac_penalty_is_the_vec_form_summed_over_decayed_tasks():
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    lam, decay = 10.0, 0.5
    s = KFACEWC(ewc_lambda=lam, fisher_batches=3, fisher_decay=decay)
    zero = torch.zeros(5, dtype=torch.long)
    views = [_view([(torch.randn(5, 4), torch.randint(0, 3, (5,)), zero) for _ in range(3)])
             for _ in range(2)]  # fmt: skip
    kron = []
    for view in views:
        (A, G), = kronecker_factors(net, view, 3).values()  # fmt: skip
        kron.append(torch.kron(A, G))
        s.after_task(net, view)
        with torch.no_grad():
            net.weight.add_(0.1 * torch.randn(3, 4))  # the next task moves the weights
    assert float(s.penalty(net, None, None).detach()) > 0
    anchor = torch.cat([s.anchor_["weight"], s.anchor_["bias"][:, None]], dim=1)
    dw = torch.cat([net.weight, net.bias[:, None]], dim=1) - anchor
    v = dw.T.reshape(-1)
    want = 0.5 * lam * v @ (decay * kron[0] + kron[1]) @ v
    torch.testing.assert_close(s.penalty(net, None, None), want)
    assert s.diagonal_ == {}  # every parameter is in a Linear layer


def test_kfac_protects_non_linear_parameters_with_a_diagonal_fisher():
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, embed_dim=8, width=8)
    x, y = blobs(3, 10, 6, seed=0)
    batch = (torch.from_numpy(x), torch.from_numpy(y), torch.zeros(30, dtype=torch.long))
    s = KFACEWC(fisher_batches=2)
    s.after_task(model, _view([batch]))
    linear = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(s.factors_) == linear
    bn = {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] not in linear}
    assert set(s.diagonal_) == bn and bn  # BatchNorm affine weights
    assert float(s.penalty(model, None, None).detach()) == 0.0  # at the anchor


# --- feature distillation -------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["l2", "cosine"])
def test_feature_distill_is_zero_for_the_unchanged_model_and_positive_after_a_change(distance):
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 4, embed_dim=8, width=8).eval()
    s = FeatureDistill(distill_lambda=1.0, feature_distance=distance)
    x = torch.randn(10, 6)
    assert s.penalty(model, x, model(x)) is None  # nothing learned yet
    s.after_task(model, _view([]))
    assert float(s.penalty(model, x, model(x)).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.classifier.weight.add_(1.0)  # the classifier is free
    assert float(s.penalty(model, x, model(x)).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.extractor[1].weight.mul_(-1.0)
    assert float(s.penalty(model, x, model(x)).detach()) > 1e-3


def test_feature_distill_uses_the_features_of_the_loops_own_forward_pass():
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 4, embed_dim=8, width=8)
    s = FeatureDistill(distill_lambda=2.0)
    s.after_task(model, _view([]))
    with torch.no_grad():
        model.extractor[1].weight.add_(0.3)
    twin = copy.deepcopy(model)
    x = torch.randn(10, 6)
    s.before_task(model, _view([]))
    got = s.penalty(model, x, model.train()(x))  # the loop's forward; the hook keeps the embedding
    feats = twin.train().extractor(x)  # the same single forward on a twin
    bn = model.extractor[2].running_mean, twin.extractor[2].running_mean
    torch.testing.assert_close(*bn)  # BatchNorm updated once: no second forward in penalty()
    torch.testing.assert_close(got, 2.0 * ((feats - s.old_extractor_(x)) ** 2).sum(dim=1).mean())
    assert got.requires_grad
    s.after_task(model, _view([]))
    assert not model.extractor._forward_hooks  # removed at the end of the task


# --- generative replay ----------------------------------------------------------------------


def _blob_view(shape, seed, shift=0.0):
    x, y = blobs(3, 40, 6, seed=seed)
    x = torch.from_numpy(x).reshape(-1, *shape) + shift
    y = torch.from_numpy(y)
    tid = torch.zeros(len(y), dtype=torch.long)
    batches = [(x[i : i + 20], y[i : i + 20], tid[i : i + 20]) for i in range(0, len(y), 20)]
    return TaskView(0, (0, 1, 2), None, lambda: iter(batches)), x


@pytest.mark.parametrize("shape", [(6,), (2, 3)])
def test_dgr_samples_have_the_datas_shape_and_range(shape):
    torch.manual_seed(0)
    s = DGR(vae_latent=4, vae_hidden=16, vae_epochs=20)
    view1, x1 = _blob_view(shape, 0)
    s.after_task(nn.Linear(6, 3), view1)
    out = s.sample(500)
    assert out.shape == (500, *shape) and out.dtype == torch.float32
    lo, hi = x1.amin(dim=0), x1.amax(dim=0)
    assert ((out >= lo) & (out <= hi)).all()
    assert out.std(dim=0).min() > 0  # samples differ: not one decoded point
    view2, x2 = _blob_view(shape, 1, shift=4.0)  # a second task widens the range
    s.after_task(nn.Linear(6, 3), view2)
    out = s.sample(500)
    both = torch.cat([x1, x2])
    assert ((out >= both.amin(dim=0)) & (out <= both.amax(dim=0))).all()
    assert (out > hi).any()  # the new task's range is reached
    assert s.report() == {"generator_params": sum(p.numel() for p in s.vae_.parameters())}
    with torch.no_grad():
        s.vae_.decoder[-1].bias.add_(100.0)  # a generator gone wild is still clipped
    assert torch.equal(s.sample(3), both.amax(dim=0).expand(3, *shape))


def _replay_term(s, net, x, seed=None):
    """One step as the loop takes it: augment, one forward, penalty."""
    if seed is not None:
        s._gen.manual_seed(seed)
    zeros = torch.zeros(len(x), dtype=torch.long)
    xa, ya, ta = s.augment(x, zeros, zeros)
    return s.penalty(net, xa, net(xa))


def test_dgr_augment_appends_generated_rows_that_cross_entropy_ignores():
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    s = DGR(vae_latent=4, vae_hidden=16, vae_epochs=1, replay_batch=5)
    x, y, tid = torch.randn(8, 6), torch.randint(0, 3, (8,)), torch.zeros(8, dtype=torch.long)
    assert s.augment(x, y, tid)[0] is x  # nothing to replay yet
    s.after_task(net, _blob_view((6,), 0)[0])
    s.before_task(net, TaskView(1, (0, 1, 2), None, lambda: iter(())))
    xa, ya, ta = s.augment(x, y, tid)
    assert xa.shape == (13, 6) and torch.equal(xa[:8], x) and torch.equal(ya[:8], y)
    assert (ya[8:] == IGNORE).all() and (ta[8:] == 1).all()
    logits = net(xa)
    torch.testing.assert_close(  # the loop's hard-label loss sees the real rows only
        nn.functional.cross_entropy(logits, ya), nn.functional.cross_entropy(logits[:8], y)
    )
    assert float(s.penalty(net, xa, logits).detach()) == pytest.approx(0.0, abs=1e-6)
    assert s.penalty(net, xa, logits) is None  # the targets are used once


def test_dgr_replay_term_is_zero_for_the_unchanged_model_and_weighted_by_tasks_done():
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    s = DGR(vae_latent=4, vae_hidden=16, vae_epochs=1)
    x = torch.randn(8, 6)
    assert _replay_term(s, net, x) is None  # no generator yet
    view, _ = _blob_view((6,), 0)
    s.after_task(net, view)
    assert float(_replay_term(s, net, x).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        net.weight.add_(torch.randn(3, 6))
    p1 = _replay_term(s, net, x)
    assert float(p1.detach()) > 0 and p1.requires_grad
    s.after_task(net, view)  # the old model is now the changed one: zero again
    assert float(_replay_term(s, net, x).detach()) == pytest.approx(0.0, abs=1e-6)
    assert s._tasks_done == 2 and s._seen == [0, 1, 2]
    with torch.no_grad():
        net.weight.add_(torch.randn(3, 6))
    paper = _replay_term(s, net, x, seed=5)  # after 2 tasks: weight t - 1 = 2 vs the new task's 1
    s.replay_weight = 1.0
    torch.testing.assert_close(paper, 2.0 * _replay_term(s, net, x, seed=5))


def test_dgr_class_il_replay_gives_the_new_classes_target_zero_and_task_il_leaves_them_out():
    torch.manual_seed(0)
    net = nn.Linear(6, 6)
    s = DGR(vae_latent=4, vae_hidden=16, vae_epochs=1)
    view, _ = _blob_view((6,), 0)  # classes 0, 1, 2
    s.after_task(net, view)
    favours_new = copy.deepcopy(net)
    with torch.no_grad():
        favours_new.bias[3] += 5.0  # class 3 (the next task's) takes replayed inputs
    x = torch.randn(8, 6)

    def replay_term(mask, model):
        s.before_task(model, TaskView(1, (3, 4, 5), mask, lambda: iter(())))
        return float(_replay_term(s, model, x, seed=0).detach())

    assert replay_term(None, favours_new) > replay_term(None, net) + 1.0  # class-IL
    task_il = torch.ones(2, 6, dtype=torch.bool)
    assert replay_term(task_il, favours_new) == pytest.approx(0.0, abs=1e-6)


def test_dgr_generator_keeps_the_old_tasks_inputs_by_replaying_them():
    torch.manual_seed(0)
    s = DGR(vae_latent=4, vae_hidden=16, vae_epochs=20)
    s.after_task(nn.Linear(6, 3), _blob_view((6,), 0)[0])  # features 3-5 near 0
    s.after_task(nn.Linear(6, 3), _blob_view((6,), 1, shift=4.0)[0])  # ... near 4
    old_like = (s.sample(2000)[:, 3:].mean(dim=1) < 2.0).float().mean()
    assert 0.4 < old_like < 0.9  # both tasks are generated (without replay: < 0.25)
