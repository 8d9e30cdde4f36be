"""ReservoirBuffer: a fixed-size, preallocated replay memory of embeddings.

Two policies:

* ``"reservoir"`` — Vitter's Algorithm R (Vitter 1985, "Random sampling with a
  reservoir"): after ``n`` items every item seen so far is in the buffer with
  probability ``capacity / n``, with no knowledge of the stream length.
* ``"class_balanced"`` — class-balancing reservoir sampling (CBRS; Chrysakis &
  Moens 2020, "Online continual learning from imbalanced data"): once full, a
  sample of a class that is not among the largest ones evicts a random sample of
  a largest class; a sample of a largest class replaces one of its own class
  with probability ``stored_c / seen_c``. Rare classes keep their share.

The buffer stores latent embeddings (latent replay), not raw inputs, so its
memory is ``capacity * (dim * itemsize + 4)`` bytes, fixed at construction.

>>> import numpy as np
>>> buf = ReservoirBuffer(capacity=3, dim=2, dtype="float32", seed=0)
>>> for i in range(10):
...     _ = buf.add(np.full(2, i, dtype=np.float32), i % 2)
>>> len(buf), buf.seen
(3, 10)
>>> X, Y = buf.sample(2)
>>> X.shape, Y.shape
((2, 2), (2,))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import ConfigError, StateFileError

__all__ = ["ReservoirBuffer"]

_LABEL_DTYPE = np.int32


class ReservoirBuffer:
    """Fixed-capacity latent replay buffer (Algorithm R or class-balanced).

    Parameters
    ----------
    capacity : int
        Number of slots; 0 makes a buffer that keeps nothing.
    dim : int
        Length of each stored vector.
    dtype : {"float16", "float32"}
        Storage type of the vectors; ``sample`` always returns float32.
    seed : int
        Seed of the buffer's own random generator.
    policy : {"reservoir", "class_balanced"}
    max_classes : int
        Needed by the class-balanced policy (per-class counters).
    """

    def __init__(
        self,
        capacity: int,
        dim: int,
        dtype: str = "float16",
        seed: int = 0,
        policy: str = "reservoir",
        max_classes: int = 0,
    ) -> None:
        if capacity < 0 or dim < 1:
            raise ConfigError(f"ReservoirBuffer: capacity={capacity}, dim={dim}: need ≥ 0 and ≥ 1")
        if dtype not in ("float16", "float32"):
            raise ConfigError(f"ReservoirBuffer.dtype = {dtype!r}: must be float16 or float32")
        if policy not in ("reservoir", "class_balanced"):
            raise ConfigError(f"ReservoirBuffer.policy = {policy!r}: reservoir or class_balanced")
        if policy == "class_balanced" and max_classes < 1:
            raise ConfigError("ReservoirBuffer: the class_balanced policy needs max_classes ≥ 1")
        self.capacity = int(capacity)
        self.dim = int(dim)
        self.dtype = dtype
        self.policy = policy
        self.max_classes = int(max_classes)
        self.X_ = np.zeros((self.capacity, self.dim), dtype=dtype)
        self.Y_ = np.zeros(self.capacity, dtype=_LABEL_DTYPE)
        # Per-class (stored, seen) counts; only the class-balanced policy reads them.
        n_counts = self.max_classes if policy == "class_balanced" else 0
        self.class_stored_ = np.zeros(n_counts, dtype=np.int64)
        self.class_seen_ = np.zeros(n_counts, dtype=np.int64)
        self._len = 0
        self._seen = 0
        self._rng = np.random.default_rng(seed)

    # -- sizes ---------------------------------------------------------------
    @staticmethod
    def bytes_per_item(dim: int, dtype: str) -> int:
        """Bytes one slot costs: the vector plus its int32 label."""
        return dim * np.dtype(dtype).itemsize + np.dtype(_LABEL_DTYPE).itemsize

    @staticmethod
    def fixed_bytes(max_classes: int, policy: str) -> int:
        """Bytes the buffer needs whatever its capacity (class counters)."""
        return 2 * 8 * max_classes if policy == "class_balanced" else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays."""
        return sum(a.nbytes for a in self.arrays().values())

    def __len__(self) -> int:
        return self._len

    @property
    def seen(self) -> int:
        """How many items were offered to the buffer so far."""
        return self._seen

    # -- stream --------------------------------------------------------------
    def add(self, x: np.ndarray, y: int) -> int:
        """Offer one item; return the slot it was written to, or -1 if not kept."""
        self._seen += 1
        if self.capacity == 0:
            if self.policy == "class_balanced":
                self.class_seen_[y] += 1
            return -1
        if self.policy == "class_balanced":
            slot = self._slot_class_balanced(int(y))
        else:
            slot = self._slot_reservoir()
        if slot >= 0:
            self.X_[slot] = x
            self.Y_[slot] = y
        return slot

    def _slot_reservoir(self) -> int:
        if self._len < self.capacity:
            self._len += 1
            return self._len - 1
        j = int(self._rng.integers(0, self._seen))
        return j if j < self.capacity else -1

    def _slot_class_balanced(self, y: int) -> int:
        self.class_seen_[y] += 1
        if self._len < self.capacity:
            self._len += 1
            self.class_stored_[y] += 1
            return self._len - 1
        largest = self.class_stored_.max()
        if self.class_stored_[y] < largest:
            # y is not a largest class: evict a random member of a largest class.
            big = np.flatnonzero(self.class_stored_ == largest)
            victim_class = int(big[self._rng.integers(0, big.size)] if big.size > 1 else big[0])
            members = np.flatnonzero(self.Y_ == victim_class)
            slot = int(members[self._rng.integers(0, members.size)])
            self.class_stored_[victim_class] -= 1
            self.class_stored_[y] += 1
            return slot
        # y is a largest class: reservoir sampling within its own class.
        if self._rng.random() * self.class_seen_[y] < self.class_stored_[y]:
            members = np.flatnonzero(self.Y_ == y)
            return int(members[self._rng.integers(0, members.size)])
        return -1

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``min(k, len)`` distinct stored items, uniformly, as (float32 X, int64 Y)."""
        idx = self._choose(k)
        if idx.size == 0:
            return np.empty((0, self.dim), np.float32), np.empty(0, np.int64)
        return self.X_[idx].astype(np.float32), self.Y_[idx].astype(np.int64)

    def sample_into(self, X: np.ndarray, Y: np.ndarray) -> int:
        """Fill the first rows of ``X`` (n, dim) and ``Y`` (n,) with distinct stored items.

        The allocation-free form of :meth:`sample` for the learner's hot path: it
        draws ``min(len(Y), len(self))`` items, exactly as ``sample`` would, writes
        them in place and returns how many rows it filled.
        """
        idx = self._choose(len(Y))
        n = idx.size
        if n:
            X[:n] = self.X_[idx]
            Y[:n] = self.Y_[idx]
        return n

    def _choose(self, k: int) -> np.ndarray:
        """``min(k, len)`` distinct slot indices, every subset equally likely.

        Floyd's algorithm (Bentley & Floyd 1987, "A sample of brilliance"): k
        draws and a set, independent of the buffer size — unlike a partial
        shuffle of all ``len`` slots. The k uniform integers come from one
        vectorised ``random()`` call; ``floor(u·(j+1))`` is uniform on [0, j] up
        to float64 rounding (≤ 2⁻⁵³·j bias, far below any sampling noise).
        """
        n = self._len
        k = min(int(k), n)
        if k <= 0:
            return np.empty(0, dtype=np.intp)
        u = self._rng.random(k)
        chosen: list[int] = []
        taken: set[int] = set()
        for i, r in enumerate(u.tolist()):
            j = n - k + i
            t = int(r * (j + 1))
            if t in taken:
                t = j
            taken.add(t)
            chosen.append(t)
        return np.array(chosen, dtype=np.intp)

    def contents(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of the filled part of the buffer (X in storage dtype, Y)."""
        return self.X_[: self._len], self.Y_[: self._len]

    # -- state ---------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Every array the buffer owns, by name (for saving and accounting)."""
        out = {"X_": self.X_, "Y_": self.Y_}
        if self.policy == "class_balanced":
            out["class_stored_"] = self.class_stored_
            out["class_seen_"] = self.class_seen_
        return out

    def counters(self) -> dict[str, Any]:
        """Scalar state: fill level, items seen and the generator state."""
        return {"len": self._len, "seen": self._seen, "rng": self._rng.bit_generator.state}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        """Load arrays and counters produced by :meth:`arrays` / :meth:`counters`."""
        own = self.arrays()
        for name, dst in own.items():
            src = arrays.get(name)
            if src is None or src.shape != dst.shape or src.dtype != dst.dtype:
                raise StateFileError(f"buffer array {name!r} missing or of the wrong shape/dtype")
            dst[...] = src
        n, seen = int(counters["len"]), int(counters["seen"])
        if not 0 <= n <= self.capacity or seen < n:
            raise StateFileError(f"buffer counters out of range: len={n}, seen={seen}")
        self._len, self._seen = n, seen
        try:
            self._rng.bit_generator.state = counters["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            raise StateFileError(f"buffer generator state is invalid: {exc}") from None
