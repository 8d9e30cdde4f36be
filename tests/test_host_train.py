"""The training loop: config validation, devices, autocast path, task-IL evaluation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from host_helpers import blobs  # noqa: E402

from edgecl.errors import ConfigError  # noqa: E402
from edgecl.host.data import Task  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.strategies import make_strategy  # noqa: E402
from edgecl.host.train import TrainConfig, evaluate, resolve_device, train_tasks  # noqa: E402


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("batch_size", 1.5),
        ("lr", -1.0),
        ("scenario", "task-free"),
        ("bn_policy", "eval"),
        ("optimizer", "lbfgs"),
        ("device", "tpu"),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_cuda_request_without_cuda_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_device("cuda")
    assert resolve_device(None).type == "cpu"


def _task():
    x, y = blobs(3, 30, 6)
    return Task("t", x, y, x, y, (0, 1, 2))


def test_autocast_path_trains_on_cpu_in_bfloat16():
    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, embed_dim=16, width=16)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=0.01, device="cpu", amp=True, progress=False)
    res = train_tasks(model, [_task()], make_strategy("naive"), cfg)
    assert res.accuracy_matrix[0, 0] > 0.8
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_evaluate_restricts_predictions_to_the_given_classes():
    model = torch.nn.Linear(2, 3)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([5.0, 1.0, 0.0]))  # always predicts class 0
    x = np.zeros((4, 2), np.float32)
    y = np.array([1, 1, 2, 2])
    assert evaluate(model, x, y, torch.device("cpu")) == 0.0
    assert evaluate(model, x, y, torch.device("cpu"), classes=(1, 2)) == 0.5


def test_training_leaves_the_model_in_eval_mode_with_timings():
    model = build_model("mlp", (6,), 3, embed_dim=8, width=8)
    cfg = TrainConfig(epochs=1, batch_size=16, device="cpu", progress=False)
    res = train_tasks(model, [_task()], make_strategy("naive"), cfg)
    assert not model.training
    assert len(res.learn_us) == 6 and (res.learn_us > 0).all()  # 90 samples / 16 per step
    assert res.state_bytes >= sum(p.numel() * 4 for p in model.parameters())
