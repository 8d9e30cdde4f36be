"""Continual-learning streams: a dataset cut into a sequence of tasks.

Scenarios (van de Ven & Tolias 2019, "Three scenarios for continual learning",
plus the task-free setting of Aljundi et al. 2019):

* ``class-il`` — classes split into tasks (pairs by default: 5×2 for MNIST,
  2+2+2+1 for the 7 IMU exercises); the learner predicts over every class.
* ``task-il`` — the same tasks, but a prediction on task ``j`` is the most
  probable class *of task j* (the task id is known at test time).
* ``domain-il`` — the label set stays, the input distribution moves. Images:
  pixel permutations (task 0 the identity). IMU: one task per training subject.
* ``task-free`` — the class-IL tasks with blurred boundaries: each sample's
  position is its nominal one plus uniform noise of width ``blur`` tasks, so
  near a boundary the share of the next task ramps linearly from 0 to 1. The
  learner never sees task ids (it never does); the accuracy matrix is still
  taken at the nominal boundaries.

Test sets. Images use the file's test split. IMU files have none, so it is made
from recordings and subjects: the subjects in ``test_subjects`` (default: the
last quarter of the subject ids, rounded up — subjects 6 and 7 of
``watch_imu``) are held out entirely and scored after every task as
``holdout_accuracy`` (new users, the figure that matters for deployment). Of
the remaining subjects, the last recording of every (subject, class) pair that
has two or more goes to the per-task test sets, the rest is training data —
so a test window never shares a recording, and thus never overlaps, with a
training window.

Standardisation. Non-image features are z-scored with the mean and standard
deviation of the *first task's* training samples — what a device knows from
pre-training — and never refitted, so later tasks see the drift a device
would see. Images are only scaled to [0, 1].

Every random choice (sample order, permutations, blur) comes from ``seed``.

>>> from edgecl.eval.datasets import load_dataset
>>> s = build_stream(load_dataset(), "class-il", limit=20)
>>> [t.name for t in s.tasks], s.boundaries.tolist(), s.holdout_name
(['PEN+ABD', 'FEL+IR', 'ER+TRAP', 'ROW'], [20, 40, 60, 80], 'subjects 6, 7')
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from edgecl.errors import ConfigError, DataError
from edgecl.eval.datasets import Dataset

__all__ = ["SCENARIOS", "Stream", "Task", "build_stream", "default_test_subjects"]

SCENARIOS = ("class-il", "domain-il", "task-il", "task-free")
# Sample-position noise, in tasks, of the task-free stream.
DEFAULT_BLUR = 0.25
# Permutations (tasks) of permuted-pixel domain-IL.
DEFAULT_PERMUTATIONS = 5


@dataclass(frozen=True, eq=False)
class Task:
    """One task: training and test samples, in the order the learner sees them.

    Attributes
    ----------
    name : str
        Human-readable ("PEN+ABD", "subject 3", "perm2").
    x_train, y_train, x_test, y_test : ndarray
        Features (float32) and labels (int64). Tasks of one stream may share
        these arrays (permuted-pixel tasks share one image array).
    classes : tuple of int
        Labels present in ``y_train``.
    mask : tuple of int or None
        Task-IL: predictions are restricted to these labels. None otherwise.
    permutation : ndarray or None
        Permuted-pixel domain-IL: feature ``k`` of a sample is raw feature
        ``permutation[k]``; applied on access so tasks need no copies.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[int, ...]
    mask: tuple[int, ...] | None = None
    permutation: np.ndarray | None = None

    @property
    def n_train(self) -> int:
        """Training samples in this task."""
        return int(self.y_train.shape[0])

    def train_sample(self, i: int) -> np.ndarray:
        """Training sample ``i`` as the learner sees it (permutation applied)."""
        x = self.x_train[i]
        return x if self.permutation is None else x[self.permutation]

    def train_set(self) -> tuple[np.ndarray, np.ndarray]:
        """All training samples, materialised (permutation applied)."""
        x = self.x_train if self.permutation is None else self.x_train[:, self.permutation]
        return x, self.y_train

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """All test samples, materialised (permutation applied)."""
        x = self.x_test if self.permutation is None else self.x_test[:, self.permutation]
        return x, self.y_test


@dataclass(frozen=True, eq=False)
class Stream:
    """A scenario's tasks plus the order in which training samples arrive.

    Attributes
    ----------
    scenario : str
        One of :data:`SCENARIOS`.
    dataset : str
        Dataset name.
    tasks : tuple of Task
    n_classes, dim : int
        Label count and feature length of the dataset.
    class_names : tuple of str
    schedule : ndarray, shape (n_train, 2), int64
        ``(task, index)`` of every training sample in arrival order; task-ordered
        except in ``task-free``, where neighbouring tasks interleave.
    holdout_x, holdout_y : ndarray or None
        Samples of the held-out subjects (IMU data), scored after every task.
    holdout_name : str or None
        E.g. ``"subjects 6, 7"``.
    """

    scenario: str
    dataset: str
    tasks: tuple[Task, ...]
    n_classes: int
    dim: int
    class_names: tuple[str, ...]
    schedule: np.ndarray
    holdout_x: np.ndarray | None = None
    holdout_y: np.ndarray | None = None
    holdout_name: str | None = None

    @property
    def boundaries(self) -> np.ndarray:
        """Cumulative training-sample counts: the accuracy matrix's row ``i`` is
        taken after ``boundaries[i]`` samples (the nominal task ends)."""
        return np.cumsum([t.n_train for t in self.tasks]).astype(np.int64)

    @property
    def n_train(self) -> int:
        """Training samples in the whole stream."""
        return int(self.schedule.shape[0])

    def samples(self) -> Iterator[tuple[np.ndarray, int, int]]:
        """Yield ``(x, y, task)`` for every training sample, in arrival order."""
        for t, i in self.schedule.tolist():
            task = self.tasks[t]
            yield task.train_sample(i), int(task.y_train[i]), t


def default_test_subjects(subjects: Sequence[int]) -> list[int]:
    """The last quarter (rounded up) of the sorted subject ids.

    >>> default_test_subjects([1, 2, 3, 4, 5, 6, 7])
    [6, 7]
    """
    ids = sorted({int(s) for s in subjects})
    if len(ids) < 2:
        raise DataError(f"subject hold-out needs >= 2 subjects, the data has {len(ids)}")
    return ids[len(ids) - math.ceil(len(ids) / 4) :]


def build_stream(
    dataset: Dataset,
    scenario: str,
    *,
    classes_per_task: int | None = None,
    n_tasks: int | None = None,
    test_subjects: Sequence[int] | None = None,
    limit: int | None = None,
    blur: float = DEFAULT_BLUR,
    seed: int = 0,
) -> Stream:
    """Cut ``dataset`` into the tasks of ``scenario``.

    Parameters
    ----------
    dataset : Dataset
    scenario : {"class-il", "domain-il", "task-il", "task-free"}
    classes_per_task : int, optional
        Class-split scenarios: classes per task, ascending label order (default 2;
        the last task takes the remainder). Exclusive with ``n_tasks``.
    n_tasks : int, optional
        Class splits: split the classes into this many near-equal tasks. Image
        domain-IL: the number of permutations (default 5). IMU domain-IL: use the
        first ``n_tasks`` training subjects (default all).
    test_subjects : sequence of int, optional
        IMU data: subjects held out of training (default
        :func:`default_test_subjects`; empty = no hold-out).
    limit : int, optional
        At most this many training samples per task (after the seeded shuffle).
    blur : float
        Task-free: width of the boundary ramp in tasks, in [0, 1].
    seed : int
        Seeds sample order, permutations and blur.

    Raises
    ------
    ConfigError
        An option is out of range or does not apply to this dataset/scenario.
    DataError
        A task would have no training or no test samples.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario = {scenario!r}: must be one of {', '.join(SCENARIOS)}")
    _positive("classes_per_task", classes_per_task)
    _positive("n_tasks", n_tasks)
    _positive("limit", limit)
    if not 0.0 <= blur <= 1.0:
        raise ConfigError(f"blur = {blur}: must be in [0, 1] (a fraction of a task)")
    if classes_per_task is not None and (scenario == "domain-il" or n_tasks is not None):
        raise ConfigError("classes_per_task applies to class-il, task-il and task-free, alone")
    rng = np.random.default_rng(seed)

    pool, test, holdout, holdout_name = _base_split(dataset, test_subjects)
    x_tr, y_tr = dataset.x, dataset.y
    # A file's own test split (images, also when embedded by a bundle), else the pool's rows.
    has_test = dataset.x_test is not None and dataset.y_test is not None
    x_te, y_te = (dataset.x_test, dataset.y_test) if has_test else (dataset.x, dataset.y)

    if scenario == "domain-il" and dataset.is_image:
        specs = _permutation_specs(dataset, pool, test, n_tasks, rng)
    elif scenario == "domain-il":
        specs = _subject_specs(dataset, pool, test, n_tasks)
    else:
        specs = _class_specs(dataset, pool, test, y_te, classes_per_task, n_tasks)

    # One seeded order per task; permutation tasks share one (and so one array).
    shared_order = None
    orders = []
    for _, train_idx, _, _ in specs:
        if scenario == "domain-il" and dataset.is_image:
            if shared_order is None:
                shared_order = rng.permutation(train_idx)[:limit]
            orders.append(shared_order)
        else:
            orders.append(rng.permutation(train_idx)[:limit])

    if not dataset.is_image:
        # z-score with the first task's training statistics, as pre-training would.
        mean = x_tr[orders[0]].mean(axis=0, dtype=np.float64)
        std = x_tr[orders[0]].std(axis=0, dtype=np.float64)
        std[std < 1e-12] = 1.0
        x_tr = ((x_tr - mean) / std).astype(np.float32)
        x_te = ((x_te - mean) / std).astype(np.float32) if has_test else x_tr

    tasks = []
    shared_x: np.ndarray | None = None
    for (name, _, test_idx, perm), order in zip(specs, orders, strict=True):
        if perm is not None:
            shared_x = x_tr[order] if shared_x is None else shared_x
            xt = shared_x
        else:
            xt = x_tr[order]
        yt = y_tr[order]
        if yt.size == 0 or test_idx.size == 0:
            what = "training" if yt.size == 0 else "test"
            raise DataError(f"{dataset.name}: task {name!r} of {scenario} has no {what} samples")
        classes = tuple(int(c) for c in np.unique(yt))
        tasks.append(
            Task(
                name=name,
                x_train=xt,
                y_train=yt,
                x_test=x_te[test_idx],
                y_test=y_te[test_idx],
                classes=classes,
                mask=classes if scenario == "task-il" else None,
                permutation=perm,
            )
        )

    schedule = _schedule([t.n_train for t in tasks], blur if scenario == "task-free" else 0.0, rng)
    return Stream(
        scenario=scenario,
        dataset=dataset.name,
        tasks=tuple(tasks),
        n_classes=dataset.n_classes,
        dim=dataset.dim,
        class_names=dataset.class_names,
        schedule=schedule,
        holdout_x=None if holdout is None else x_te[holdout],
        holdout_y=None if holdout is None else y_te[holdout],
        holdout_name=holdout_name,
    )


# (name, training indices, test indices, pixel permutation or None)
_Spec = tuple[str, np.ndarray, np.ndarray, "np.ndarray | None"]


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} = {value!r}: must be an integer >= 1")


def _base_split(
    ds: Dataset, test_subjects: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str | None]:
    """Training pool, test indices and held-out subject indices of ``ds``.

    Image data: the file's split, no hold-out. IMU data: see the module docstring.
    """
    if ds.is_image or ds.subject is None or ds.recording is None:
        if test_subjects:
            raise ConfigError(f"test_subjects: {ds.name} has no subjects to hold out")
        assert ds.y_test is not None
        return np.arange(ds.y.size), np.arange(ds.y_test.size), None, None

    ids = sorted(set(ds.subject.tolist()))
    held = default_test_subjects(ids) if test_subjects is None else sorted(set(test_subjects))
    unknown = sorted(set(held) - set(ids))
    if unknown:
        raise ConfigError(
            f"test_subjects: {unknown} not in {ds.name} (subjects: {', '.join(map(str, ids))})"
        )
    if len(held) == len(ids):
        raise ConfigError(f"test_subjects: holding out every subject of {ds.name} leaves none")
    is_held = np.isin(ds.subject, held)
    # The last recording of each (subject, class) pair with >= 2 recordings is test data.
    pairs: dict[tuple[int, int], set[int]] = {}
    for s, c, r in zip(ds.subject.tolist(), ds.y.tolist(), ds.recording.tolist(), strict=True):
        pairs.setdefault((s, c), set()).add(r)
    test_rec = {(s, c): max(recs) for (s, c), recs in pairs.items() if len(recs) >= 2}
    is_test = np.array(
        [test_rec.get((s, c)) == r for s, c, r in zip(ds.subject, ds.y, ds.recording, strict=True)],
        dtype=bool,
    )
    is_test &= ~is_held
    pool = np.flatnonzero(~is_held & ~is_test)
    held_idx = np.flatnonzero(is_held) if held else None
    name = ("subject " if len(held) == 1 else "subjects ") + ", ".join(map(str, held))
    return pool, np.flatnonzero(is_test), held_idx, name if held else None


def _class_specs(
    ds: Dataset,
    pool: np.ndarray,
    test: np.ndarray,
    y_test: np.ndarray,
    classes_per_task: int | None,
    n_tasks: int | None,
) -> list[_Spec]:
    classes = np.unique(ds.y[pool])
    if n_tasks is not None:
        if n_tasks > classes.size:
            raise ConfigError(f"n_tasks = {n_tasks}: only {classes.size} classes to split")
        groups = np.array_split(classes, n_tasks)
    else:
        k = 2 if classes_per_task is None else classes_per_task
        groups = [classes[i : i + k] for i in range(0, classes.size, k)]
    specs: list[_Spec] = []
    for g in groups:
        name = "+".join(ds.class_names[c] for c in g)
        specs.append((name, pool[np.isin(ds.y[pool], g)], test[np.isin(y_test[test], g)], None))
    return specs


def _permutation_specs(
    ds: Dataset, pool: np.ndarray, test: np.ndarray, n_tasks: int | None, rng: np.random.Generator
) -> list[_Spec]:
    n = DEFAULT_PERMUTATIONS if n_tasks is None else n_tasks
    perms = [np.arange(ds.dim)] + [rng.permutation(ds.dim) for _ in range(n - 1)]
    return [(f"perm{j}", pool, test, p) for j, p in enumerate(perms)]


def _subject_specs(
    ds: Dataset, pool: np.ndarray, test: np.ndarray, n_tasks: int | None
) -> list[_Spec]:
    assert ds.subject is not None
    subjects = sorted(set(ds.subject[pool].tolist()))
    if n_tasks is not None:
        if n_tasks > len(subjects):
            raise ConfigError(f"n_tasks = {n_tasks}: only {len(subjects)} training subjects")
        subjects = subjects[:n_tasks]
    return [
        (f"subject {s}", pool[ds.subject[pool] == s], test[ds.subject[test] == s], None)
        for s in subjects
    ]


def _schedule(sizes: list[int], blur: float, rng: np.random.Generator) -> np.ndarray:
    """(task, index) pairs in arrival order; ``blur > 0`` interleaves neighbouring tasks.

    Sample ``i`` of task ``t`` sits at ``t + (i + 0.5) / n_t`` plus uniform noise
    of width ``blur``; sorting by position keeps every sample exactly once and,
    since a uniform block convolved with a uniform kernel has linear edges, the
    next task's share rises linearly across each boundary.
    """
    task = np.repeat(np.arange(len(sizes)), sizes)
    index = np.concatenate([np.arange(n) for n in sizes]) if sizes else np.empty(0, np.int64)
    if blur > 0 and task.size:
        n_t = np.asarray(sizes, dtype=np.float64)[task]
        pos = task + (index + 0.5) / n_t + rng.uniform(-blur / 2, blur / 2, task.size)
        order = np.argsort(pos, kind="stable")
        task, index = task[order], index[order]
    return np.stack([task, index], axis=1).astype(np.int64)
