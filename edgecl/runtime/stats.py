"""Daemon counters, latency percentiles and process memory, as one stats line.

:class:`Stats` is plain counting: the daemon bumps fields as messages pass and
:meth:`Stats.snapshot` turns them into the DESIGN §5 keys (``samples``,
``windows``, ``labels``, ``learned``, ``rejects``, ``p50_us``, ``p99_us``,
``rss_mb``, ``state_bytes``, ``checkpoints``) plus a few extras. Latencies go
into a preallocated ring of the most recent ``window`` values.

>>> s = Stats()
>>> for us in (100.0, 200.0, 300.0):
...     s.latency(us)
>>> s.reject("bad_json"); s.reject("bad_json")
>>> snap = s.snapshot(state_bytes=10)
>>> snap["p50_us"], snap["rejects"]
(200.0, {'bad_json': 2})
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

__all__ = ["Stats", "rss_bytes"]


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``), else its peak."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


class Stats:
    """Counters of one daemon run.

    Attributes
    ----------
    samples : int
        Accepted ``x`` messages (raw rows or feature vectors).
    windows : int
        Predictions made (one per completed window / feature vector).
    labels : int
        Labels received: on samples, on windows (row labels) and delayed.
    learned : int
        Labels the learner actually learned from.
    checkpoints : int
        Checkpoints written by this process.
    checkpoint_errors : int
        Checkpoint writes that failed (disk full, I/O error); the old one is kept.
    user_resets : int
        ``reset-user`` commands carried out (a new user started).
    rejects : Counter
        Skipped messages by reason.
    """

    def __init__(self, window: int = 8192) -> None:
        self.samples = 0
        self.windows = 0
        self.labels = 0
        self.learned = 0
        self.checkpoints = 0
        self.checkpoint_errors = 0
        self.commands = 0
        self.user_resets = 0
        self.rejects: Counter[str] = Counter()
        self._lat = np.zeros(window, dtype=np.float64)
        self._n_lat = 0
        self.started = time.monotonic()

    def reject(self, reason: str) -> None:
        """Count one skipped message."""
        self.rejects[reason] += 1

    def latency(self, us: float) -> None:
        """Record one end-to-end window latency, in µs."""
        self._lat[self._n_lat % self._lat.shape[0]] = us
        self._n_lat += 1

    def latencies(self) -> np.ndarray:
        """The recorded latencies still in the ring (unordered copy)."""
        return self._lat[: min(self._n_lat, self._lat.shape[0])].copy()

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        """The stats dict (DESIGN §5 keys first); ``extra`` keys are added as given."""
        lat = self.latencies()
        p50, p99 = (float(v) for v in np.percentile(lat, [50, 99])) if lat.size else (None, None)
        out: dict[str, Any] = {
            "samples": self.samples,
            "windows": self.windows,
            "labels": self.labels,
            "learned": self.learned,
            "rejects": dict(sorted(self.rejects.items())),
            "p50_us": None if p50 is None else round(p50, 1),
            "p99_us": None if p99 is None else round(p99, 1),
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "state_bytes": None,
            "checkpoints": self.checkpoints,
            "checkpoint_errors": self.checkpoint_errors,
            "user_resets": self.user_resets,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }
        out.update(extra)
        return out
