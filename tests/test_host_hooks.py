"""The training loop's strategy hooks: before_step, eval_model, report, scenarios."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from test_host_strategies import _tasks  # noqa: E402

from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.strategies import Strategy, UnsupportedScenario, check_scenario  # noqa: E402
from edgecl.host.train import TrainConfig, train_tasks  # noqa: E402


class _Frozen(Strategy):
    """Zeroes every gradient before the step and counts what the loop asks of it."""

    name = "frozen-test"
    scenarios = ("task-il", "class-il")
    scenario_reason = "a test"

    def __init__(self):
        self.steps = 0
        self.evaluated: list[int] = []

    def before_step(self, model):
        self.steps += 1
        for p in model.parameters():
            if p.grad is not None:
                p.grad.zero_()

    def eval_model(self, model, task):
        self.evaluated.append(task)
        return model

    def report(self):
        return {"generator_params": 0, "steps_seen": self.steps}


def test_before_step_runs_before_the_optimiser_and_eval_model_per_task():
    tasks = _tasks("class-il")
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 6, embed_dim=16, width=16, batchnorm=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, optimizer="sgd", scenario="class-il",
                      seed=0, device="cpu", progress=False)  # fmt: skip
    s = _Frozen()
    res = train_tasks(model, tasks, s, cfg)
    # SGD with momentum on zero gradients: no parameter moved.
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert s.steps > 0
    assert s.evaluated == list(range(len(tasks))) * (len(tasks) + 1)  # baseline + each row
    assert res.info["steps_seen"] == s.steps and res.info["generator_params"] == 0
    assert res.info["params"] == sum(p.numel() for p in model.parameters())
    assert res.info["buffer_bytes"] == 0


def test_unsupported_scenario_is_one_line():
    check_scenario(_Frozen(), "task-il")
    with pytest.raises(UnsupportedScenario, match="runs in task-il, class-il only, not domain-il"):
        check_scenario(_Frozen(), "domain-il")
