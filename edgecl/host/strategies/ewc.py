"""Elastic weight consolidation (Kirkpatrick et al. 2017) with a diagonal Fisher.

After each task the diagonal Fisher information ``F`` of the trained weights
θ* is estimated and kept; while learning later tasks the loss gains, per
remembered task, ``λ/2 · Σ_i F_i (θ_i − θ*_i)²``, whose gradient is
``λ F (θ − θ*)`` (:meth:`EWC.penalty_grad`, checked against autograd in the tests).

**Fisher scale** (DESIGN §9). :func:`diagonal_fisher` averages, over
``fisher_batches`` training batches, the *squared gradient of each batch's mean
loss*: ``F = 1/N Σ_b (∇_θ mean_{i∈b} ℓ_i)²``. This is the scale of the reference
MNIST → Fashion-MNIST table at λ = 1e5 (batch 100, ~300 batches). Because the
per-sample gradients of a batch mostly average out, it is roughly the
per-sample Fisher ``E[(∇ℓ_i)²]`` divided by the batch size — a per-sample
Fisher is ~100× larger and over-regularises at the same λ.

**Fisher modes.** ``"empirical"`` uses the observed labels; ``"true"`` samples
each label from the model's own predictive distribution (Martens 2014;
Kunstner et al. 2019, "Limitations of the empirical Fisher"). Under the true
Fisher each sample's expected gradient is zero, so in expectation the batch
Fisher is exactly the mean per-sample true Fisher divided by the batch size;
the empirical one adds the squared mean gradient, which is large when the
model is wrong about the observed labels.

The Fisher is computed with the model in evaluation mode (BatchNorm uses its
running statistics, dropout off): it describes the function that was learned,
not one batch's normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView, quadratic_penalty, trainable

__all__ = ["EWC", "FISHER_MODES", "check_fisher_options", "diagonal_fisher", "fisher_labels"]

FISHER_MODES = ("empirical", "true")


def check_fisher_options(
    *,
    ewc_lambda: float = 0.0,
    fisher: str = "empirical",
    fisher_batches: int = 1,
    fisher_decay: float = 1.0,
) -> None:
    """Raise :class:`ConfigError` naming the first out-of-range option of a Fisher penalty.

    Shared by ewc, online-ewc, kfac-ewc and importance-lr and by the Fisher
    estimators, so every one of them accepts and refuses the same values.

    >>> check_fisher_options(fisher="exact")
    Traceback (most recent call last):
    ...
    edgecl.errors.ConfigError: fisher = 'exact': must be one of empirical, true
    """
    if ewc_lambda < 0:
        raise ConfigError(f"ewc_lambda = {ewc_lambda}: must be >= 0")
    if fisher not in FISHER_MODES:
        raise ConfigError(f"fisher = {fisher!r}: must be one of {', '.join(FISHER_MODES)}")
    if fisher_batches < 1:
        raise ConfigError(f"fisher_batches = {fisher_batches}: must be >= 1")
    if not 0.0 <= fisher_decay <= 1.0:
        raise ConfigError(f"fisher_decay = {fisher_decay}: must be in [0, 1]")


def fisher_labels(
    logits: torch.Tensor, y: torch.Tensor, mode: str, generator: torch.Generator | None
) -> torch.Tensor:
    """The observed labels (``"empirical"``), or labels drawn from the model (``"true"``)."""
    if mode != "true":
        return y
    with torch.no_grad():
        probs = torch.softmax(logits.detach(), dim=1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(y.device)


def diagonal_fisher(
    model: nn.Module,
    task: TaskView,
    n_batches: int,
    mode: str = "empirical",
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Mean over ``n_batches`` batches of the squared gradient of the batch-mean loss.

    Parameters
    ----------
    model : nn.Module
    task : TaskView
        Supplies the batches and the task-IL mask.
    n_batches : int
        Batches to average (the data is passed over again if it has fewer).
    mode : {"empirical", "true"}
        Observed labels, or labels sampled from the model's predictive distribution.
    generator : torch.Generator, optional
        Seeds the label sampling of ``"true"`` (on the CPU).

    Returns
    -------
    dict
        One tensor per trainable parameter, same shape, float32.
    """
    check_fisher_options(fisher=mode, fisher_batches=n_batches)
    params = trainable(model)
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training = model.training
    model.eval()
    try:
        for x, y, tid in task.cycle(n_batches):
            logits = task.logits(model, x, tid).float()
            loss = nn.functional.cross_entropy(logits, fisher_labels(logits, y, mode, generator))
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (n, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    fisher[n] += g.detach().float() ** 2
    finally:
        model.train(was_training)
    return {n: f / n_batches for n, f in fisher.items()}


class EWC(Strategy):
    """EWC: one Fisher and one anchor per finished task.

    Parameters
    ----------
    ewc_lambda : float
        λ in ``λ/2 · Σ F (θ − θ*)²`` (1e5 reproduces the reference table).
    fisher : {"empirical", "true"}
    fisher_batches : int
        Batches averaged per Fisher (the reference uses ~300 of 100 samples).
    seed : int
        Seeds the label sampling of the true Fisher.

    >>> EWC(ewc_lambda=1e5).penalty(nn.Linear(2, 2), None, None) is None  # no task yet
    True
    """

    name = "ewc"
    keeps_bn_statistics = True  # a weight penalty: BatchNorm statistics would drift

    def __init__(
        self,
        ewc_lambda: float = 1e5,
        fisher: str = "empirical",
        fisher_batches: int = 300,
        seed: int = 0,
    ) -> None:
        check_fisher_options(ewc_lambda=ewc_lambda, fisher=fisher, fisher_batches=fisher_batches)
        self.ewc_lambda = float(ewc_lambda)
        self.fisher = fisher
        self.fisher_batches = int(fisher_batches)
        self._gen = torch.Generator().manual_seed(seed)
        self.fishers_: list[dict[str, torch.Tensor]] = []
        self.anchors_: list[dict[str, torch.Tensor]] = []

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        f = diagonal_fisher(model, task, self.fisher_batches, self.fisher, self._gen)
        self.fishers_.append(_all_average(f))
        self.anchors_.append({n: p.detach().clone() for n, p in trainable(model).items()})

    def penalty(self, model, x, logits):
        return quadratic_penalty(
            model, list(zip(self.fishers_, self.anchors_, strict=True)), self.ewc_lambda
        )

    def penalty_grad(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Closed-form gradient of :meth:`penalty`: ``λ Σ_tasks F (θ − θ*)``."""
        out = {n: torch.zeros_like(p) for n, p in trainable(model).items()}
        for fisher, anchor in zip(self.fishers_, self.anchors_, strict=True):
            for n, p in trainable(model).items():
                out[n] += self.ewc_lambda * fisher[n] * (p.detach() - anchor[n])
        return out


def _all_average(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Average over data-parallel processes (each estimated it on its own shard)."""
    from edgecl.host import ddp

    return ddp.all_average(tensors)
