"""Progressive neural networks: frozen columns, lateral connections, task-IL only."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from host_helpers import write_image_npz  # noqa: E402
from test_host_strategies import _tasks  # noqa: E402

from edgecl.host.data import Task  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.strategies import (  # noqa: E402
    STRATEGIES,
    TaskView,
    UnsupportedScenario,
    check_scenario,
)
from edgecl.host.strategies.pnn import PNN  # noqa: E402
from edgecl.host.train import TrainConfig, train_tasks  # noqa: E402


class _Recording(PNN):
    """PNN that keeps a copy of every tensor of the model as each task leaves it."""

    def __init__(self):
        super().__init__()
        self.history = []

    def after_task(self, model, task):
        super().after_task(model, task)
        self.history.append({k: v.clone() for k, v in model.state_dict().items()})


def _cfg(epochs=3, bn_policy="auto"):
    return TrainConfig(epochs=epochs, batch_size=16, lr=0.01, scenario="task-il",
                       bn_policy=bn_policy, device="cpu", progress=False)  # fmt: skip


def _column_keys(state, k):
    """Names of column k's own tensors: its extractor, its laterals, its head and head lateral."""
    prefixes = (f"extractor.columns.{k}.", f"extractor.laterals.{k}.",
                f"classifier.heads.{k}.", f"classifier.laterals.{k}.")  # fmt: skip
    return [n for n in state if n.startswith(prefixes)]


@pytest.mark.parametrize("bn_policy", ["auto", "train"])
def test_earlier_columns_are_bitwise_unchanged_after_later_tasks(bn_policy):
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 6, embed_dim=16, width=16)
    s = _Recording()
    res = train_tasks(model, _tasks("task-il"), s, _cfg(bn_policy=bn_policy))
    final = model.state_dict()
    assert len(s.history) == 3 and s.report()["pnn_columns"] == 3  # none added after the last
    for k in range(3):
        keys = _column_keys(s.history[k], k)
        assert any("running_mean" in n for n in keys)  # BatchNorm statistics are covered too
        for n in keys:
            assert torch.equal(final[n], s.history[k][n]), (k, n)
    R = res.accuracy_matrix
    assert R[-1].min() > 0.9
    for j in range(3):
        assert (R[j:, j] == R[j, j]).all()  # testing task j reads frozen columns only
    out = res.to_json()
    json.dumps(out)
    sizes = out["pnn_params_per_column"]
    assert out["params"] == sum(sizes) and sizes[0] < sizes[1] < sizes[2]  # laterals grow


def test_new_column_trains_alone_with_laterals_from_every_frozen_column():
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 6, embed_dim=16, width=8)
    s = PNN()
    mask = torch.zeros(4, 6, dtype=torch.bool)
    for t in range(2):
        s.after_task(model, TaskView(t, (2 * t, 2 * t + 1), mask, lambda: iter(())))
    cols, heads = model.extractor, model.classifier
    assert len(cols.columns) == 3
    (lat,) = cols.laterals[2]  # one lateral per Linear after the first: 6→8→16 has one
    assert (lat.in_features, lat.out_features) == (2 * 8, 16) and lat.bias is None
    assert heads.laterals[2].in_features == 2 * 16
    assert heads.owner.tolist() == [0, 0, 1, 1, -1, -1]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("extractor.columns.2.", "extractor.laterals.2.", "classifier.heads.2.",
                      "classifier.laterals.2."))
        for n in trainable
    )  # fmt: skip
    model.train()
    assert not cols.columns[0].training and not cols.columns[1].training
    assert cols.columns[2].training


def test_forward_is_eq1_of_the_paper_with_linear_laterals():
    """Two columns of a BatchNorm-free mlp against the formula written out by hand."""
    torch.manual_seed(0)
    model = build_model("mlp", (5,), 4, embed_dim=3, width=6, batchnorm=False)
    s = PNN()
    mask = torch.zeros(2, 4, dtype=torch.bool)
    s.after_task(model, TaskView(0, (0, 1), mask, lambda: iter(())))
    c0, c1 = model.extractor.columns
    (u1,) = model.extractor.laterals[1]
    h0, h1 = model.classifier.heads
    uh = model.classifier.laterals[1]
    x = torch.randn(7, 5)
    relu = torch.relu
    a0 = relu(c0[1](x))  # column 0, first hidden layer (Flatten is the identity here)
    b0 = relu(c0[4](a0))
    a1 = relu(c1[1](x))
    b1 = relu(c1[4](a1) + u1(a0))  # h_2^(1) = f(W h_1^(1) + U h_1^(0))
    want = torch.cat([h0(b0)[:, :2], (h1(b1) + uh(b0))[:, 2:]], dim=1)
    torch.testing.assert_close(model(x), want)


@pytest.mark.parametrize(("arch", "shape"), [("cnn", (8, 8)), ("imu-cnn", (16, 3))])
def test_pnn_grows_conv_models_and_learns_task_il(arch, shape):
    rng = np.random.default_rng(0)
    tasks = []
    for t in range(2):
        y = rng.integers(0, 2, 64)
        x = rng.normal(size=(64, *shape)).astype(np.float32)
        x[y == 1] += 1.5  # an easy two-way task
        y = (y + 2 * t).astype(np.int64)
        tasks.append(Task(f"t{t}", x, y, x, y, (2 * t, 2 * t + 1)))
    torch.manual_seed(0)
    model = build_model(arch, shape, 4, embed_dim=8, width=4)
    res = train_tasks(model, tasks, PNN(), _cfg(epochs=5))
    assert res.accuracy_matrix[-1].min() > 0.8
    assert res.accuracy_matrix[1, 0] == res.accuracy_matrix[0, 0]
    assert res.info["pnn_columns"] == 2


def test_pnn_is_registered_and_task_il_only():
    assert STRATEGIES["pnn"] is PNN
    check_scenario(PNN(), "task-il")
    for scenario in ("domain-il", "class-il"):
        with pytest.raises(UnsupportedScenario, match=f"task-il only, not {scenario}: "):
            check_scenario(PNN(), scenario)


def test_cli_refuses_other_scenarios_and_checkpoints_with_exit_2(tmp_path, capsys):
    from edgecl.cli import main

    data = write_image_npz(tmp_path / "d.npz")
    base = ["pretrain", "--data", str(data), "--split-classes", "2", "--strategy", "pnn",
            "--epochs", "1", "--no-progress"]  # fmt: skip
    for scenario in ("class-il", "domain-il"):
        assert main([*base, "--scenario", scenario]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--strategy pnn runs in task-il only" in err[0], err
    out = tmp_path / "m.safetensors"
    assert main([*base, "--scenario", "task-il", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "writes no checkpoint" in err[0] and not out.exists()
    result = tmp_path / "r.json"
    assert main([*base, "--scenario", "task-il", "--json", str(result)]) == 0
    res = json.loads(result.read_text())
    assert res["strategy"] == "pnn" and res["pnn_columns"] == 3 and res["bwt"] == 0.0
