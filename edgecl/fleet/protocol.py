"""The fleet round protocol, without a transport: uploads, checks, exact aggregation.

One round: the server offers its merged head (the *global* statistics) and, per
device, the sequence number of that device's last upload it counted. The device
first *syncs* (:meth:`FleetDevice.sync`): it adopts the global plus what it
learned that the global does not hold yet, then uploads a **delta** — what it
learned since that global (``local − global``). The server adds every acceptable
delta to the global (exact, :class:`~edgecl.learner.merge.HeadStats` ``+``) and
the next offer carries the result. Nothing learned is ever lost or counted
twice, even when a device misses a broadcast or crashes between upload and
adoption: the counted sequence number tells it whether its last delta is
already inside the global.

What an upload carries (and all that ever leaves a device): the device's id, the
digest of its base, a per-device sequence number, the bundle tag and config
digest, and the delta's arrays (class counts, weights, weighted sums, pooled
scatter). Never a window, never the user statistics.

The server refuses, with a one-line reason, an upload that: belongs to another
bundle or config; holds non-finite values or counts that do not add up; is not
taken against the current global (a stale or repeated upload: the device must
sync first) or is a second upload in one round; or claims more windows than the
device could have labelled since its last accepted upload at the bundle's window
rate (``max_rate`` windows/s × elapsed seconds × 1.1, plus 16). A refused delta
leaves the global untouched.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecl.errors import EdgeclError
from edgecl.learner import StreamingLearner
from edgecl.learner.merge import HeadStats
from edgecl.learner.state import canonical_json

__all__ = ["FleetDevice", "FleetError", "FleetServer", "Upload", "config_digest"]

_SLACK, _EXTRA = 1.1, 16


class FleetError(EdgeclError, ValueError):
    """An upload or a round message the fleet protocol refuses."""


def config_digest(learner: StreamingLearner) -> str:
    """sha256 of the learner config (tag included): two learners merge only if equal."""
    return hashlib.sha256(canonical_json(learner.config.to_dict()).encode()).hexdigest()


@dataclass(frozen=True)
class Upload:
    """One device's delta for one round."""

    device: str
    seq: int
    base: str  # digest of the global statistics the delta is taken against
    tag: str
    config: str  # config_digest of the device's learner
    delta: HeadStats

    @property
    def digest(self) -> str:
        h = hashlib.sha256(f"{self.device}|{self.seq}|{self.base}|".encode())
        h.update(self.delta.digest().encode())
        return h.hexdigest()

    def meta(self) -> dict[str, Any]:
        """Everything but the arrays, as plain JSON-able values (a Flower ConfigRecord)."""
        return {"device": self.device, "seq": self.seq, "base": self.base, "tag": self.tag,
                "config": self.config}  # fmt: skip

    @classmethod
    def from_parts(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Upload:
        try:
            return cls(
                str(meta["device"]), int(meta["seq"]), str(meta["base"]), str(meta["tag"]),
                str(meta["config"]), HeadStats.from_arrays(arrays, f"upload from {meta['device']}"),
            )  # fmt: skip
        except KeyError as exc:
            raise FleetError(f"upload without {exc}") from None


@dataclass
class FleetServer:
    """The aggregator: holds the global statistics and what each device sent."""

    start: StreamingLearner
    max_rate: float | None = None  # windows per second a device can label; None: no bound
    global_: HeadStats = field(init=False)
    round: int = 0
    counted: dict[str, int] = field(default_factory=dict)  # device -> last counted seq
    last_seen: dict[str, float] = field(default_factory=dict)  # device -> server clock
    started: float = 0.0

    def __post_init__(self) -> None:
        self.global_ = self.start.statistics()
        self.tag, self.config = self.start.config.tag, config_digest(self.start)

    @property
    def digest(self) -> str:
        return self.global_.digest()

    def check(self, up: Upload, now: float) -> None:
        """Raise :class:`FleetError` with the reason the upload is refused."""
        if up.tag != self.tag:
            raise FleetError(f"{up.device}: belongs to {up.tag}, this fleet to {self.tag}")
        if up.config != self.config:
            raise FleetError(f"{up.device}: learner config differs from the fleet's")
        if up.base != self.digest:
            raise FleetError(
                f"{up.device}: upload {up.seq} is not against the current merged head "
                f"(stale or repeated upload); the device must sync first"
            )
        if up.seq <= self.counted.get(up.device, -1):
            raise FleetError(f"{up.device}: upload {up.seq} was already counted")
        try:
            self.global_.check_like(up.delta)
        except EdgeclError as exc:
            raise FleetError(f"{up.device}: {exc}") from None
        if self.max_rate is not None:
            elapsed = max(0.0, now - self.last_seen.get(up.device, self.started))
            cap = math.ceil(self.max_rate * elapsed * _SLACK) + _EXTRA
            if up.delta.n > cap:
                raise FleetError(
                    f"{up.device}: {up.delta.n:,} labelled windows in {elapsed:.0f} s is more "
                    f"than {self.max_rate:g} windows/s allows ({cap:,}); delta refused"
                )

    def offer(self, device: str) -> tuple[HeadStats, int]:
        """What a round message carries to ``device``: the global and its counted seq."""
        return self.global_, self.counted.get(device, -1)

    def aggregate(self, uploads: list[Upload], now: float) -> dict[str, Any]:
        """Add every acceptable upload to the global; returns what was accepted/refused."""
        accepted: list[str] = []
        refused: dict[str, str] = {}
        total = self.global_
        for up in uploads:
            try:
                self.check(up, now)
                if up.device in accepted:
                    raise FleetError(f"{up.device}: a second upload in one round")
                total = total + up.delta
            except FleetError as exc:
                refused[up.device] = str(exc)
                continue
            accepted.append(up.device)
            self.counted[up.device] = up.seq
            self.last_seen[up.device] = now
        total.validate("merged statistics")
        self.global_ = total
        self.round += 1
        return {"round": self.round, "accepted": accepted, "refused": refused,
                "samples": self.global_.n, "digest": self.digest}  # fmt: skip


class FleetDevice:
    """A device's side of the protocol, over a learner that joined a fleet.

    The bookkeeping (base, pending upload, numbers) lives in ``learner.fleet`` and is
    saved with the learner's state, so save the learner after :meth:`sync` and
    :meth:`upload` and both survive a crash together with the head.
    """

    def __init__(self, learner: StreamingLearner, device: str, base: HeadStats | None = None):
        self.learner = learner
        self.device = device
        self.memory = learner.join_fleet(device, base)

    @property
    def base(self) -> HeadStats:
        return self.memory.base

    def sync(self, global_stats: HeadStats, counted_seq: int) -> bool:
        """Adopt the server's merged head plus what this device learned that it does not
        hold yet (whether the pending upload is inside it is read from ``counted_seq``).
        Returns False when there was nothing to adopt."""
        mem = self.memory
        digest = global_stats.digest()
        if digest == mem.adopted or (digest == mem.base.digest() and mem.sent_seq == 0):
            return False
        mine = self.learner.statistics() - mem.base
        if mem.sent_seq and counted_seq >= mem.sent_seq:
            mine = mine - mem.sent
        self.learner.apply_statistics(global_stats + mine)
        mem.set_base(global_stats)
        mem.set_sent(None)
        mem.sent_seq, mem.sent_base = 0, ""
        mem.counted_seq = max(mem.counted_seq, counted_seq)
        mem.adopted = digest
        return True

    def upload(self) -> Upload:
        """The delta since the adopted merged head (its digest tells the server which).
        A second upload before the next sync replaces the first (same base)."""
        mem = self.memory
        mem.seq += 1
        base = mem.base.digest()
        up = Upload(self.device, mem.seq, base, self.learner.config.tag,
                    config_digest(self.learner), self.learner.statistics() - mem.base)  # fmt: skip
        mem.set_sent(up.delta)
        mem.sent_seq, mem.sent_base = mem.seq, base
        return up
