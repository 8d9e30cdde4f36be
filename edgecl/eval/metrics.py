"""Continual-learning metrics from an accuracy matrix (DESIGN §8).

``R[i, j]`` is the accuracy on task ``j`` after learning tasks ``0..i``; ``b[j]``
the accuracy on task ``j`` of the learner before the stream (an untrained
learner predicts nothing, so 0). With ``T`` tasks:

* average accuracy ``mean_j R[T-1, j]``;
* backward transfer (Lopez-Paz & Ranzato 2017) ``mean_{j<T-1} R[T-1, j] − R[j, j]``
  — negative when learning later tasks hurt earlier ones;
* forward transfer (same paper) ``mean_{j>0} R[j-1, j] − b[j]`` — what earlier
  tasks give a task before it is trained on;
* forgetting (Chaudhry et al. 2018, RWalk) ``mean_{j<T-1} max_{i<T-1} R[i, j] − R[T-1, j]``.
  The last task is left out: it cannot have been forgotten yet, and counting
  its zero would dilute the mean. The max runs over every earlier row, as in
  the paper; for a task learned at row ``j`` the rows ``i < j`` rarely matter.

A metric over an empty set (a single task) is ``nan``; the runner writes it as
JSON ``null``.

Prequential baselines. A recording-ordered stream is strongly autocorrelated:
neighbouring windows almost always share a label, so "say the last label
again" scores far above chance without learning anything. Every prequential
figure is therefore reported beside :func:`prequential_majority` (the most
frequent label so far) and :func:`prequential_repeat_last` (the previous
label), both computed on the very same label order.

>>> import numpy as np
>>> R = np.array([[0.9, 0.1], [0.6, 0.8]])
>>> avg_accuracy(R), bwt(R), fwt(R, np.zeros(2)), forgetting(R)
(0.7, -0.3, 0.1, 0.3)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "avg_accuracy",
    "bwt",
    "forgetting",
    "fwt",
    "percentiles",
    "prequential_majority",
    "prequential_repeat_last",
]


def _matrix(R: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    m = np.asarray(R, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square (T, T) with T >= 1, got {m.shape}")
    return m


def avg_accuracy(R: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Mean accuracy over all tasks after the last one: ``mean_j R[T-1, j]``.

    >>> avg_accuracy([[1.0, 0.0], [0.5, 1.0]])
    0.75
    """
    m = _matrix(R)
    return round(float(m[-1].mean()), 12)


def bwt(R: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Backward transfer ``mean_{j<T-1} (R[T-1, j] − R[j, j])``; < 0 means forgetting.

    >>> bwt([[1.0, 0.0], [0.5, 1.0]])
    -0.5
    >>> bwt([[0.5, 0.0], [0.7, 1.0]])   # learning task 1 helped task 0
    0.2
    >>> bwt([[1.0]])
    nan
    """
    m = _matrix(R)
    t = m.shape[0]
    if t < 2:
        return float("nan")
    j = np.arange(t - 1)
    return round(float((m[-1, j] - m[j, j]).mean()), 12)


def fwt(R: np.ndarray | Sequence[Sequence[float]], baseline: Sequence[float]) -> float:
    """Forward transfer ``mean_{j>0} (R[j-1, j] − b[j])``.

    >>> fwt([[0.9, 0.6], [0.8, 0.9]], [0.5, 0.5])   # task 0 helped task 1 before its turn
    0.1
    >>> fwt([[1.0]], [0.0])
    nan
    """
    m = _matrix(R)
    b = np.asarray(baseline, dtype=np.float64)
    t = m.shape[0]
    if b.shape != (t,):
        raise ValueError(f"baseline must have shape ({t},), got {b.shape}")
    if t < 2:
        return float("nan")
    j = np.arange(1, t)
    return round(float((m[j - 1, j] - b[j]).mean()), 12)


def forgetting(R: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Average forgetting ``mean_{j<T-1} max_{i<T-1} (R[i, j] − R[T-1, j])``.

    Negative when every earlier task ended above its best earlier score.

    >>> forgetting([[0.9, 0.0, 0.0], [0.7, 0.8, 0.0], [0.6, 0.8, 0.9]])
    0.15
    >>> forgetting([[0.5, 0.0], [0.7, 1.0]])   # improved: negative forgetting
    -0.2
    """
    m = _matrix(R)
    t = m.shape[0]
    if t < 2:
        return float("nan")
    best = m[: t - 1, : t - 1].max(axis=0)
    return round(float((best - m[-1, : t - 1]).mean()), 12)


def percentiles(values: Sequence[float] | np.ndarray, qs: Sequence[int] = (50, 99)) -> dict:
    """``{"p50": ..., "p99": ...}`` of ``values`` (linear interpolation); ``nan`` if empty.

    >>> percentiles([1, 2, 3, 4, 100])
    {'p50': 3.0, 'p99': 96.16}
    >>> percentiles([1.0, 2.0], qs=(50, 95, 99))
    {'p50': 1.5, 'p95': 1.95, 'p99': 1.99}
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    out = np.percentile(v, list(qs))
    return {f"p{q}": round(float(p), 6) for q, p in zip(qs, out, strict=True)}


def prequential_majority(y: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-sample outcome of predicting, before each label, the most frequent label so far.

    Ties go to the smallest label; before any label the prediction is wrong.

    >>> prequential_majority([2, 2, 1, 1, 1, 2]).tolist()
    [False, True, False, False, True, False]
    """
    labels = np.asarray(y, dtype=np.int64).ravel()
    out = np.zeros(labels.size, dtype=bool)
    counts: dict[int, int] = {}
    best = None
    for k, label in enumerate(labels.tolist()):
        out[k] = label == best
        c = counts.get(label, 0) + 1
        counts[label] = c
        # Only the label just counted can overtake the leader.
        if best is None or c > counts[best] or (c == counts[best] and label < best):
            best = label
    return out


def prequential_repeat_last(y: Sequence[int] | np.ndarray) -> np.ndarray:
    """Per-sample outcome of predicting the previous sample's label (the first is wrong).

    >>> prequential_repeat_last([3, 3, 1, 1, 3]).tolist()
    [False, True, False, True, False]
    """
    labels = np.asarray(y, dtype=np.int64).ravel()
    out = np.zeros(labels.size, dtype=bool)
    out[1:] = labels[1:] == labels[:-1]
    return out
