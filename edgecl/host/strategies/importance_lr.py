"""Importance-scaled step sizes: each weight moves slower the more the old tasks need it.

This is edgecl's simple member of the "adaptive learning rate" branch of the
optimisation-based methods. The idea is UCB's (Ebrahimi, Elhoseiny, Darrell &
Rohrbach 2020, "Uncertainty-guided Continual Learning with Bayesian Neural
Networks", ICLR): each weight's learning rate follows its posterior
uncertainty, so the weights the old tasks are sure about barely move. edgecl
trains no Bayesian network; the importance is EWC's diagonal Fisher
(Kirkpatrick et al. 2017; :func:`edgecl.host.strategies.ewc.diagonal_fisher`,
same scale and modes), summed over the finished tasks, and every step of
weight ``i`` is divided by ``1 + s·F_i``::

    θ ← θ_before + (θ_after − θ_before) / (1 + s · F)

Read as a Laplace approximation with prior precision 1 and likelihood precision
``s·F``, ``1 / (1 + s·F)`` is the posterior variance: the step follows σ²
where UCB's follows σ. There is no anchor and no penalty, so unlike EWC a
weight can still drift far over many steps; it only drifts more slowly.

The *step* is scaled after the optimiser, not the gradient before it: Adam (the
loop's default) divides each coordinate by the running RMS of its own
gradients, so a constant per-coordinate factor on the gradient cancels (up to
its ε) and would change nothing. For SGD, with or without momentum, scaling
the step is the same as scaling the gradient, since each task starts a fresh
optimiser and ``F`` is fixed while it trains.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host import ddp
from edgecl.host.strategies.base import Strategy, TaskView, trainable
from edgecl.host.strategies.ewc import check_fisher_options, diagonal_fisher

__all__ = ["ImportanceLR"]


class ImportanceLR(Strategy):
    """Per-weight step sizes ``lr / (1 + s·F)`` with ``F`` the summed diagonal Fisher.

    Parameters
    ----------
    importance_strength : float
        ``s`` (the Fisher has EWC's batch-mean scale). The default comes from one
        sweep, split MNIST task-IL, 1 epoch, Adam: 1e3 behaves like fine-tuning,
        1e6–1e7 keep the old tasks (BWT ≈ −0.01), 1e8 starts to stop learning.
    fisher : {"empirical", "true"}
    fisher_batches : int
        Batches averaged per Fisher.
    seed : int
        Seeds the label sampling of the true Fisher.

    >>> s = ImportanceLR(importance_strength=10.0)
    >>> s.report(), s.nbytes()
    ({'importance_values': 0}, 0)
    """

    name = "importance-lr"
    keeps_bn_statistics = True  # protects weights only: keep the task-1 statistics

    def __init__(
        self,
        importance_strength: float = 1e7,
        fisher: str = "empirical",
        fisher_batches: int = 300,
        seed: int = 0,
    ) -> None:
        if not importance_strength >= 0:
            raise ConfigError(f"importance_strength = {importance_strength}: must be >= 0")
        check_fisher_options(fisher=fisher, fisher_batches=fisher_batches)
        self.importance_strength = float(importance_strength)
        self.fisher = fisher
        self.fisher_batches = int(fisher_batches)
        self._gen = torch.Generator().manual_seed(seed)
        self.importance_: dict[str, torch.Tensor] = {}
        self._scale: dict[str, torch.Tensor] = {}
        self._start: dict[str, torch.Tensor] = {}

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        f = diagonal_fisher(model, task, self.fisher_batches, self.fisher, self._gen)
        f = ddp.all_average(f)  # each process estimated it on its own shard
        for n, v in f.items():
            self.importance_[n] = self.importance_.get(n, torch.zeros_like(v)) + v
        self._scale = {
            n: 1.0 / (1.0 + self.importance_strength * v) for n, v in self.importance_.items()
        }

    def before_step(self, model: nn.Module) -> None:
        if self._scale:
            self._start = {n: p.detach().clone() for n, p in trainable(model).items()}

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        if not self._scale:
            return
        for n, p in trainable(model).items():
            start = self._start[n]
            p.copy_(start + (p - start) * self._scale[n])

    def report(self) -> dict[str, object]:
        return {"importance_values": sum(v.numel() for v in self.importance_.values())}
