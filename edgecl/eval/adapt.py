"""The new-user scenario: what a pre-trained bundle gains from a few of a new user's recordings.

Prequential accuracy on a recording-ordered stream is dominated by
autocorrelation (see :mod:`edgecl.eval.runner`), so adaptation is measured on
*held-out recordings* instead. For every test subject:

1. **split** (:func:`new_user_split`) — the subject's recordings, in recorded
   order (first appearance in the file's rows), are grouped by class (a
   recording's class is its most frequent window label); the first ``K``
   recordings of each class calibrate, every other recording tests. No test
   window ever shares a recording with calibration, so windows never overlap
   across the split. A class with ``<= K`` recordings is calibration only.
2. **calibrate** copies of the bundle's initial learner:

   * ``frozen`` — nothing: the device out of the box;
   * ``standardised`` — ``observe_many`` of the calibration windows only
     (unsupervised per-user statistics, no labels; the same as ``frozen`` when
     the learner's ``config.standardize`` is off);
   * ``adapted`` — ``observe_many`` then ``learn_many`` with the labels: what
     ``edgecl run`` does with a user's labelled recordings.

   Baselines: ``majority`` (the calibration's most frequent label) and
   ``user_only`` (a fresh learner of the same head trained on the calibration
   windows alone — what the user's data is worth without pre-training).
3. **test** on the remaining recordings with learning off (no observe, no learn).

Figures are unweighted means over users; ``gain = adapted − frozen``.

>>> subject = np.array([1, 1, 1, 1, 1, 1])
>>> recording = np.array([7, 7, 3, 3, 9, 5])
>>> y = np.array([0, 0, 0, 0, 1, 0])
>>> calib, test = new_user_split(subject, recording, y, 1)[1]
>>> calib.tolist(), test.tolist()          # class 0: recordings 7 (calib), 3, 5; class 1: 9
([0, 1, 4], [2, 3, 5])
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from edgecl.errors import ConfigError, DataError
from edgecl.eval.datasets import Dataset, load_dataset
from edgecl.learner import LearnerConfig, StreamingLearner

if TYPE_CHECKING:
    from edgecl.runtime.bundle import Bundle

__all__ = [
    "ADAPT_SCENARIOS",
    "fmt",
    "format_new_user",
    "load_embedded",
    "mean_of",
    "new_user_split",
    "recordings_in_order",
    "run_new_user",
    "sd_of",
    "test_subjects_for",
]

ADAPT_SCENARIOS = ("new-user", "new-class")
# Shrinkage of the user-only SLDA baseline: a handful of windows cannot estimate a
# 64-dimensional covariance, so it leans much harder on the identity than the bundle's head.
USER_ONLY_SLDA_SHRINKAGE = 0.1


def recordings_in_order(recording: np.ndarray, y: np.ndarray) -> list[tuple[int, int]]:
    """``(recording id, class)`` of every recording, in order of first appearance.

    A recording's class is its most frequent label (ties go to the smaller label).

    >>> recordings_in_order(np.array([4, 4, 2, 4]), np.array([1, 0, 3, 0]))
    [(4, 0), (2, 3)]
    """
    recording = np.asarray(recording)
    y = np.asarray(y)
    ids, first = np.unique(recording, return_index=True)
    out = []
    for r in ids[np.argsort(first, kind="stable")].tolist():
        labels, counts = np.unique(y[recording == r], return_counts=True)
        out.append((int(r), int(labels[np.argmax(counts)])))  # argmax: the smaller label on ties
    return out


def new_user_split(
    subject: np.ndarray, recording: np.ndarray, y: np.ndarray, k: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Calibration and test window indices of every subject; see the module docstring.

    Parameters
    ----------
    subject, recording, y : ndarray, shape (n,)
        Subject, recording id and label of every window, in recorded order.
    k : int
        Calibration recordings per class (>= 1).

    Returns
    -------
    dict
        ``{subject: (calibration indices, test indices)}``, ascending indices
        into the arrays, subjects in ascending order.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"calibration = {k!r}: must be an integer >= 1 (recordings per class)")
    subject, recording, y = (np.asarray(a) for a in (subject, recording, y))
    if not subject.shape == recording.shape == y.shape or subject.ndim != 1:
        raise ValueError(
            f"subject, recording and y must be 1-D of one length, got "
            f"{subject.shape}, {recording.shape}, {y.shape}"
        )
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for s in np.unique(subject).tolist():
        idx = np.flatnonzero(subject == s)
        recs = recording[idx]
        taken: dict[int, int] = {}
        calib = []
        for r, c in recordings_in_order(recs, y[idx]):
            if taken.get(c, 0) < k:
                taken[c] = taken.get(c, 0) + 1
                calib.append(r)
        is_calib = np.isin(recs, calib)
        out[int(s)] = (idx[is_calib], idx[~is_calib])
    return out


def load_embedded(
    bundle: Bundle,
    path: str | os.PathLike[str] | None = None,
    *,
    window: int | None = None,
    hop: int | None = None,
) -> Dataset:
    """``load_dataset(path)`` with every window embedded by ``bundle``'s extractor.

    Window and hop default to the bundle's.
    """
    ext = bundle.extractor()
    if bundle.window is not None:
        window = window or bundle.window.length
        hop = hop or bundle.window.hop

    def embed(X: np.ndarray) -> np.ndarray:
        return ext.embed_many(X.reshape(len(X), *bundle.input_shape))

    return load_dataset(path, window=window, hop=hop, embed=embed)


def test_subjects_for(
    data: Dataset, requested: Sequence[int] | None, bundle: Bundle | None = None
) -> list[int]:
    """The subjects to test: ``requested``, else the bundle's held-out ones, else all.

    Without ``requested`` the bundle's ``provenance.test_subjects`` that the file
    holds are used; when it holds none of them (or the bundle names none), every
    subject in the file is.
    """
    if data.subject is None or data.recording is None:
        raise DataError(
            f"{data.name}: adaptation scenarios need IMU data with subject and recording ids"
        )
    present = sorted(set(data.subject.tolist()))
    if requested is not None:
        if not requested:
            raise ConfigError("test_subjects: name at least one subject to adapt to")
        unknown = sorted(set(requested) - set(present))
        if unknown:
            raise ConfigError(
                f"test_subjects: {unknown} not in {data.name} "
                f"(subjects: {', '.join(map(str, present))})"
            )
        return sorted(set(requested))
    prov = (bundle.manifest.get("provenance") or {}) if bundle is not None else {}
    held = [int(s) for s in prov.get("test_subjects") or [] if int(s) in present]
    return sorted(set(held)) or present


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float | None:
    return None if y.size == 0 else round(float(np.mean(pred == y)), 6)


def mean_of(values: Sequence[float | None]) -> float | None:
    """Unweighted mean of the defined values (None if there are none)."""
    v = [x for x in values if x is not None]
    return round(float(np.mean(v)), 6) if v else None


def sd_of(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (ddof 1) of the defined values; None below two."""
    v = [x for x in values if x is not None]
    return round(float(np.std(v, ddof=1)), 6) if len(v) >= 2 else None


def _user_only_config(cfg: LearnerConfig) -> LearnerConfig:
    fields: dict[str, Any] = {
        "dim": cfg.dim,
        "max_classes": cfg.max_classes,
        "head": cfg.head,
        "budget_bytes": cfg.budget_bytes,
        "seed": cfg.seed,
    }
    if cfg.head == "slda":
        fields["slda_shrinkage"] = USER_ONLY_SLDA_SHRINKAGE
    return LearnerConfig(**fields)


def run_new_user(
    data: Dataset,
    initial: StreamingLearner,
    *,
    subjects: Sequence[int],
    calibration: int = 1,
    bundle: str = "",
    progress: bool = False,
    note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The new-user scenario on embedded ``data``; returns the JSON report.

    Parameters
    ----------
    data : Dataset
        IMU windows embedded by the bundle (:func:`load_embedded`).
    initial : StreamingLearner
        The bundle's initial learner; never changed (every user gets a deep copy).
    subjects : sequence of int
        Test subjects (:func:`test_subjects_for`).
    calibration : int
        Calibration recordings per class.
    bundle : str
        How the bundle was named, for the report.
    note : callable, optional
        Receives one line per skipped subject (default: print to stderr).
    """
    t0 = time.perf_counter()
    if data.subject is None or data.recording is None:
        raise DataError(f"{data.name}: new-user needs IMU data with subject and recording ids")
    if initial.config.dim != data.dim:
        raise ConfigError(f"the bundle's learner has dim {initial.config.dim}, data {data.dim}")
    say = note or (lambda line: print(line, file=sys.stderr))
    split = new_user_split(data.subject, data.recording, data.y, calibration)
    user_cfg = _user_only_config(initial.config)
    users: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    quiet = not progress or not sys.stderr.isatty()
    for s in tqdm(
        subjects, desc="new-user", unit="user", file=sys.stderr, disable=quiet, leave=False
    ):
        calib, test = split.get(int(s), (np.empty(0, np.int64), np.empty(0, np.int64)))
        if test.size == 0:
            why = f"no class has more than {calibration} recording(s): nothing left to test"
            skipped[str(s)] = why
            say(f"note: subject {s} skipped: {why}")
            continue
        xc, yc = data.x[calib], data.y[calib]
        xt, yt = data.x[test], data.y[test]
        frozen = copy.deepcopy(initial)
        standardised = copy.deepcopy(initial)
        standardised.observe_many(xc)
        adapted = copy.deepcopy(initial)
        adapted.observe_many(xc)
        adapted.learn_many(xc, yc)
        user_only = StreamingLearner(user_cfg)
        user_only.learn_many(xc, yc)
        labels, counts = np.unique(yc, return_counts=True)
        majority = int(labels[np.argmax(counts)])
        r = {
            "frozen": _accuracy(frozen.predict_many(xt), yt),
            "standardised": _accuracy(standardised.predict_many(xt), yt),
            "adapted": _accuracy(adapted.predict_many(xt), yt),
            "majority": _accuracy(np.full(yt.size, majority), yt),
            "user_only": _accuracy(user_only.predict_many(xt), yt),
            "calibration_windows": int(calib.size),
            "test_windows": int(test.size),
            "calibration_recordings": int(np.unique(data.recording[calib]).size),
            "test_recordings": int(np.unique(data.recording[test]).size),
        }
        r["gain"] = round(r["adapted"] - r["frozen"], 6)
        users[str(s)] = r
    if not users:
        raise DataError(
            f"{data.name}: no test subject has a recording left after calibrating on "
            f"{calibration} per class"
        )

    def mean(key: str) -> float | None:
        return mean_of([u[key] for u in users.values()])

    gains = [u["gain"] for u in users.values()]
    frozen_m, adapted_m, std_m = mean("frozen"), mean("adapted"), mean("standardised")
    assert frozen_m is not None and adapted_m is not None and std_m is not None
    return {
        "scenario": "new-user",
        "calibration": calibration,
        "users": users,
        "frozen": frozen_m,
        "standardised": std_m,
        "adapted": adapted_m,
        "gain": round(adapted_m - frozen_m, 6),
        "gain_standardised": round(std_m - frozen_m, 6),
        "spread": {"gain_sd": sd_of(gains), "gain_min": min(gains), "gain_max": max(gains)},
        "baselines": {"majority": mean("majority"), "user_only": mean("user_only")},
        "skipped": skipped,
        "head": initial.config.head,
        "standardize": bool(getattr(initial.config, "standardize", False)),
        "bundle": bundle,
        "dataset": data.name,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def fmt(v: float | None, signed: bool = False) -> str:
    """``0.912``, ``+0.041`` when ``signed``, ``—`` for an undefined figure."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def format_new_user(r: dict[str, Any]) -> str:
    """A readable per-user table of a :func:`run_new_user` report."""
    cols = ("frozen", "standardised", "adapted", "gain", "majority", "user_only")
    lines = [
        f"edgecl eval: new-user on {r['dataset']} — bundle {r['bundle']} ({r['head']} head), "
        f"calibration {r['calibration']} recording(s) per class, {len(r['users'])} user(s), "
        f"{r['seconds']:.2f} s",
        "",
        f"{'user':<8}{'calib':>7}{'test':>7}" + "".join(f"{c:>14}" for c in cols),
    ]
    for uid, u in r["users"].items():
        cells = "".join(f"{fmt(u[c], signed=c == 'gain'):>14}" for c in cols)
        lines.append(f"{uid:<8}{u['calibration_windows']:>7}{u['test_windows']:>7}{cells}")
    mean = {**r, **r["baselines"]}
    cells = "".join(f"{fmt(mean[c], signed=c == 'gain'):>14}" for c in cols)
    lines.append(f"{'mean':<22}{cells}")
    sp = r["spread"]
    lines += [
        "",
        f"gain (adapted − frozen) {fmt(r['gain'], True)}: sd {fmt(sp['gain_sd'])}, "
        f"min {fmt(sp['gain_min'], True)}, max {fmt(sp['gain_max'], True)}; "
        f"standardised − frozen {fmt(r['gain_standardised'], True)}",
        "test = each user's recordings left after calibration, learning off; "
        "windows never share a recording with calibration",
    ]
    if not r["standardize"]:
        lines.append(
            "the bundle's learner does not standardise (config.standardize off): "
            "standardised = frozen"
        )
    for uid, why in r["skipped"].items():
        lines.append(f"subject {uid} skipped: {why}")
    return "\n".join(lines)
