"""A device's state opened for one fleet round: load, sync, (learn), upload, save.

The state is a learner state file, or the state directory of ``edgecl run``. A
directory is locked for the round (:func:`~edgecl.runtime.checkpoint.lock_state_dir`),
so a running daemon — which holds that lock — makes the device skip the round
with a clear reason instead of racing it; labels still in the daemon's journal
are replayed first and the result is saved as a new checkpoint over which a fresh
journal starts, exactly as a daemon checkpoint does. A state that does not exist
yet starts from the bundle's head.

In a simulation (node config ``work`` and ``subject``) the device also learns its
wearer's labelled windows for the round and measures held-out accuracy
(:mod:`edgecl.fleet.simulate`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgecl.errors import ConfigError
from edgecl.fleet.protocol import FleetDevice, Upload
from edgecl.learner import StreamingLearner
from edgecl.learner.merge import HeadStats

__all__ = ["DeviceSession", "open_device"]


class DeviceSession:
    """One device's state for one round; use :func:`open_device`."""

    def __init__(self, node: dict[str, Any]) -> None:
        if "state" not in node:
            raise ConfigError("node config needs state=PATH (a state file or directory)")
        self.path = Path(str(node["state"]))
        self.device = str(node.get("device") or self.path.name)
        self.bundle = str(node.get("bundle", "default"))
        self.work_path = node.get("work")
        self.subject = int(node["subject"]) if "subject" in node else None
        self._work: dict[str, Any] | None = None
        self._lock: Any = None
        self._store: Any = None
        self.learner: StreamingLearner
        self.fleet: FleetDevice

    # -- open / save -------------------------------------------------------------------
    def open(self) -> None:
        learner = None
        if self.path.is_dir() or not self.path.suffix:
            learner = self._open_dir()
        elif self.path.exists():
            learner = StreamingLearner.load(self.path)
        start = self._start()
        if learner is None:
            learner = start
        base = None
        if learner.fleet is None:  # first round: it started from the bundle head
            if learner.config.tag != start.config.tag:
                raise ConfigError(
                    f"{self.path} belongs to {learner.config.tag}, the fleet's bundle to "
                    f"{start.config.tag}"
                )
            base = start.statistics()
        self.learner = learner
        self.fleet = FleetDevice(learner, self.device, base)

    def _start(self) -> StreamingLearner:
        from edgecl.fleet.states import bundle_base

        return bundle_base(None if self.bundle == "default" else self.bundle)

    def _open_dir(self) -> StreamingLearner | None:
        from edgecl.runtime.checkpoint import CheckpointStore, lock_state_dir
        from edgecl.runtime.journal import JOURNAL, apply_records, read_journal

        self._store = CheckpointStore(self.path)
        self._lock = lock_state_dir(self._store.directory)
        learner, _, sha = self._store.load_with_digest()
        if learner is not None:
            with contextlib.suppress(FileNotFoundError):
                got = read_journal(self._store.directory / JOURNAL)
                if got.header is not None and got.header["base_sha256"] == sha:
                    apply_records(learner, got.records)  # labels not checkpointed yet
        return learner

    def save(self) -> None:
        """Write the state (atomically; a directory: a new checkpoint + a fresh journal)."""
        if self._store is None:
            self.learner.save(self.path)
            return
        from edgecl.runtime.journal import Journal

        ckpt = self._store.save(self.learner)
        assert self._store.last_sha256 is not None
        Journal.start(self._store.directory, dim=self.learner.config.dim,
                      tag=self.learner.config.tag, base=ckpt.name,
                      base_sha256=self._store.last_sha256).close()  # fmt: skip

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- the round ---------------------------------------------------------------------
    @property
    def work(self) -> dict[str, Any] | None:
        if self._work is None and self.work_path:
            from edgecl.fleet.simulate import load_work

            self._work = load_work(str(self.work_path))
        return self._work

    def _accuracy(self, prefix: str) -> dict[str, float]:
        if self.work is None or self.subject is None:
            return {}
        from edgecl.fleet.simulate import accuracy_by_user, own_and_others

        got = own_and_others(accuracy_by_user(self.learner, self.work), self.subject)
        return {f"{prefix}_{k}": v for k, v in got.items()}

    def sync(self, global_stats: HeadStats, counted_seq: int, round_: int) -> dict[str, Any]:
        """Adopt the merged head; metrics (simulation: held-out accuracy after the merge)."""
        adopted = self.fleet.sync(global_stats, counted_seq)
        metrics: dict[str, Any] = {"adopted": int(adopted)}
        if round_ > 1:
            metrics.update(self._accuracy("merged"))
        return metrics

    def learn_round(self, round_: int, rounds: int) -> dict[str, Any]:
        """Simulation only: learn this round's labelled windows; accuracy before the merge."""
        if self.work is None or self.subject is None:
            return {}
        from edgecl.fleet.simulate import chunk, learn_local

        idx = chunk(self.work, self.subject, rounds, round_ - 1)
        if idx.size:
            learn_local(self.learner, self.work, idx)
        return {"learned": int(idx.size), **self._accuracy("local")}

    def upload(self) -> Upload:
        return self.fleet.upload()


@contextlib.contextmanager
def open_device(node: dict[str, Any]) -> Iterator[DeviceSession]:
    """A :class:`DeviceSession` for ``node`` (a SuperNode's node config), closed after."""
    s = DeviceSession(node)
    try:
        s.open()
        yield s
    finally:
        s.close()
