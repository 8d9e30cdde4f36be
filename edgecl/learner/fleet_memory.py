"""What a learner remembers about its fleet: the merged head it last adopted, its last upload.

Saved as the ``fleet`` part of the learner's state file, so the learned statistics
and this bookkeeping change in one atomic write: a crash can never leave a head
that holds a merge while the bookkeeping says it does not (which would count a
delta twice). Present only once a learner joined a fleet
(:meth:`StreamingLearner.join_fleet`); its bytes count in ``state_bytes``.

* ``base`` — the merged statistics last adopted (at first: the bundle head);
* ``sent`` — the delta last uploaded, ``sent_seq`` its number (0: none pending);
* ``counted_seq`` — the newest upload the server has confirmed counting;
* ``adopted`` — digest of the merged head last adopted (a re-delivered merge is a no-op).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import StateFileError
from edgecl.learner.merge import HeadStats

__all__ = ["FleetMemory"]


class FleetMemory:
    """Preallocated base and sent statistics of one learner's shape (see module doc)."""

    def __init__(self, max_classes: int, dim: int, scatter: bool) -> None:
        self.base = HeadStats.empty(max_classes, dim, scatter)
        self.sent = HeadStats.empty(max_classes, dim, scatter)
        self.device = ""
        self.seq = 0  # uploads made
        self.sent_seq = 0  # the pending upload's number; 0: none
        self.sent_base = ""  # digest of the base that upload was taken against
        self.counted_seq = 0
        self.adopted = ""

    @staticmethod
    def nbytes_for(max_classes: int, dim: int, scatter: bool) -> int:
        one = 8 * (2 * max_classes + max_classes * dim + (dim * dim if scatter else 0))
        return 2 * one

    @property
    def nbytes(self) -> int:
        return self.base.nbytes + self.sent.nbytes

    def set_base(self, st: HeadStats) -> None:
        for name, a in st.arrays().items():
            self.base.arrays()[name][...] = a

    def set_sent(self, st: HeadStats | None) -> None:
        for name, a in self.sent.arrays().items():
            a[...] = 0 if st is None else st.arrays()[name]

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"base_{k}": v for k, v in self.base.arrays().items()}
        out.update({f"sent_{k}": v for k, v in self.sent.arrays().items()})
        return out

    def counters(self) -> dict[str, Any]:
        return {"device": self.device, "seq": self.seq, "sent_seq": self.sent_seq,
                "sent_base": self.sent_base, "counted_seq": self.counted_seq,
                "adopted": self.adopted}  # fmt: skip

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        for name, dst in self.arrays().items():
            src = arrays.get(name)
            if src is None or src.shape != dst.shape or src.dtype != dst.dtype:
                raise StateFileError(f"fleet array {name!r} missing or of the wrong shape")
            dst[...] = src
        self.base.validate("fleet base")
        self.sent.validate("fleet upload")
        try:
            self.device = str(counters["device"])
            self.seq, self.sent_seq = int(counters["seq"]), int(counters["sent_seq"])
            self.counted_seq = int(counters["counted_seq"])
            self.sent_base, self.adopted = str(counters["sent_base"]), str(counters["adopted"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"fleet counters are invalid: {exc}") from None
        if not 0 <= self.sent_seq <= self.seq or self.counted_seq > self.seq:
            raise StateFileError("fleet upload numbers out of range")
