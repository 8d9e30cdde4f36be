"""The prequential runner, its JSON, and the plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import EVAL_KEYS

from edgecl import LearnerConfig, StreamingLearner
from edgecl.errors import ConfigError
from edgecl.eval import accuracy, build_stream, load_dataset, run_stream
from edgecl.eval.plots import plot_result, running_mean
from edgecl.eval.runner import masked_predict


@pytest.fixture(scope="module")
def imu():
    return load_dataset()


def config(stream, head="slda", **kw) -> LearnerConfig:
    return LearnerConfig(
        dim=stream.dim, max_classes=stream.n_classes, head=head, budget_bytes=2_000_000, **kw
    )


def test_class_il_result_and_json(imu):
    stream = build_stream(imu, "class-il", limit=25)
    res = run_stream(stream, config(stream, "ncm"), progress=False)
    T = len(stream.tasks)
    R = res.accuracy_matrix
    assert R.shape == (T, T) and np.all((R >= 0) & (R <= 1))
    # Class-IL: a task's classes are unknown before it is learned, so NCM scores 0 there.
    assert np.all(R[np.triu_indices(T, 1)] == 0.0)
    assert np.all(res.baseline == 0.0) and res.fwt == 0.0
    assert res.n_train == 100 and res.boundaries.tolist() == [25, 50, 75, 100]
    assert not res.correct[0]  # the untrained learner answers -1
    assert res.learn_ns.shape == res.predict_ns.shape == (100,)
    assert len(res.holdout_accuracy) == T

    out = res.to_json()
    assert EVAL_KEYS <= set(out)
    assert set(out["learn_us"]) == set(out["predict_us"]) == {"p50", "p99"}
    assert out["state_bytes"] == res.memory["state_bytes"] <= out["memory"]["budget_bytes"]
    assert out["scenario"] == "class-il" and out["head"] == "ncm" and out["n_train"] == 100
    assert out["tasks"] == ["PEN+ABD", "FEL+IR", "ER+TRAP", "ROW"]
    assert out["config"]["dim"] == 72
    json.dumps(out, allow_nan=False)  # strictly valid JSON: no NaN


def test_accuracy_rows_match_a_batch_reference(imu):
    # Row i of R must equal a fresh learner fed the first i+1 tasks in one batch.
    stream = build_stream(imu, "class-il", limit=30)
    res = run_stream(stream, config(stream, "ncm"), progress=False)
    ref = StreamingLearner(config(stream, "ncm"))
    for i, task in enumerate(stream.tasks):
        ref.learn_many(*task.train_set())
        expected = [accuracy(ref, *t.test_set()) for t in stream.tasks]
        np.testing.assert_allclose(res.accuracy_matrix[i], expected)


def test_task_il_masks_predictions(imu):
    stream = build_stream(imu, "task-il", limit=20)
    res = run_stream(stream, config(stream, "slda"), progress=False)
    # The last task has a single class: within its mask every answer is right.
    assert res.accuracy_matrix[-1, -1] == 1.0
    # Masked accuracy beats class-IL accuracy on the same tasks.
    plain = run_stream(build_stream(imu, "class-il", limit=20), config(stream), progress=False)
    assert res.avg_accuracy >= plain.avg_accuracy


def test_masked_predict(imu):
    stream = build_stream(imu, "task-il", limit=20)
    lr = StreamingLearner(config(stream))
    lr.learn_many(*stream.tasks[0].train_set())
    lr.learn_many(*stream.tasks[1].train_set())
    x, y = stream.tasks[1].test_set()
    mask = stream.tasks[1].mask
    pred = masked_predict(lr, x, mask)
    assert set(pred.tolist()) <= set(mask)
    # A mask holding every learned class changes nothing.
    np.testing.assert_array_equal(masked_predict(lr, x, range(7)), lr.predict_many(x))
    # Where the probabilities are not all underflowed, it is the masked argmax of them.
    proba = lr.predict_proba_many(x)[:, list(mask)]
    ok = proba.max(axis=1) > 1e-300
    assert ok.any()
    np.testing.assert_array_equal(pred[ok], np.array(mask)[np.argmax(proba[ok], axis=1)])
    assert accuracy(lr, x, y, mask) == pytest.approx(np.mean(pred == y))
    # A mask of classes never learned gives -1 everywhere: accuracy 0.
    x3, y3 = stream.tasks[3].test_set()
    assert masked_predict(lr, x3, stream.tasks[3].mask).tolist() == [-1] * y3.size
    assert accuracy(lr, x3, y3, stream.tasks[3].mask) == 0.0


def test_domain_il_has_forward_transfer(imu):
    stream = build_stream(imu, "domain-il", limit=40)
    res = run_stream(stream, config(stream, "slda"), progress=False)
    assert res.fwt > 0.2  # subjects share the exercises: earlier users help a new one
    assert res.holdout_name == "subjects 6, 7" and len(res.holdout_accuracy) == 5


def test_same_config_same_result(imu):
    stream = build_stream(imu, "task-free", limit=20, seed=2)
    a = run_stream(stream, config(stream, "softmax"), progress=False)
    b = run_stream(stream, config(stream, "softmax"), progress=False)
    np.testing.assert_array_equal(a.accuracy_matrix, b.accuracy_matrix)
    np.testing.assert_array_equal(a.correct, b.correct)


def test_pretrained_learner_sets_the_baseline(imu):
    stream = build_stream(imu, "domain-il", limit=20)
    lr = StreamingLearner(config(stream, "ncm"))
    lr.learn_many(stream.holdout_x, stream.holdout_y)
    res = run_stream(stream, lr, progress=False)
    assert res.baseline.min() > 0.0
    assert res.memory["n_learned"] == stream.holdout_y.size + res.n_train


def test_learner_must_fit_the_stream(imu):
    stream = build_stream(imu, "class-il", limit=5)
    with pytest.raises(ConfigError, match="dim"):
        run_stream(stream, LearnerConfig(dim=3, max_classes=7, head="ncm"), progress=False)
    with pytest.raises(ConfigError, match="max_classes"):
        run_stream(stream, LearnerConfig(dim=72, max_classes=3, head="ncm"), progress=False)
    with pytest.raises(TypeError):
        run_stream(stream, {"dim": 72}, progress=False)


def test_single_task_metrics_are_null(imu):
    stream = build_stream(imu, "class-il", n_tasks=1, limit=10)
    out = run_stream(stream, config(stream, "ncm"), progress=False).to_json()
    assert out["bwt"] is None and out["fwt"] is None and out["forgetting"] is None
    assert out["avg_accuracy"] is not None


def test_running_mean():
    np.testing.assert_allclose(running_mean(np.ones(5), 3), np.ones(5))
    np.testing.assert_allclose(running_mean(np.array([0, 1, 1, 0.0]), 2), [0, 0.5, 1, 0.5])
    with pytest.raises(ValueError):
        running_mean(np.ones(3), 0)


def test_plot_writes_a_png(imu, tmp_path):
    pytest.importorskip("matplotlib")
    stream = build_stream(imu, "domain-il", limit=10)
    res = run_stream(stream, config(stream, "ncm"), progress=False)
    out = plot_result(res, tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
