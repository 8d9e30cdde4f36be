"""Prequential baselines: majority, repeat-last and frozen, beside every prequential figure."""

from __future__ import annotations

import copy
import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, StreamingLearner
from edgecl.cli import main
from edgecl.eval import build_stream, load_dataset, run_stream
from edgecl.eval.datasets import Dataset
from edgecl.eval.metrics import prequential_majority, prequential_repeat_last
from edgecl.eval.runner import BASELINES, masked_predict

F, T = False, True


def vector_dataset(y: np.ndarray, dim: int = 4, seed: int = 0) -> Dataset:
    """A tiny non-image dataset whose class c sits near c on every axis (learnable)."""
    rng = np.random.default_rng(seed)
    x = (y[:, None] + 0.1 * rng.standard_normal((y.size, dim))).astype(np.float32)
    names = tuple(str(c) for c in range(int(y.max()) + 1))
    return Dataset(
        name="toy",
        x=x,
        y=y.astype(np.int64),
        x_test=x,
        y_test=y.astype(np.int64),
        subject=None,
        recording=None,
        class_names=names,
        feature_names=tuple(f"f{i}" for i in range(dim)),
        is_image=True,  # no z-scoring: keeps the toy features as they are
    )


def arrival_labels(stream) -> np.ndarray:
    return np.array([y for _, y, _ in stream.samples()], dtype=np.int64)


def brute_majority(y: list[int]) -> list[bool]:
    out = []
    for k, label in enumerate(y):
        seen = Counter(y[:k])
        if not seen:
            out.append(False)
            continue
        top = max(seen.values())
        out.append(label == min(c for c, n in seen.items() if n == top))
    return out


def test_majority_and_repeat_last_on_known_sequences():
    y = [0, 1, 1, 0, 0, 2, 2, 2, 2]
    # Majority before each sample: none, 0, 0 (tie 0/1), 1, 0 (tie 0/1), 0, 0, 0, 0 (tie 0/2).
    assert prequential_majority(y).tolist() == [F, F, F, F, T, F, F, F, F]
    assert prequential_repeat_last(y).tolist() == [F, F, T, F, T, F, T, T, T]
    assert prequential_majority([]).size == prequential_repeat_last([]).size == 0
    const = [3] * 50
    assert prequential_repeat_last(const).tolist() == [False] + [True] * 49
    assert prequential_majority(const).tolist() == [False] + [True] * 49


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), max_size=40))
def test_majority_matches_a_brute_force_reference(y):
    assert prequential_majority(y).tolist() == brute_majority(y)
    expected = [k > 0 and y[k] == y[k - 1] for k in range(len(y))]
    assert prequential_repeat_last(y).tolist() == expected


def test_constant_label_stream_repeat_last_is_perfect_after_the_first():
    n = 40
    ds = vector_dataset(np.zeros(n, dtype=np.int64))
    stream = build_stream(ds, "class-il")
    res = run_stream(stream, LearnerConfig(dim=4, max_classes=2, head="ncm"), progress=False)
    b = res.prequential_baselines
    assert set(b) == set(BASELINES)
    # The first sample has no previous label: every later one repeats it.
    assert b["repeat_last"] == b["majority"] == (n - 1) / n
    assert b["frozen"] == 0.0  # a fresh learner predicts -1
    assert res.baseline_correct["repeat_last"].tolist() == [False] + [True] * (n - 1)
    out = res.to_json()
    assert out["baselines"] == {"majority": 0.975, "repeat_last": 0.975, "frozen": 0.0}


def test_baselines_follow_the_arrival_order():
    imu = load_dataset()
    stream = build_stream(imu, "task-free", limit=30, seed=2)
    cfg = LearnerConfig(dim=stream.dim, max_classes=stream.n_classes, head="ncm")
    res = run_stream(stream, cfg, progress=False)
    y = arrival_labels(stream)
    assert res.baseline_correct["majority"].tolist() == brute_majority(y.tolist())
    assert np.array_equal(res.baseline_correct["repeat_last"], prequential_repeat_last(y))
    assert res.prequential_baselines["frozen"] == 0.0
    json.dumps(res.to_json(), allow_nan=False)


@pytest.mark.parametrize("scenario", ["class-il", "task-il"])
def test_frozen_baseline_of_a_pretrained_learner(scenario):
    imu = load_dataset()
    stream = build_stream(imu, scenario, limit=25)
    cfg = LearnerConfig(dim=stream.dim, max_classes=stream.n_classes, head="slda")
    learner = StreamingLearner(cfg)
    first = stream.tasks[0]
    learner.learn_many(*first.train_set())
    before = copy.deepcopy(learner)
    res = run_stream(stream, learner, progress=False)
    # Reference: the learner as it was before the stream, every sample, no learning.
    X = np.stack([x for x, _, _ in stream.samples()])
    tasks = [t for _, _, t in stream.samples()]
    if scenario == "task-il":
        masks = [stream.tasks[t].mask for t in tasks]
        pred = [int(masked_predict(before, x, m)[0]) for x, m in zip(X, masks, strict=True)]
    else:
        pred = before.predict_many(X).tolist()
    expected = np.asarray(pred) == arrival_labels(stream)
    assert np.array_equal(res.baseline_correct["frozen"], expected)
    # Pre-trained on the first task only: it knows that task's classes and nothing else.
    assert 0.0 < res.prequential_baselines["frozen"] < 1.0
    # The learner passed in was the one that learned; the frozen copy was not.
    assert not np.array_equal(learner.predict_many(X), before.predict_many(X))


def test_run_stream_observes_each_sample_between_predict_and_learn(monkeypatch):
    calls: list[str] = []
    for name in ("predict_one", "observe_one", "learn_one"):
        orig = getattr(StreamingLearner, name)

        def spy(self, *a, _orig=orig, _name=name, **kw):
            calls.append(_name)
            return _orig(self, *a, **kw)

        monkeypatch.setattr(StreamingLearner, name, spy)
    ds = vector_dataset(np.arange(12) % 3)
    stream = build_stream(ds, "class-il", classes_per_task=3)
    run_stream(stream, LearnerConfig(dim=4, max_classes=3, head="ncm"), progress=False)
    assert calls == ["predict_one", "observe_one", "learn_one"] * 12


def test_summary_prints_the_baselines_beside_prequential(capsys):
    assert main(["eval", "--limit", "10", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    i = next(k for k, line in enumerate(out) if line.startswith("prequential_accuracy"))
    assert [line.split()[0] for line in out[i + 1 : i + 4]] == list(BASELINES)
    assert all("baseline:" in line for line in out[i + 1 : i + 4])
    assert main(["eval", "--limit", "10", "--no-progress", "--json", "-"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["baselines"]) == set(BASELINES) and r["baselines"]["frozen"] == 0.0
