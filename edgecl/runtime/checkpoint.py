"""Learner checkpoints in a state directory: numbered, atomic, checksummed, last two kept.

Files are ``learner-00000042.safetensors`` (the number only grows, across
restarts too). Each is written by :meth:`StreamingLearner.save` — temp file,
fsync, rename, directory fsync, sha256 inside — so a crash, even ``kill -9``
mid-write, leaves the previous checkpoint whole. After a successful write the
older ones beyond ``keep`` are deleted.

On start, :meth:`CheckpointStore.load` tries the newest checkpoint, then the
one before: a file that fails verification is renamed ``*.corrupt`` (kept for
inspection, no longer counted) and the fallback is logged.

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
import logging
import os
import re
from pathlib import Path

from edgecl.errors import StateFileError
from edgecl.learner import StreamingLearner

__all__ = ["CheckpointStore"]

log = logging.getLogger("edgecl.run")

_NAME = re.compile(r"^learner-(\d{8,})\.safetensors$")


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
        learner.save(path)
        for old in self.paths()[self.keep :]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path

    def load(self) -> tuple[StreamingLearner | None, Path | None]:
        """The newest checkpoint that verifies, and its path; ``(None, None)`` if none does."""
        for tmp in self.directory.glob(".learner-*.tmp"):  # a write cut short by a crash
            with contextlib.suppress(OSError):
                tmp.unlink()
        for path in self.paths():
            try:
                learner = StreamingLearner.load(path)
            except StateFileError as exc:
                bad = path.with_name(path.name + ".corrupt")
                log.error("checkpoint %s is corrupt (%s); moved to %s", path.name, exc, bad.name)
                with contextlib.suppress(OSError):
                    path.rename(bad)
                continue
            return learner, path
        return None, None
