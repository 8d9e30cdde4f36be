"""Synaptic intelligence (Zenke, Poole & Ganguli 2017).

While a task trains, every step adds ``−g · Δθ`` (the gradient times the
update; a running estimate of each weight's contribution to the drop in loss)
to a per-weight path integral ω. When the task ends the importance grows by
``Ω += ω / ((θ_end − θ_start)² + ξ)`` and the anchor moves to θ_end; later
tasks pay ``c · Σ Ω (θ − θ*)²``. The gradient used is that of the total loss
(task loss plus the SI term), as in van de Ven & Tolias (2019)'s code.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView, quadratic_penalty, trainable

__all__ = ["SI"]


class SI(Strategy):
    """Synaptic intelligence.

    Parameters
    ----------
    si_c : float
        Strength ``c`` of the surrogate loss.
    xi : float
        Damping ξ of the importance denominator.

    >>> SI(si_c=0.5).si_c
    0.5
    """

    name = "si"
    keeps_bn_statistics = True  # a weight penalty: BatchNorm statistics would drift

    def __init__(self, si_c: float = 1.0, xi: float = 0.1) -> None:
        if si_c < 0 or xi <= 0:
            raise ConfigError(f"si_c = {si_c}, xi = {xi}: need si_c >= 0 and xi > 0")
        self.si_c = float(si_c)
        self.xi = float(xi)
        self.omega_: dict[str, torch.Tensor] = {}
        self.anchor_: dict[str, torch.Tensor] = {}
        self._path: dict[str, torch.Tensor] = {}
        self._start: dict[str, torch.Tensor] = {}
        self._prev: dict[str, torch.Tensor] = {}

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        params = trainable(model)
        self._start = {n: p.detach().clone() for n, p in params.items()}
        self._prev = {n: p.detach().clone() for n, p in params.items()}
        self._path = {n: torch.zeros_like(p) for n, p in params.items()}

    def after_step(self, model: nn.Module) -> None:
        for n, p in trainable(model).items():
            now = p.detach()
            if p.grad is not None:
                self._path[n] -= p.grad.detach() * (now - self._prev[n])
            self._prev[n] = now.clone()

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        for n, p in trainable(model).items():
            delta = p.detach() - self._start[n]
            gain = self._path[n] / (delta**2 + self.xi)
            self.omega_[n] = self.omega_.get(n, torch.zeros_like(gain)) + gain
            self.anchor_[n] = p.detach().clone()

    def penalty(self, model, x, logits) -> torch.Tensor | None:
        if not self.omega_:
            return None
        # quadratic_penalty halves its strength; SI's surrogate has no 1/2.
        return quadratic_penalty(model, [(self.omega_, self.anchor_)], 2.0 * self.si_c)
