"""Memory aware synapses (Aljundi et al. 2018).

After each task a weight's importance is the mean absolute gradient of the
squared L2 norm of the network's output: ``Ω = 1/N Σ_b |∇_θ mean_{i∈b} ‖f(x_i)‖²|``
— label-free, so it could be computed on unlabelled data. As with the EWC
Fisher, the gradient is that of a batch mean (the original uses single
samples, which is ~batch-size times slower here); the scale is absorbed by λ.
Importances add up over tasks; the penalty is ``λ/2 · Σ Ω (θ − θ*)²`` around the
latest weights. In task-IL the output is the task's own logits.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView, quadratic_penalty, trainable
from edgecl.host.strategies.ewc import _all_average

__all__ = ["MAS"]


class MAS(Strategy):
    """Memory aware synapses.

    Parameters
    ----------
    mas_lambda : float
        λ of the penalty.
    fisher_batches : int
        Batches averaged per importance estimate (the CLI's ``--fisher-batches``).

    >>> MAS(mas_lambda=2.0).mas_lambda
    2.0
    """

    name = "mas"
    keeps_bn_statistics = True  # a weight penalty: BatchNorm statistics would drift

    def __init__(self, mas_lambda: float = 1.0, fisher_batches: int = 300) -> None:
        if mas_lambda < 0 or fisher_batches < 1:
            raise ConfigError(
                f"mas_lambda = {mas_lambda}, fisher_batches = {fisher_batches}: need >= 0, >= 1"
            )
        self.mas_lambda = float(mas_lambda)
        self.batches = int(fisher_batches)
        self.omega_: dict[str, torch.Tensor] = {}
        self.anchor_: dict[str, torch.Tensor] = {}

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        params = trainable(model)
        omega = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = model.training
        model.eval()
        try:
            for x, _, tid in task.cycle(self.batches):
                out = model(x).float()
                if task.mask is not None:
                    out = out * task.mask[tid]
                norm = (out**2).sum(dim=1).mean()
                grads = torch.autograd.grad(norm, list(params.values()), allow_unused=True)
                for (n, _), g in zip(params.items(), grads, strict=True):
                    if g is not None:
                        omega[n] += g.detach().abs()
        finally:
            model.train(was_training)
        omega = _all_average({n: o / self.batches for n, o in omega.items()})
        for n, o in omega.items():
            self.omega_[n] = self.omega_.get(n, torch.zeros_like(o)) + o
        self.anchor_ = {n: p.detach().clone() for n, p in params.items()}

    def penalty(self, model, x, logits) -> torch.Tensor | None:
        if not self.omega_:
            return None
        return quadratic_penalty(model, [(self.omega_, self.anchor_)], self.mas_lambda)
