"""Learner checkpoints in a state directory: numbered, atomic, checksummed, last two kept.

Files are ``learner-00000042.safetensors`` (the number only grows, across
restarts too). Each is written by :meth:`StreamingLearner.save` — temp file,
fsync, rename, directory fsync, sha256 inside — so a crash, even ``kill -9``
mid-write, leaves the previous checkpoint whole. After a successful write the
older ones beyond ``keep`` are deleted.

On start, :meth:`CheckpointStore.load` tries the newest checkpoint, then the
one before: a file that fails verification is renamed ``*.corrupt`` (kept for
inspection, no longer counted) and the fallback is logged.

The store knows the sha256 of the bytes of each checkpoint it wrote or loaded:
the label journal (:mod:`edgecl.runtime.journal`) names its base by it.
:meth:`CheckpointStore.move_aside` (``edgecl run --reset-state``) moves every file
of the directory into a new ``replaced-<UTC time>/`` subdirectory; nothing is
deleted.

Checkpoints belong to one bundle: the learner config's ``tag`` holds
``bundle:<sha256 of manifest.json>`` (or ``features:<dim>`` without a bundle),
checked by :func:`check_owner` when the daemon starts.

Test hook (test-only; ``tools/crash_test.py`` sets it): with
``$EDGECL_TEST_CHECKPOINT_DELAY_S`` > 0 every checkpoint sleeps that long between
writing its temp file and renaming it, so a ``kill -9`` can land mid-write.

>>> import tempfile, numpy as np
>>> from edgecl import LearnerConfig, StreamingLearner
>>> store = CheckpointStore(tempfile.mkdtemp())
>>> lr = StreamingLearner(LearnerConfig(dim=2, max_classes=2, head="ncm", budget_bytes=10_000))
>>> for i in range(3):
...     lr.learn_one(np.array([i, 1.0]), i % 2)
...     _ = store.save(lr)
>>> [p.name for p in store.paths()]
['learner-00000003.safetensors', 'learner-00000002.safetensors']
>>> store.load()[0].n_learned
3
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from pathlib import Path

from edgecl.errors import StateFileError
from edgecl.learner import StreamingLearner
from edgecl.learner.state import fsync_dir, load_state_bytes, state_bytes, write_new_file

__all__ = ["LOCK", "CheckpointStore", "StateDirBusy", "StateLock", "StateMismatchError",
           "check_owner", "lock_state_dir", "owner_tag"]  # fmt: skip

log = logging.getLogger("edgecl.run")

_NAME = re.compile(r"^learner-(\d{8,})\.safetensors$")
DELAY_ENV = "EDGECL_TEST_CHECKPOINT_DELAY_S"
RESET_HINT = "edgecl run --reset-state"


#: The advisory lock a process holds on a state directory while it may write there.
LOCK = "lock"


class StateDirBusy(StateFileError):
    """Another process (a running ``edgecl run``, a fleet round) holds the state directory."""


# Locks this process holds, by lock path: [descriptor, holders]. flock excludes other
# processes; within one process a second holder shares the first one's lock.
_HELD: dict[str, list[int]] = {}


class StateLock:
    """A hold on a state directory's exclusive ``flock``; released by :meth:`close`, when
    collected, or when the process ends however it ends."""

    def __init__(self, key: str) -> None:
        self.key: str | None = key

    def close(self) -> None:
        key, self.key = self.key, None
        held = _HELD.get(key) if key is not None else None
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.close(held[0])  # closing the descriptor releases the flock

    __del__ = close

    def __repr__(self) -> str:
        return f"StateLock(held={self.key is not None})"


def lock_state_dir(directory: str | os.PathLike[str]) -> StateLock:
    """Take the state directory's exclusive lock (``flock`` on ``directory/lock``).

    Raises :class:`StateDirBusy` naming the holder's pid when another process has it.
    One writer process per state directory: the daemon holds it while it runs; a
    fleet round takes it while it changes the state. (Holders in one process share
    the lock: they are one writer as far as the directory is concerned.)
    """
    path = Path(directory) / LOCK
    key = os.path.realpath(path)
    if key in _HELD:
        _HELD[key][1] += 1
        return StateLock(key)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StateDirBusy(
            f"{directory} is in use by another edgecl process (pid {holder}); "
            f"one process at a time writes a state directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = [fd, 1]
    return StateLock(key)


class StateMismatchError(StateFileError):
    """The state directory holds the state of another bundle (or feature dimension)."""


def owner_tag(manifest_sha256: str | None = None, features: int | None = None) -> str:
    """The ``LearnerConfig.tag`` of state learned over a bundle or raw features.

    >>> owner_tag(features=64), owner_tag("ab" * 32)[:12]
    ('features:64', 'bundle:ababa')
    """
    if features is not None:
        return f"features:{features}"
    return f"bundle:{manifest_sha256}"


def check_owner(found: str, expected: str, where: str) -> bool:
    """Raise :class:`StateMismatchError` (one line: both owners and the fix) unless the
    state at ``where``, tagged ``found``, belongs to ``expected``. Returns False for an
    untagged state from before tags (the caller adopts it, with a warning)."""
    if found == expected:
        return True
    if not found.startswith(("bundle:", "features:")):
        log.warning(
            "%s records no bundle (written before edgecl tied state to its bundle); "
            "assuming it belongs to %s",
            where,
            expected,
        )
        return False
    raise StateMismatchError(
        f"the state in {where} belongs to {found}, not to this run's {expected}; "
        f"refusing to resume it. To start over from this bundle's head, rerun with "
        f"`{RESET_HINT}` (moves the old state aside into replaced-<time>/, deletes nothing)"
    )


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, "0") or 0))
    except ValueError:
        return 0.0


class CheckpointStore:
    """Numbered learner checkpoints in ``directory`` (created, mode 0700, if missing).

    The directory must belong to this user (else :class:`StateFileError`); one
    that group or others can enter is made 0700, with a warning.

    Parameters
    ----------
    directory : path
    keep : int
        Good checkpoints kept (>= 1; 2 means one fallback).
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"keep = {keep}: must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = self.directory.stat()
        if st.st_uid != os.geteuid():
            raise StateFileError(
                f"{self.directory}: owned by uid {st.st_uid}, not by this user "
                f"({os.geteuid()}); refusing to keep learner state there"
            )
        if st.st_mode & 0o077:
            log.warning(
                "%s: mode %o lets others in; changed to 0700", self.directory, st.st_mode & 0o777
            )
            os.chmod(self.directory, 0o700)
        self.keep = keep
        #: sha256 of the bytes of the checkpoint last written by :meth:`save`.
        self.last_sha256: str | None = None

    def paths(self) -> list[Path]:
        """Checkpoint files, newest first."""
        found = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found, reverse=True)]

    def _number(self, path: Path) -> int:
        m = _NAME.match(path.name)
        return int(m.group(1)) if m else 0

    def save(self, learner: StreamingLearner) -> Path:
        """Write a new checkpoint, then delete those beyond ``keep``; returns its path."""
        existing = self.paths()
        n = self._number(existing[0]) + 1 if existing else 1
        # A *.corrupt file may hold a higher number; never reuse a number.
        for p in self.directory.glob("learner-*.safetensors.corrupt"):
            m = _NAME.match(p.name[: -len(".corrupt")])
            if m:
                n = max(n, int(m.group(1)) + 1)
        path = self.directory / f"learner-{n:08d}.safetensors"
        data = state_bytes(learner)
        self._write(path, data)
        self.last_sha256 = hashlib.sha256(data).hexdigest()
        for old in self.paths()[self.keep :]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path

    def _write(self, path: Path, data: bytes) -> None:
        # As atomic_write_bytes (temp file, fsync, rename, directory fsync), plus the hook.
        tmp = self.directory / f".{path.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        try:
            write_new_file(tmp, data)
            if _delay():
                time.sleep(_delay())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.directory)

    def digests(self) -> dict[str, str]:
        """``{sha256: file name}`` of every checkpoint file present (not verified)."""
        out = {}
        for p in self.paths():
            with contextlib.suppress(OSError):
                out[hashlib.sha256(p.read_bytes()).hexdigest()] = p.name
        return out

    def move_aside(self) -> Path | None:
        """Move every file of the directory into a new ``replaced-<UTC time>/``
        subdirectory (mode 0700) and return it; None when there was nothing to move.
        Subdirectories (earlier ones) and the lock stay where they are. Nothing is deleted."""
        files = [
            p
            for p in self.directory.iterdir()
            if (p.is_file() or p.is_symlink()) and p.name != LOCK
        ]
        if not files:
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest, i = self.directory / f"replaced-{stamp}", 1
        while dest.exists():
            dest, i = self.directory / f"replaced-{stamp}-{i}", i + 1
        dest.mkdir(mode=0o700)
        for p in files:
            p.rename(dest / p.name)
        fsync_dir(dest)
        fsync_dir(self.directory)
        return dest

    def load(self) -> tuple[StreamingLearner | None, Path | None]:
        """The newest checkpoint that verifies, and its path; ``(None, None)`` if none does."""
        learner, path, _ = self.load_with_digest()
        return learner, path

    def load_with_digest(self) -> tuple[StreamingLearner | None, Path | None, str | None]:
        """As :meth:`load`, plus the sha256 of the checkpoint file's bytes."""
        for tmp in self.directory.glob(".learner-*.tmp"):  # a write cut short by a crash
            with contextlib.suppress(OSError):
                tmp.unlink()
        for path in self.paths():
            try:
                raw = path.read_bytes()
                learner = load_state_bytes(raw, str(path))  # the very bytes hashed below
            except (OSError, StateFileError) as exc:
                bad = path.with_name(path.name + ".corrupt")
                log.error("checkpoint %s is corrupt (%s); moved to %s", path.name, exc, bad.name)
                with contextlib.suppress(OSError):
                    path.rename(bad)
                continue
            return learner, path, hashlib.sha256(raw).hexdigest()
        return None, None, None
