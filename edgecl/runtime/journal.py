"""The label journal: an append-only, checksummed redo log of every learner change.

Checkpoints are costly (the whole state, a few kB to MB), so they come every
N labels or S seconds; the journal covers the gap. After the daemon changes the
learner it appends one record — a label learned, a window observed (only when
the learner standardises per user), a user reset — with one ``write`` call, so
``kill -9`` loses at most the record being written; it fsyncs at most every
``fsync_s`` seconds (0: after every record), which bounds what a power cut loses.
Restart = the newest valid checkpoint (or the bundle head, or a new learner) +
the journal's records replayed in order; the result is byte-identical to a
learner fed exactly those records. A checkpoint truncates the journal: the
checkpoint is written atomically first, then a fresh journal replaces the old.

File ``journal.wal`` in the state directory::

    MAGIC (8 bytes) | record | record | ...
    record = length (uint32 LE) | crc32 (uint32 LE) | kind (1 byte) | payload

``length`` counts ``kind + payload``; the CRC (zlib's CRC-32) covers the length
field, the kind and the payload. Kinds and payloads (little-endian):

* 0 HEADER, the first record: canonical JSON ``{"format", "version", "dim",
  "tag", "base", "base_sha256"}`` — the base is the state the records apply to:
  a checkpoint (its file name and the sha256 of its bytes) or ``"initial"`` (the
  bundle head or a new learner: the sha256 of its :func:`state_bytes`). A journal
  whose base is not the state being resumed is never replayed.
* 1 LEARN: ``seq`` (int64) | ``label`` (int32) | the embedding (float32 × dim)
* 2 OBSERVE: the embedding (float32 × dim)
* 3 RESET_USER: empty

Embeddings are stored as the daemon passes them to the learner (float32: the
extractor's output), so replay feeds the learner the very same values. No pickle.

Reading stops at the first record that is incomplete (a torn tail), fails its
CRC, or has an unknown kind or a wrong length; the bytes from there on are
dropped, counted and logged, and the file is truncated before new appends.
Which journal is replayed onto what, at start: :func:`edgecl.runtime.launch.build_daemon`.

Test hook (test-only; ``tools/crash_test.py`` sets it): with
``$EDGECL_TEST_JOURNAL_DELAY_S`` > 0 every record is written in two halves with
that many seconds' sleep between them, so a ``kill -9`` can land inside a
record write and leave a torn tail on purpose.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> j = Journal.start(d, dim=2, tag="features:2", base="initial", base_sha256="0" * 64)
>>> j.learn(np.array([1, 2], np.float32), 1, seq=7); j.observe(np.zeros(2, np.float32))
>>> j.close()
>>> got = read_journal(Path(d) / JOURNAL)
>>> [r.kind for r in got.records], got.records[0].y, got.records[0].seq, got.dropped
([1, 2], 1, 7, 0)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import InputError
from edgecl.learner.state import atomic_write_bytes, canonical_json

__all__ = [
    "JOURNAL",
    "LEARN",
    "MAGIC",
    "OBSERVE",
    "RESET_USER",
    "Journal",
    "JournalContents",
    "Record",
    "apply_records",
    "encode_record",
    "parse_journal",
    "read_journal",
    "record_bytes",
]

log = logging.getLogger("edgecl.run")

JOURNAL = "journal.wal"
MAGIC = b"EDGECLJ\x01"
FORMAT, VERSION = "edgecl.journal", 1
HEADER, LEARN, OBSERVE, RESET_USER = 0, 1, 2, 3
_PREFIX = struct.Struct("<II")  # length, crc32
_LEARN = struct.Struct("<qi")  # seq, label
MAX_HEADER = 4096
_F32 = np.dtype("<f4")
DELAY_ENV = "EDGECL_TEST_JOURNAL_DELAY_S"


def encode_record(kind: int, payload: bytes = b"") -> bytes:
    """One record: length | crc32(length, kind, payload) | kind | payload."""
    body = bytes((kind,)) + payload
    n = struct.pack("<I", len(body))
    return n + struct.pack("<I", zlib.crc32(body, zlib.crc32(n))) + body


def _vector(x: Any, dim: int) -> bytes:
    v = np.asarray(x)
    if v.shape != (dim,) or v.dtype != np.float32:
        # A float64 embedding would replay rounded: refuse rather than drift.
        raise ValueError(
            f"journal embeddings are float32 of shape ({dim},); got {v.dtype} {v.shape}"
        )
    return v.astype(_F32, copy=False).tobytes()


def record_bytes(kind: int, dim: int) -> int:
    """Bytes one record of ``kind`` takes on disk for ``dim``-d embeddings.

    >>> record_bytes(LEARN, 64), record_bytes(OBSERVE, 64), record_bytes(RESET_USER, 64)
    (277, 265, 9)
    """
    payload = {LEARN: _LEARN.size + 4 * dim, OBSERVE: 4 * dim, RESET_USER: 0}[kind]
    return _PREFIX.size + 1 + payload


@dataclass(frozen=True)
class Record:
    """One replayable record: ``kind`` (LEARN, OBSERVE, RESET_USER), embedding, label, seq."""

    kind: int
    x: np.ndarray | None = None
    y: int = -1
    seq: int = -1


@dataclass
class JournalContents:
    """What :func:`read_journal` found: the header (None if unreadable), the whole
    records, where they end (``good_end``), the bytes dropped after them and why."""

    header: dict[str, Any] | None
    records: list[Record] = field(default_factory=list)
    good_end: int = 0
    dropped: int = 0
    reason: str | None = None


def _parse_header(payload: bytes) -> dict[str, Any] | None:
    try:
        h = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    ok = (
        isinstance(h, dict)
        and h.get("format") == FORMAT
        and h.get("version") == VERSION
        and isinstance(h.get("dim"), int)
        and 1 <= h["dim"] <= 1 << 20
        and isinstance(h.get("base_sha256"), str)
        and isinstance(h.get("base"), str)
        and isinstance(h.get("tag"), str)
    )
    return h if ok else None


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Parse a journal file; never raises on its content (a missing file raises OSError)."""
    data = Path(path).read_bytes()
    return parse_journal(data)


def parse_journal(data: bytes) -> JournalContents:
    """Parse journal bytes: the header and the longest prefix of whole, valid records."""
    out = JournalContents(header=None)
    if data[: len(MAGIC)] != MAGIC:
        out.reason, out.dropped = "no journal magic", len(data)
        return out
    pos, dim = len(MAGIC), 0
    while pos < len(data):
        if pos + _PREFIX.size + 1 > len(data):
            out.reason = "torn record"
            break
        n, crc = _PREFIX.unpack_from(data, pos)
        end = pos + _PREFIX.size + n
        limit = MAX_HEADER if out.header is None else _LEARN.size + 4 * dim
        if n < 1 or n > limit + 1:
            out.reason = f"impossible record length {n}"
            break
        if end > len(data):
            out.reason = "torn record"
            break
        body = data[pos + _PREFIX.size : end]
        if zlib.crc32(body, zlib.crc32(data[pos : pos + 4])) != crc:
            out.reason = "checksum mismatch"
            break
        kind, payload = body[0], body[1:]
        if out.header is None:
            header = _parse_header(payload) if kind == HEADER else None
            if header is None:
                out.reason = "bad header"
                break
            out.header, dim = header, header["dim"]
        elif kind == LEARN and len(payload) == _LEARN.size + 4 * dim:
            seq, y = _LEARN.unpack_from(payload)
            x = np.frombuffer(payload, _F32, dim, _LEARN.size).astype(np.float32)
            out.records.append(Record(LEARN, x, y, seq))
        elif kind == OBSERVE and len(payload) == 4 * dim:
            out.records.append(Record(OBSERVE, np.frombuffer(payload, _F32).astype(np.float32)))
        elif kind == RESET_USER and not payload:
            out.records.append(Record(RESET_USER))
        else:
            out.reason = f"bad record (kind {kind}, {len(payload)} bytes)"
            break
        pos = end
    out.good_end = pos if out.header is not None else 0
    out.dropped = len(data) - out.good_end
    return out


def apply_records(learner: Any, records: list[Record]) -> int:
    """Feed ``records`` to ``learner`` exactly as the daemon did; returns how many applied.

    A record the learner refuses (it refused it live too, so it was never written —
    only a hand-made journal has one) is skipped and logged.
    """
    done = 0
    for r in records:
        try:
            if r.kind == LEARN:
                learner.learn_one(r.x, r.y)
            elif r.kind == OBSERVE:
                learner.observe_one(r.x)
            else:
                learner.reset_user()
        except InputError as exc:
            log.warning("journal record %d skipped: %s", done, exc)
            continue
        done += 1
    return done


class Journal:
    """An open journal, appending; build it with :meth:`start` or :meth:`resume`.

    Writes never raise: a failed write (disk full, I/O error) is logged once and
    counted in :attr:`errors`, and the journal stops appending (a record after a
    torn one would never be replayed) until the next checkpoint :meth:`restart`\\ s it.
    """

    def __init__(self, path: Path, header: dict[str, Any], fsync_s: float, size: int) -> None:
        self.path, self.header, self.fsync_s = path, header, float(fsync_s)
        self.dim: int = header["dim"]
        self.size = size  # bytes in the file
        self.records = 0  # appended by this process since the last (re)start
        self.errors = 0
        self.replayed = 0  # records replayed onto the base at start (set by the launcher)
        self.replayed_labels = 0
        self._fd: int | None = None
        self._unsynced = False
        self._last_sync = time.monotonic()
        self._delay = _env_delay()
        self._open()

    # -- construction --------------------------------------------------------
    @classmethod
    def start(
        cls,
        directory: str | os.PathLike[str],
        *,
        dim: int,
        tag: str,
        base: str,
        base_sha256: str,
        fsync_s: float = 1.0,
    ) -> Journal:
        """Atomically replace ``directory/journal.wal`` by an empty journal over ``base``."""
        path = Path(directory) / JOURNAL
        header = {"format": FORMAT, "version": VERSION, "dim": int(dim), "tag": tag,
                  "base": base, "base_sha256": base_sha256}  # fmt: skip
        data = MAGIC + encode_record(HEADER, canonical_json(header).encode())
        time.sleep(_env_delay())  # test hook (0 unless set)
        atomic_write_bytes(path, data)
        return cls(path, header, fsync_s, len(data))

    @classmethod
    def resume(cls, path: Path, contents: JournalContents, fsync_s: float = 1.0) -> Journal:
        """Keep appending to an existing journal after its whole records (the torn
        tail, if any, is cut off first)."""
        assert contents.header is not None
        if contents.dropped:
            with open(path, "r+b") as f:  # the new length durable before new appends
                f.truncate(contents.good_end)
                os.fsync(f.fileno())
        return cls(path, contents.header, fsync_s, contents.good_end)

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(self.path, flags)

    # -- appending -----------------------------------------------------------
    @property
    def broken(self) -> bool:
        """True after a failed write, until the next :meth:`restart`."""
        return self._fd is None

    def learn(self, x: np.ndarray, y: int, seq: int = -1) -> None:
        """Append a LEARN record (a label the learner has just learned)."""
        self._append(encode_record(LEARN, _LEARN.pack(seq, y) + _vector(x, self.dim)))

    def observe(self, x: np.ndarray) -> None:
        """Append an OBSERVE record (a window added to the user statistics)."""
        self._append(encode_record(OBSERVE, _vector(x, self.dim)))

    def reset_user(self) -> None:
        """Append a RESET_USER record."""
        self._append(encode_record(RESET_USER))

    def _append(self, rec: bytes) -> None:
        if self._fd is None:
            return
        try:
            if self._delay:  # test hook: widen the window in which a kill tears a record
                half = len(rec) // 2
                os.write(self._fd, rec[:half])
                time.sleep(self._delay)
                rec = rec[half:]
            if os.write(self._fd, rec) != len(rec):
                raise OSError("short write")
            self.size += len(rec)
            self.records += 1
            self._unsynced = True
            if self.fsync_s == 0 or time.monotonic() - self._last_sync >= self.fsync_s:
                self.sync()
        except OSError as exc:
            self._fail(exc)

    def tick(self, now: float | None = None) -> None:
        """fsync if records are waiting and ``fsync_s`` has passed since the last one."""
        if self._unsynced and (now or time.monotonic()) - self._last_sync >= self.fsync_s:
            self.sync()

    def sync(self) -> None:
        """fsync now (a failure is logged and counted, and stops the journal)."""
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)
            return
        self._unsynced = False
        self._last_sync = time.monotonic()

    def _fail(self, exc: OSError) -> None:
        self.errors += 1
        log.error(
            "journal write failed (%s); labels are no longer journaled until the next checkpoint",
            exc,
        )
        self._close_fd()

    # -- after a checkpoint --------------------------------------------------
    def restart(self, base: str, base_sha256: str) -> bool:
        """A checkpoint ``base`` now holds everything: replace the journal by an empty one
        over it. Returns False (logged, counted) if that failed; the journal stays off."""
        self._close_fd()
        try:
            new = Journal.start(
                self.path.parent,
                dim=self.dim,
                tag=self.header["tag"],
                base=base,
                base_sha256=base_sha256,
                fsync_s=self.fsync_s,
            )
        except OSError as exc:
            self.errors += 1
            log.error("journal restart after checkpoint %s failed (%s)", base, exc)
            return False
        self.header, self.size, self.records = new.header, new.size, 0
        self._fd, new._fd = new._fd, None
        self._unsynced, self._last_sync = False, time.monotonic()
        return True

    def close(self) -> None:
        """fsync and close (idempotent)."""
        if self._fd is not None and self._unsynced:
            self.sync()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r}, base={self.header['base']!r}, size={self.size})"


def _env_delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, "0") or 0))
    except ValueError:
        return 0.0
