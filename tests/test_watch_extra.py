"""tools/watch_extra.py: the restricted unpickler and the row layout it writes."""

from __future__ import annotations

import io
import pickle
import zipfile

import numpy as np
import pytest

from tests.helpers import import_tool

extra = import_tool("watch_extra")


def _wheel(tmp_path, obj) -> object:
    buf = io.BytesIO()
    np.save(buf, np.array(obj, dtype=object), allow_pickle=True)
    path = tmp_path / "seglearn-1.2.5-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(extra.MEMBER, buf.getvalue())
    return path


def _dataset():
    rng = np.random.default_rng(0)
    return {
        "X": [rng.normal(size=(n, 6)) for n in (5, 7, 4)],
        "y": np.array([2, 0, 1]),
        "subject": np.array([8, 9, 8]),
        "side": np.array([1, 0, 0]),
        "y_labels": ["A", "B", "C"],
        "X_labels": ["ax", "ay", "az", "wx", "wy", "wz"],
    }


def test_reads_numpy_pickles_and_writes_the_row_layout(tmp_path):
    data = extra.read_watch(_wheel(tmp_path, _dataset()))
    rows = extra.to_rows(data, [8])
    assert rows["x"].shape == (9, 6) and rows["x"].dtype == np.float32
    assert rows["recording"].tolist() == [0] * 5 + [2] * 4  # list indices, as in the package data
    assert rows["y"].tolist() == [2] * 5 + [1] * 4 and set(rows["subject"].tolist()) == {8}


class _Evil:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_refuses_any_other_global(tmp_path):
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        extra.read_watch(_wheel(tmp_path, {"X": [], "payload": _Evil()}))
