"""Training data for the host: ``.npz`` files → normalised arrays → continual-learning tasks.

Two layouts (DESIGN §4, ``../shared/data/README.md``):

* **images** — ``x_train, y_train, x_test, y_test``. Inputs keep their shape
  (``(28, 28)`` for MNIST). ``uint8`` pixels are scaled by the stored
  normalisation ``mean = [0], std = [255]`` (i.e. ``x / 255``, the convention of
  the reference EWC experiment); other dtypes are standardised with the
  training set's scalar mean and std.
* **IMU** — the row stream ``x, y, subject, recording`` cut with
  :func:`edgecl.runtime.windowing.windows_by_segment` (majority label, windows
  never cross a recording; 100 rows hop 50 by default, i.e. 2 s at 50 Hz), or
  ready-made windows ``x_raw`` (e.g. ``har.npz``; hop taken as half a window).
  Inputs are ``(length, channels)`` windows, standardised per channel with the
  mean and std of the training windows' rows. Subjects in ``test_subjects``
  (default: the last quarter of the ids, e.g. 6 and 7 of ``watch_imu.npz``) are
  held out as the test set; with ``test_subjects=[]`` a seeded 20 % of the
  recordings is held out instead. The subject of every window is kept
  (``subject_train``, ``subject_test``) for per-subject standardisation.

``exclude_classes`` drops some classes from both splits before anything is
computed from the data (normalisation, ``limit``), without renumbering the
labels: a model pre-trained so has never seen them, and a device can later
learn them from a few labels (class-incremental evaluation, DESIGN §10). The
hold-out is chosen before the exclusion, so the test subjects stay the same.

The normalisation is stored as ``{"mean": [...], "std": [...]}`` in the input's
own units, one value per channel (last axis) or one scalar in a list, so the
device applies exactly ``(x - mean) / std`` to what the sensor sends
(:func:`normalise`).

Tasks (:class:`Task`) are cut from one file by class (:func:`split_classes`) or
given one file per task (:func:`tasks_from_files`), for the three scenarios of
van de Ven & Tolias (2019): task-IL (labels kept, logits masked to the task's
classes), domain-IL (one shared head; with class splits the label is the
position within the task, e.g. "first or second digit") and class-IL (one head
over every class seen).

>>> import numpy as np
>>> normalise(np.array([[0.0, 255.0]]), {"mean": [0.0], "std": [255.0]}).tolist()
[[0.0, 1.0]]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import ConfigError, DataError
from edgecl.eval.datasets import _class_names, _finite, _labels, _read_npz
from edgecl.eval.streams import default_test_subjects
from edgecl.runtime.bundle import file_sha256  # re-exported: provenance hashes data files
from edgecl.runtime.windowing import windows_by_segment

__all__ = [
    "SCENARIOS",
    "ClassSelectionError",
    "Task",
    "TrainingData",
    "file_sha256",
    "load_training_data",
    "normalise",
    "resolve_classes",
    "split_classes",
    "tasks_from_files",
]

SCENARIOS = ("task-il", "domain-il", "class-il")
_IMAGE_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ROW_KEYS = ("x", "y", "subject", "recording")
_WINDOW_KEYS = ("x_raw", "y", "subject", "recording")
_RECORDING_HOLDOUT = 0.2  # share of recordings held out when no test subject is named


@dataclass(frozen=True, eq=False)
class TrainingData:
    """One dataset, normalised, split into training and held-out test arrays.

    Attributes
    ----------
    name, path, sha256 : str
        File stem, path and sha256 of the ``.npz`` (for provenance).
    x_train, y_train, x_test, y_test : ndarray
        Normalised float32 inputs ``(n, *in_shape)`` and int64 labels.
    in_shape : tuple of int
        One input, without the batch axis.
    class_names : tuple of str
    normalisation : dict
        ``{"mean": [...], "std": [...]}`` in raw input units.
    window : dict or None
        ``{"length", "hop", "channels", "rate_hz"}`` for IMU data.
    test_subjects : list of int or None
        IMU subjects held out as the test set.
    subject_train, subject_test : ndarray or None
        IMU: the subject of every training / test window (int64); None for images.
    excluded_classes : tuple of int
        Labels dropped from both splits (sorted; the other labels keep their ids).
    """

    name: str
    path: str
    sha256: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    in_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    normalisation: dict[str, list[float]]
    window: dict[str, Any] | None
    test_subjects: list[int] | None
    subject_train: np.ndarray | None = None
    subject_test: np.ndarray | None = None
    excluded_classes: tuple[int, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def kept_classes(self) -> tuple[int, ...]:
        """Every label id that is not excluded, in order."""
        return tuple(c for c in range(self.n_classes) if c not in self.excluded_classes)


class ClassSelectionError(ConfigError):
    """An excluded class that names no class of the data, or an exclusion of every class.

    A usage error: ``edgecl pretrain --exclude-classes`` reports it with exit code 2.
    """


@dataclass(frozen=True, eq=False)
class Task:
    """One task of a sequence: training and test data in the head's label space.

    ``classes`` are the labels the task uses; in task-IL they are the mask
    applied to the logits, in the other scenarios they are informational.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[int, ...]


def normalise(x: np.ndarray, normalisation: dict[str, Sequence[float]]) -> np.ndarray:
    """``(x - mean) / std`` as float32, mean/std broadcast along the last axis.

    >>> normalise(np.ones((2, 3, 2)), {"mean": [1.0, 0.0], "std": [1.0, 2.0]})[0, 0].tolist()
    [0.0, 0.5]
    """
    mean = np.asarray(normalisation["mean"], dtype=np.float32)
    std = np.asarray(normalisation["std"], dtype=np.float32)
    return ((np.asarray(x, dtype=np.float32) - mean) / std).astype(np.float32, copy=False)


def resolve_classes(
    classes: Sequence[int | str], class_names: Sequence[str], where: str = "the data"
) -> tuple[int, ...]:
    """Label ids of ``classes``, given as class names or integer ids; sorted, distinct.

    A string is a class name first and an id second (``"3"`` is the class named
    ``3``, else id 3).

    >>> resolve_classes(["ROW", "TRAP", 5], ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"))
    (5, 6)
    >>> resolve_classes(["TRAPS"], ("TRAP", "ROW"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgecl.host.data.ClassSelectionError: exclude_classes: 'TRAPS' is not a class ...: 0 TRAP, 1 ROW
    """
    names = [str(n) for n in class_names]
    ids: set[int] = set()
    for item in classes:
        cid: int | None = None
        if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            cid = int(item)
        elif str(item) in names:
            cid = names.index(str(item))
        else:
            try:
                cid = int(str(item))
            except ValueError:
                cid = None
        if cid is None or not 0 <= cid < len(names):
            valid = ", ".join(f"{i} {n}" for i, n in enumerate(names))
            raise ClassSelectionError(
                f"exclude_classes: {item!r} is not a class of {where}; its classes: {valid}"
            )
        ids.add(cid)
    if ids and len(ids) >= len(names):
        raise ClassSelectionError(
            f"exclude_classes: excludes every class of {where} ({len(names)}); keep at least one"
        )
    return tuple(sorted(ids))


def load_training_data(
    path: str | os.PathLike[str],
    *,
    window: int | None = None,
    hop: int | None = None,
    test_subjects: Sequence[int] | None = None,
    limit: int | None = None,
    seed: int = 0,
    exclude_classes: Sequence[int | str] = (),
) -> TrainingData:
    """Read an image or IMU ``.npz`` and return normalised training/test arrays.

    Parameters
    ----------
    path : path-like
    window, hop : int, optional
        IMU row layout: window length and step in rows (default 2 s at the
        file's ``rate_hz``, 100 rows without one, and half of that).
    test_subjects : sequence of int, optional
        IMU: subjects held out (default: last quarter of the ids; ``[]``: a
        seeded 20 % of the recordings instead).
    limit : int, optional
        Keep at most ``limit`` training samples (a seeded random subset).
    seed : int
        Seeds ``limit`` and the recording hold-out.
    exclude_classes : sequence of int or str
        Classes (names or ids) whose samples are dropped from both splits;
        the remaining labels keep their ids.

    Raises
    ------
    DataError
        Unreadable file, unknown layout, bad shapes or labels, empty split.
    ClassSelectionError
        ``exclude_classes`` names an unknown class or every class.

    >>> d = load_training_data(DEFAULT_IMU)
    >>> d.in_shape, d.test_subjects, d.window["length"], d.class_names[0]
    ((100, 6), [6, 7], 100, 'PEN')
    >>> d.subject_test.shape == d.y_test.shape, sorted(set(d.subject_test.tolist()))
    (True, [6, 7])
    >>> e = load_training_data(DEFAULT_IMU, exclude_classes=["TRAP", "ROW"])
    >>> e.excluded_classes, sorted(set(e.y_train.tolist()) | set(e.y_test.tolist()))
    ((5, 6), [0, 1, 2, 3, 4])
    """
    p = Path(path)
    a = _read_npz(p)
    if all(k in a for k in _IMAGE_KEYS):
        parts = _images(p, a, exclude_classes)
    elif all(k in a for k in _WINDOW_KEYS) or all(k in a for k in _ROW_KEYS):
        parts = _imu(p, a, window, hop, test_subjects, seed, exclude_classes)
    else:
        raise DataError(
            f"{p}: unrecognised layout (found {', '.join(sorted(a)) or 'nothing'}); expected "
            f"{', '.join(_IMAGE_KEYS)} (images) or {', '.join(_ROW_KEYS)} (IMU rows)"
        )
    x_tr, y_tr, x_te, y_te, norm, win, held, names, s_tr, s_te, excluded = parts
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit = {limit}: must be >= 1")
        keep = np.sort(np.random.default_rng(seed).permutation(len(y_tr))[:limit])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
        s_tr = None if s_tr is None else s_tr[keep]
    if len(y_tr) == 0 or len(y_te) == 0:
        without = f" without classes {list(excluded)}" if excluded else ""
        split = "training" if len(y_tr) == 0 else "test"
        raise DataError(f"{p}: the {split} split is empty{without}")
    return TrainingData(
        name=p.stem,
        path=str(p),
        sha256=file_sha256(p),
        x_train=normalise(x_tr, norm),
        y_train=y_tr,
        x_test=normalise(x_te, norm),
        y_test=y_te,
        in_shape=tuple(int(s) for s in x_tr.shape[1:]),
        class_names=names,
        normalisation=norm,
        window=win,
        test_subjects=held,
        subject_train=s_tr,
        subject_test=s_te,
        excluded_classes=excluded,
    )


def _images(p: Path, a: dict[str, np.ndarray], exclude: Sequence[int | str]) -> tuple:
    x, x_te = _finite(p, "x_train", a["x_train"]), _finite(p, "x_test", a["x_test"])
    if x.ndim < 2 or x.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{p}: x_train {x.shape} and x_test {x_te.shape} do not match")
    y = _labels(p, "y_train", a["y_train"], x.shape[0])
    y_te = _labels(p, "y_test", a["y_test"], x_te.shape[0])
    names = _class_names(p, a, np.concatenate([y, y_te]))
    excluded = resolve_classes(exclude, names, p.name)
    if excluded:
        tr, te = ~np.isin(y, excluded), ~np.isin(y_te, excluded)
        x, y, x_te, y_te = x[tr], y[tr], x_te[te], y_te[te]
    if x.dtype == np.uint8:
        norm = {"mean": [0.0], "std": [255.0]}
    else:
        std = float(x.std(dtype=np.float64))
        norm = {"mean": [float(x.mean(dtype=np.float64))], "std": [std if std > 1e-12 else 1.0]}
    return x, y, x_te, y_te, norm, None, None, names, None, None, excluded


def _imu(p, a, window, hop, test_subjects, seed, exclude) -> tuple:
    rate = int(a["rate_hz"]) if "rate_hz" in a else None
    if "x_raw" in a:
        x = _finite(p, "x_raw", a["x_raw"])
        if x.ndim != 3 or x.shape[0] == 0:
            raise DataError(f"{p}: x_raw has shape {x.shape}, expected (n, length, channels)")
        n = x.shape[0]
        y = _labels(p, "y", a["y"], n)
        subject = _labels(p, "subject", a["subject"], n)
        group = _labels(p, "recording", a["recording"], n)
        length, hop = x.shape[1], x.shape[1] // 2  # the files are cut with 50 % overlap
    else:
        rows = _finite(p, "x", a["x"])
        if rows.ndim != 2 or rows.shape[0] == 0:
            raise DataError(f"{p}: x has shape {rows.shape}, expected (n_rows, n_channels)")
        n = rows.shape[0]
        length = window if window is not None else (2 * rate if rate else 100)
        hop = hop if hop is not None else max(1, length // 2)
        if length < 8 or hop < 1:
            raise ConfigError(f"window = {length}, hop = {hop}: need window >= 8 and hop >= 1")
        w = windows_by_segment(
            rows,
            _labels(p, "y", a["y"], n),
            _labels(p, "recording", a["recording"], n),
            length,
            hop,
            subjects=_labels(p, "subject", a["subject"], n),
        )
        x, y, subject, group = w.x, w.y, w.subject, w.group
    keep = y >= 0  # negative labels mark unlabelled rows
    x, y, subject, group = x[keep], y[keep], subject[keep], group[keep]
    if len(y) == 0:
        raise DataError(f"{p}: no labelled window of {length} rows fits in any recording")
    names = _class_names(p, a, y)
    excluded = resolve_classes(exclude, names, p.name)
    channels = [str(c) for c in np.asarray(a.get("channels", [])).ravel()]
    if len(channels) != x.shape[2]:
        channels = [f"ch{i}" for i in range(x.shape[2])]

    if test_subjects is None:
        held: list[int] = default_test_subjects(subject.tolist())
    else:
        held = sorted({int(s) for s in test_subjects})
        unknown = sorted(set(held) - set(subject.tolist()))
        if unknown:
            raise ConfigError(f"test_subjects: {unknown} not in the data's subjects")
    if held:
        test = np.isin(subject, held)
    else:
        recs = np.unique(group)
        n_out = max(1, round(_RECORDING_HOLDOUT * recs.size))
        test = np.isin(group, np.random.default_rng(seed).permutation(recs)[:n_out])
    # The hold-out is chosen first, so excluding classes never changes who is held out.
    kept = ~np.isin(y, excluded)
    train, test = ~test & kept, test & kept
    x_tr = x[train]
    rows = x_tr.reshape(-1, x.shape[2]).astype(np.float64)
    std = rows.std(axis=0) if len(rows) else np.ones(x.shape[2])
    norm = {
        "mean": [float(v) for v in (rows.mean(axis=0) if len(rows) else np.zeros(x.shape[2]))],
        "std": [float(v) if v > 1e-12 else 1.0 for v in std],
    }
    win = {"length": int(length), "hop": int(hop), "channels": channels, "rate_hz": rate}
    parts = (x_tr, y[train], x[test], y[test], norm, win, held, names)
    return (*parts, subject[train], subject[test], excluded)


def split_classes(data: TrainingData, classes_per_task: int, scenario: str) -> list[Task]:
    """Cut ``data`` into tasks of ``classes_per_task`` classes each, in label order.

    The last task takes the remainder; excluded classes are skipped. Labels
    stay as they are for task-IL and class-IL; for domain-IL they become the
    position within the task (0, 1, ...), so every task shares one small head.

    >>> d = TrainingData("t", "", "", np.zeros((6, 2), np.float32), np.arange(6),
    ...                  np.zeros((6, 2), np.float32), np.arange(6), (2,), tuple("abcdef"),
    ...                  {"mean": [0.0], "std": [1.0]}, None, None)
    >>> [(t.name, t.classes, t.y_train.tolist()) for t in split_classes(d, 4, "domain-il")]
    [('a-b-c-d', (0, 1, 2, 3), [0, 1, 2, 3]), ('e-f', (0, 1), [0, 1])]
    """
    _check_scenario(scenario)
    kept = data.kept_classes
    k = int(classes_per_task)
    if k < 1 or k >= len(kept):
        without = f" ({len(data.excluded_classes)} excluded)" if data.excluded_classes else ""
        raise ConfigError(
            f"split_classes = {classes_per_task}: must be in [1, {len(kept) - 1}] "
            f"for {len(kept)} classes{without}"
        )
    tasks = []
    for start in range(0, len(kept), k):
        group = list(kept[start : start + k])
        tr, te = np.isin(data.y_train, group), np.isin(data.y_test, group)
        if not tr.any() or not te.any():
            raise DataError(f"{data.name}: classes {group} have no training or test samples")
        # Domain-IL: a label becomes its position in the task's group.
        relabel = np.arange(max(group) + 1)
        if scenario == "domain-il":
            relabel[group] = np.arange(len(group))
        tasks.append(
            Task(
                name="-".join(data.class_names[c] for c in group),
                x_train=data.x_train[tr],
                y_train=relabel[data.y_train[tr]],
                x_test=data.x_test[te],
                y_test=relabel[data.y_test[te]],
                classes=tuple(int(relabel[c]) for c in group),
            )
        )
    return tasks


def tasks_from_files(datas: Sequence[TrainingData], scenario: str) -> list[Task]:
    """One task per dataset, e.g. MNIST then Fashion-MNIST.

    Domain-IL shares the label space (one head of ``max n_classes`` outputs, the
    setting of the reference EWC table); task-IL and class-IL give each file its
    own block of labels, offset by the classes of the files before it.
    """
    _check_scenario(scenario)
    if not datas:
        raise ConfigError("tasks: need at least one dataset")
    shapes = {d.in_shape for d in datas}
    if len(shapes) > 1:
        raise DataError(f"tasks have different input shapes {sorted(shapes)}")
    tasks, offset = [], 0
    for d in datas:
        shift = 0 if scenario == "domain-il" else offset
        tasks.append(
            Task(
                name=d.name,
                x_train=d.x_train,
                y_train=d.y_train + shift,
                x_test=d.x_test,
                y_test=d.y_test + shift,
                classes=tuple(range(shift, shift + d.n_classes)),
            )
        )
        offset += d.n_classes
    return tasks


def n_outputs(tasks: Sequence[Task]) -> int:
    """Logits the head needs for ``tasks``: one past the largest label (at least 2)."""
    return max(2, 1 + max(max(t.classes) for t in tasks))


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario = {scenario!r}: must be one of {', '.join(SCENARIOS)}")


DEFAULT_IMU = Path(__file__).resolve().parents[1] / "data" / "watch_imu.npz"
