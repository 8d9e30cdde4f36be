"""Learning without forgetting (Li & Hoiem 2016).

After each task a frozen copy of the model is kept. While later tasks train,
the current inputs also pass through the copy, and the new model is pulled
towards its softened outputs on the classes seen so far:
``α · T² · KL(softmax(z_old/T) ‖ softmax(z_new/T))`` over those classes (all
outputs in domain-IL, where every task shares the head). No old data is kept,
only the old model, so it works where storing samples is not allowed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView

__all__ = ["LwF"]


class LwF(Strategy):
    """Distillation on the previous model's outputs.

    Parameters
    ----------
    alpha : float
        Weight of the distillation term.
    temperature : float
        Softmax temperature ``T`` (2 in the paper).

    >>> LwF(alpha=1.0, temperature=2.0).temperature
    2.0
    """

    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0) -> None:
        if alpha < 0 or temperature <= 0:
            raise ConfigError(f"alpha = {alpha}, temperature = {temperature}: need >= 0, > 0")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.old_model_: nn.Module | None = None
        self._seen: list[int] = []

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        self.old_model_ = copy.deepcopy(_unwrap(model)).eval()
        for p in self.old_model_.parameters():
            p.requires_grad_(False)
        self._seen = sorted(set(self._seen) | set(task.classes))

    def penalty(self, model, x, logits) -> torch.Tensor | None:
        if self.old_model_ is None or self.alpha == 0:
            return None
        cols = torch.tensor(self._seen, device=logits.device)
        with torch.no_grad():
            old = self.old_model_(x).float().index_select(1, cols)
        new = logits.float().index_select(1, cols)
        t = self.temperature
        kl = nn.functional.kl_div(
            torch.log_softmax(new / t, dim=1),
            torch.log_softmax(old / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return self.alpha * t * t * kl


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
