"""Run a streaming learner over a continual-learning stream, once, one sample at a time.

Every training sample is first predicted, then learned — prequential
(test-then-train) evaluation (Dawid 1984; Gama et al. 2013), which is how a
deployed learner meets its data — and both calls are timed with
``time.perf_counter_ns``. At each nominal task end the learner scores every
task's test set, filling the accuracy matrix ``R``; before the first sample it
scores them once more for the baseline ``b`` of forward transfer. Held-out
subjects, when the stream has them, are scored at every task end too.

Task-IL restricts every prediction (prequential and test) to the current
task's labels (:func:`masked_predict`); the timed predict call is then that
masked prediction of one sample.

Each sample goes through the daemon's order: predict, ``observe_one`` (the
learner's unsupervised per-user statistics), ``learn_one``; ``learn_us`` times
observe and learn together, the device's whole per-sample update.

Baselines. A stream ordered by recording is strongly autocorrelated, so the
prequential accuracy alone says little; it is always reported beside three
baselines scored on the very same sample order (``baselines`` in the JSON):
``majority`` (the most frequent label so far), ``repeat_last`` (the previous
sample's label) and ``frozen`` (the learner as it was before the stream,
predicting every training sample without learning: 0 for a fresh learner).

>>> from edgecl import LearnerConfig
>>> from edgecl.eval.datasets import load_dataset
>>> from edgecl.eval.streams import build_stream
>>> stream = build_stream(load_dataset(), "class-il", limit=10)
>>> cfg = LearnerConfig(dim=stream.dim, max_classes=stream.n_classes, head="ncm")
>>> res = run_stream(stream, cfg, progress=False)
>>> res.accuracy_matrix.shape, res.n_train
((4, 4), 40)
>>> sorted(res.to_json())[:4]
['accuracy_matrix', 'avg_accuracy', 'baseline_accuracy', 'baselines']
>>> res.prequential_baselines['frozen']
0.0
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from edgecl.errors import ConfigError
from edgecl.eval import metrics
from edgecl.eval.streams import Stream
from edgecl.learner import LearnerConfig, StreamingLearner

__all__ = ["BASELINES", "EvalResult", "accuracy", "masked_predict", "run_stream"]

# Progress-bar refresh granularity; keeps tqdm's bookkeeping out of the hot loop.
_TICK = 64
# Rows per predict_many call of the frozen baseline: bounds the copy of permuted pixels.
_CHUNK = 8192
#: The prequential baselines, in the order they are printed.
BASELINES = ("majority", "repeat_last", "frozen")


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Everything one pass over a stream measured.

    Attributes
    ----------
    scenario, dataset, head : str
    task_names : tuple of str
    accuracy_matrix : ndarray, shape (T, T)
        ``R[i, j]``: accuracy on task ``j`` after the nominal end of task ``i``.
    baseline : ndarray, shape (T,)
        Accuracy on each task before the stream (0 for an untrained learner).
    correct : ndarray, shape (n_train,), bool
        Prequential outcome of every training sample, in arrival order.
    boundaries : ndarray, shape (T,)
        Samples seen at each nominal task end.
    learn_ns, predict_ns : ndarray, shape (n_train,), int64
        Wall time of every ``learn_one`` / predict call.
    memory : dict
        ``memory_report()`` after the stream.
    seconds : float
        Wall time of the whole run, evaluation included.
    holdout_accuracy : list of float or None
        Accuracy on the held-out subjects after each task (all classes, no mask).
    holdout_name : str or None
    config : dict or None
        The learner's configuration.
    baseline_correct : dict of str to ndarray
        Per-sample outcome of each prequential baseline (:data:`BASELINES`) on
        the same sample order as ``correct``.
    """

    scenario: str
    dataset: str
    head: str
    task_names: tuple[str, ...]
    accuracy_matrix: np.ndarray
    baseline: np.ndarray
    correct: np.ndarray
    boundaries: np.ndarray
    learn_ns: np.ndarray
    predict_ns: np.ndarray
    memory: dict[str, int]
    seconds: float
    holdout_accuracy: list[float] | None = None
    holdout_name: str | None = None
    config: dict[str, Any] | None = None
    baseline_correct: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """Training samples in the stream."""
        return int(self.correct.shape[0])

    @property
    def avg_accuracy(self) -> float:
        return metrics.avg_accuracy(self.accuracy_matrix)

    @property
    def bwt(self) -> float:
        return metrics.bwt(self.accuracy_matrix)

    @property
    def fwt(self) -> float:
        return metrics.fwt(self.accuracy_matrix, self.baseline)

    @property
    def forgetting(self) -> float:
        return metrics.forgetting(self.accuracy_matrix)

    @property
    def prequential_accuracy(self) -> float:
        """Share of training samples predicted right before being learned."""
        return float(self.correct.mean()) if self.correct.size else float("nan")

    @property
    def prequential_baselines(self) -> dict[str, float]:
        """Accuracy of each baseline on the prequential sample order (``nan`` if empty)."""
        return {
            k: float(v.mean()) if v.size else float("nan") for k, v in self.baseline_correct.items()
        }

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the DESIGN §6 eval keys first, then extras.

        Times are in µs; undefined metrics (one task) are ``None``.
        """
        out: dict[str, Any] = {
            "accuracy_matrix": [[_num(v) for v in row] for row in self.accuracy_matrix],
            "avg_accuracy": _num(self.avg_accuracy),
            "bwt": _num(self.bwt),
            "fwt": _num(self.fwt),
            "forgetting": _num(self.forgetting),
            "prequential_accuracy": _num(self.prequential_accuracy),
            "baselines": {k: _num(v) for k, v in self.prequential_baselines.items()},
            "learn_us": _us(self.learn_ns),
            "predict_us": _us(self.predict_ns),
            "state_bytes": int(self.memory.get("state_bytes", 0)),
            "seconds": round(self.seconds, 3),
            "scenario": self.scenario,
            "dataset": self.dataset,
            "head": self.head,
            "tasks": list(self.task_names),
            "n_train": self.n_train,
            "task_ends": [int(b) for b in self.boundaries],
            "baseline_accuracy": [_num(v) for v in self.baseline],
            "holdout": self.holdout_name,
            "holdout_accuracy": (
                None if self.holdout_accuracy is None else [_num(v) for v in self.holdout_accuracy]
            ),
            "memory": {k: int(v) for k, v in self.memory.items()},
            "config": self.config,
        }
        return out


def _num(v: float) -> float | None:
    # JSON has no NaN; None says "undefined" (e.g. BWT of a single task).
    return None if v is None or math.isnan(v) else round(float(v), 6)


def _us(ns: np.ndarray) -> dict[str, float | None]:
    return {k: _num(v) for k, v in metrics.percentiles(np.asarray(ns) / 1e3).items()}


def accuracy(
    learner: StreamingLearner, x: np.ndarray, y: np.ndarray, mask: Sequence[int] | None = None
) -> float:
    """Accuracy of ``learner`` on ``(x, y)``; with ``mask``, argmax over those labels only.

    A -1 prediction (nothing learned yet, or no label of the mask seen) is wrong.
    Empty sets give ``nan``.
    """
    if y.size == 0:
        return float("nan")
    pred = learner.predict_many(x) if mask is None else masked_predict(learner, x, mask)
    return float(np.mean(pred == y))


def masked_predict(learner: StreamingLearner, x: np.ndarray, mask: Sequence[int]) -> np.ndarray:
    """Task-IL prediction: the best-scoring *learned* label of ``mask`` for every row of ``x``.

    The argmax runs over the head's scores (log-probabilities up to a per-row
    constant), not over ``predict_proba_*``: with confident heads the
    probabilities of every label in the mask can underflow to exactly 0 when
    a label outside the mask dominates, and the argmax would be arbitrary.
    Rows get -1 when no label of the mask has been learned yet.
    """
    X = np.atleast_2d(np.asarray(x, dtype=np.float64))
    labels = np.asarray(mask, dtype=np.int64)
    labels = labels[np.isin(labels, learner.classes_)]
    if labels.size == 0:
        return np.full(X.shape[0], -1, dtype=np.int64)
    scores = learner.scores(X)[:, labels]  # after the learner's standardisation
    return labels[np.argmax(scores, axis=1)]  # ties go to the smaller label, like argmax


def run_stream(
    stream: Stream,
    config_or_learner: LearnerConfig | StreamingLearner,
    *,
    progress: bool = True,
) -> EvalResult:
    """One prequential pass over ``stream``; see the module docstring.

    Parameters
    ----------
    stream : Stream
        From :func:`edgecl.eval.streams.build_stream`.
    config_or_learner : LearnerConfig or StreamingLearner
        A config builds a fresh learner; a learner (e.g. pre-trained) is used
        as is and is changed by the run. Its ``dim`` must match the stream and
        ``max_classes`` cover its labels.
    progress : bool
        Show a tqdm bar on stderr (only when stderr is a terminal).

    Returns
    -------
    EvalResult
        With ``baseline_correct`` for :data:`BASELINES`.
    """
    t_start = time.perf_counter()
    if isinstance(config_or_learner, LearnerConfig):
        learner = StreamingLearner(config_or_learner)
    elif isinstance(config_or_learner, StreamingLearner):
        learner = config_or_learner
    else:
        raise TypeError(
            f"run_stream needs a LearnerConfig or StreamingLearner, got {type(config_or_learner)}"
        )
    cfg = learner.config
    if cfg.dim != stream.dim:
        raise ConfigError(f"learner dim = {cfg.dim} but the stream's features have {stream.dim}")
    if cfg.max_classes < stream.n_classes:
        raise ConfigError(
            f"learner max_classes = {cfg.max_classes} but the stream has {stream.n_classes} classes"
        )

    tasks = stream.tasks
    n_tasks = len(tasks)
    frozen = copy.deepcopy(learner)  # the learner before the stream, for the frozen baseline
    tests = [t.test_set() for t in tasks]  # materialised once: permutations cost a copy

    def score_all() -> list[float]:
        return [accuracy(learner, x, y, t.mask) for t, (x, y) in zip(tasks, tests, strict=True)]

    def score_holdout() -> float:
        assert stream.holdout_x is not None and stream.holdout_y is not None
        return accuracy(learner, stream.holdout_x, stream.holdout_y)

    baseline = np.array(score_all())
    R = np.full((n_tasks, n_tasks), np.nan)
    holdout: list[float] | None = [] if stream.holdout_x is not None else None

    n = stream.n_train
    ends = stream.boundaries
    correct = np.zeros(n, dtype=bool)
    learn_ns = np.zeros(n, dtype=np.int64)
    predict_ns = np.zeros(n, dtype=np.int64)
    row = 0
    clock = time.perf_counter_ns
    bar = tqdm(
        total=n,
        desc=f"{stream.scenario} {cfg.head}",
        unit="sample",
        file=sys.stderr,
        disable=not progress or not sys.stderr.isatty(),
        leave=False,
    )
    with bar:
        for k, (x, y, t) in enumerate(stream.samples()):
            mask = tasks[t].mask
            t0 = clock()
            if mask is None:
                pred = learner.predict_one(x)
            else:
                pred = int(masked_predict(learner, x, mask)[0])
            t1 = clock()
            learner.observe_one(x)  # the daemon's order: predict, observe, learn
            learner.learn_one(x, y)
            t2 = clock()
            correct[k] = pred == y
            predict_ns[k] = t1 - t0
            learn_ns[k] = t2 - t1
            # Several tasks can end at one sample only if a task is empty (build_stream forbids).
            while row < n_tasks and k + 1 == ends[row]:
                R[row] = score_all()
                if holdout is not None:
                    holdout.append(score_holdout())
                row += 1
            if (k + 1) % _TICK == 0:
                bar.update(_TICK)
        bar.update(n % _TICK)

    y_order = np.array([tasks[t].y_train[i] for t, i in stream.schedule.tolist()], dtype=np.int64)
    baselines = {
        "majority": metrics.prequential_majority(y_order),
        "repeat_last": metrics.prequential_repeat_last(y_order),
        "frozen": _frozen_predictions(frozen, stream) == y_order,
    }
    return EvalResult(
        scenario=stream.scenario,
        dataset=stream.dataset,
        head=cfg.head,
        task_names=tuple(t.name for t in tasks),
        accuracy_matrix=R,
        baseline=baseline,
        correct=correct,
        boundaries=ends,
        learn_ns=learn_ns,
        predict_ns=predict_ns,
        memory=dict(learner.memory_report()),
        seconds=time.perf_counter() - t_start,
        holdout_accuracy=holdout,
        holdout_name=stream.holdout_name,
        config=cfg.to_dict(),
        baseline_correct=baselines,
    )


def _frozen_predictions(learner: StreamingLearner, stream: Stream) -> np.ndarray:
    """Predictions of ``learner`` (never updated) for every training sample, in arrival order.

    Batched per task (the task-IL mask is per task) in chunks of :data:`_CHUNK`
    rows: the same predictions as one ``predict_many`` call over all the
    stream's samples, without materialising a permuted copy of all of them.
    """
    per_task = []
    for task in stream.tasks:
        pred = np.empty(task.n_train, dtype=np.int64)
        for lo in range(0, task.n_train, _CHUNK):
            x = task.x_train[lo : lo + _CHUNK]
            if task.permutation is not None:
                x = x[:, task.permutation]
            if task.mask is None:
                pred[lo : lo + _CHUNK] = learner.predict_many(x)
            else:
                pred[lo : lo + _CHUNK] = masked_predict(learner, x, task.mask)
        per_task.append(pred)
    return np.array([per_task[t][i] for t, i in stream.schedule.tolist()], dtype=np.int64)
