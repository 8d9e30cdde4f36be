"""Parameter isolation (packnet) and context gating (xdg, multihead) on tiny task sequences."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")

from test_host_strategies import _tasks  # noqa: E402
from torch import nn  # noqa: E402

from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.strategies.base import (  # noqa: E402
    TaskView,
    UnsupportedScenario,
    check_scenario,
    masked,
)
from edgecl.host.strategies.multihead import MultiHead  # noqa: E402
from edgecl.host.strategies.packnet import PackNet  # noqa: E402
from edgecl.host.strategies.xdg import XdG  # noqa: E402
from edgecl.host.train import TrainConfig, train_tasks  # noqa: E402


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("mlp", (6,), 6, embed_dim=16, width=16)


def _train(strategy, epochs=3, lr=0.01, seed=0, bn_policy="auto"):
    model = _model(seed)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=16,
        lr=lr,
        scenario="task-il",
        bn_policy=bn_policy,
        seed=seed,
        device="cpu",
        progress=False,
    )
    return model, train_tasks(model, _tasks("task-il"), strategy, cfg)


class _Recording(PackNet):
    """PackNet that keeps the owners, weights and buffers as each task leaves them."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.history = []

    def after_task(self, model, task):
        super().after_task(model, task)
        self.history.append(
            (
                {n: o.clone() for n, o in self.owner_.items()},
                {n: p.detach().clone() for n, p in model.named_parameters()},
                {n: b.clone() for n, b in model.named_buffers()},
            )
        )


@pytest.mark.parametrize("bn_policy", ["auto", "train"])
def test_packnet_masks_are_disjoint_and_frozen_weights_never_change(bn_policy):
    s = _Recording(prune_ratio=0.5, retrain_steps=5)
    model, _ = _train(s, epochs=2, bn_policy=bn_policy)
    owners, params, buffers = s.history[-1][0], dict(model.named_parameters()), s.history[0][2]
    masks = s.masks()
    assert len(masks) == 3
    for a in range(3):
        assert sum(int(m.sum()) for m in masks[a].values()) > 0
        for b in range(a + 1, 3):
            assert not any((masks[a][n] & masks[b][n]).any() for n in masks[a])
    for t, (own_t, par_t, _) in enumerate(s.history):
        for n, o in own_t.items():
            mine = o == t + 1
            if t > 0:  # taken from the free pool only
                assert (s.history[t - 1][0][n][mine] == 0).all(), (t, n)
            assert torch.equal(owners[n][mine], o[mine]), (t, n)  # ownership is for good
            assert torch.equal(params[n].detach()[mine], par_t[n][mine]), (t, n)  # bitwise
    for n, b in model.named_buffers():  # BatchNorm statistics stay the first task's
        assert torch.equal(b, buffers[n]), n


def test_packnet_prunes_the_smallest_share_of_the_free_pool():
    s = _Recording(prune_ratio=0.5, retrain_steps=0)
    model = _model()
    view = TaskView(0, (0, 1), None, lambda: iter(()))
    with torch.no_grad():
        before = {n: p.clone() for n, p in model.named_parameters()}
    s.before_task(model, view)
    s.after_task(model, view)
    w = model.extractor[1].weight.detach()
    owner = s.owner_["extractor.1.weight"]
    free = owner == 0
    assert int(free.sum()) == w.numel() // 2
    assert (w[free] == 0).all()
    old = before["extractor.1.weight"].abs()
    assert old[free].max() <= old[~free].min()  # the smallest magnitudes went back
    assert (s.owner_["classifier.weight"][:2] == 1).all()  # the task's head rows
    assert (s.owner_["classifier.weight"][2:] == 0).all()
    assert (s.owner_["extractor.2.weight"] == 1).all()  # BatchNorm: the first task's
    rep = s.report()
    assert rep["packnet_free_fraction"] == pytest.approx(0.5, abs=0.01)
    assert rep["packnet_mask_bytes"] == sum(p.numel() for p in model.parameters())


def test_packnet_step_hooks_mask_gradients_and_restore_owned_weights():
    s = PackNet(prune_ratio=0.5, retrain_steps=0)
    model = _model()
    view = TaskView(0, (0, 1), None, lambda: iter(()))
    s.before_task(model, view)
    s.after_task(model, view)
    s.before_task(model, TaskView(1, (2, 3), None, lambda: iter(())))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(20, 6), torch.randint(2, 4, (20,))
    nn.functional.cross_entropy(model(x), y).backward()
    s.before_step(model)
    for n, p in model.named_parameters():
        assert (p.grad[s.owner_[n] > 0] == 0).all(), n
    assert (model.extractor[1].weight.grad[s.owner_["extractor.1.weight"] == 0] != 0).any()
    torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5).step()  # moves every weight
    s.after_step(model)
    for n, p in model.named_parameters():
        owned = s.owner_[n] > 0
        assert torch.equal(p.detach()[owned], before[n][owned]), n
    w = model.extractor[1].weight.detach()
    free = s.owner_["extractor.1.weight"] == 0
    assert not torch.equal(w[free], before["extractor.1.weight"][free])


def test_packnet_retrains_only_the_kept_weights_of_the_task():
    tasks = _tasks("task-il")
    t = tasks[0]
    gen = torch.Generator().manual_seed(0)

    def batches():
        order = torch.randperm(len(t.y_train), generator=gen)
        for i in range(0, len(order), 16):
            b = order[i : i + 16]
            x, y = torch.from_numpy(t.x_train)[b], torch.from_numpy(t.y_train)[b]
            yield x, y, torch.zeros(len(b), dtype=torch.long)

    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, :2] = True
    view = TaskView(0, (0, 1), mask, batches)
    models = []
    for steps in (0, 5):
        model, s = _model(), PackNet(prune_ratio=0.5, retrain_steps=steps, retrain_lr=0.01)
        s.before_task(model, view)
        s.after_task(model, view)
        models.append((model, s))
    (pruned, s0), (retrained, s5) = models
    for (n, a), b in zip(pruned.named_parameters(), retrained.parameters(), strict=True):
        o = s5.owner_[n]
        assert torch.equal(o, s0.owner_[n])
        assert torch.equal(a[o == 0], b[o == 0]), n  # the pool stays as pruned
    w = s5.owner_["extractor.1.weight"] == 1
    assert not torch.equal(pruned.extractor[1].weight[w], retrained.extractor[1].weight[w])


def test_packnet_eval_reads_only_weights_of_tasks_up_to_j():
    s = PackNet(prune_ratio=0.5, retrain_steps=5)
    model, _ = _train(s, epochs=2)
    model.eval()
    x = torch.randn(7, 6)
    for j in range(3):
        net = s.eval_model(model, j)
        out = net(x)
        ref = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in ref.named_parameters():
                o = s.owner_[n]
                p[(o == 0) | (o > j + 1)] = 0.0
        torch.testing.assert_close(out, ref(x), rtol=0, atol=1e-6)
        with torch.no_grad():  # move every weight of later tasks and the free pool
            saved = {n: p.clone() for n, p in model.named_parameters()}
            for n, p in model.named_parameters():
                o = s.owner_[n]
                p[(o == 0) | (o > j + 1)] += 1.0
        assert torch.equal(net(x), out)
        with torch.no_grad():  # ... while task j's own weights matter
            model.extractor[1].weight[s.owner_["extractor.1.weight"] == j + 1] += 1.0
        assert not torch.equal(net(x), out)
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(saved[n])


def test_packnet_task_il_is_learned_and_never_forgotten():
    _, res = _train(PackNet(prune_ratio=0.5, retrain_steps=10), epochs=5)
    R = res.accuracy_matrix
    assert R[-1].min() > 0.9
    for j in range(3):
        for i in range(j, 3):
            assert R[i, j] == R[j, j]  # isolation: exactly the accuracy it had
    out = res.to_json()
    json.dumps(out)
    assert out["packnet_weights_per_task"][0] > 0 and out["buffer_bytes"] > 0


@pytest.mark.parametrize("cls", [PackNet, XdG, MultiHead])
def test_isolation_strategies_run_in_task_il_only(cls):
    s = cls()
    check_scenario(s, "task-il")
    for scenario in ("domain-il", "class-il"):
        with pytest.raises(UnsupportedScenario, match=f"task-il only, not {scenario}: "):
            check_scenario(s, scenario)


def test_xdg_gates_are_fixed_by_seed_and_differ_across_tasks():
    a, b = XdG(xdg_gating=0.8, seed=3), XdG(xdg_gating=0.8, seed=3)
    sizes = [16, 16]
    for t in range(3):
        for ga, gb in zip(a.gates(t, sizes), b.gates(t, sizes), strict=True):
            assert torch.equal(ga, gb) and int(ga.sum()) == 3  # round(0.2 * 16) kept
    assert not torch.equal(a.gates(0, sizes)[0], a.gates(1, sizes)[0])
    assert not torch.equal(a.gates(0, sizes)[0], XdG(xdg_gating=0.8, seed=4).gates(0, sizes)[0])


def test_xdg_gated_units_are_silent_and_get_no_gradient():
    model = _model()
    s = XdG(xdg_gating=0.5, seed=0)
    s.before_task(model, TaskView(1, (2, 3), None, lambda: iter(())))
    gates = s.gates(1, [16, 16])
    seen = {}
    model.extractor[3].register_forward_hook(lambda m, i, o: seen.setdefault("h1", o))
    x, y = torch.randn(20, 6), torch.randint(2, 4, (20,))
    model.train()
    nn.functional.cross_entropy(model(x), y).backward()
    assert (seen["h1"][:, ~gates[0]] == 0).all()
    for lin, g in ((model.extractor[1], gates[0]), (model.extractor[4], gates[1])):
        assert (lin.weight.grad[~g] == 0).all() and (lin.bias.grad[~g] == 0).all()
        assert (lin.weight.grad[g] != 0).any()


def test_xdg_eval_model_applies_task_js_gate_and_nothing_outside_it():
    model = _model()
    model.eval()
    x = torch.randn(5, 6)
    plain = model(x)
    s = XdG(xdg_gating=0.5, seed=0)
    outs = [s.eval_model(model, j)(x) for j in range(2)]
    assert not torch.equal(outs[0], outs[1])
    assert torch.equal(model(x), plain)  # outside the wrapper the hooks do nothing
    ref = copy.deepcopy(model)
    g = s.gates(1, [16, 16])
    h = ref.extractor[:4](x) * g[0]
    h = ref.extractor[4:](h) * g[1]
    torch.testing.assert_close(outs[1], ref.classifier(h))


@pytest.mark.parametrize("strategy", [XdG(xdg_gating=0.5, seed=0), MultiHead()])
def test_gating_and_multihead_learn_task_il(strategy):
    model, res = _train(strategy, epochs=6)  # bn_policy auto: freeze for xdg
    R = res.accuracy_matrix
    assert R[0, 0] > 0.9 and R[-1].min() > 0.8
    out = res.to_json()
    json.dumps(out)
    assert out["strategy"] == strategy.name
    x = torch.randn(5, 6)
    with torch.no_grad():
        hooked = model(x)
        for h in getattr(strategy, "_handles", []):
            h.remove()
        assert torch.equal(model(x), hooked)  # no gate is left on after training


def test_multihead_is_task_il_fine_tuning():
    _, a = _train(MultiHead(), epochs=2)
    from edgecl.host.strategies.naive import Naive

    _, b = _train(Naive(), epochs=2)
    assert (a.accuracy_matrix == b.accuracy_matrix).all()
    logits = torch.zeros(1, 6)
    mask = torch.tensor([[True, True, False, False, False, False]])
    assert masked(logits, torch.tensor([0]), mask)[0, 2] < -1e8  # the per-task head
