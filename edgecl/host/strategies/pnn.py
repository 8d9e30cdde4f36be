"""Progressive neural networks (Rusu et al. 2016, "Progressive Neural Networks", arXiv:1606.04671).

One column — a fresh copy of the model's extractor and classifier — per
task. When task ``t`` ends its column is frozen for good, and the column of
task ``t + 1`` is added with *lateral connections* from every frozen column:
the paper's Eq. 1,

    h_i⁽ᵏ⁾ = f(W_i⁽ᵏ⁾ h_{i−1}⁽ᵏ⁾ + Σ_{j<k} U_i⁽ᵏ:ʲ⁾ h_{i−1}⁽ʲ⁾),

for every weight layer ``i`` after the first, the output layer included. A
"layer" is a Linear or convolution of the extractor (``f`` is whatever
follows it up to the next one: BatchNorm, ReLU, pooling), and ``U`` is a
layer of the same kind taking the earlier columns' inputs to that layer,
concatenated along the feature/channel axis (one ``U`` per layer and column,
no bias). The paper's non-linear adapters (its §2, a projection before ``U``)
are not built: these are the linear laterals of Eq. 1.

How it fits the loop: the model stays an :class:`~edgecl.host.models.EdgeModel`
whose ``extractor`` becomes ``_Columns`` (every column; the embedding is the
columns' last hidden layers side by side) and whose ``classifier`` becomes
``_Heads`` (each column's head with its laterals). Both are swapped in by
:meth:`PNN.after_task`, which the loop calls before it builds the next task's
optimiser, so that optimiser sees only the new column: the frozen ones have
``requires_grad = False`` and are kept in evaluation mode (their BatchNorm
statistics never move). Task-IL's logit masking picks the column: the logits
of task ``k``'s classes are column ``k``'s head's, so testing task ``k`` reads
column ``k`` and the frozen columns before it only, and its accuracy after
later tasks is exactly the one it had (tested). The task id chooses the
column, hence task-IL only.

Cost: the parameters grow by a column plus laterals per task (``params`` in
the result), and a forward pass runs every column. No column is added after
the last task. The grown model is not an architecture that ``edgecl export``
can rebuild from its spec, so ``edgecl pretrain --strategy pnn`` writes no
checkpoint (``--out`` is refused), and data-parallel runs are refused (DDP
cannot follow parameters added mid-run).

>>> s = PNN()
>>> s.scenarios, s.report()
(('task-il',), {'pnn_columns': 0, 'pnn_params_per_column': []})
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView

__all__ = ["PNN"]


class PNN(Strategy):
    """A frozen column per finished task; a new one with lateral connections per new task."""

    name = "pnn"
    scenarios = ("task-il",)
    scenario_reason = "the task id chooses the column that predicts"

    def __init__(self) -> None:
        self._sizes: list[int] = []  # parameters of each column with its laterals

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ConfigError("pnn: adds parameters after each task, which DDP cannot follow")

    @torch.no_grad()
    def after_task(self, model: nn.Module, task: TaskView) -> None:
        if not isinstance(model.extractor, _Columns):
            model.extractor = _Columns(model.extractor)
            model.classifier = _Heads(model.classifier)
        columns, heads = model.extractor, model.classifier
        k = len(columns.columns) - 1  # the column that learned this task
        heads.owner[list(task.classes)] = k
        for p in model.parameters():
            p.requires_grad_(False)
        columns.frozen = k + 1
        columns.train(columns.training)  # frozen columns to evaluation mode
        if task.mask is None or task.index + 1 < task.mask.shape[0]:  # not the last task
            device = next(model.parameters()).device
            columns.grow(device)
            heads.grow(device)
        parts = zip(columns.columns, columns.laterals, heads.heads, heads.laterals, strict=True)
        self._sizes = [sum(p.numel() for p in nn.ModuleList(mods).parameters()) for mods in parts]

    def report(self) -> dict[str, object]:
        return {"pnn_columns": len(self._sizes), "pnn_params_per_column": list(self._sizes)}


class _Columns(nn.Module):
    """Every column's extractor, with lateral connections; returns their embeddings side by side."""

    def __init__(self, first: nn.Sequential) -> None:
        super().__init__()
        self.columns = nn.ModuleList([first])
        self.laterals = nn.ModuleList([nn.ModuleList()])  # column k: one U per layer after the 1st
        self.frozen = 0  # columns 0 .. frozen-1 are frozen
        self._starts = _layer_starts(first)

    def grow(self, device: torch.device) -> None:
        """Append a freshly initialised column with laterals from all the others."""
        k = len(self.columns)
        column = _reinitialised(self.columns[0])
        lat = nn.ModuleList(_lateral(column[i], k) for i in self._starts[1:])
        self.columns.append(column.to(device))
        self.laterals.append(lat.to(device))

    def train(self, mode: bool = True) -> _Columns:
        super().train(mode)
        for k in range(self.frozen):
            self.columns[k].eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs: list[list[torch.Tensor]] = []  # per column: the input of each layer, the output
        bounds = [*self._starts, None]
        for k, column in enumerate(self.columns):
            h, mine = x, []
            for s in range(len(self._starts)):
                mods = list(column)[bounds[s] : bounds[s + 1]]
                mine.append(h)
                if s == 0 or k == 0:
                    h = mods[0](h)
                else:
                    side = torch.cat([inputs[j][s] for j in range(k)], dim=1)
                    h = mods[0](h) + self.laterals[k][s - 1](side)
                for m in mods[1:]:
                    h = m(h)
            mine.append(h)
            inputs.append(mine)
        return torch.cat([mine[-1] for mine in inputs], dim=1)


class _Heads(nn.Module):
    """Each column's head (with laterals); a class's logit is its task's column's."""

    def __init__(self, first: nn.Linear) -> None:
        super().__init__()
        self.heads = nn.ModuleList([first])
        self.laterals = nn.ModuleList([nn.Identity()])  # column 0 has none
        # Column that predicts each class: its task's; -1 (no task yet): the newest column.
        self.register_buffer("owner", torch.full((first.out_features,), -1, dtype=torch.long))

    def grow(self, device: torch.device) -> None:
        """Append a freshly initialised head with laterals from the earlier columns."""
        k = len(self.heads)
        self.heads.append(_reinitialised(self.heads[0]).to(device))
        self.laterals.append(_lateral(self.heads[0], k).to(device))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        parts = h.chunk(len(self.heads), dim=1)
        outs = [self.heads[0](parts[0])]
        for k in range(1, len(self.heads)):
            side = torch.cat(parts[:k], dim=1)
            outs.append(self.heads[k](parts[k]) + self.laterals[k](side))
        owner = torch.where(self.owner < 0, len(outs) - 1, self.owner)
        stacked = torch.stack(outs)  # (columns, N, classes)
        return stacked.gather(0, owner.view(1, 1, -1).expand(1, len(h), -1)).squeeze(0)


def _is_layer(m: nn.Module) -> bool:
    return isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))


def _layer_starts(column: nn.Sequential) -> list[int]:
    """Index 0, then the index of every weight layer after the first (where laterals enter)."""
    layers = [i for i, m in enumerate(column) if _is_layer(m)]
    if not isinstance(column, nn.Sequential) or not layers:
        raise ConfigError("pnn: the extractor must be an nn.Sequential with Linear/conv layers")
    return [0, *layers[1:]]


def _lateral(layer: nn.Module, k: int) -> nn.Module:
    """``U``: a layer like ``layer`` (no bias) taking the inputs of ``k`` earlier columns."""
    if isinstance(layer, nn.Linear):
        return nn.Linear(k * layer.in_features, layer.out_features, bias=False)
    if layer.groups != 1:
        raise ConfigError("pnn: grouped convolutions have no lateral connection here")
    return type(layer)(
        k * layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        bias=False,
        padding_mode=layer.padding_mode,
    )


def _reinitialised(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with fresh weights (and BatchNorm statistics), trainable."""
    new = copy.deepcopy(module)
    for m in new.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    for p in new.parameters():
        p.requires_grad_(True)
    return new.train()
