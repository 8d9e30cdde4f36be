"""Learner states for merging: files, daemon state directories, the bundle's base.

A device's state is a learner state file, or the state directory of ``edgecl
run`` (its newest valid checkpoint; labels still only in the journal join at the
next checkpoint). Devices that started from a bundle all hold the bundle's
pre-trained head, so merging N of them must count that head once, not N times:
:func:`merge_learners` takes it as ``base`` and adds each device's delta
``state − base``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgecl.errors import StateFileError
from edgecl.learner import StreamingLearner
from edgecl.learner.merge import HeadStats, check_compatible

__all__ = ["bundle_base", "describe", "load_learner", "merge_learners"]


def load_learner(path: str | os.PathLike[str]) -> StreamingLearner:
    """A verified learner from a state file or from a state directory's newest checkpoint."""
    p = Path(path)
    if p.is_dir():
        from edgecl.runtime.checkpoint import CheckpointStore

        learner, _ = CheckpointStore(p).load()
        if learner is None:
            raise StateFileError(f"{p}: no valid checkpoint (learner-*.safetensors) in it")
        return learner
    return StreamingLearner.load(p)


def bundle_base(bundle: Any) -> StreamingLearner:
    """The head a bundle ships, tagged as every daemon over that bundle tags its state
    (``bundle:<manifest sha256>``): the common base of a fleet's devices."""
    from edgecl.runtime.bundle import Bundle
    from edgecl.runtime.checkpoint import owner_tag
    from edgecl.runtime.launch import manifest_sha256

    b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
    learner = b.initial_learner()
    if learner is None:
        raise StateFileError(f"bundle {b.path} ships no head: nothing to use as the base")
    learner.config = learner.config.replace(tag=owner_tag(manifest_sha256(b)))
    return learner


def merge_learners(
    learners: list[StreamingLearner],
    base: StreamingLearner | None = None,
    names: list[str] | None = None,
) -> StreamingLearner:
    """One learner holding what every learner learned, each sample counted once.

    Without ``base``: the plain sum (the first learner, in place, with the others
    merged in). With ``base`` (a state every learner started from, e.g. the
    bundle's head): ``base + Σ (learner − base)``, built on a copy of ``base``'s
    config and user statistics. Exact for NCM/SLDA; softmax heads are averaged
    (approximate, no base). Raises on different bundles or configs before changing
    anything.
    """
    names = names or [f"state {i + 1}" for i in range(len(learners))]
    if base is None:
        check_compatible(learners, names)
        first = learners[0]
        first.merge(*learners[1:])
        return first
    check_compatible([base, *learners], ["base", *names])
    start = base.statistics()
    total = start
    for lr, name in zip(learners, names, strict=True):
        total = total + (lr.statistics().validate(name) - start)
    out = StreamingLearner(base.config)
    if base.user is not None and out.user is not None:
        out.user.restore(base.user.arrays(), base.user.counters())
    out.apply_statistics(total)
    out.n_learned = base.n_learned + sum(lr.n_learned - base.n_learned for lr in learners)
    return out


def describe(stats: HeadStats) -> dict[str, int]:
    """Samples and classes in ``stats`` (for summaries)."""
    return {"samples": stats.n, "classes": int((stats.counts > 0).sum())}
