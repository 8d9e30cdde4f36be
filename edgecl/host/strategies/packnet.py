"""PackNet: one network, a disjoint weight mask per task (Mallya & Lazebnik, CVPR 2018).

Every weight of a Linear or convolution layer belongs either to the free pool
or to exactly one task (``owner_``: 0 = free, ``k`` = task ``k − 1``). Task t
trains only free weights; the weights of earlier tasks are used in the forward
pass but their gradients are zeroed (and their values restored after every
step, so no optimiser can move them). When task t ends:

1. of the weights it took from the free pool, the smallest-magnitude
   ``prune_ratio`` in each layer are set to 0 and given back to the pool;
2. the kept weights are retrained briefly (``retrain_steps`` batches, a fresh
   Adam with the same masking; the pruned ones stay at 0);
3. the kept weights are frozen: they are task t's for good.

Task j is predicted with the weights of tasks ≤ j only (later tasks' weights
and the free pool are zeroed; :meth:`PackNet.eval_model`), so what task j
learned is never disturbed: in task-IL its accuracy after later tasks equals
its accuracy right after it, exactly. The task id chooses the mask, hence
task-IL only.

How edgecl's model maps onto the paper:

* the output layer (``model.classifier``) is task-IL's multi-head output: the
  rows (weights and biases) of task t's classes are task t's head, claimed
  whole and not pruned, as the paper keeps a separate classifier per task;
* every other parameter — the biases of hidden layers, BatchNorm's affine
  weights — and the BatchNorm running statistics are trained on the first task
  only and then frozen, as in the paper and its code (``arunmallya/packnet``:
  biases are not pruned, and ``--train_biases``/``--train_bn`` are on for the
  first network only). The statistics are restored after every
  step too, so ``bn_policy`` cannot move them; ``auto`` (freeze) also keeps the
  forward pass in training consistent with the one at test time.

Memory: the masks are one byte per parameter (``uint8``, up to 255 tasks;
ceil(log2(tasks + 1)) bits would do). While training, a copy of the
frozen values is held to restore them; it is not part of the learned state.

>>> s = PackNet(prune_ratio=0.75, retrain_steps=10)
>>> s.scenarios, s.prune_ratio
(('task-il',), 0.75)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from edgecl.errors import ConfigError
from edgecl.host import ddp
from edgecl.host.strategies.base import Strategy, TaskView

__all__ = ["PackNet"]

_MAX_TASKS = 255  # owner ids are uint8


class PackNet(Strategy):
    """Iterative pruning into per-task weight masks.

    Parameters
    ----------
    prune_ratio : float
        Share of the weights a task took from the free pool that are pruned
        back into it after the task, per layer (0.5 in the paper's sequences).
    retrain_steps : int
        Batches of retraining after the pruning (0: none).
    retrain_lr : float
        Adam learning rate of the retraining (pass the run's ``--lr``).
    """

    name = "packnet"
    keeps_bn_statistics = True  # BatchNorm is the first task's; frozen after it
    scenarios = ("task-il",)
    scenario_reason = "the task id chooses which weight mask predicts at test time"

    def __init__(
        self, prune_ratio: float = 0.5, retrain_steps: int = 50, retrain_lr: float = 1e-3
    ) -> None:
        if not 0.0 <= prune_ratio < 1.0:
            raise ConfigError(f"prune_ratio = {prune_ratio}: must be in [0, 1)")
        if isinstance(retrain_steps, bool) or int(retrain_steps) != retrain_steps:
            raise ConfigError(f"retrain_steps = {retrain_steps!r}: must be an integer >= 0")
        if retrain_steps < 0:
            raise ConfigError(f"retrain_steps = {retrain_steps}: must be an integer >= 0")
        if not retrain_lr > 0:
            raise ConfigError(f"retrain_lr = {retrain_lr}: must be > 0")
        self.prune_ratio = float(prune_ratio)
        self.retrain_steps = int(retrain_steps)
        self.retrain_lr = float(retrain_lr)
        self.owner_: dict[str, torch.Tensor] = {}  # per parameter: 0 free, k = task k - 1
        self.packed_ = 0  # tasks packed so far
        self._kind: dict[str, str] = {}  # "prune" | "head" | "shared"
        self._trains = 0  # owner id whose weights may move now: 0 (free pool) or t + 1
        self._frozen: dict[str, torch.Tensor] = {}  # values restored after each step
        self._buffers: dict[str, torch.Tensor] = {}  # BatchNorm statistics after task 1

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        if task.index + 1 > _MAX_TASKS:
            raise ConfigError(f"packnet: at most {_MAX_TASKS} tasks (task {task.index + 1})")
        model = _unwrap(model)
        if not self.owner_:
            self._kind = _kinds(model)
            self.owner_ = {
                n: torch.zeros(p.shape, dtype=torch.uint8, device=p.device)
                for n, p in model.named_parameters()
            }
        self._trains = 0

    def before_step(self, model: nn.Module) -> None:
        if not self._frozen:
            return
        for n, p in _unwrap(model).named_parameters():
            if p.grad is not None:  # masked_fill, not a product: an inf gradient stays skipped
                p.grad.masked_fill_(self.owner_[n] != self._trains, 0)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        if not self._frozen:
            return
        model = _unwrap(model)
        for n, p in model.named_parameters():
            p.copy_(torch.where(self.owner_[n] != self._trains, self._frozen[n], p))
        for n, b in model.named_buffers():
            if n in self._buffers:
                b.copy_(self._buffers[n])

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        model = _unwrap(model)
        if not self.owner_:
            self.before_task(model, task)
        mine = task.index + 1
        self._claim(model, task, mine)
        self._frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
        self._trains = mine
        self._retrain(model, task)
        self._trains = 0
        self._frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
        if not self._buffers:
            self._buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        self.packed_ += 1

    def eval_model(self, model: nn.Module, task: int) -> nn.Module:
        if task >= self.packed_:  # not trained yet: the network as it stands
            return model
        keep = {n: (o >= 1) & (o <= task + 1) for n, o in self.owner_.items()}
        return _Masked(_unwrap(model), keep)

    def masks(self) -> list[dict[str, torch.Tensor]]:
        """Each packed task's own weights, as boolean masks by parameter name."""
        return [{n: o == k + 1 for n, o in self.owner_.items()} for k in range(self.packed_)]

    def report(self) -> dict[str, object]:
        prunable = [o for n, o in self.owner_.items() if self._kind[n] == "prune"]
        total = sum(o.numel() for o in prunable)
        return {
            "packnet_mask_bytes": self.nbytes(),
            "packnet_weights_per_task": [
                int(sum(int((o == k + 1).sum()) for o in prunable)) for k in range(self.packed_)
            ],
            "packnet_free_fraction": round(
                sum(int((o == 0).sum()) for o in prunable) / max(1, total), 6
            ),
        }

    @torch.no_grad()
    def _claim(self, model: nn.Module, task: TaskView, mine: int) -> None:
        """Prune task ``mine``'s share of the free pool, claim the rest, its head rows, BN."""
        for n, p in model.named_parameters():
            owner, kind = self.owner_[n], self._kind[n]
            if kind == "prune":
                free = owner == 0
                n_free = int(free.sum())
                k = int(self.prune_ratio * n_free + 0.5)
                idx = free.flatten().nonzero().squeeze(1)
                smallest = idx[p.detach().flatten()[idx].abs().argsort()[:k]]
                p.view(-1)[smallest] = 0.0
                owner.view(-1)[idx] = mine
                owner.view(-1)[smallest] = 0
            elif kind == "head":
                rows = torch.tensor(task.classes, dtype=torch.long, device=owner.device)
                rows = rows[rows < owner.shape[0]]
                owner[rows] = torch.where(owner[rows] == 0, mine, owner[rows]).to(owner.dtype)
            elif self.packed_ == 0:  # shared: the first task's
                owner.fill_(mine)

    def _retrain(self, model: nn.Module, task: TaskView) -> None:
        if self.retrain_steps == 0:
            return
        params = dict(model.named_parameters())
        opt = torch.optim.Adam([p for p in params.values() if p.requires_grad], self.retrain_lr)
        was_training = model.training
        model.train()
        if self._buffers:  # BatchNorm is the first task's: use its statistics, keep them
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        for x, y, tid in task.cycle(self.retrain_steps):
            loss = nn.functional.cross_entropy(task.logits(model, x, tid).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grads = {n: p.grad for n, p in params.items() if p.grad is not None}
            for n, g in ddp.all_average(grads).items():  # identity unless under torchrun
                params[n].grad = g
            self.before_step(model)
            opt.step()
            self.after_step(model)
        model.train(was_training)


class _Masked(nn.Module):
    """``model`` with the weights outside ``keep`` read as 0 (the model itself is untouched)."""

    def __init__(self, model: nn.Module, keep: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self._drop = {n: ~k for n, k in keep.items() if not bool(k.all())}
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = dict(self.model.named_parameters())
        masked = {n: params[n].masked_fill(d, 0.0) for n, d in self._drop.items()}
        return functional_call(self.model, masked, (x,))


def _kinds(model: nn.Module) -> dict[str, str]:
    """``prune`` for Linear/conv weights, ``head`` for the output layer, ``shared`` otherwise."""
    head = getattr(model, "classifier", None)
    head = head if isinstance(head, nn.Linear) else None
    kinds = {}
    for mod_name, m in model.named_modules():
        for p_name, _ in m.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if m is head:
                kinds[name] = "head"
            elif p_name == "weight" and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                kinds[name] = "prune"
            else:
                kinds[name] = "shared"
    return kinds


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)
