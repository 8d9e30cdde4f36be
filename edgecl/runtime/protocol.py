"""The wire protocol (v1): a pure parser fed bytes, and formatters for output lines.

:class:`Parser` has no I/O: ``feed(b)`` takes whatever bytes arrived and returns
the complete messages they finish, in order, as :class:`Sample`, :class:`Label`,
:class:`Command` or :class:`Reject` values (pyserial's ``Packetizer`` idea). A
split anywhere in the byte stream gives the same list, so hypothesis can fuzz it
directly. Nothing a sender does raises: every malformed message becomes one
``Reject(reason)``, counted by the daemon, and parsing goes on.

Formats (``ProtocolConfig.format``):

* ``ndjson`` (default) — one JSON object per line: ``{"x": [..]}`` (a raw sensor
  row or a feature vector), ``{"x": [..], "y": 3}`` (labelled),
  ``{"label": 3, "seq": 1042}`` (delayed label for window ``seq``),
  ``{"cmd": "stats" | "checkpoint" | "reset-user"}`` (only with ``control=True``;
  ``reset-user`` starts a new user: see :meth:`StreamingLearner.reset_user`). Other keys
  (a timestamp, say) are ignored; ``"y": null`` means unlabelled. Blank lines
  are skipped; ``\\r\\n`` endings are accepted.
* ``csv`` — ``v1,...,vD`` or ``v1,...,vD,y`` (the label as an extra last column,
  when ``dim`` is set); ``#`` starts a comment line.
* ``framed`` — binary frames for noisy links, see :mod:`edgecl.runtime.framing`;
  each frame carries one NDJSON message.

A line longer than ``max_line`` bytes is one ``too_long`` reject, whatever its
length; the parser never buffers more than ``max_line`` bytes of it.

>>> p = Parser(ProtocolConfig(dim=2, max_classes=3))
>>> p.feed(b'{"x": [1, 2]}\\n{"x": [1, 2], "y": 1}\\n{"lab')
[Sample(x=[1.0, 2.0], y=None), Sample(x=[1.0, 2.0], y=1)]
>>> p.feed(b'el": 2, "seq": 0}\\n{"x": [1]}\\nnot json\\n')
[Label(label=2, seq=0), Reject(reason='bad_dim', detail='x has 1 values, expected 2'), \
Reject(reason='bad_json', detail='Expecting value: line 1 column 1 (char 0)')]
>>> format_prediction(7, 2, 0.913, 181.4)
b'{"seq":7,"pred":2,"p":0.913,"us":181}\\n'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecl.errors import ConfigError

__all__ = [
    "COMMANDS",
    "FORMATS",
    "REJECT_REASONS",
    "Command",
    "Label",
    "Message",
    "Parser",
    "ProtocolConfig",
    "Reject",
    "Sample",
    "format_label",
    "format_prediction",
    "format_sample",
    "format_stats",
]

FORMATS = ("ndjson", "csv", "framed")
COMMANDS = ("stats", "checkpoint", "reset-user")
# Every reason a message can be skipped for; the daemon adds unknown_seq,
# duplicate_seq and truncated (a partial line cut off by a disconnect).
REJECT_REASONS = (
    "too_long",  # line or frame longer than max_line bytes
    "bad_utf8",  # not UTF-8 text
    "bad_json",  # not JSON (or nested too deeply to parse)
    "bad_type",  # JSON but not a known message shape, or non-numeric values
    "bad_dim",  # x has the wrong number of values
    "non_finite",  # NaN, inf or beyond float32 range in x
    "bad_label",  # label not an integer in [0, max_classes)
    "bad_seq",  # seq not an integer >= 0
    "bad_cmd",  # unknown control command
    "control_disabled",  # a command arrived but control is off
    "crc",  # framed: checksum mismatch
    "bad_frame",  # framed: bytes outside any frame
    "unknown_seq",  # a delayed label for a window not (or no longer) remembered
    "duplicate_seq",  # a second label for the same window
    "truncated",  # a partial line dropped when the link went down
)
_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class ProtocolConfig:
    """Parser settings.

    Parameters
    ----------
    format : {"ndjson", "csv", "framed"}
    dim : int or None
        Values expected in ``x`` (channels for raw rows, the model input size for
        feature vectors); None accepts any length >= 1.
    max_classes : int or None
        Labels must lie in ``[0, max_classes)``; None accepts any integer >= 0.
    max_line : int
        Longest accepted line or frame payload, in bytes (the memory bound).
    control : bool
        Accept ``{"cmd": ...}`` messages (off: they are ``control_disabled``).
    """

    format: str = "ndjson"
    dim: int | None = None
    max_classes: int | None = None
    max_line: int = 65536  # 784 pixels as JSON take ~4 KB; 64 KiB leaves room
    control: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"format = {self.format!r}: must be one of {', '.join(FORMATS)}")
        for name, low in (("dim", 1), ("max_classes", 1), ("max_line", 16)):
            v = getattr(self, name)
            if v is None and name != "max_line":
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} = {v!r}: must be an integer >= {low}")


@dataclass(frozen=True, eq=False)
class Sample:
    """``x`` (float64 array) with an optional label ``y``."""

    x: np.ndarray
    y: int | None = None

    def __repr__(self) -> str:
        return f"Sample(x={self.x.tolist()}, y={self.y})"


@dataclass(frozen=True)
class Label:
    """A delayed label for the window or sample numbered ``seq``."""

    label: int
    seq: int


@dataclass(frozen=True)
class Command:
    """A control command (``stats`` or ``checkpoint``)."""

    cmd: str


@dataclass(frozen=True)
class Reject:
    """A skipped message: ``reason`` is one of :data:`REJECT_REASONS`."""

    reason: str
    detail: str = field(default="", compare=False)


Message = Sample | Label | Command


class Parser:
    """Incremental parser: ``feed(bytes) -> list[Message | Reject]``; never raises on input.

    Parameters
    ----------
    config : ProtocolConfig, optional
    """

    def __init__(self, config: ProtocolConfig | None = None) -> None:
        self.config = config or ProtocolConfig()
        self._buf = bytearray()
        self._skipping = False  # inside an over-long line: drop until the next newline
        self._frames = None
        if self.config.format == "framed":
            from edgecl.runtime.framing import FrameDecoder

            self._frames = FrameDecoder(self.config.max_line)

    def feed(self, data: bytes) -> list[Message | Reject]:
        """Parse ``data`` (any chunk of the stream); return the messages it completes."""
        out: list[Message | Reject] = []
        if self._frames is not None:
            for item in self._frames.feed(data):
                out.append(item if isinstance(item, Reject) else self._payload(item))
            return out
        buf = self._buf
        cap = self.config.max_line
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False  # the rest of an over-long line, already rejected
            elif buf:
                buf += data[start:nl]
                item = self._line(bytes(buf))
                buf.clear()
                if item is not None:
                    out.append(item)
            else:
                item = self._line(data[start:nl])
                if item is not None:
                    out.append(item)
            start = nl + 1
        if start < len(data) and not self._skipping:
            buf += data[start:]
            if len(buf) > cap + 1:  # +1: a trailing \r is not part of the line
                out.append(Reject("too_long", f"line longer than {cap} bytes"))
                buf.clear()
                self._skipping = True
        return out

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line or frame (at most ``max_line`` + a frame header)."""
        return self._frames.buffered if self._frames is not None else len(self._buf)

    def flush(self) -> list[Message | Reject]:
        """End of stream (a file's EOF): parse a last line that has no newline."""
        if self._frames is not None:
            return self._frames.flush()
        rest, skipping = bytes(self._buf), self._skipping
        self._buf.clear()
        self._skipping = False
        if skipping or not rest:
            return []
        item = self._line(rest)
        return [] if item is None else [item]

    def reset(self) -> list[Reject]:
        """The link dropped: discard a partial line (one ``truncated`` reject if any)."""
        pending = bool(self._buf) or self._skipping
        if self._frames is not None:
            pending = self._frames.reset()
        self._buf.clear()
        self._skipping = False
        return [Reject("truncated", "partial message dropped at disconnect")] if pending else []

    # -- one line ------------------------------------------------------------
    def _line(self, line: bytes) -> Message | Reject | None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.config.max_line:
            return Reject("too_long", f"line of {len(line)} bytes > {self.config.max_line}")
        if not line.strip():
            return None
        if self.config.format == "csv":
            return self._csv(line)
        return self._payload(line)

    def _payload(self, raw: bytes) -> Message | Reject:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Reject("bad_utf8", str(exc))
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return Reject("bad_json", str(exc)[:80])
        if not isinstance(obj, dict):
            return Reject("bad_type", f"a JSON {type(obj).__name__}, not an object")
        return self._message(obj)

    def _message(self, obj: Mapping[str, Any]) -> Message | Reject:
        if "x" in obj:
            x = self._vector(obj["x"])
            if isinstance(x, Reject):
                return x
            y = obj.get("y")
            if y is None:
                return Sample(x)
            bad = self._bad_label(y)
            return bad if bad is not None else Sample(x, int(y))
        if "label" in obj:
            bad = self._bad_label(obj["label"])
            if bad is not None:
                return bad
            seq = obj.get("seq")
            if type(seq) is not int or seq < 0:
                return Reject("bad_seq", f"seq = {seq!r}: must be an integer >= 0")
            return Label(obj["label"], seq)
        if "cmd" in obj:
            if not self.config.control:
                return Reject("control_disabled", "control commands are off (--control)")
            if obj["cmd"] not in COMMANDS:
                return Reject("bad_cmd", f"cmd = {obj['cmd']!r}: one of {', '.join(COMMANDS)}")
            return Command(obj["cmd"])
        return Reject("bad_type", "an object without x, label or cmd")

    def _vector(self, values: Any) -> np.ndarray | Reject:
        if not isinstance(values, list):
            return Reject("bad_type", f"x is a {type(values).__name__}, not a list")
        if 0 < len(values) <= 32:
            # A sensor row: checking a few Python numbers beats three numpy reductions.
            for v in values:
                if type(v) is not float and type(v) is not int:
                    return Reject("bad_type", "x is not a flat list of numbers")
            dim = self.config.dim
            if dim is not None and len(values) != dim:
                return Reject("bad_dim", f"x has {len(values)} values, expected {dim}")
            for v in values:
                if not -_F32_MAX <= v <= _F32_MAX:  # False for NaN too
                    return Reject("non_finite", "x holds NaN, inf or a value beyond float32")
            return np.array(values, dtype=np.float64)
        try:
            a = np.asarray(values)
        except ValueError:  # ragged nesting
            return Reject("bad_type", "x is not a flat list of numbers")
        if a.ndim != 1 or a.dtype.kind not in "iuf":
            return Reject("bad_type", "x is not a flat list of numbers")
        return self._check(a.astype(np.float64, copy=False))

    def _check(self, x: np.ndarray) -> np.ndarray | Reject:
        dim = self.config.dim
        if (dim is not None and x.shape[0] != dim) or x.shape[0] == 0:
            return Reject("bad_dim", f"x has {x.shape[0]} values, expected {dim or '>= 1'}")
        if not (np.abs(x) <= _F32_MAX).all():  # False for NaN too
            return Reject("non_finite", "x holds NaN, inf or a value beyond float32")
        return x

    def _bad_label(self, y: Any) -> Reject | None:
        top = self.config.max_classes
        if type(y) is not int or y < 0 or (top is not None and y >= top):
            where = f"[0, {top})" if top is not None else ">= 0"
            return Reject("bad_label", f"label {y!r} is not an integer in {where}")
        return None

    def _csv(self, line: bytes) -> Message | Reject | None:
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            return Reject("bad_utf8", str(exc))
        if text.startswith("#"):
            return None  # a comment, skipped like a blank line
        fields = text.split(",")
        dim = self.config.dim
        label = None
        if dim is not None and len(fields) == dim + 1:
            try:
                label = int(fields.pop())
            except ValueError:
                return Reject("bad_label", "the label column is not an integer")
            bad = self._bad_label(label)
            if bad is not None:
                return bad
        try:
            x = np.array([float(f) for f in fields], dtype=np.float64)
        except ValueError:
            return Reject("bad_type", "a CSV field is not a number")
        checked = self._check(x)
        return checked if isinstance(checked, Reject) else Sample(checked, label)


# -- output ------------------------------------------------------------------


def format_prediction(seq: int, pred: int, p: float, us: float) -> bytes:
    """One prediction line: window ``seq``, class ``pred`` with probability ``p``, latency µs."""
    return b'{"seq":%d,"pred":%d,"p":%s,"us":%d}\n' % (
        seq,
        pred,
        _num(round(p, 4)).encode(),
        int(us + 0.5),
    )


def format_stats(stats: Mapping[str, Any]) -> bytes:
    """A ``{"stats": {...}}`` line (non-finite numbers become ``null``)."""
    return (json.dumps({"stats": _finite(stats)}, separators=(",", ":")) + "\n").encode()


def format_sample(x: Any, y: int | None = None) -> bytes:
    """An input line ``{"x": [...]}`` (``"y"`` too when labelled) — what a sensor sends.

    >>> format_sample([0.5, -1.0], 3)
    b'{"x":[0.5,-1.0],"y":3}\\n'
    """
    xs = ",".join(_num(float(v)) for v in np.asarray(x, dtype=np.float64).ravel())
    if y is None:
        return b'{"x":[%s]}\n' % xs.encode()
    return b'{"x":[%s],"y":%d}\n' % (xs.encode(), y)


def format_label(label: int, seq: int) -> bytes:
    """A delayed-label line ``{"label": y, "seq": n}``.

    >>> format_label(4, 1042)
    b'{"label":4,"seq":1042}\\n'
    """
    return b'{"label":%d,"seq":%d}\n' % (label, seq)


def _num(v: float) -> str:
    # repr is the shortest round-tripping form; NaN/Infinity are what Python's json reads.
    if not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return repr(float(v))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
