"""Online EWC: one running Fisher with decay (Schwarz et al. 2018, "Progress & Compress").

Instead of one penalty per task, a single Fisher is kept,
``F ← γ·F + F_t`` after task ``t``, and one anchor, the weights after the
latest task; the penalty is ``λ/2 · Σ F (θ − θ*)²``. ``γ = 1`` (the default, as in
van de Ven & Tolias 2019) weighs every task alike; ``γ < 1`` lets old tasks
fade. The Fisher itself is :func:`~edgecl.host.strategies.ewc.diagonal_fisher`
(batch-mean squared gradients; see that module for the scale). The device
learner's :class:`edgecl.OnlineFisher` is the per-sample streaming cousin (EWC++,
Chaudhry et al. 2018).
"""

from __future__ import annotations

from torch import nn

from edgecl.host.strategies.base import TaskView, trainable
from edgecl.host.strategies.ewc import EWC, _all_average, check_fisher_options, diagonal_fisher

__all__ = ["OnlineEWC"]


class OnlineEWC(EWC):
    """EWC with one decayed running Fisher and a single anchor.

    >>> OnlineEWC(fisher_decay=0.9).fisher_decay
    0.9
    """

    name = "online-ewc"

    def __init__(
        self,
        ewc_lambda: float = 1e5,
        fisher: str = "empirical",
        fisher_batches: int = 300,
        fisher_decay: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(ewc_lambda, fisher, fisher_batches, seed)
        check_fisher_options(fisher_decay=fisher_decay)
        self.fisher_decay = float(fisher_decay)

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        f = _all_average(diagonal_fisher(model, task, self.fisher_batches, self.fisher, self._gen))
        if self.fishers_:
            f = {n: self.fisher_decay * self.fishers_[0][n] + f[n] for n in f}
        self.fishers_ = [f]
        self.anchors_ = [{n: p.detach().clone() for n, p in trainable(model).items()}]
