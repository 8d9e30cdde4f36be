"""The strategy interface: a few plain hooks, each a no-op here (which is fine-tuning).

The training loop (:func:`edgecl.host.train.train_tasks`) calls, for task ``t``::

    strategy.before_task(model, view)                 # once, before training on t
    for each batch (x, y, tid) of the tasks in strategy.train_on(t):
        x, y, tid = strategy.augment(x, y, tid)       # e.g. append replayed samples
        logits = model(x)
        loss = cross_entropy(mask(logits, tid), y) + strategy.penalty(model, x, logits)
        loss.backward()
        strategy.before_step(model)                   # e.g. project or mask p.grad
        optimiser.step()
        strategy.after_step(model)                    # e.g. SI's path integral
    strategy.after_task(model, view)                  # e.g. Fisher, buffer, snapshot
    for each task j: evaluate strategy.eval_model(model, j) on j's test set

A strategy that only makes sense in some scenarios lists them in ``scenarios``
(``edgecl pretrain`` refuses the others with exit code 2); :meth:`report` adds
its own figures (e.g. a generator's parameter count) to the result JSON.

Hooks return values instead of mutating shared state (STYLE: Avalanche is the
anti-model). Learned tensors live in attributes ending in ``_`` (sklearn
style); :meth:`Strategy.nbytes` counts them for the memory report.

>>> s = Strategy()
>>> list(s.train_on(2)), s.nbytes()
([2], 0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from edgecl.errors import ConfigError

__all__ = ["MASK_FILL", "Strategy", "TaskView", "UnsupportedScenario", "check_scenario", "masked"]

# Logit given to classes outside a task-IL task: exp() of it is exactly 0 in float32,
# yet it stays finite so products with zero probabilities (distillation) are not NaN.
MASK_FILL = -1e9

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def masked(logits: torch.Tensor, tid: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Task-IL multi-head masking: logits outside each sample's task get :data:`MASK_FILL`.

    ``mask`` is a ``(n_tasks, n_classes)`` bool table (None: no masking).

    >>> m = torch.tensor([[True, True, False], [False, False, True]])
    >>> masked(torch.zeros(2, 3), torch.tensor([0, 1]), m).tolist()
    [[0.0, 0.0, -1000000000.0], [-1000000000.0, -1000000000.0, 0.0]]
    """
    if mask is None:
        return logits
    return logits.float().masked_fill(~mask[tid], MASK_FILL)


@dataclass(frozen=True, eq=False)
class TaskView:
    """What a strategy may see of the task that starts or just ended.

    Attributes
    ----------
    index : int
        Position of the task in the sequence.
    classes : tuple of int
        The task's labels.
    mask : Tensor or None
        The task-IL mask table (see :func:`masked`), None in other scenarios.
    batches : callable
        ``batches()`` yields one seeded, shuffled pass over the task's training
        data as ``(x, y, tid)`` on the training device, in training batches.
    """

    index: int
    classes: tuple[int, ...]
    mask: torch.Tensor | None
    batches: Callable[[], Iterator[Batch]]

    def logits(self, model: nn.Module, x: torch.Tensor, tid: torch.Tensor) -> torch.Tensor:
        """The model's logits for ``x``, masked as in training."""
        return masked(model(x), tid, self.mask)

    def cycle(self, n: int) -> Iterator[Batch]:
        """Exactly ``n`` batches, passing over the data again when one pass is shorter."""
        done = 0
        while done < n:
            before = done
            for batch in self.batches():
                yield batch
                done += 1
                if done == n:
                    return
            if done == before:
                raise ValueError("the task has no training batches")


class UnsupportedScenario(ConfigError):
    """A strategy asked for a scenario it is not defined for (a usage error: exit code 2)."""


def check_scenario(strategy: Strategy, scenario: str) -> None:
    """Raise :class:`UnsupportedScenario` with a one-line reason unless ``scenario`` fits."""
    if strategy.scenarios is not None and scenario not in strategy.scenarios:
        why = f": {strategy.scenario_reason}" if strategy.scenario_reason else ""
        raise UnsupportedScenario(
            f"--strategy {strategy.name} runs in {', '.join(strategy.scenarios)} only, "
            f"not {scenario}{why}"
        )


class Strategy:
    """Fine-tuning (naive): train on each task in turn with nothing added.

    Subclasses override the hooks they need; the defaults do nothing.
    """

    name = "naive"
    #: ``bn_policy="auto"`` keeps the task-1 BatchNorm statistics for this strategy
    #: (DESIGN §9): True for penalties on weights, which leave the statistics unprotected.
    keeps_bn_statistics = False
    #: Scenarios the method is defined for (None: all); others are refused with a reason.
    scenarios: tuple[str, ...] | None = None
    #: Why only those scenarios (shown when refusing).
    scenario_reason = ""

    def train_on(self, t: int) -> range:
        """Indices of the tasks whose training data task ``t`` trains on."""
        return range(t, t + 1)

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        """Called once before training on a task."""

    def augment(self, x: torch.Tensor, y: torch.Tensor, tid: torch.Tensor) -> Batch:
        """The batch actually trained on (e.g. with replayed samples appended)."""
        return x, y, tid

    def penalty(
        self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor | None:
        """An extra loss term for this batch (``logits`` are unmasked), or None."""
        return None

    def before_step(self, model: nn.Module) -> None:
        """Called after ``backward()`` and before the optimiser step: may change ``p.grad``."""

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimiser step (gradients still in ``p.grad``)."""

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        """Called once after training on a task, model in training mode."""

    def eval_model(self, model: nn.Module, task: int) -> nn.Module:
        """The module that predicts task ``task``'s test set (e.g. with that task's masks)."""
        return model

    def report(self) -> dict[str, object]:
        """Extra JSON-able figures for the result (e.g. ``generator_params``)."""
        return {}

    def nbytes(self) -> int:
        """Bytes of the learned tensors this strategy keeps (attributes ending in ``_``)."""
        total = 0
        for name, value in vars(self).items():
            if name.endswith("_") and not name.startswith("_"):
                total += _tensor_bytes(value)
        return total


def _tensor_bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    if isinstance(value, nn.Module):
        return sum(_tensor_bytes(t) for t in value.state_dict().values())
    return 0


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a regulariser protects, by name (BatchNorm statistics are buffers)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def quadratic_penalty(
    model: nn.Module,
    terms: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]],
    strength: float,
) -> torch.Tensor | None:
    """``strength/2 · Σ_terms Σ_i w_i (θ_i − θ*_i)²`` for ``(weights, anchors)`` pairs."""
    if not terms:
        return None
    params = trainable(model)
    total = None
    for weights, anchors in terms:
        for n, p in params.items():
            s = (weights[n] * (p - anchors[n]) ** 2).sum()
            total = s if total is None else total + s
    return 0.5 * strength * total
