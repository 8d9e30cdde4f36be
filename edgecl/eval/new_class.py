"""The new-class scenario: a user teaches the device an exercise its bundle never saw.

Needs a bundle ``B`` pre-trained without some classes (``edgecl pretrain
--exclude-classes``, recorded in its manifest as ``excluded_classes``) and,
beside it, a reference bundle ``R`` pre-trained on every class. For every test
subject and every shot count ``K``:

1. start from a copy of ``B``'s initial learner;
2. for each new class, take the first ``K`` windows (recorded order) of that
   class from the subject's *first* recording of it (a recording's class is its
   most frequent label, :func:`~edgecl.eval.adapt.recordings_in_order`);
   ``observe_many`` and ``learn_many`` them;
3. test, learning off, on every window of the subject outside those first
   recordings — the same test windows for every ``K``, so the rows compare.

Accuracy is split into old classes, new classes and overall; the figures are
unweighted means over subjects with their standard deviation. Beside them
stand ``frozen`` (``B``'s head as shipped: 0 on truly new classes) and
``reference`` (``R``'s head as shipped, on the same test windows, each bundle
embedding the data with its own extractor) — what pre-training on the new
classes would have given.

``new_classes`` passed explicitly override the manifest: the named classes are
*treated* as new (split out of the test figures, taught from ``K`` shots) even
when ``B``'s head already knows them, in which case "new" measures refining a
known class rather than acquiring one.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from edgecl.errors import ConfigError, DataError
from edgecl.eval.adapt import fmt, mean_of, recordings_in_order, sd_of
from edgecl.eval.datasets import Dataset
from edgecl.learner import StreamingLearner

if TYPE_CHECKING:
    from edgecl.runtime.bundle import Bundle

__all__ = [
    "DEFAULT_SHOTS",
    "excluded_classes",
    "format_new_class",
    "resolve_classes",
    "run_new_class",
]

DEFAULT_SHOTS = (1, 5, 20)
_PARTS = ("old", "new", "overall")


def excluded_classes(bundle: Bundle) -> tuple[int, ...]:
    """The classes ``bundle`` was pre-trained without (its manifest's ``excluded_classes``)."""
    got = getattr(bundle, "excluded_classes", None)
    if got is None:
        got = bundle.manifest.get("excluded_classes") or []
    return tuple(int(c) for c in got)


def resolve_classes(names: Sequence[str], class_names: Sequence[str]) -> tuple[int, ...]:
    """Class ids from names or ids (``"ER"`` or ``"4"``), validated against ``class_names``.

    >>> resolve_classes(["ER", "6"], ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"])
    (4, 6)
    """
    out = []
    for n in names:
        if n in class_names:
            out.append(list(class_names).index(n))
        elif n.strip().lstrip("-").isdigit() and 0 <= int(n) < len(class_names):
            out.append(int(n))
        else:
            raise ConfigError(
                f"new_classes: {n!r} is neither a class name nor an id in "
                f"0..{len(class_names) - 1} (classes: {', '.join(class_names)})"
            )
    return tuple(sorted(set(out)))


def _parts(pred: np.ndarray, y: np.ndarray, new: np.ndarray) -> dict[str, float | None]:
    is_new = np.isin(y, new)
    out: dict[str, float | None] = {}
    for part, m in (("old", ~is_new), ("new", is_new), ("overall", np.ones_like(is_new))):
        out[part] = round(float(np.mean(pred[m] == y[m])), 6) if m.any() else None
    return out


def _summary(users: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {p: mean_of([u[p] for u in users.values()]) for p in _PARTS}
    out["sd"] = {p: sd_of([u[p] for u in users.values()]) for p in _PARTS}
    out["users"] = users
    return out


def run_new_class(
    data: Dataset,
    initial: StreamingLearner,
    *,
    new_classes: Sequence[int],
    subjects: Sequence[int],
    shots: Sequence[int] = DEFAULT_SHOTS,
    reference: tuple[Dataset, StreamingLearner] | None = None,
    bundle: str = "",
    reference_bundle: str | None = None,
    progress: bool = False,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The new-class scenario; returns the JSON report (see the module docstring).

    Parameters
    ----------
    data : Dataset
        IMU windows embedded by bundle ``B``.
    initial : StreamingLearner
        ``B``'s initial learner; never changed.
    new_classes : sequence of int
        The classes to teach.
    subjects : sequence of int
        Test subjects.
    shots : sequence of int
        Windows per new class to learn from (each >= 1).
    reference : (Dataset, StreamingLearner), optional
        The same file embedded by bundle ``R`` and ``R``'s initial learner.
    """
    t0 = time.perf_counter()
    if data.subject is None or data.recording is None:
        raise DataError(f"{data.name}: new-class needs IMU data with subject and recording ids")
    new = np.array(sorted({int(c) for c in new_classes}), dtype=np.int64)
    new_set = set(new.tolist())
    if new.size == 0:
        raise ConfigError(
            "new_classes: the bundle's manifest names no excluded classes; "
            "name the new classes explicitly"
        )
    shots = sorted({int(k) for k in shots})
    if not shots or shots[0] < 1:
        raise ConfigError(f"shots = {shots}: each must be an integer >= 1")
    if initial.config.dim != data.dim:
        raise ConfigError(f"the bundle's learner has dim {initial.config.dim}, data {data.dim}")
    if reference is not None:
        rd = reference[0]
        same = rd.y.shape == data.y.shape and all(
            np.array_equal(a, b)
            for a, b in ((rd.y, data.y), (rd.subject, data.subject), (rd.recording, data.recording))
        )
        if not same:
            raise DataError(
                "the reference bundle cuts the data into other windows than the bundle "
                "(different window length or hop); both must window alike"
            )
    say = note or (lambda line: print(line, file=sys.stderr))

    per_k: dict[int, dict[str, dict[str, Any]]] = {k: {} for k in shots}
    frozen_users: dict[str, dict[str, Any]] = {}
    ref_users: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    quiet = not progress or not sys.stderr.isatty()
    for s in tqdm(
        subjects, desc="new-class", unit="user", file=sys.stderr, disable=quiet, leave=False
    ):
        idx = np.flatnonzero(data.subject == s)
        recs = data.recording[idx]
        first: dict[int, int] = {}  # new class -> its first recording
        for r, c in recordings_in_order(recs, data.y[idx]):
            if c in new_set and c not in first:
                first[c] = r
        test = idx[~np.isin(recs, list(first.values()))]
        if not first or not np.isin(data.y[test], new).any():
            why = "no recording of a new class to learn from and another to test on"
            skipped[str(s)] = why
            say(f"note: subject {s} skipped: {why}")
            continue
        xt, yt = data.x[test], data.y[test]
        frozen_users[str(s)] = _parts(initial.predict_many(xt), yt, new)
        if reference is not None:
            ref_users[str(s)] = _parts(reference[1].predict_many(reference[0].x[test]), yt, new)
        for k in shots:
            picked = []
            for c, r in first.items():
                in_rec = idx[(recs == r) & (data.y[idx] == c)]
                picked.append(in_rec[:k])
            shot = np.sort(np.concatenate(picked))
            learner = copy.deepcopy(initial)
            learner.observe_many(data.x[shot])
            learner.learn_many(data.x[shot], data.y[shot])
            u = _parts(learner.predict_many(xt), yt, new)
            u.update(shot_windows=int(shot.size), test_windows=int(test.size))
            per_k[k][str(s)] = u
    if not frozen_users:
        raise DataError(f"{data.name}: no test subject has a new class to learn and test")
    return {
        "scenario": "new-class",
        "new_classes": new.tolist(),
        "new_class_names": [data.class_names[c] for c in new.tolist()],
        "shots": {str(k): _summary(users) for k, users in per_k.items()},
        "reference": None if reference is None else _summary(ref_users),
        "frozen": _summary(frozen_users),
        "skipped": skipped,
        "head": initial.config.head,
        "bundle": bundle,
        "reference_bundle": reference_bundle,
        "dataset": data.name,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def format_new_class(r: dict[str, Any]) -> str:
    """A readable table of a :func:`run_new_class` report: one row per shot count."""
    names = ", ".join(r["new_class_names"])
    n_users = len(r["frozen"]["users"])
    lines = [
        f"edgecl eval: new-class on {r['dataset']} — bundle {r['bundle']} ({r['head']} head), "
        f"new classes {names}, {n_users} user(s), {r['seconds']:.2f} s",
        "",
        f"{'':<22}" + "".join(f"{p:>16}" for p in _PARTS),
    ]

    def row(label: str, s: dict[str, Any]) -> str:
        cells = "".join(f"{fmt(s[p]) + ' ± ' + fmt(s['sd'][p]):>16}" for p in _PARTS)
        return f"{label:<22}{cells}"

    lines.append(row("frozen (bundle)", r["frozen"]))
    for k, s in r["shots"].items():
        lines.append(row(f"after {k} shot(s)", s))
    if r["reference"] is not None:
        lines.append(row(f"reference {r['reference_bundle']}"[:21], r["reference"]))
    lines += [
        "",
        "mean ± sd over users; shots = windows per new class from the user's first "
        "recording of it; test = the user's other recordings, learning off",
    ]
    for uid, why in r["skipped"].items():
        lines.append(f"subject {uid} skipped: {why}")
    return "\n".join(lines)
