"""Continual-learning streams: partitions, seeding, hold-outs and the task-free mix."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_file

from edgecl.errors import ConfigError, DataError
from edgecl.eval.datasets import Dataset, load_dataset
from edgecl.eval.streams import SCENARIOS, build_stream, default_test_subjects


@pytest.fixture(scope="module")
def imu() -> Dataset:
    return load_dataset()


def image_dataset(n_train=200, n_test=50, dim=12, n_classes=10, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset(
        name="tiny",
        x=rng.random((n_train, dim), dtype=np.float32),
        y=np.arange(n_train) % n_classes,
        x_test=rng.random((n_test, dim), dtype=np.float32),
        y_test=np.arange(n_test) % n_classes,
        subject=None,
        recording=None,
        class_names=tuple(str(i) for i in range(n_classes)),
        feature_names=tuple(f"px{i}" for i in range(dim)),
        is_image=True,
    )


@pytest.mark.parametrize("scenario", ["class-il", "task-il", "task-free"])
@pytest.mark.parametrize("kwargs", [{}, {"classes_per_task": 3}, {"n_tasks": 3}])
def test_class_partition_covers_every_class_once(imu, scenario, kwargs):
    s = build_stream(imu, scenario, **kwargs)
    classes = [c for t in s.tasks for c in t.classes]
    assert sorted(classes) == list(range(7))  # each class in exactly one task
    for t in s.tasks:
        assert set(np.unique(t.y_test)) == set(t.classes)
        assert t.mask == (t.classes if scenario == "task-il" else None)


def test_default_task_sizes(imu):
    assert [len(t.classes) for t in build_stream(imu, "class-il").tasks] == [2, 2, 2, 1]
    assert [len(t.classes) for t in build_stream(imu, "class-il", n_tasks=3).tasks] == [3, 2, 2]
    assert [len(t.classes) for t in build_stream(image_dataset(), "class-il").tasks] == [2] * 5


def test_subject_holdout_is_disjoint(imu):
    s = build_stream(imu, "domain-il")
    assert default_test_subjects(range(1, 8)) == [6, 7]
    assert [t.name for t in s.tasks] == [f"subject {i}" for i in range(1, 6)]
    assert s.holdout_name == "subjects 6, 7"
    # The held-out windows are exactly subjects 6 and 7, standardised like the rest.
    held = np.isin(imu.subject, [6, 7])
    assert s.holdout_y.size == held.sum()
    # Train and test windows never share a feature vector (no shared recording),
    # and no training window comes from a held-out subject.
    train = np.concatenate([t.x_train for t in s.tasks])
    test = np.concatenate([t.x_test for t in s.tasks])
    rows = {r.tobytes() for r in train}
    assert not rows & {r.tobytes() for r in test}
    assert not rows & {r.tobytes() for r in s.holdout_x}
    assert train.shape[0] + test.shape[0] + s.holdout_y.size == imu.y.size


def test_custom_and_empty_test_subjects(imu):
    s = build_stream(imu, "domain-il", test_subjects=[1])
    assert [t.name for t in s.tasks][0] == "subject 2" and s.holdout_name == "subject 1"
    s = build_stream(imu, "class-il", test_subjects=[])
    assert s.holdout_x is None and s.holdout_name is None
    with pytest.raises(ConfigError, match=r"\[9\] not in watch_imu"):
        build_stream(imu, "domain-il", test_subjects=[9])
    with pytest.raises(ConfigError, match="leaves none"):
        build_stream(imu, "domain-il", test_subjects=range(1, 8))


def test_standardised_on_the_first_task(imu):
    s = build_stream(imu, "class-il", test_subjects=[])
    x0 = s.tasks[0].x_train
    np.testing.assert_allclose(x0.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x0.std(axis=0), 1.0, atol=1e-3)
    # Later tasks are not refitted: their statistics differ.
    assert np.abs(s.tasks[1].x_train.mean(axis=0)).max() > 0.1


def test_images_are_not_standardised():
    ds = image_dataset()
    s = build_stream(ds, "class-il")
    assert s.tasks[0].x_train.min() >= 0.0 and s.tasks[0].x_train.max() <= 1.0


def test_permutations_seeded_and_reproducible():
    ds = image_dataset()
    a = build_stream(ds, "domain-il", seed=3)
    b = build_stream(ds, "domain-il", seed=3)
    c = build_stream(ds, "domain-il", seed=4)
    assert len(a.tasks) == 5
    np.testing.assert_array_equal(a.tasks[0].permutation, np.arange(12))  # identity first
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        np.testing.assert_array_equal(ta.permutation, tb.permutation)
        np.testing.assert_array_equal(ta.train_set()[0], tb.train_set()[0])
    assert any(
        not np.array_equal(ta.permutation, tc.permutation)
        for ta, tc in zip(a.tasks, c.tasks, strict=True)
    )
    # Each task is the same images with its pixels permuted.
    x1, y1 = a.tasks[1].train_set()
    np.testing.assert_array_equal(x1, a.tasks[0].x_train[:, a.tasks[1].permutation])
    np.testing.assert_array_equal(a.tasks[1].train_sample(5), x1[5])
    xt, _ = a.tasks[2].test_set()
    np.testing.assert_array_equal(xt, ds.x_test[:, a.tasks[2].permutation])
    assert len(build_stream(ds, "domain-il", n_tasks=3).tasks) == 3


def test_limit_caps_each_task(imu):
    s = build_stream(imu, "domain-il", limit=7)
    assert [t.n_train for t in s.tasks] == [7] * 5
    assert s.boundaries.tolist() == [7, 14, 21, 28, 35]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_seed_same_stream(imu, scenario):
    a = build_stream(imu, scenario, seed=5)
    b = build_stream(imu, scenario, seed=5)
    np.testing.assert_array_equal(a.schedule, b.schedule)
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        np.testing.assert_array_equal(ta.x_train, tb.x_train)
    c = build_stream(imu, scenario, seed=6)
    assert not np.array_equal(a.tasks[0].y_train, c.tasks[0].y_train) or not np.array_equal(
        a.tasks[0].x_train, c.tasks[0].x_train
    )


def test_task_free_has_every_sample_once_and_blurs_boundaries(imu):
    plain = build_stream(imu, "class-il", seed=1)
    free = build_stream(imu, "task-free", seed=1, blur=0.5)
    assert free.n_train == plain.n_train
    # Same samples, every one exactly once, in a different order.
    assert sorted(map(tuple, free.schedule.tolist())) == sorted(map(tuple, plain.schedule.tolist()))
    assert not np.array_equal(free.schedule, plain.schedule)
    tasks = free.schedule[:, 0]
    # Only neighbours mix (blur <= 1 task), and tasks still arrive in order overall.
    assert np.all(np.diff(tasks) >= -1)
    # Around the first boundary the next task already appears; far from it, it does not.
    b = int(free.boundaries[0])
    assert (tasks[:b] == 1).any() and not (tasks[: b // 2] == 1).any()
    # blur = 0 is the class-IL order.
    zero = build_stream(imu, "task-free", seed=1, blur=0.0)
    np.testing.assert_array_equal(zero.schedule, plain.schedule)


def test_samples_iterates_in_schedule_order(imu):
    s = build_stream(imu, "task-free", limit=5)
    got = list(s.samples())
    assert len(got) == s.n_train
    for (x, y, t), (tt, i) in zip(got, s.schedule.tolist(), strict=True):
        assert t == tt and y == s.tasks[t].y_train[i]
        np.testing.assert_array_equal(x, s.tasks[t].x_train[i])


def test_option_errors(imu):
    with pytest.raises(ConfigError, match="scenario"):
        build_stream(imu, "joint")
    with pytest.raises(ConfigError, match="classes_per_task"):
        build_stream(imu, "domain-il", classes_per_task=2)
    with pytest.raises(ConfigError, match="n_tasks = 9: only 7 classes"):
        build_stream(imu, "class-il", n_tasks=9)
    with pytest.raises(ConfigError, match="limit"):
        build_stream(imu, "class-il", limit=0)
    with pytest.raises(ConfigError, match="blur"):
        build_stream(imu, "task-free", blur=2.0)
    with pytest.raises(ConfigError, match="no subjects"):
        build_stream(image_dataset(), "class-il", test_subjects=[1])


def test_task_without_test_samples_is_an_error():
    ds = image_dataset()
    ds = Dataset(**{**ds.__dict__, "y_test": np.zeros_like(ds.y_test)})  # test has class 0 only
    with pytest.raises(DataError, match="task '2\\+3' of class-il has no test samples"):
        build_stream(ds, "class-il")


def test_split_mnist_from_shared_data():
    ds = load_dataset(shared_file("mnist.npz"))
    s = build_stream(ds, "class-il", limit=50)
    assert [t.name for t in s.tasks] == ["0+1", "2+3", "4+5", "6+7", "8+9"]
    assert sum(t.y_test.size for t in s.tasks) == 10_000
