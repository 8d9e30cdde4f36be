"""A live sensor from a recorded row stream: rows, delayed labels and injected faults.

:class:`SensorSimulator` turns an IMU row stream (default: the embedded
``watch_imu.npz``, or any ``.npz`` in that layout) into the bytes a sensor would
send over the wire protocol: one ``{"x": row}`` line per row and, after
``label_delay`` more windows, ``{"label": y, "seq": n}`` for window ``n`` —
it numbers windows exactly as the daemon does, by running the same
:class:`~edgecl.runtime.windowing.StreamWindower`. A fraction of windows is
never labelled, and faults are inserted *between* valid lines (so the rows and
the window numbering stay intact) and counted by the reject reason the daemon
will give them: ``bad_utf8`` (garbage bytes), ``bad_json`` (a truncated line),
``non_finite`` (NaN), ``bad_dim``, ``too_long``.

Sequence numbers count windows since the connection opened, on both sides: a
new connection (the daemon restarted or reconnected) starts again at 0.

Serving it over a pty, TCP or a file: :mod:`edgecl.sim.serve`.

>>> import numpy as np
>>> rows, labels = np.zeros((6, 2), np.float32), np.array([0, 0, 1, 1, 1, 1])
>>> sim = SensorSimulator(rows, labels, SimConfig(window=2, hop=2, label_delay=1))
>>> b"".join(sim.lines()).decode().splitlines()[:5]
['{"x":[0.0,0.0]}', '{"x":[0.0,0.0]}', '{"x":[0.0,0.0]}', '{"x":[0.0,0.0]}', '{"label":0,"seq":0}']
>>> sim.window_labels, sim.report()["labels"]
([0, 1, 1], 3)
"""

from __future__ import annotations

import os
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import ConfigError, DataError
from edgecl.runtime.protocol import format_label, format_sample
from edgecl.runtime.windowing import StreamWindower

__all__ = [
    "FAULTS",
    "SensorSimulator",
    "SimConfig",
    "load_rows",
]

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "watch_imu.npz"
# Fault kind → the daemon's reject reason for it.
FAULTS = {
    "garbage": "bad_utf8",
    "truncated": "bad_json",
    "nan": "non_finite",
    "bad_dim": "bad_dim",
    "oversize": "too_long",
}


@dataclass(frozen=True)
class SimConfig:
    """Simulator settings (window/hop must match the daemon's bundle)."""

    rate: float = 50.0  # rows per second; 0 = as fast as the reader takes them
    window: int = 100  # rows per window (the default bundle's)
    hop: int = 50  # rows between windows
    labels: str = "delayed"  # delayed: {"label","seq"} lines | rows: {"x","y"} | none
    label_delay: int = 2  # windows between a window and its delayed label
    unlabelled: float = 0.0  # fraction of windows never labelled
    garbage: float = 0.0  # per row: probability of one garbage line before it
    truncated: float = 0.0  # ... a valid line cut short
    nan: float = 0.0  # ... a row with a NaN
    bad_dim: float = 0.0  # ... a row with one value missing
    oversize: float = 0.0  # ... a line of oversize_bytes
    oversize_bytes: int = 70_000  # longer than the daemon's default 65536-byte cap
    label_rule: str = "majority"  # the daemon's --label-rule
    seed: int = 0

    def __post_init__(self) -> None:
        if self.labels not in ("delayed", "rows", "none"):
            raise ConfigError(f"labels = {self.labels!r}: one of delayed, rows, none")
        if not (self.rate >= 0 and np.isfinite(self.rate)):
            raise ConfigError(f"rate = {self.rate!r}: must be >= 0")
        for name in ("unlabelled", *FAULTS):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"{name} = {v!r}: a probability in [0, 1]")
        for name in ("window", "hop", "oversize_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.label_delay < 0:
            raise ConfigError(f"label_delay = {self.label_delay}: must be >= 0")


def load_rows(
    path: str | os.PathLike[str] | None = None, subjects: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``x`` (n, channels) float32 and labels ``y`` of an IMU row-stream ``.npz``.

    >>> x, y = load_rows(subjects=[6])
    >>> x.shape, int(y.min()), int(y.max())
    ((24927, 6), 0, 6)
    """
    path = Path(path) if path is not None else DEFAULT_DATA
    with np.load(path, allow_pickle=False) as d:
        missing = [k for k in ("x", "y") if k not in d.files]
        if missing:
            raise DataError(f"{path}: missing {missing}; expected the row layout (x, y, subject)")
        x = np.asarray(d["x"], dtype=np.float32)
        y = np.asarray(d["y"], dtype=np.int64)
        if subjects:
            if "subject" not in d.files:
                raise DataError(f"{path}: no 'subject' array to select subjects from")
            keep = np.isin(d["subject"], subjects)
            if not keep.any():
                have = sorted(int(s) for s in np.unique(d["subject"]))
                raise DataError(f"{path}: no rows for subjects {subjects}; it has {have}")
            x, y = x[keep], y[keep]
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise DataError(f"{path}: x must be (n, channels) and y (n,); got {x.shape}, {y.shape}")
    return x, y


class SensorSimulator:
    """The byte stream of a sensor replaying ``rows`` (see the module docstring).

    Attributes
    ----------
    window_labels : list of int
        True label of every window of the current connection, by ``seq``.
    window_taught : list of bool
        Whether each window's label was (or will be) sent, by ``seq``.
    injected : Counter
        Faults inserted so far, by the daemon's reject reason.

    ``teach`` (one bool per row, default all True): a window's label is sent
    only when its last row is True — e.g. only a new user's calibration
    recordings are labelled and the rest stay held out. ``extra`` maps a row
    index to bytes sent just before that row (a control command such as
    ``{"cmd": "reset-user"}`` where the wearer changes).
    """

    def __init__(
        self,
        rows: np.ndarray,
        labels: np.ndarray,
        config: SimConfig | None = None,
        *,
        teach: np.ndarray | None = None,
        extra: dict[int, bytes] | None = None,
    ):
        self.config = cfg = config or SimConfig()
        self.rows = np.asarray(rows, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.teach = (
            np.ones(len(self.labels), dtype=bool) if teach is None else np.asarray(teach, bool)
        )
        if self.teach.shape != self.labels.shape:
            raise ConfigError(f"teach has shape {self.teach.shape}; need {self.labels.shape}")
        self.extra = dict(extra or {})
        self._rng = np.random.default_rng(cfg.seed)
        self.injected: Counter[str] = Counter()
        self.sent_rows = 0
        self.sent_windows = 0  # over every connection (window_labels: this one only)
        self.sent_labels = 0
        self.connections = 0
        self.disconnects = 0  # connections dropped on purpose (serve_tcp)
        self.position = 0  # next row to send
        self.new_connection()

    def new_connection(self) -> None:
        """A (re)connected reader starts a new window numbering at seq 0."""
        cfg = self.config
        self._win = StreamWindower(
            cfg.window,
            cfg.hop,
            self.rows.shape[1] if self.rows.ndim == 2 else 1,
            label=cfg.label_rule,
        )
        self.window_labels: list[int] = []
        self.window_taught: list[bool] = []
        self._due: deque[tuple[int, int]] = deque()  # (window seq, label) awaiting delivery
        self._row_block_labelled = True
        self.connections += 1

    def lines(self, limit: int | None = None) -> Iterator[bytes]:
        """Yield the bytes for each row in turn (injected faults and labels included)."""
        end = self.rows.shape[0] if limit is None else min(self.rows.shape[0], limit)
        while self.position < end:
            yield self.next_row()
        yield self.finish()

    def next_row(self) -> bytes:
        """The bytes that carry the next row."""
        cfg, rng = self.config, self._rng
        i = self.position
        self.position += 1
        out = [
            self._fault(kind)
            for kind in FAULTS
            if getattr(cfg, kind) and rng.random() < getattr(cfg, kind)
        ]
        if i in self.extra:
            out.append(self.extra[i])
        x, y = self.rows[i], int(self.labels[i])
        if cfg.labels == "rows":
            if (self._win.rows % cfg.hop) == 0:
                self._row_block_labelled = rng.random() >= cfg.unlabelled
            out.append(format_sample(x, y if self._row_block_labelled else None))
            seq = self._win.push(x, y if self._row_block_labelled else None)
        else:
            out.append(format_sample(x))
            seq = self._win.push(x, y)
        self.sent_rows += 1
        if seq is not None:
            true = self._win.window_label() if cfg.labels != "rows" else self._true_label()
            self.window_labels.append(true)
            self.sent_windows += 1
            taught = False
            if cfg.labels == "delayed" and true >= 0 and rng.random() >= cfg.unlabelled:
                taught = bool(self.teach[i])
                if taught:
                    self._due.append((seq, true))
            self.window_taught.append(taught)
            while self._due and self._due[0][0] + cfg.label_delay <= seq:
                out.append(self._label(*self._due.popleft()))
        return b"".join(out)

    def _true_label(self) -> int:
        # Rows mode hides unlabelled rows' labels from the windower; the truth is here.
        lab = self.labels[self.position - self.config.window : self.position]
        if self.config.label_rule == "last":
            return int(lab[-1])
        return int(np.argmax(np.bincount(lab + 1))) - 1

    def finish(self) -> bytes:
        """Labels still due at the end of the data."""
        out = [self._label(s, y) for s, y in self._due]
        self._due.clear()
        return b"".join(out)

    def _label(self, seq: int, y: int) -> bytes:
        self.sent_labels += 1
        return format_label(y, seq)

    def _fault(self, kind: str) -> bytes:
        rng, width = self._rng, self.rows.shape[1]
        self.injected[FAULTS[kind]] += 1
        if kind == "garbage":
            # 0xff never occurs in UTF-8, and 0x80-0xff holds no newline.
            junk = rng.integers(0x80, 0x100, size=int(rng.integers(1, 40)), dtype=np.uint8)
            return b"\xff" + junk.tobytes() + b"\n"
        if kind == "truncated":
            line = format_sample(rng.normal(size=width))
            return line[: int(rng.integers(1, len(line) - 1))] + b"\n"
        if kind == "nan":
            v = rng.normal(size=width)
            v[int(rng.integers(width))] = np.nan
            return format_sample(v)
        if kind == "bad_dim":
            return format_sample(rng.normal(size=max(1, width - 1)) if width > 1 else [0.0, 0.0])
        return b'{"x":[' + b"0," * (self.config.oversize_bytes // 2) + b"0]}\n"

    def report(self) -> dict[str, Any]:
        """What was sent: rows, windows, labels and injected faults by reason."""
        return {
            "rows": self.sent_rows,
            "windows": self.sent_windows,
            "labels": self.sent_labels,
            "injected": dict(sorted(self.injected.items())),
            "connections": self.connections,
            "disconnects": self.disconnects,
        }
