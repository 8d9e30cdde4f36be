"""Build ``watch_unseen.npz``: smartwatch users that no part of edgecl has seen.

The embedded ``edgecl/data/watch_imu.npz`` holds subjects 1–7 of the watch
dataset shipped in the PyPI package ``seglearn`` 1.2.5 (BSD; Burns et al. 2018,
arXiv:1802.01489). That file has 10 subjects; subjects 8, 9 and 10 are in no
file of this project, so no bundle, test or tuning has ever seen them. This
tool downloads the wheel with pip (or takes ``--wheel``), reads its pickled
``watch_dataset.npy`` with a restricted unpickler that admits only numpy arrays
and plain containers, checks that its subjects 1–7 equal the embedded file row
for row, and writes the chosen subjects in the same pickle-free row layout
(``x, y, subject, recording, side, classes, channels, rate_hz``; recording ids
are the dataset's list indices, as in the embedded file).

The result is for evaluation only (``edgecl eval --scenario new-user --data
build/watch_unseen.npz --test-subjects 8 9 10``); it is never shipped.

Usage::

    python tools/watch_extra.py                       # → build/watch_unseen.npz
    python tools/watch_extra.py --subjects 8 9 10 --out OUT.npz --wheel seglearn-1.2.5-...whl
"""

from __future__ import annotations

import argparse
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "edgecl" / "data" / "watch_imu.npz"
MEMBER = "seglearn/data/watch_dataset.npy"
PACKAGE = "seglearn==1.2.5"

# The only globals the pickle may name: numpy's array machinery and nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how numpy pickles spell raw bytes; builds bytes from str only
}


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the pickle")
        return super().find_class(module, name)


def read_watch(wheel: Path) -> dict:
    """The dataset dict of seglearn's ``watch_dataset.npy``, unpickled safely."""
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(MEMBER)
    f = io.BytesIO(raw)
    major, _ = np.lib.format.read_magic(f)
    read_header = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, _, _ = read_header(f)
    if shape != ():
        raise ValueError(f"{MEMBER}: expected a 0-d object array, got shape {shape}")
    obj = _NumpyOnly(f).load()
    data = obj.item() if isinstance(obj, np.ndarray) else obj
    if not isinstance(data, dict) or not {"X", "y", "subject", "side"} <= set(data):
        raise ValueError(f"{MEMBER}: not the watch dataset")
    return data


def to_rows(data: dict, subjects: list[int]) -> dict[str, np.ndarray]:
    """Row-stream layout of the recordings of ``subjects``, in the dataset's order."""
    xs, ys, ss, rs, sides = [], [], [], [], []
    for i, (x, y, s, side) in enumerate(
        zip(data["X"], data["y"], data["subject"], data["side"], strict=True)
    ):
        if int(s) not in subjects:
            continue
        n = len(x)
        xs.append(np.asarray(x, dtype=np.float32))
        ys.append(np.full(n, int(y), np.int64))
        ss.append(np.full(n, int(s), np.int64))
        rs.append(np.full(n, i, np.int64))
        sides.append(np.full(n, int(side), np.int64))
    if not xs:
        raise ValueError(f"no recording of subjects {subjects}")
    return {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys),
        "subject": np.concatenate(ss),
        "recording": np.concatenate(rs),
        "side": np.concatenate(sides),
        "classes": np.array([str(c) for c in data["y_labels"]]),
        "channels": np.array([str(c) for c in data["X_labels"]]),
        "rate_hz": np.array(50),
    }


def check_embedded(data: dict) -> None:
    """Subjects 1–7 of the wheel must equal the embedded file (same source, same order)."""
    with np.load(EMBEDDED, allow_pickle=False) as e:
        ref = {k: e[k] for k in ("x", "y", "subject", "recording")}
    mine = to_rows(data, sorted({int(s) for s in np.unique(ref["subject"])}))
    for k in ("y", "subject", "recording"):
        if not np.array_equal(mine[k], ref[k]):
            raise ValueError(f"the wheel's subjects 1-7 differ from {EMBEDDED} in {k!r}")
    if not np.allclose(mine["x"], ref["x"], atol=1e-5):
        raise ValueError(f"the wheel's sensor rows differ from {EMBEDDED}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subjects", type=int, nargs="+", default=[8, 9, 10])
    p.add_argument("--out", type=Path, default=ROOT / "build" / "watch_unseen.npz")
    p.add_argument("--wheel", type=Path, help="a downloaded seglearn 1.2.5 wheel")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgecl-watch-") as tmp:
        wheel = args.wheel
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, PACKAGE]
            subprocess.run(cmd, check=True)
            wheel = next(Path(tmp).glob("seglearn-*.whl"))
        data = read_watch(wheel)
    check_embedded(data)
    rows = to_rows(data, args.subjects)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **rows)
    n_rec = np.unique(rows["recording"]).size
    print(f"{args.out}: subjects {args.subjects}, {n_rec} recordings, {len(rows['y']):,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
