"""Conformance checks every learner configuration must pass (river's ``check_estimator`` idea).

:func:`yield_checks` yields plain functions ``check(cfg, tmp_dir)`` that raise
``AssertionError`` on a violation. The test suite runs every check on every head
configuration, so a new head is covered without writing a new test::

    for check in yield_checks():
        check(LearnerConfig(dim=6, max_classes=5, head="ncm", budget_bytes=60_000), tmp)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edgecl.errors import InputError
from edgecl.learner.config import LearnerConfig
from edgecl.learner.learner import StreamingLearner, plan_budget
from edgecl.learner.state import state_bytes

__all__ = ["blobs", "yield_checks"]

Check = Callable[[LearnerConfig, Path], None]


def blobs(
    cfg: LearnerConfig, n: int = 240, seed: int = 1, spread: float = 0.3, classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A class-incremental stream of Gaussian blobs: labels arrive in sorted blocks."""
    rng = np.random.default_rng(seed)
    k = min(classes or 4, cfg.max_classes)
    centres = rng.normal(0.0, 1.0, (k, cfg.dim)) * 2.0
    y = np.sort(rng.integers(0, k, n))
    X = centres[y] + spread * rng.normal(size=(n, cfg.dim))
    return X, y


def _trained(cfg: LearnerConfig, n: int = 240) -> StreamingLearner:
    lr = StreamingLearner(cfg)
    X, y = blobs(cfg, n)
    lr.learn_many(X, y)
    return lr


def check_predict_before_learning(cfg: LearnerConfig, tmp: Path) -> None:
    lr = StreamingLearner(cfg)
    x = np.zeros(cfg.dim)
    assert lr.predict_one(x) == -1
    assert lr.predict_proba_one(x) == {}
    assert (lr.predict_many(np.zeros((3, cfg.dim))) == -1).all()


def check_input_not_mutated(cfg: LearnerConfig, tmp: Path) -> None:
    lr = StreamingLearner(cfg)
    X, y = blobs(cfg, 40)
    X0, y0 = X.copy(), y.copy()
    lr.learn_many(X, y)
    lr.learn_one(X[0], int(y[0]))
    lr.predict_many(X)
    lr.predict_proba_one(X[1])
    assert np.array_equal(X, X0) and np.array_equal(y, y0)


def check_same_seed_same_state(cfg: LearnerConfig, tmp: Path) -> None:
    a, b = _trained(cfg), _trained(cfg)
    assert state_bytes(a) == state_bytes(b), "same config + seed + stream must give the same bytes"


def check_roundtrip(cfg: LearnerConfig, tmp: Path) -> None:
    lr = _trained(cfg)
    path = tmp / f"{cfg.head}-roundtrip.safetensors"
    lr.save(path)
    back = StreamingLearner.load(path)
    assert state_bytes(back) == state_bytes(lr) == path.read_bytes()
    X, y = blobs(cfg, 60, seed=7)
    assert np.array_equal(back.predict_many(X), lr.predict_many(X))
    # Both keep learning identically after the round trip.
    lr.learn_many(X, y)
    back.learn_many(X, y)
    assert state_bytes(back) == state_bytes(lr)


def check_bad_input_leaves_state(cfg: LearnerConfig, tmp: Path) -> None:
    lr = _trained(cfg, 60)
    before = state_bytes(lr)
    x = np.zeros(cfg.dim)
    nan, inf = x.copy(), x.copy()
    nan[0], inf[-1] = np.nan, np.inf
    bad_one = [
        (np.zeros(cfg.dim + 1), 0),
        (np.zeros((1, cfg.dim)), 0),
        (nan, 0),
        (inf, 0),
        (x, -1),
        (x, cfg.max_classes),
        (x, 1.0),
        (x, True),
        (x, "1"),
        (["a"] * cfg.dim, 0),
    ]
    for bx, by in bad_one:
        try:
            lr.learn_one(bx, by)
        except InputError:
            pass
        else:
            raise AssertionError(f"learn_one accepted bad input (label {by!r})")
    X, y = blobs(cfg, 5)
    X[3, 0] = np.nan
    bad_many = [(X, y), (X[:, :-1], y), (blobs(cfg, 5)[0], y[:4]), (blobs(cfg, 5)[0], y + 1000)]
    for bX, bY in bad_many:
        try:
            lr.learn_many(bX, bY)
        except InputError:
            pass
        else:
            raise AssertionError("learn_many accepted a bad batch")
    for bx in (nan, np.zeros(cfg.dim + 1)):
        for fn in (lr.predict_one, lr.predict_proba_one):
            try:
                fn(bx)
            except InputError:
                pass
            else:
                raise AssertionError(f"{fn.__name__} accepted bad input")
    assert state_bytes(lr) == before, "rejected input changed the learner"


def check_learn_many_equals_loop(cfg: LearnerConfig, tmp: Path) -> None:
    X, y = blobs(cfg, 120)
    a, b = StreamingLearner(cfg), StreamingLearner(cfg)
    a.learn_many(X, y)
    for xi, yi in zip(X, y, strict=True):
        b.learn_one(xi, int(yi))
    assert state_bytes(a) == state_bytes(b)


def check_predict_many_equals_loop(cfg: LearnerConfig, tmp: Path) -> None:
    lr = _trained(cfg)
    X, _ = blobs(cfg, 50, seed=3)
    many = lr.predict_many(X)
    one = np.array([lr.predict_one(x) for x in X])
    assert np.array_equal(many, one)
    for x, p in zip(X[:10], many[:10], strict=True):
        proba = lr.predict_proba_one(x)
        assert abs(sum(proba.values()) - 1.0) < 1e-9
        assert max(proba, key=proba.get) == p


def check_memory_within_budget(cfg: LearnerConfig, tmp: Path) -> None:
    lr = _trained(cfg)
    rep = lr.memory_report()
    plan = plan_budget(cfg)
    assert rep["state_bytes"] <= cfg.budget_bytes
    assert rep["state_bytes"] == plan["state_bytes"], (rep, plan)
    assert rep["buffer_len"] <= rep["buffer_capacity"] == plan["buffer_capacity"]
    parts = rep["head_bytes"] + rep["fisher_bytes"] + rep["buffer_bytes"] + rep["user_bytes"]
    assert parts == rep["state_bytes"]
    if cfg.head != "softmax":
        assert rep["buffer_capacity"] == rep["buffer_bytes"] == rep["fisher_bytes"] == 0


def check_new_class_any_time(cfg: LearnerConfig, tmp: Path) -> None:
    lr = StreamingLearner(cfg)
    X, _ = blobs(cfg, 30)
    last = cfg.max_classes - 1
    lr.learn_one(X[0], last)
    assert lr.predict_one(X[1]) == last
    assert list(lr.predict_proba_one(X[1])) == [last]
    lr.learn_one(X[2], 0)
    assert set(lr.predict_proba_one(X[1])) == {0, last}
    assert lr.classes_.tolist() == [0, last]


def check_learns_separable(cfg: LearnerConfig, tmp: Path) -> None:
    lr = _trained(cfg, 400)
    X, y = blobs(cfg, 200, seed=1)  # same centres (seed), fresh noise via the tail
    acc = float((lr.predict_many(X) == y).mean())
    assert acc >= 0.9, f"accuracy {acc:.3f} on well-separated blobs"


_CHECKS: tuple[Check, ...] = (
    check_predict_before_learning,
    check_input_not_mutated,
    check_same_seed_same_state,
    check_roundtrip,
    check_bad_input_leaves_state,
    check_learn_many_equals_loop,
    check_predict_many_equals_loop,
    check_memory_within_budget,
    check_new_class_any_time,
    check_learns_separable,
)


def yield_checks() -> Iterator[Check]:
    """Every conformance check, in a stable order."""
    yield from _CHECKS
