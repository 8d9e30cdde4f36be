"""Every strategy flag of ``edgecl pretrain`` reaches the strategy object it is meant for."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from host_helpers import write_image_npz  # noqa: E402

import edgecl.host.pretrain as host_pretrain  # noqa: E402
from edgecl.cli import main  # noqa: E402
from edgecl.commands import pretrain as cli  # noqa: E402
from edgecl.host.strategies.feature_distill import DISTANCES  # noqa: E402

CASES = [
    ("feature-distill", ["--feature-distance", "cosine"], {"feature_distance": "cosine"}),
    ("dgr", ["--replay-weight", "0.5", "--replay-batch", "7", "--vae-hidden", "12",
             "--vae-lr", "0.01", "--temperature", "3", "--vae-epochs", "1", "--vae-latent", "3"],
     {"replay_weight": 0.5, "replay_batch": 7, "vae_hidden": 12, "vae_lr": 0.01,
      "temperature": 3.0, "vae_epochs": 1, "vae_latent": 3}),
    ("replay", ["--replay-batch", "5", "--buffer-size", "20"], {"replay_batch": 5}),
    ("lwf", ["--lwf-temperature", "4"], {"temperature": 4.0}),  # the older spelling
    ("lwf", ["--temperature", "5"], {"temperature": 5.0}),
    ("online-ewc", ["--fisher-decay", "0.5", "--fisher-batches", "2"], {"fisher_decay": 0.5}),
    ("kfac-ewc", ["--fisher-decay", "0.25", "--fisher-batches", "2"], {"fisher_decay": 0.25}),
]  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # --threads 1 below sets the process-wide count
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(("name", "flags", "expected"), CASES, ids=[" ".join(c[1]) for c in CASES])
def test_flag_reaches_the_strategy(tmp_path, monkeypatch, name, flags, expected):
    built = []
    make = host_pretrain.make_strategy

    def recording(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(host_pretrain, "make_strategy", recording)
    data = write_image_npz(tmp_path / "d.npz", n_classes=4, per_class=20)
    argv = ["pretrain", "--data", str(data), "--split-classes", "2", "--strategy", name,
            "--epochs", "1", "--batch-size", "20", "--threads", "1", "--no-progress",
            "--json", "-", *flags]  # fmt: skip
    assert main(argv) == 0
    (strategy,) = built
    assert strategy.name == name
    for attr, value in expected.items():
        assert getattr(strategy, attr) == value, attr


def test_feature_distance_choices_match_the_strategy():
    assert cli._FEATURE_DISTANCES == DISTANCES
