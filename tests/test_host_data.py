"""Host training data: layouts, normalisation, IMU hold-out, task cutting per scenario."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from host_helpers import write_image_npz, write_imu_npz  # noqa: E402

from edgecl.errors import ConfigError, DataError  # noqa: E402
from edgecl.host.data import (  # noqa: E402
    load_training_data,
    n_outputs,
    normalise,
    split_classes,
    tasks_from_files,
)
from edgecl.runtime.windowing import windows_by_segment  # noqa: E402


def test_uint8_images_are_scaled_by_255(tmp_path):
    path = tmp_path / "img.npz"
    g = np.random.default_rng(0)
    x = g.integers(0, 256, size=(20, 4, 4), dtype=np.uint8)
    y = np.arange(20) % 3
    np.savez(path, x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    d = load_training_data(path)
    assert d.in_shape == (4, 4) and d.window is None and d.n_classes == 3
    assert d.normalisation == {"mean": [0.0], "std": [255.0]}
    np.testing.assert_allclose(d.x_train, x / 255.0, rtol=1e-6)
    assert d.x_train.dtype == np.float32


def test_imu_rows_are_windowed_normalised_per_channel_and_subjects_held_out(tmp_path):
    path = write_imu_npz(tmp_path / "imu.npz")
    d = load_training_data(path, window=16, hop=8, test_subjects=[3])
    assert d.in_shape == (16, 3) and d.test_subjects == [3]
    assert d.window == {"length": 16, "hop": 8, "channels": ["a", "b", "c"], "rate_hz": 50}
    assert d.class_names == ("slow", "mid", "fast")
    # Same windows as the runtime windower; the stats come from the training windows only.
    raw = np.load(path)
    w = windows_by_segment(raw["x"], raw["y"], raw["recording"], 16, 8, subjects=raw["subject"])
    train = w.x[w.subject != 3]
    mean, std = train.reshape(-1, 3).mean(0), train.reshape(-1, 3).std(0)
    np.testing.assert_allclose(d.normalisation["mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(d.normalisation["std"], std, rtol=1e-5)
    np.testing.assert_allclose(d.x_train, (train - mean) / std, rtol=1e-4, atol=1e-5)
    assert len(d.y_test) == int((w.subject == 3).sum())
    np.testing.assert_allclose(normalise(w.x[w.subject == 3], d.normalisation), d.x_test, atol=1e-5)


def test_imu_windows_carry_their_subjects_through_the_split_and_limit(tmp_path):
    path = write_imu_npz(tmp_path / "imu.npz")
    d = load_training_data(path, window=16, hop=8, test_subjects=[3])
    raw = np.load(path)
    w = windows_by_segment(raw["x"], raw["y"], raw["recording"], 16, 8, subjects=raw["subject"])
    np.testing.assert_array_equal(d.subject_train, w.subject[w.subject != 3])
    np.testing.assert_array_equal(d.subject_test, w.subject[w.subject == 3])
    assert d.subject_train.dtype == np.int64 and d.excluded_classes == ()
    small = load_training_data(path, window=16, hop=8, test_subjects=[3], limit=5, seed=1)
    keep = np.sort(np.random.default_rng(1).permutation(len(d.y_train))[:5])
    np.testing.assert_array_equal(small.subject_train, d.subject_train[keep])
    np.testing.assert_array_equal(small.y_train, d.y_train[keep])


def test_imu_default_hold_out_and_recording_hold_out(tmp_path):
    path = write_imu_npz(tmp_path / "imu.npz")
    assert load_training_data(path, window=16).test_subjects == [3]  # last quarter of 1..3
    d = load_training_data(path, window=16, test_subjects=[])
    assert d.test_subjects == [] and len(d.y_test) > 0
    with pytest.raises(ConfigError, match="test_subjects"):
        load_training_data(path, window=16, test_subjects=[9])


def test_limit_is_a_seeded_subset(tmp_path):
    path = write_image_npz(tmp_path / "img.npz")
    a = load_training_data(path, limit=10, seed=1)
    b = load_training_data(path, limit=10, seed=1)
    assert len(a.y_train) == 10 and np.array_equal(a.x_train, b.x_train)


def test_bad_files_are_data_errors(tmp_path):
    np.savez(tmp_path / "bad.npz", z=np.zeros(3))
    with pytest.raises(DataError, match="layout"):
        load_training_data(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_training_data(tmp_path / "junk.npz")


def test_split_classes_per_scenario(tmp_path):
    d = load_training_data(write_image_npz(tmp_path / "img.npz"))  # 6 classes
    for scenario in ("class-il", "task-il"):
        tasks = split_classes(d, 2, scenario)
        assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5)]
        assert set(tasks[1].y_train) == {2, 3} and n_outputs(tasks) == 6
    dom = split_classes(d, 2, "domain-il")
    assert [t.classes for t in dom] == [(0, 1)] * 3
    assert set(dom[2].y_train) == {0, 1} and n_outputs(dom) == 2
    np.testing.assert_array_equal(dom[2].x_train, d.x_train[d.y_train >= 4])
    with pytest.raises(ConfigError, match="split_classes"):
        split_classes(d, 6, "class-il")


def test_tasks_from_files_offsets_labels_except_in_domain_il(tmp_path):
    a = load_training_data(write_image_npz(tmp_path / "a.npz", n_classes=3))
    b = load_training_data(write_image_npz(tmp_path / "b.npz", n_classes=4, seed=5))
    dom = tasks_from_files([a, b], "domain-il")
    assert [t.classes for t in dom] == [(0, 1, 2), (0, 1, 2, 3)] and n_outputs(dom) == 4
    cil = tasks_from_files([a, b], "class-il")
    assert cil[1].classes == (3, 4, 5, 6) and cil[1].y_train.min() == 3 and n_outputs(cil) == 7
    with pytest.raises(ConfigError, match="scenario"):
        tasks_from_files([a], "task-free")
