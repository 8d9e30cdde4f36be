"""Experience replay with a reservoir buffer (Vitter 1985, Algorithm R).

After each task its training samples stream once through a fixed-size
reservoir, so every sample seen so far is kept with equal probability
``capacity / seen``. While later tasks train, each batch is extended with as
many samples drawn uniformly from the buffer (with their own labels and task
ids, so task-IL masking still applies). Raw inputs are stored here; the device
learner replays embeddings instead (latent replay).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Batch, Strategy, TaskView

__all__ = ["Replay", "last_writes"]


def last_writes(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(dest, src)``: each slot once, with the last sample ``i`` that drew it (``slots[i]``).

    Samples with slot ``-1`` were not kept. A batch may draw one slot twice, and
    torch leaves ``buf[dest] = x`` with repeated ``dest`` undefined (on CUDA any
    of the writes may win), so the repeats are resolved here: the later sample
    wins, as in the one-sample-at-a-time Algorithm R.

    >>> last_writes(np.array([2, -1, 0, 2, 0, 1]))
    (array([0, 1, 2]), array([4, 5, 3]))
    """
    kept = np.flatnonzero(slots >= 0)
    backwards = kept[::-1]
    dest, first = np.unique(slots[backwards], return_index=True)
    return dest, backwards[first]


class Replay(Strategy):
    """Reservoir-sampled rehearsal.

    Parameters
    ----------
    buffer_size : int
        Samples kept, over all tasks.
    replay_batch : int or None
        Replayed samples per batch (default: as many as the batch has).
    seed : int
        Seeds the reservoir and the draws.

    >>> r = Replay(buffer_size=3)
    >>> x, y, t = r.augment(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long),
    ...                     torch.zeros(2, dtype=torch.long))
    >>> len(y)   # empty buffer: the batch is unchanged
    2
    """

    name = "replay"

    def __init__(self, buffer_size: int = 1000, replay_batch: int | None = None, seed: int = 0):
        if buffer_size < 1 or (replay_batch is not None and replay_batch < 1):
            raise ConfigError(f"buffer_size = {buffer_size}, replay_batch = {replay_batch}: >= 1")
        self.buffer_size = int(buffer_size)
        self.replay_batch = replay_batch
        self._rng = np.random.default_rng(seed)
        self._seen = 0
        self._filled = 0
        self.x_: torch.Tensor | None = None
        self.y_: torch.Tensor | None = None
        self.tid_: torch.Tensor | None = None

    def __len__(self) -> int:
        return self._filled

    def add(self, x: torch.Tensor, y: torch.Tensor, tid: torch.Tensor) -> None:
        """Stream a batch through the reservoir (Algorithm R, one sample at a time)."""
        if self.x_ is None:
            self.x_ = x.new_zeros((self.buffer_size, *x.shape[1:]))
            self.y_ = y.new_zeros(self.buffer_size)
            self.tid_ = tid.new_zeros(self.buffer_size)
        slots = np.full(len(y), -1)
        for i in range(len(y)):
            if self._filled < self.buffer_size:
                slots[i] = self._filled
                self._filled += 1
            else:
                j = int(self._rng.integers(0, self._seen + 1))
                if j < self.buffer_size:
                    slots[i] = j
            self._seen += 1
        dest_np, src_np = last_writes(slots)
        if dest_np.size:
            dest = torch.as_tensor(dest_np, device=x.device)
            src = torch.as_tensor(src_np, device=x.device)
            self.x_[dest] = x[src].to(self.x_.dtype)
            self.y_[dest] = y[src]
            self.tid_[dest] = tid[src]

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        for x, y, tid in task.batches():
            self.add(x, y, tid)

    def augment(self, x: torch.Tensor, y: torch.Tensor, tid: torch.Tensor) -> Batch:
        n = self._filled
        if n == 0:
            return x, y, tid
        k = len(y) if self.replay_batch is None else self.replay_batch
        idx = torch.as_tensor(self._rng.integers(0, n, size=k), device=x.device)
        return (
            torch.cat([x, self.x_[idx].to(x.dtype)]),
            torch.cat([y, self.y_[idx]]),
            torch.cat([tid, self.tid_[idx]]),
        )
