"""A random-feature stage applied to a stream's features, for ``edgecl eval --random-features``.

The stage (:class:`~edgecl.runtime.random_features.RandomFeatures`, numpy)
maps every feature vector the learner would see — raw pixels in [0, 1] for
images, the z-scored hand-made IMU features, or a bundle's z-scored
embeddings — to ``M`` features, for every task's training and test samples
and the held-out subjects; nothing is written, no ONNX is involved. Pixel
permutations (image domain-IL) are applied first, as the learner would see
them. The ``rff`` kernel width defaults to the median heuristic
(:func:`~edgecl.runtime.random_features.median_gamma`) on the first
:data:`~edgecl.runtime.random_features.GAMMA_SAMPLES` training samples *in
arrival order* — what a device has seen first, never test data.

>>> from edgecl.eval import build_stream, load_dataset
>>> s = build_stream(load_dataset(), "class-il", limit=20)
>>> wide, rf, source = expand_stream(s, 64, kind="rff")
>>> wide.dim, wide.tasks[0].x_train.shape, rf.kind, source
(64, (20, 64), 'rff', 'median heuristic on the first 80 training samples')
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgecl.eval.streams import Stream
from edgecl.runtime.random_features import GAMMA_SAMPLES, RandomFeatures, make_stage

__all__ = ["expand_stream", "first_seen"]


def first_seen(stream: Stream, n: int = GAMMA_SAMPLES) -> np.ndarray:
    """The first ``n`` training samples of ``stream`` in arrival order, as the learner sees them."""
    rows = stream.schedule[:n].tolist()
    return np.stack([stream.tasks[t].train_sample(i) for t, i in rows])


def expand_stream(
    stream: Stream,
    m: int,
    *,
    kind: str = "rff",
    gamma: float | None = None,
    seed: int = 0,
) -> tuple[Stream, RandomFeatures, str]:
    """``stream`` with every feature vector replaced by its ``m`` random features.

    Returns the new stream (``dim = m``, no permutations left: each task holds
    its own materialised features, float32), the stage, and where γ came from
    (``"given"``, ``"median heuristic on the first N training samples"``, or
    ``"n/a"`` for relu).
    """
    rf, source = make_stage(
        kind, m, stream.dim, gamma=gamma, seed=seed, samples=lambda: first_seen(stream)
    )
    tasks = []
    for task in stream.tasks:
        x_tr, _ = task.train_set()
        x_te, _ = task.test_set()
        tasks.append(
            dataclasses.replace(
                task, x_train=rf.transform(x_tr), x_test=rf.transform(x_te), permutation=None
            )
        )
    hold = None if stream.holdout_x is None else rf.transform(stream.holdout_x)
    wide = dataclasses.replace(stream, tasks=tuple(tasks), dim=m, holdout_x=hold)
    return wide, rf, source
