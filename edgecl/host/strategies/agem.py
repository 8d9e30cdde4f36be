"""A-GEM, averaged gradient episodic memory (Chaudhry, Ranzato, Rohrbach & Elhoseiny 2019,
"Efficient Lifelong Learning with A-GEM", ICLR).

After each task ``memory_size`` of its training samples (the first ones of a
seeded, shuffled pass) are kept with their labels and task ids. While later
tasks train, every step also takes the gradient ``g_ref`` of the loss on
``memory_batch`` samples drawn from the memory of all past tasks (A-GEM's one
averaged constraint, where GEM has one per task). When the batch gradient
``g`` conflicts with it, ``g · g_ref < 0``, it is projected onto the plane
orthogonal to ``g_ref`` (:func:`project`)::

    g ← g − (g · g_ref) / (g_ref · g_ref) · g_ref

over all trainable parameters flattened into one vector, so to first order
the step does not raise the memory loss. Unlike replay, the memory never
enters the training loss; it only vetoes directions.

Details:

* the reference gradient comes from :func:`torch.autograd.grad`, so ``p.grad``
  (the current batch's gradient) is not touched until it is replaced, and the
  BatchNorm buffers are restored after the memory pass: the memory shapes the
  step only through the projection;
* task-IL masks the memory logits with each sample's own task (the mask table
  comes from :meth:`AGEM.before_task`);
* under ``torchrun`` the reference gradient is averaged over processes, like
  the batch gradient, so every process projects alike;
* the paper uses plain SGD; with Adam (the loop's default) the guarantee
  ``g̃ · g_ref ≥ 0`` holds for the gradient Adam receives, not for its step.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host import ddp
from edgecl.host.strategies.base import Strategy, TaskView, masked, trainable

__all__ = ["AGEM", "project"]


def project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's gradient: ``g`` if ``g · g_ref >= 0``, else ``g`` minus its part along ``g_ref``.

    Branch-free (no host/GPU sync): the coefficient is clamped at 0. A ``g_ref``
    whose squared norm underflows to 0 counts as no constraint.

    >>> project(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 2.0])).tolist()
    [1.0, 0.0]
    >>> project(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0])).tolist()
    [1.0, 1.0]
    """
    dot = torch.dot(g, g_ref)
    ref_sq = torch.dot(g_ref, g_ref)
    coef = dot.clamp(max=0) / ref_sq.clamp_min(torch.finfo(ref_sq.dtype).tiny)
    return g - torch.where(ref_sq > 0, coef, torch.zeros_like(coef)) * g_ref


class AGEM(Strategy):
    """A-GEM: project the gradient when it conflicts with an episodic memory's gradient.

    Parameters
    ----------
    memory_size : int
        Samples kept per finished task.
    memory_batch : int
        Memory samples drawn (without replacement) for each reference gradient.
    seed : int
        Seeds the memory draws.

    >>> s = AGEM(memory_size=10)
    >>> s.report(), s.nbytes()   # nothing kept before the first task ends
    ({'memory_samples': 0}, 0)
    """

    name = "agem"
    # The memory only constrains weight gradients and never reaches the BatchNorm
    # statistics (its pass restores them), so they need keeping like a penalty's.
    keeps_bn_statistics = True

    def __init__(self, memory_size: int = 100, memory_batch: int = 256, seed: int = 0) -> None:
        for field, v in (("memory_size", memory_size), ("memory_batch", memory_batch)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ConfigError(f"{field} = {v!r}: must be an integer >= 1")
        self.memory_size = int(memory_size)
        self.memory_batch = int(memory_batch)
        self._rng = np.random.default_rng(seed)
        self._mask: torch.Tensor | None = None
        self.x_: torch.Tensor | None = None
        self.y_: torch.Tensor | None = None
        self.tid_: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.y_ is None else len(self.y_)

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        self._mask = task.mask

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        xs, ys, ts, n = [], [], [], 0
        for x, y, tid in task.batches():
            take = min(len(y), self.memory_size - n)
            xs.append(x[:take])
            ys.append(y[:take])
            ts.append(tid[:take])
            n += take
            if n == self.memory_size:
                break
        if self.x_ is not None:
            xs, ys, ts = [self.x_, *xs], [self.y_, *ys], [self.tid_, *ts]
        self.x_, self.y_, self.tid_ = torch.cat(xs), torch.cat(ys), torch.cat(ts)

    def memory_gradient(self, model: nn.Module) -> torch.Tensor | None:
        """Flat gradient of the loss on one memory batch (None: fewer than 2 samples kept).

        Leaves ``p.grad`` and the BatchNorm buffers as they were.
        """
        n = len(self)
        if n < 2:  # a BatchNorm layer in training mode needs two samples
            return None
        idx = self._rng.choice(n, size=min(n, self.memory_batch), replace=False)
        idx = torch.as_tensor(idx, device=self.y_.device)
        params = list(trainable(model).values())
        saved = [b.detach().clone() for b in model.buffers()]
        try:
            logits = masked(model(self.x_[idx]).float(), self.tid_[idx], self._mask)
            loss = nn.functional.cross_entropy(logits, self.y_[idx])
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            with torch.no_grad():
                for b, old in zip(model.buffers(), saved, strict=True):
                    b.copy_(old)
        flat = _flatten(grads, params)
        return ddp.all_average({"g": flat})["g"]

    def before_step(self, model: nn.Module) -> None:
        g_ref = self.memory_gradient(model)
        if g_ref is None:
            return
        params = list(trainable(model).values())
        g = project(_flatten([p.grad for p in params], params), g_ref)
        start = 0
        for p in params:
            part = g[start : start + p.numel()].view_as(p)
            start += p.numel()
            if p.grad is None:
                p.grad = part.to(p.dtype).clone()
            else:
                p.grad.copy_(part)

    def report(self) -> dict[str, object]:
        return {"memory_samples": len(self)}


def _flatten(grads, params: list[torch.Tensor]) -> torch.Tensor:
    """One float32 vector of the gradients, zeros where a parameter got none."""
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).detach().reshape(-1).float()
            for g, p in zip(grads, params, strict=True)
        ]
    )
