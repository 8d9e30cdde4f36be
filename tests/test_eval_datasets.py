"""Dataset loading: the three layouts and clear errors for malformed files."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_file

from edgecl.errors import DataError
from edgecl.eval.datasets import DEFAULT_DATA, load_dataset


def write_rows(path, n_rec=4, rows_per_rec=120, channels=6, **extra):
    rng = np.random.default_rng(0)
    n = n_rec * rows_per_rec
    arrays = {
        "x": rng.normal(size=(n, channels)).astype(np.float32),
        "y": np.repeat(np.arange(n_rec) % 2, rows_per_rec),
        "subject": np.repeat(np.arange(n_rec) // 2 + 1, rows_per_rec),
        "recording": np.repeat(np.arange(n_rec), rows_per_rec),
        **extra,
    }
    np.savez(path, **arrays)
    return path


def test_embedded_imu_default():
    ds = load_dataset()
    assert DEFAULT_DATA.name == "watch_imu.npz"
    assert ds.name == "watch_imu" and not ds.is_image
    assert ds.x.dtype == np.float32 and ds.x.shape == (ds.y.size, 72) and ds.dim == 72
    assert ds.n_classes == 7 and ds.class_names[-1] == "ROW"
    assert set(np.unique(ds.subject)) == set(range(1, 8))
    assert ds.x_test is None and len(ds.feature_names) == ds.dim
    assert np.isfinite(ds.x).all()


def test_row_layout_windows_within_recordings(tmp_path):
    p = write_rows(tmp_path / "rows.npz", rate_hz=np.int64(25))
    ds = load_dataset(p)  # 2 s at 25 Hz = 50 rows, hop 25 -> (120-50)//25+1 = 3 per recording
    assert ds.x.shape == (4 * 3, 72)
    assert ds.recording.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert ds.subject.tolist() == [1] * 6 + [2] * 6
    assert ds.class_names == ("0", "1")
    ds = load_dataset(p, window=100, hop=10)
    assert ds.x.shape[0] == 4 * 3


def test_window_layout_drops_unlabelled(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "win.npz"
    np.savez(
        p,
        x_raw=rng.normal(size=(5, 32, 9)).astype(np.float32),
        y=np.array([0, 1, -1, 2, 1]),
        subject=np.array([1, 1, 2, 2, 2]),
        recording=np.array([1, 1, 2, 2, 3]),
        classes=np.array(["a", "b", "c"]),
    )
    ds = load_dataset(p)
    assert ds.x.shape == (4, 12 * 9)  # 9 channels + 3 magnitudes
    assert ds.y.tolist() == [0, 1, 2, 1]
    assert ds.class_names == ("a", "b", "c")


def test_image_layout(tmp_path):
    p = tmp_path / "img.npz"
    x = np.full((6, 4, 4), 255, dtype=np.uint8)
    np.savez(p, x_train=x, y_train=np.arange(6) % 3, x_test=x[:2], y_test=np.array([0, 2]))
    ds = load_dataset(p)
    assert ds.is_image and ds.x.shape == (6, 16) and ds.x_test.shape == (2, 16)
    assert ds.x.dtype == np.float32 and ds.x.max() == 1.0
    assert ds.n_classes == 3


def test_float_images_are_not_rescaled(tmp_path):
    p = tmp_path / "vec.npz"
    x = np.full((4, 3), 7.0)
    np.savez(p, x_train=x, y_train=np.array([0, 1, 0, 1]), x_test=x, y_test=np.array([0, 1, 0, 1]))
    assert load_dataset(p).x.max() == 7.0


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_dataset("/nonexistent/d.npz")


def test_unknown_layout_names_the_keys(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(p, x_train=np.zeros((2, 2)), y_train=np.zeros(2, int))
    with pytest.raises(DataError, match=r"found x_train, y_train.*x_test"):
        load_dataset(p)


def test_label_shape_mismatch(tmp_path):
    p = tmp_path / "bad.npz"
    x = np.zeros((4, 3))
    np.savez(p, x_train=x, y_train=np.zeros(3, int), x_test=x, y_test=np.zeros(4, int))
    with pytest.raises(DataError, match=r"y_train has shape \(3,\), expected \(4,\)"):
        load_dataset(p)


def test_feature_width_mismatch(tmp_path):
    p = tmp_path / "bad.npz"
    np.savez(
        p,
        x_train=np.zeros((4, 3)),
        y_train=np.zeros(4, int),
        x_test=np.zeros((4, 5)),
        y_test=np.zeros(4, int),
    )
    with pytest.raises(DataError, match="x_test samples have 5 values, x_train 3"):
        load_dataset(p)


def test_non_finite_and_float_labels(tmp_path):
    p = write_rows(tmp_path / "nan.npz")
    d = dict(np.load(p))
    d["x"][3, 1] = np.nan
    np.savez(p, **d)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(p)
    d["x"][3, 1] = 0.0
    d["y"] = d["y"].astype(np.float64)
    np.savez(p, **d)
    with pytest.raises(DataError, match="integer labels"):
        load_dataset(p)


def test_pickled_arrays_are_refused(tmp_path):
    p = tmp_path / "pickle.npz"
    np.savez(p, x_train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(p)


def test_not_a_zip(tmp_path):
    p = tmp_path / "text.npz"
    p.write_text("hello")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(p)


def test_windows_longer_than_every_recording(tmp_path):
    p = write_rows(tmp_path / "short.npz", rows_per_rec=20)
    with pytest.raises(DataError, match="no labelled window"):
        load_dataset(p)


def test_har_window_layout():
    ds = load_dataset(shared_file("har.npz"))
    assert ds.x.shape == (7415, 12 * 9) and ds.n_classes == 6
    assert ds.class_names[0] == "WALKING"
