"""One PNG per evaluation: the accuracy matrix and accuracy over the stream.

matplotlib is an optional extra (``pip install 'edgecl[plot]'``) and is only
imported here, inside :func:`plot_result`. The figure is drawn through the Agg
canvas directly, without pyplot, so no global backend is touched and nothing
needs a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgecl.eval.runner import EvalResult

__all__ = ["plot_result", "running_mean"]


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start).

    >>> running_mean(np.array([1.0, 0.0, 1.0, 1.0]), 2).tolist()
    [1.0, 0.5, 0.5, 1.0]
    """
    v = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window = {window}: must be >= 1")
    c = np.concatenate([[0.0], np.cumsum(v)])
    idx = np.arange(1, v.size + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_result(
    result: EvalResult, path: str | os.PathLike[str], *, window: int | None = None
) -> Path:
    """Write a PNG: annotated accuracy-matrix heatmap + prequential accuracy curve (with
    its baselines as dotted curves).

    Parameters
    ----------
    result : EvalResult
    path : path-like
        Output ``.png`` file (parent directories must exist).
    window : int, optional
        Running-mean window of the curve, in samples; default ``n_train / 20``
        clamped to [10, 500].

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImportError
        matplotlib is not installed; the message says how to install it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'edgecl[plot]'") from None

    R = result.accuracy_matrix
    T = R.shape[0]
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax_m, ax_c = fig.subplots(1, 2, width_ratios=[1, 1.6])

    im = ax_m.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(T):
        for j in range(T):
            if np.isfinite(R[i, j]):
                dark = R[i, j] < 0.6  # light text on the dark end of viridis
                ax_m.text(
                    j,
                    i,
                    f"{R[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    labels = [_short(n) for n in result.task_names]
    ax_m.set_xticks(range(T), labels, rotation=45, ha="right", fontsize=8)
    ax_m.set_yticks(range(T), labels, fontsize=8)
    ax_m.set_xlabel("evaluated on task j")
    ax_m.set_ylabel("after learning task i")
    ax_m.set_title(f"R[i, j] — avg {result.avg_accuracy:.3f}, BWT {result.bwt:+.3f}", fontsize=10)
    fig.colorbar(im, ax=ax_m, shrink=0.8)

    n = result.n_train
    w = window if window is not None else int(np.clip(n // 20, 10, 500))
    if n:
        curve = running_mean(result.correct.astype(np.float64), w)
        ax_c.plot(np.arange(1, n + 1), curve, lw=1.2, label=f"prequential (mean of last {w})")
        # The baselines on the same order: on an autocorrelated stream repeat_last is high.
        for name, hits in result.baseline_correct.items():
            base = running_mean(hits.astype(np.float64), w)
            ax_c.plot(np.arange(1, n + 1), base, lw=0.8, ls=":", label=f"baseline {name}")
    for b in result.boundaries[:-1]:
        ax_c.axvline(int(b), color="grey", ls="--", lw=0.8)
    if result.holdout_accuracy:
        ax_c.plot(
            result.boundaries,
            result.holdout_accuracy,
            "o-",
            ms=4,
            lw=1,
            label=f"held-out {result.holdout_name}",
        )
    ax_c.set_ylim(0.0, 1.02)
    ax_c.set_xlim(0, max(n, 1))
    ax_c.set_xlabel("training samples seen")
    ax_c.set_ylabel("accuracy")
    ax_c.set_title(
        f"{result.scenario} on {result.dataset}, {result.head} head — "
        f"prequential {result.prequential_accuracy:.3f}",
        fontsize=10,
    )
    ax_c.legend(loc="lower right", fontsize=8)
    ax_c.grid(alpha=0.3)

    out = Path(path)
    fig.savefig(out, format="png", dpi=110)
    return out


def _short(name: str, width: int = 14) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"
