"""Feature distillation: keep the embedding of the previous model (functional regularisation).

The feature half of functional regularisation, next to LwF's output
distillation (:mod:`~edgecl.host.strategies.lwf`): after each task a frozen
copy of the model's ``extractor`` is kept, and while later tasks train the
current embedding of each batch is pulled towards the copy's,

* ``"l2"`` (default): ``λ · mean_i ‖f(x_i) − f_old(x_i)‖²`` (squared L2 summed
  over the embedding, averaged over the batch), the hint loss of FitNets
  (Romero et al. 2015) applied across tasks;
* ``"cosine"``: ``λ · mean_i (1 − cos(f(x_i), f_old(x_i)))``, the less-forget
  constraint of Hou et al. 2019, "Learning a Unified Classifier Incrementally
  via Rebalancing" (CVPR), with a fixed λ instead of their adaptive one.

Only the extractor is constrained: the classifier is free, which suits the
edgecl split (the extractor is what ships to the device). The embedding of
the current batch is captured by a forward hook during the training loop's own
forward pass, so no second pass runs and BatchNorm statistics are updated once.
The copy runs in evaluation mode (its running statistics), as LwF's does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView

__all__ = ["DISTANCES", "FeatureDistill"]

DISTANCES = ("l2", "cosine")


class FeatureDistill(Strategy):
    """Distillation on the previous model's embedding.

    Parameters
    ----------
    distill_lambda : float
        Weight λ of the feature term.
    feature_distance : {"l2", "cosine"}
        Squared Euclidean distance or one minus the cosine similarity.

    >>> FeatureDistill(distill_lambda=2.0).penalty(None, None, None) is None  # no task yet
    True
    """

    name = "feature-distill"

    def __init__(self, distill_lambda: float = 1.0, feature_distance: str = "l2") -> None:
        if distill_lambda < 0:
            raise ConfigError(f"distill_lambda = {distill_lambda}: must be >= 0")
        if feature_distance not in DISTANCES:
            raise ConfigError(
                f"feature_distance = {feature_distance!r}: must be one of {', '.join(DISTANCES)}"
            )
        self.distill_lambda = float(distill_lambda)
        self.feature_distance = feature_distance
        self.old_extractor_: nn.Module | None = None
        self._features: torch.Tensor | None = None
        self._hook = None

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        self._hook = _unwrap(model).extractor.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        self._features = out

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._features = None
        self.old_extractor_ = copy.deepcopy(_unwrap(model).extractor).eval()
        for p in self.old_extractor_.parameters():
            p.requires_grad_(False)

    def penalty(self, model, x, logits) -> torch.Tensor | None:
        new, self._features = self._features, None  # drop the graph reference either way
        if self.old_extractor_ is None or self.distill_lambda == 0:
            return None
        if new is None or len(new) != len(x):  # no hook on this forward (called outside the loop)
            new = _unwrap(model).extractor(x)
        with torch.no_grad():
            old = self.old_extractor_(x).float()
        new = new.float()
        if self.feature_distance == "cosine":
            dist = 1.0 - nn.functional.cosine_similarity(new, old, dim=1)
        else:
            dist = ((new - old) ** 2).sum(dim=1)
        return self.distill_lambda * dist.mean()


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
