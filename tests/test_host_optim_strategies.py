"""The optimisation-based strategies (A-GEM, GPM, importance-scaled steps) on tiny data."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_host_strategies import _tasks  # noqa: E402
from torch import nn  # noqa: E402

from edgecl.host.data import SCENARIOS  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.strategies import TaskView  # noqa: E402
from edgecl.host.strategies.agem import AGEM, project  # noqa: E402
from edgecl.host.strategies.ewc import diagonal_fisher  # noqa: E402
from edgecl.host.strategies.gpm import GPM, grow_basis  # noqa: E402
from edgecl.host.strategies.importance_lr import ImportanceLR  # noqa: E402
from edgecl.host.train import TrainConfig, train_tasks  # noqa: E402

MAKERS = {
    "agem": lambda: AGEM(memory_size=20, memory_batch=32, seed=0),
    "gpm": lambda: GPM(gpm_threshold=0.97, gpm_samples=50),
    "importance-lr": lambda: ImportanceLR(importance_strength=100.0, fisher_batches=5),
}


def _model(scenario):
    torch.manual_seed(0)
    return build_model("mlp", (6,), 2 if scenario == "domain-il" else 6, embed_dim=16, width=16)


def _train(strategy, scenario, n_tasks=3, epochs=2, optimizer="adam"):
    tasks = _tasks(scenario)[:n_tasks]
    model = _model(scenario)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=16,
        lr=0.01,
        optimizer=optimizer,
        scenario=scenario,
        seed=0,
        device="cpu",
        progress=False,
    )
    return model, train_tasks(model, tasks, strategy, cfg)


def _view(scenario, t):
    """Task ``t``'s training data as one fixed batch (the same on every call)."""
    tasks = _tasks(scenario)
    task = tasks[t]
    mask = None
    if scenario == "task-il":  # as train_tasks builds it
        mask = torch.zeros(len(tasks), 6, dtype=torch.bool)
        for i, other in enumerate(tasks):
            mask[i, list(other.classes)] = True
    x, y = torch.from_numpy(task.x_train), torch.from_numpy(task.y_train)
    tid = torch.full_like(y, t)
    return TaskView(t, tuple(task.classes), mask, lambda: iter([(x, y, tid)]))


def _backward(model, view):
    model.train()
    model.zero_grad(set_to_none=True)
    x, y, tid = next(view.batches())
    nn.functional.cross_entropy(view.logits(model, x, tid), y).backward()


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_each_strategy_runs_every_scenario(name, scenario):
    strategy = MAKERS[name]()
    _, res = _train(strategy, scenario)
    R = res.accuracy_matrix
    assert R.shape == (3, 3) and ((R >= 0) & (R <= 1)).all()
    assert R[0, 0] > 0.8
    out = res.to_json()
    assert out["strategy"] == name and out["scenario"] == scenario
    assert out["bn_policy"] == "freeze"  # all three protect weights only (DESIGN §9)
    assert out["buffer_bytes"] == strategy.nbytes() > 0
    for key, value in strategy.report().items():
        assert out[key] == value


# --- A-GEM ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.integers(-1000, 1000), st.integers(-1000, 1000)), min_size=1, max_size=12
    ).filter(lambda d: any(r for _, r in d))
)
def test_agem_projection_never_conflicts_with_the_memory_gradient(data):
    g = torch.tensor([a / 16 for a, _ in data], dtype=torch.float64)
    ref = torch.tensor([b / 16 for _, b in data], dtype=torch.float64)
    new = project(g, ref)
    scale = float(g.norm() * ref.norm())
    assert float(new @ ref) >= -1e-9 * scale
    if float(g @ ref) >= 0:
        assert torch.equal(new, g)  # no conflict: the gradient is left alone
    else:
        assert abs(float(new @ ref)) <= 1e-9 * scale  # on the constraint's boundary
        change = g - new  # removed along g_ref only: the closest admissible gradient
        assert torch.allclose(change, (change @ ref) / (ref @ ref) * ref, atol=1e-9 * scale)
        assert float(new.norm()) <= float(g.norm()) * (1 + 1e-12)


def test_agem_step_projects_a_conflicting_gradient_and_restores_the_rest():
    scenario = "class-il"
    agem = AGEM(memory_size=40, memory_batch=1000, seed=0)  # the batch is the whole memory
    model, _ = _train(agem, scenario, n_tasks=1)
    new_task = _view(scenario, 1)
    _backward(model, new_task)
    g = torch.cat([p.reshape(-1) for p in _grads(model)])
    buffers = [b.clone() for b in model.buffers()]
    g_ref = agem.memory_gradient(model)
    assert torch.equal(torch.cat([p.reshape(-1) for p in _grads(model)]), g)  # p.grad untouched
    assert float(g @ g_ref) < 0  # new classes vs old ones: a real conflict
    agem.before_step(model)
    new = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert float(new @ g_ref) >= -1e-5 * float(g.norm() * g_ref.norm())
    torch.testing.assert_close(new, project(g, g_ref), rtol=1e-5, atol=1e-6)
    for b, old in zip(model.buffers(), buffers, strict=True):
        assert torch.equal(b, old)  # the memory pass leaves the BatchNorm statistics alone


def test_agem_memory_keeps_memory_size_per_task_with_task_ids():
    agem = AGEM(memory_size=20, seed=0)
    _train(agem, "task-il")
    assert len(agem) == 60 and agem.report() == {"memory_samples": 60}
    assert agem.tid_.tolist() == [0] * 20 + [1] * 20 + [2] * 20
    classes = [set(agem.y_[agem.tid_ == t].tolist()) for t in range(3)]
    assert classes == [{0, 1}, {2, 3}, {4, 5}]
    assert agem.nbytes() == 60 * (6 * 4 + 8 + 8)  # float32 inputs, int64 labels and ids


# --- GPM -----------------------------------------------------------------------------


def test_gpm_grow_basis_reaches_the_threshold_with_the_fewest_directions():
    gen = torch.Generator().manual_seed(0)
    d, t = 8, 0.9
    r1 = torch.randn(d, 40, generator=gen, dtype=torch.float64) * torch.linspace(3, 0.1, d)[:, None]
    m1 = grow_basis(r1 @ r1.T / 40, None, t)
    k = m1.shape[1]

    def explained(m, r):
        return float((m.T @ r).square().sum() / r.square().sum())

    assert explained(m1, r1) >= t > explained(m1[:, : k - 1], r1)
    r2 = torch.randn(d, 40, generator=gen, dtype=torch.float64)
    m2 = grow_basis(r2 @ r2.T / 40, m1, t)
    assert m2.shape[1] > k and explained(m2, r2) >= t > explained(m2[:, :-1], r2)
    torch.testing.assert_close(m2[:, :k].abs(), m1.abs())  # the old directions are kept
    torch.testing.assert_close(m2.T @ m2, torch.eye(m2.shape[1], dtype=torch.float64))
    assert grow_basis(r2 @ r2.T / 40, m2, t).shape == m2.shape  # nothing new to explain


@pytest.mark.parametrize("scenario", ["task-il", "class-il"])
def test_gpm_basis_is_orthonormal_and_projected_gradients_orthogonal_to_it(scenario):
    gpm = GPM(gpm_threshold=0.97, gpm_samples=60)
    model, res = _train(gpm, scenario)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(gpm.basis_) == set(layers)  # every Linear, classifier included
    for n, basis in gpm.basis_.items():
        eye = torch.eye(basis.shape[1])
        assert float((basis.T @ basis - eye).abs().max()) <= 1e-5, n
        assert basis.shape[0] == layers[n].in_features + 1  # the bias column
    assert gpm.nbytes() == sum(b.numel() * 4 for b in gpm.basis_.values())
    assert res.info["basis_dims"] == {n: b.shape[1] for n, b in gpm.basis_.items()}

    _backward(model, _view(scenario, 1))
    gpm.before_step(model)
    for n, m in layers.items():
        g = torch.cat([m.weight.grad, m.bias.grad[:, None]], dim=1)
        assert float((g @ gpm.basis_[n]).abs().max()) <= 1e-5, n
        assert float(g.abs().max()) > 0, n  # something is left to learn
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            assert m.weight.grad is None and m.bias.grad is None  # frozen after task 1


def test_gpm_adam_update_stays_orthogonal_to_the_basis():
    scenario = "class-il"  # one task trained: the head already has all six outputs
    gpm = GPM(gpm_threshold=0.97, gpm_samples=60)
    model, _ = _train(gpm, scenario, n_tasks=1)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    before = {
        n: torch.cat([m.weight, m.bias[:, None]], 1).detach().clone() for n, m in layers.items()
    }
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(3):
        _backward(model, _view(scenario, 1))
        gpm.before_step(model)
        opt.step()
        gpm.after_step(model)
    for n, m in layers.items():
        step = torch.cat([m.weight, m.bias[:, None]], 1).detach() - before[n]
        assert float((step @ gpm.basis_[n]).abs().max()) <= 1e-5, n
        assert float(step.abs().max()) > 1e-3, n


# --- importance-lr -------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_importance_lr_divides_every_step_by_one_plus_strength_times_fisher(optimizer):
    s = 50.0
    strategy = ImportanceLR(importance_strength=s, fisher_batches=1)
    model = _model("class-il")
    strategy.after_task(model, _view("class-il", 0))
    make = {  # as train_tasks makes them
        "adam": lambda params: torch.optim.Adam(params, lr=0.01),
        "sgd": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    }[optimizer]
    opt = make(model.parameters())
    for _ in range(2):
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        reference = copy.deepcopy(model)  # where the plain optimiser would go from here
        reference_opt = make(reference.parameters())
        reference_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # shares tensors else
        for m in (model, reference):
            _backward(m, _view("class-il", 1))
        strategy.before_step(model)
        opt.step()
        strategy.after_step(model)
        reference_opt.step()
        ref = dict(reference.named_parameters())
        for n, p in model.named_parameters():
            want = (ref[n] - start[n]) / (1 + s * strategy.importance_[n])
            torch.testing.assert_close(p.detach() - start[n], want.detach(), rtol=1e-5, atol=1e-7)
    assert any((strategy.importance_[n] > 0).any() for n in strategy.importance_)


def test_importance_lr_sums_the_fisher_of_every_task_and_counts_its_memory():
    model = _model("class-il")
    strategy = ImportanceLR(importance_strength=1.0, fisher_batches=1)
    views = [_view("class-il", 0), _view("class-il", 1)]
    for v in views:
        strategy.after_task(model, v)
    want = [diagonal_fisher(model, v, 1) for v in views]
    for n, f in strategy.importance_.items():
        torch.testing.assert_close(f, want[0][n] + want[1][n])
    n_params = sum(p.numel() for p in model.parameters())
    assert strategy.nbytes() == 4 * n_params
    assert strategy.report() == {"importance_values": n_params}


def test_importance_lr_leaves_the_first_task_alone():
    strategy = ImportanceLR(importance_strength=1e9)
    model = _model("class-il")
    plain = copy.deepcopy(model)
    for m in (model, plain):
        _backward(m, _view("class-il", 0))
    opt, plain_opt = (
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.optim.SGD(plain.parameters(), lr=0.1),
    )
    strategy.before_step(model)
    opt.step()
    strategy.after_step(model)
    plain_opt.step()
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_adam_ignores_a_fixed_gradient_scale_hence_importance_lr_scales_the_step():
    """The reason the step, not the gradient, is scaled (module docstring)."""
    torch.manual_seed(0)
    w = [torch.zeros(5, requires_grad=True) for _ in range(2)]
    opts = [torch.optim.Adam([p], lr=0.1) for p in w]
    factor = torch.tensor([1.0, 0.1, 0.01, 1e-3, 1e-4])
    for _ in range(5):
        g = torch.randn(5)
        w[0].grad, w[1].grad = g.clone(), g * factor
        for o in opts:
            o.step()
    torch.testing.assert_close(w[0], w[1], rtol=1e-3, atol=1e-4)
