"""Load evaluation datasets from ``.npz`` files into feature matrices.

Three layouts are recognised by their keys (``../shared/data/README.md``):

* **image / vector** — ``x_train, y_train, x_test, y_test``. Samples are
  flattened; ``uint8`` pixels become float32 in [0, 1] (``/255``), other
  dtypes are kept as float32 unchanged.
* **IMU row stream** — ``x`` (rows × channels), ``y``, ``subject``,
  ``recording`` per row; optional ``classes``, ``channels``, ``rate_hz``.
  Rows are cut into windows that never cross a recording
  (:func:`edgecl.runtime.windowing.windows_by_segment`, majority label), 2 s
  long with 50 % overlap by default, and each window becomes a feature vector
  (:func:`edgecl.eval.features.window_features`).
* **IMU windows** — ``x_raw`` (windows × length × channels), ``y``,
  ``subject``, ``recording`` per window (e.g. ``har.npz``); windows go straight
  to the features.

Windows whose label is negative (unlabelled rows) are dropped. The row and
window layouts have no predefined test split: :mod:`edgecl.eval.streams` makes
one from recordings and subjects. Files are always read with
``allow_pickle=False``; anything malformed raises
:class:`~edgecl.errors.DataError` naming the file and the problem.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecl.errors import DataError
from edgecl.eval.features import feature_names, window_features
from edgecl.runtime.windowing import windows_by_segment

__all__ = ["DEFAULT_DATA", "Dataset", "load_dataset"]

#: The smartwatch IMU recordings shipped inside the package (BSD licence).
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "watch_imu.npz"

_IMAGE_KEYS = ("x_train", "y_train", "x_test", "y_test")
_ROW_KEYS = ("x", "y", "subject", "recording")
_WINDOW_KEYS = ("x_raw", "y", "subject", "recording")
# A window of this many seconds when the caller does not choose a length.
_WINDOW_SECONDS = 2.0


@dataclass(frozen=True, eq=False)
class Dataset:
    """Feature vectors and labels, with the grouping needed to build streams.

    Attributes
    ----------
    name : str
        File stem, e.g. ``"watch_imu"``.
    x, y : ndarray
        (n, dim) float32 features and (n,) int64 labels in ``[0, n_classes)``;
        the training split when the file has one.
    x_test, y_test : ndarray or None
        Predefined test split (image layout), else None.
    subject, recording : ndarray or None
        Per-sample subject and recording ids (IMU layouts), else None.
    class_names : tuple of str
        One name per class; ``str(label)`` when the file names none.
    feature_names : tuple of str
        One name per column of ``x`` (``"px0".."pxN"`` for images).
    is_image : bool
        Raw pixels: z-scoring is skipped and permutations are meaningful.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    subject: np.ndarray | None
    recording: np.ndarray | None
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    is_image: bool

    @property
    def dim(self) -> int:
        """Feature vector length."""
        return int(self.x.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (labels are ``0..n_classes-1``)."""
        return len(self.class_names)


def load_dataset(
    path: str | os.PathLike[str] | None = None,
    *,
    window: int | None = None,
    hop: int | None = None,
    n_bands: int = 4,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Dataset:
    """Read an ``.npz`` dataset and turn it into feature vectors.

    Parameters
    ----------
    path : path-like, optional
        The ``.npz`` file; default :data:`DEFAULT_DATA` (the embedded IMU data).
    window, hop : int, optional
        Window length and step in rows for the row layout. Default: 2 s at the
        file's ``rate_hz`` (100 rows when it has none) and half of that.
    n_bands : int
        Spectral bands per channel in the IMU features.
    embed : callable, optional
        Maps a batch of raw samples — IMU windows ``(n, window, channels)`` or
        flattened images ``(n, pixels)`` in [0, 1] — to ``(n, dim)`` embeddings,
        e.g. a bundle's ``OnnxExtractor.embed_many``; replaces the hand-made
        IMU features and the raw pixels.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    DataError
        The file is not a readable npz, lacks keys or has inconsistent arrays.

    >>> ds = load_dataset(window=100, hop=50)
    >>> ds.name, ds.dim, ds.n_classes, ds.class_names[:2]
    ('watch_imu', 72, 7, ('PEN', 'ABD'))
    """
    p = Path(DEFAULT_DATA if path is None else path)
    arrays = _read_npz(p)
    if all(k in arrays for k in _IMAGE_KEYS):
        return _image_dataset(p, arrays, embed)
    if all(k in arrays for k in _WINDOW_KEYS):
        return _window_dataset(p, arrays, n_bands, embed)
    if all(k in arrays for k in _ROW_KEYS):
        return _row_dataset(p, arrays, window, hop, n_bands, embed)
    found = ", ".join(sorted(arrays)) or "nothing"
    raise DataError(
        f"{p}: unrecognised layout (found {found}); expected the image keys "
        f"{', '.join(_IMAGE_KEYS)}, the IMU row keys {', '.join(_ROW_KEYS)} "
        f"or the IMU window keys {', '.join(_WINDOW_KEYS)}"
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        # ValueError: object arrays (pickles) or a corrupt member; OSError: not a zip at all.
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _labels(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.shape != (n,):
        raise DataError(f"{path}: {key} has shape {y.shape}, expected ({n},) to match the samples")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {key} must hold integer labels, got dtype {y.dtype}")
    return y.astype(np.int64)


def _class_names(path: Path, arrays: dict[str, np.ndarray], labels: np.ndarray) -> tuple[str, ...]:
    if labels.size and labels.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, found {labels.min()}")
    n = int(labels.max()) + 1 if labels.size else 0
    if "classes" in arrays:
        names = tuple(str(c) for c in np.asarray(arrays["classes"]).ravel())
        if len(names) < n:
            raise DataError(
                f"{path}: 'classes' names {len(names)} classes but labels reach {n - 1}"
            )
        return names
    return tuple(str(i) for i in range(n))


def _finite(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise DataError(f"{path}: {key} must be real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {key} holds NaN or infinite values")
    return x


def _pixels(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{path}: {key} has shape {x.shape}, expected (n_samples, ...) with n > 0")
    _finite(path, key, x)
    flat = x.reshape(x.shape[0], -1)
    if x.dtype == np.uint8:
        return flat.astype(np.float32) / np.float32(255.0)
    return flat.astype(np.float32)


def _image_dataset(
    path: Path, a: dict[str, np.ndarray], embed: Callable[[np.ndarray], np.ndarray] | None
) -> Dataset:
    x = _pixels(path, "x_train", a["x_train"])
    x_test = _pixels(path, "x_test", a["x_test"])
    if x_test.shape[1] != x.shape[1]:
        raise DataError(
            f"{path}: x_test samples have {x_test.shape[1]} values, x_train {x.shape[1]}"
        )
    if embed is not None:
        x, x_test = _embedded(embed, x), _embedded(embed, x_test)
    y = _labels(path, "y_train", a["y_train"], x.shape[0])
    y_test = _labels(path, "y_test", a["y_test"], x_test.shape[0])
    names = _class_names(path, a, np.concatenate([y, y_test]))
    return Dataset(
        name=path.stem,
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        subject=None,
        recording=None,
        class_names=names,
        feature_names=tuple(f"{'e' if embed else 'px'}{i}" for i in range(x.shape[1])),
        is_image=embed is None,
    )


def _embedded(embed: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    e = np.asarray(embed(x), dtype=np.float32)
    if e.ndim != 2 or e.shape[0] != x.shape[0] or not np.isfinite(e).all():
        raise DataError(f"the extractor returned {e.shape} (or non-finite values) for {x.shape}")
    return e


def _group_array(path: Path, a: dict[str, np.ndarray], key: str, n: int) -> np.ndarray:
    return _labels(path, key, a[key], n)  # same checks: shape (n,), integer ids


def _row_dataset(
    path: Path,
    a: dict[str, np.ndarray],
    window: int | None,
    hop: int | None,
    n_bands: int,
    embed: Callable[[np.ndarray], np.ndarray] | None,
) -> Dataset:
    rows = _finite(path, "x", a["x"])
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise DataError(f"{path}: x has shape {rows.shape}, expected (n_rows, n_channels)")
    n = rows.shape[0]
    y = _labels(path, "y", a["y"], n)
    subject = _group_array(path, a, "subject", n)
    recording = _group_array(path, a, "recording", n)
    rate = float(a["rate_hz"]) if "rate_hz" in a else None
    if window is None:
        window = int(round(_WINDOW_SECONDS * rate)) if rate else 100
    if hop is None:
        hop = max(1, window // 2)
    if window < 2 or hop < 1:
        raise DataError(f"window = {window}, hop = {hop}: need window >= 2 and hop >= 1")
    w = windows_by_segment(rows, y, recording, window, hop, subjects=subject, label="majority")
    keep = w.y >= 0
    if not keep.any():
        raise DataError(
            f"{path}: no labelled window of {window} rows fits in any recording "
            f"({n} rows in {np.unique(recording).size} recordings)"
        )
    return _imu_dataset(
        path, a, w.x[keep], w.y[keep], w.subject[keep], w.group[keep], n_bands, embed
    )


def _window_dataset(
    path: Path,
    a: dict[str, np.ndarray],
    n_bands: int,
    embed: Callable[[np.ndarray], np.ndarray] | None,
) -> Dataset:
    x = _finite(path, "x_raw", a["x_raw"])
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] < 2:
        raise DataError(
            f"{path}: x_raw has shape {x.shape}, expected (n_windows, length, channels)"
        )
    n = x.shape[0]
    y = _labels(path, "y", a["y"], n)
    subject = _group_array(path, a, "subject", n)
    recording = _group_array(path, a, "recording", n)
    keep = y >= 0
    return _imu_dataset(path, a, x[keep], y[keep], subject[keep], recording[keep], n_bands, embed)


def _imu_dataset(
    path: Path,
    a: dict[str, np.ndarray],
    windows: np.ndarray,
    y: np.ndarray,
    subject: np.ndarray,
    recording: np.ndarray,
    n_bands: int,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Dataset:
    n_channels = windows.shape[2]
    if embed is not None:
        x = _embedded(embed, windows)
        names = tuple(f"e{i}" for i in range(x.shape[1]))
    else:
        x = window_features(windows, n_bands=n_bands)
        names = None
    channels = [str(c) for c in np.asarray(a.get("channels", [])).ravel()]
    if len(channels) != n_channels:
        channels = [f"ch{i}" for i in range(n_channels)]
    return Dataset(
        name=path.stem,
        x=x,
        y=y,
        x_test=None,
        y_test=None,
        subject=subject,
        recording=recording,
        class_names=_class_names(path, a, y),
        feature_names=names or tuple(feature_names(channels, n_bands=n_bands)),
        is_image=False,
    )
