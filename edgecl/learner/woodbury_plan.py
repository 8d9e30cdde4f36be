"""When the Woodbury SLDA head is used, and how its fold is cut into per-call steps.

* :func:`large_dim_options` — the LearnerConfig fields export, eval and run give an
  SLDA head from :data:`WOODBURY_MIN_DIM` dimensions on (Woodbury updates, float32).
* :func:`fold_plan` — the row panels of one fold of a queued block into the
  precision, cut so every ``learn_one`` call does about the same work
  (:class:`~edgecl.learner.slda_woodbury.WoodburySLDAHead`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["WOODBURY_MIN_DIM", "fold_plan", "large_dim_options"]

# Fewest rows in a panel: thinner GEMMs waste more than spreading gains.
_MIN_ROWS = 8
#: From this embedding length on, an SLDA head made by export, eval or run defaults to the
#: Woodbury update in float32 (the lazy head's O(d³) refresh costs ~40 ms at d = 784).
WOODBURY_MIN_DIM = 512


def large_dim_options(head: str, dim: int) -> dict[str, Any]:
    """LearnerConfig fields for an SLDA head of ``dim`` made without explicit settings.

    >>> large_dim_options("slda", 2048)
    {'slda_update': 'woodbury', 'slda_dtype': 'float32', 'slda_batch': 64}
    >>> large_dim_options("slda", 64), large_dim_options("ncm", 4096)
    ({}, {})
    """
    if head != "slda" or dim < WOODBURY_MIN_DIM:
        return {}
    return {"slda_update": "woodbury", "slda_dtype": "float32", "slda_batch": 64}


@lru_cache(maxsize=16)
def fold_plan(d: int, k: int, classes: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row-panel boundaries ``(A, C)`` of one fold: ``d`` rows, ``k`` queued rows.

    ``A`` and ``C`` are increasing row indices from 0 to ``d``; a fold takes
    ``len(A) − 1`` phase-A steps, one B step, ``len(C) − 1`` phase-C steps and one D
    step: ``len(A) + len(C)`` in all, at most ``k`` when ``d`` allows (panels of at
    least 8 rows), so a fold ends before the next block fills. Each phase is cut so
    its panels cost the same (flops, plus memory traffic at ~4 flops per byte).

    >>> fold_plan(6, 4, 3)
    ((0, 6), (0, 6))
    >>> A, C = fold_plan(2048, 64, 10)
    >>> len(A) + len(C) <= 64, C[1] - C[0] < C[-1] - C[-2]  # upper rows cost more in C
    (True, True)
    """
    r = np.arange(d, dtype=np.float64)
    # Flops per row, plus memory traffic at ~4 flops per byte (measured: a phase-C row, which
    # rewrites a float32 row of Q and a float64 upper row of S, costs more than its flops).
    cost_a = np.full(d, 2.0 * d * (k + classes) + 2.0 * k * k + 16.0 * d)  # [F; μ] Q_Iᵀ
    cost_c = 2.0 * k * (2 * d - r) + 2.0 * k * k + 32.0 * d + 64.0 * (d - r)  # Q_I, S_I
    panels = max(2, min(k - 2, 2 * (d // _MIN_ROWS)))
    share = cost_a.sum() / (cost_a.sum() + cost_c.sum())
    n_a = min(max(1, round(panels * share)), panels - 1)

    def cut(cost: np.ndarray, parts: int) -> tuple[int, ...]:
        cum = np.cumsum(cost)
        marks = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts) + 1
        return tuple(sorted({0, d, *(int(m) for m in marks if 0 < m < d)}))

    return cut(cost_a, n_a), cut(cost_c, panels - n_a)
