"""Joint training: at task ``t``, train on the union of tasks ``0..t``.

The usual upper bound (it keeps every sample, which a device cannot). The row
``R[t]`` of its accuracy matrix is a model trained on everything seen so far,
continued from the previous row's weights.
"""

from __future__ import annotations

from edgecl.host.strategies.base import Strategy

__all__ = ["Joint"]


class Joint(Strategy):
    """Train each task on all data seen so far.

    >>> list(Joint().train_on(2))
    [0, 1, 2]
    """

    name = "joint"

    def train_on(self, t: int) -> range:
        return range(0, t + 1)
