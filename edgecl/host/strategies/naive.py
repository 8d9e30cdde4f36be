"""Fine-tuning ("naive"): each task trained in turn, nothing protects the old ones.

The lower bound of every continual-learning table: it shows how much a
strategy saves from catastrophic forgetting (McCloskey & Cohen 1989).
"""

from __future__ import annotations

from edgecl.host.strategies.base import Strategy

__all__ = ["Naive"]


class Naive(Strategy):
    """Plain fine-tuning; see :class:`~edgecl.host.strategies.base.Strategy`.

    >>> Naive().name
    'naive'
    """

    name = "naive"
