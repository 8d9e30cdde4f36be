"""Every strategy on a tiny synthetic task sequence, plus each one's own mechanism."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from host_helpers import blobs  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch import nn  # noqa: E402

from edgecl.errors import ConfigError  # noqa: E402
from edgecl.host.data import SCENARIOS, TrainingData, split_classes  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.strategies import (  # noqa: E402
    MAS,
    SI,
    STRATEGIES,
    LwF,
    Replay,
    TaskView,
    make_strategy,
)
from edgecl.host.strategies.replay import last_writes  # noqa: E402
from edgecl.host.train import TrainConfig, resolve_bn_policy, train_tasks  # noqa: E402

OPTIONS = {
    "ewc_lambda": 100.0,
    "fisher_batches": 5,
    "si_c": 1.0,
    "mas_lambda": 1.0,
    "buffer_size": 60,
    "xdg_gating": 0.5,  # the 16-unit test model keeps 8 units per task
}


def _tasks(scenario, seed=0):
    x, y = blobs(n_classes=6, per_class=40, seed=seed)
    xt, yt = blobs(n_classes=6, per_class=20, seed=seed + 1)
    data = TrainingData(
        "blobs",
        "",
        "",
        x,
        y,
        xt,
        yt,
        (6,),
        tuple("abcdef"),
        {"mean": [0.0], "std": [1.0]},
        None,
        None,
    )
    return split_classes(data, 2, scenario)


def _run(name, scenario, seed=0, epochs=3, bn_policy="train", lr=0.01):
    tasks = _tasks(scenario)
    torch.manual_seed(seed)
    n_out = 2 if scenario == "domain-il" else 6
    model = build_model("mlp", (6,), n_out, embed_dim=16, width=16)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=16,
        lr=lr,
        scenario=scenario,
        bn_policy=bn_policy,
        seed=seed,
        device="cpu",
        progress=False,
    )
    return model, train_tasks(model, tasks, make_strategy(name, seed=seed, **OPTIONS), cfg)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_runs_every_scenario(name, scenario):
    _, res = _run(name, scenario, epochs=2)
    R = res.accuracy_matrix
    assert R.shape == (3, 3) and ((R >= 0) & (R <= 1)).all()
    assert R[0, 0] > 0.8  # the first task is learned whatever the strategy
    out = res.to_json()
    for key in ("accuracy_matrix", "avg_accuracy", "bwt", "fwt", "forgetting", "learn_us",
                "predict_us", "state_bytes", "seconds"):  # fmt: skip
        assert key in out
    assert out["strategy"] == name and out["scenario"] == scenario


def test_class_il_naive_forgets_while_joint_and_replay_remember():
    _, naive = _run("naive", "class-il", epochs=10, lr=0.01)
    _, joint = _run("joint", "class-il", epochs=10, lr=0.01)
    _, replay = _run("replay", "class-il", epochs=10, lr=0.01)
    assert naive.accuracy_matrix[-1, 0] < 0.3  # only the last two classes are predicted
    assert joint.accuracy_matrix[-1].min() > 0.9
    assert replay.accuracy_matrix[-1, 0] > 0.6
    assert naive.to_json()["bwt"] < replay.to_json()["bwt"]


def test_task_il_masking_keeps_old_tasks_for_every_strategy():
    # With each task's own two logits, even fine-tuning keeps these blobs apart.
    _, res = _run("naive", "task-il", epochs=10, lr=0.01)
    assert res.accuracy_matrix[-1].min() > 0.8


def test_same_seed_same_weights():
    a, _ = _run("ewc", "class-il", epochs=1)
    b, _ = _run("ewc", "class-il", epochs=1)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_bn_freeze_keeps_task_one_statistics():
    from edgecl.host.data import Task

    x1, y1 = blobs(2, 40, 6, seed=0)
    x2 = x1 + 5.0  # a shifted domain: BatchNorm statistics would move
    t1, t2 = Task("a", x1, y1, x1, y1, (0, 1)), Task("b", x2, y1, x2, y1, (0, 1))
    stats = {}
    for policy in ("train", "freeze"):
        torch.manual_seed(0)
        model = build_model("mlp", (6,), 2, embed_dim=8, width=8)
        cfg = TrainConfig(epochs=1, batch_size=16, bn_policy=policy, device="cpu", progress=False)
        train_tasks(model, [t1], make_strategy("naive"), cfg)
        after1 = model.extractor[2].running_mean.clone()
        torch.manual_seed(0)
        model2 = build_model("mlp", (6,), 2, embed_dim=8, width=8)
        train_tasks(model2, [t1, t2], make_strategy("naive"), cfg)
        stats[policy] = (after1, model2.extractor[2].running_mean)
    assert torch.equal(*stats["freeze"])
    assert not torch.allclose(*stats["train"])


# The weight-penalty strategies (DESIGN §9) and the isolation ones whose old units must not drift.
AUTO_FREEZES = {
    "ewc", "online-ewc", "si", "mas", "kfac-ewc", "packnet", "xdg", "agem", "gpm", "importance-lr",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_bn_policy_auto_freezes_for_weight_penalties_only(name):
    strategy = make_strategy(name)
    expected = "freeze" if name in AUTO_FREEZES else "train"
    assert resolve_bn_policy("auto", strategy) == expected
    for explicit in ("train", "freeze"):  # an explicit policy always wins
        assert resolve_bn_policy(explicit, strategy) == explicit
    assert TrainConfig().bn_policy == "auto"


@pytest.mark.parametrize("name, kept", [("ewc", True), ("naive", False)])
def test_bn_policy_auto_default_keeps_task_one_statistics_for_ewc(name, kept):
    from edgecl.host.data import Task

    x1, y1 = blobs(2, 40, 6, seed=0)
    x2 = x1 + 5.0  # a shifted domain: BatchNorm statistics would move
    t1, t2 = Task("a", x1, y1, x1, y1, (0, 1)), Task("b", x2, y1, x2, y1, (0, 1))
    cfg = TrainConfig(epochs=1, batch_size=16, device="cpu", progress=False)  # default policy
    torch.manual_seed(0)
    one = build_model("mlp", (6,), 2, embed_dim=8, width=8)
    train_tasks(one, [t1], make_strategy(name, fisher_batches=2), cfg)
    torch.manual_seed(0)
    two = build_model("mlp", (6,), 2, embed_dim=8, width=8)
    res = train_tasks(two, [t1, t2], make_strategy(name, fisher_batches=2), cfg)
    same = torch.equal(one.extractor[2].running_mean, two.extractor[2].running_mean)
    assert same == kept
    assert res.info["bn_policy"] == ("freeze" if kept else "train")
    assert res.info["bn_policy_requested"] == "auto"


def test_si_path_integral_is_lr_times_squared_gradient_for_plain_sgd():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    s = SI(si_c=1.0)
    view = TaskView(0, (0, 1), None, lambda: iter(()))
    s.before_task(net, view)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    want = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        for n, p in net.named_parameters():
            want[n] += 0.1 * p.grad**2
        opt.step()
        s.after_step(net)
    for n in want:
        torch.testing.assert_close(s._path[n], want[n])
    start = {n: v.clone() for n, v in s._start.items()}
    s.after_task(net, view)
    for n, p in net.named_parameters():
        torch.testing.assert_close(s.omega_[n], want[n] / ((p.detach() - start[n]) ** 2 + 0.1))
    assert float(s.penalty(net, None, None).detach()) == 0.0


def test_mas_importance_is_nonnegative_and_penalty_zero_at_anchor():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(20, 3)
    zeros = torch.zeros(20, dtype=torch.long)
    view = TaskView(0, (0, 1), None, lambda: iter([(x, zeros, zeros)]))
    m = MAS(mas_lambda=1.0, fisher_batches=2)
    m.after_task(net, view)
    assert all((o >= 0).all() for o in m.omega_.values())
    assert any((o > 0).any() for o in m.omega_.values())
    assert float(m.penalty(net, None, None).detach()) == 0.0


def test_lwf_distillation_is_zero_for_the_unchanged_model():
    torch.manual_seed(0)
    net = nn.Linear(3, 4)
    lwf = LwF()
    lwf.after_task(net, TaskView(0, (0, 1), None, lambda: iter(())))
    x = torch.randn(5, 3)
    assert float(lwf.penalty(net, x, net(x)).detach()) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        net.weight[0] += 1.0
    assert float(lwf.penalty(net, x, net(x)).detach()) > 0


@settings(max_examples=30, deadline=None)
@given(capacity=st.integers(1, 20), n=st.integers(0, 60), batch=st.integers(1, 9))
def test_replay_reservoir_holds_at_most_capacity_of_seen_samples(capacity, n, batch):
    r = Replay(buffer_size=capacity, seed=0)
    xs = torch.arange(n, dtype=torch.float32)[:, None]
    for i in range(0, n, batch):
        ids = torch.arange(i, min(n, i + batch))
        r.add(xs[ids], ids, torch.zeros(len(ids), dtype=torch.long))
    assert len(r) == min(n, capacity)
    if n:
        kept = r.x_[: len(r), 0].long()
        assert torch.equal(kept, r.y_[: len(r)])  # inputs and labels stay paired
        assert len(set(kept.tolist())) == len(r) and kept.max() < n


def test_replay_reservoir_is_uniform():
    """Algorithm R: every item kept with probability capacity / seen."""
    counts = np.zeros(40)
    for seed in range(300):
        r = Replay(buffer_size=10, seed=seed)
        r.add(torch.arange(40.0)[:, None], torch.arange(40), torch.zeros(40, dtype=torch.long))
        counts[r.y_.numpy()] += 1
    freq = counts / 300
    assert abs(freq.mean() - 0.25) < 1e-9
    assert freq[:10].mean() == pytest.approx(0.25, abs=0.06)
    assert freq[-10:].mean() == pytest.approx(0.25, abs=0.06)


@settings(max_examples=60, deadline=None)
@given(slots=st.lists(st.integers(-1, 6), max_size=30))
def test_replay_last_writes_names_each_slot_once_with_its_last_sample(slots):
    dest, src = last_writes(np.array(slots, dtype=np.int64))
    reference: dict[int, int] = {}
    for i, s in enumerate(slots):  # the sequential loop: a later write replaces an earlier one
        if s >= 0:
            reference[s] = i
    assert dest.tolist() == sorted(reference)  # unique destinations: a defined torch write
    assert src.tolist() == [reference[s] for s in sorted(reference)]


def _replay_devices():
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.mark.parametrize("device", _replay_devices())
def test_replay_batch_add_equals_one_sample_at_a_time(device):
    """Many samples of a batch draw the same slot; the batch write must equal Algorithm R's."""
    n, capacity = 4000, 3  # after the fill, ~capacity·ln(n/capacity) ≈ 21 kept: many repeats
    x = torch.arange(n, dtype=torch.float32, device=device)[:, None].repeat(1, 16)
    y, tid = torch.arange(n, device=device), torch.arange(n, device=device) % 5
    batched, single = Replay(buffer_size=capacity, seed=7), Replay(buffer_size=capacity, seed=7)
    batched.add(x, y, tid)
    for i in range(n):
        single.add(x[i : i + 1], y[i : i + 1], tid[i : i + 1])
    assert torch.equal(batched.x_, single.x_)
    assert torch.equal(batched.y_, single.y_) and torch.equal(batched.tid_, single.tid_)
    assert torch.equal(batched.x_[:, 0].long(), batched.y_)  # rows stay paired with labels


def test_replay_augment_appends_buffer_samples_with_their_task_ids():
    r = Replay(buffer_size=5, seed=0)
    r.add(torch.ones(5, 2), torch.full((5,), 3), torch.full((5,), 1))
    x, y, t = r.augment(
        torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    )
    assert x.shape == (8, 2) and y[4:].eq(3).all() and t[4:].eq(1).all()


def test_make_strategy_rejects_unknown_names():
    with pytest.raises(ConfigError, match="strategy"):
        make_strategy("gem")
