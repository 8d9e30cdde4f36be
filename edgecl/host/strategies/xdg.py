"""Context-dependent gating, XdG (Masse, Grant & Freedman, PNAS 2018).

Each task gets a fixed random binary gate over the hidden units of every
hidden Linear layer: a share ``xdg_gating`` of the units (0.8 by default, as in
the paper) is silenced — its activity multiplied by 0 — whenever that task is
trained or tested, and the rest pass unchanged. Different tasks thus train
and use mostly different sub-networks of one network, and a gated-off unit's
incoming weights get no gradient from the task, so they are left as the tasks
that use them set them. The gate is chosen by the task id, so XdG is defined
in task-IL only (van de Ven & Tolias 2019 run it there, with the multi-head
output that edgecl's task-IL logit masking provides).

The gate multiplies a unit's output after its BatchNorm and nonlinearity
(the hook sits on the last element-wise module following the Linear), so a
silenced unit sends exactly 0 onward. Its BatchNorm still sees the data,
though, so with ``bn_policy="train"`` the running statistics of units that
earlier tasks use would drift to the newest task (forgetting that is no part
of XdG's mechanism); ``auto`` therefore resolves to
``freeze`` here, keeping the first task's statistics. Convolution channels are not gated;
in the ``cnn`` and ``imu-cnn`` models only the embedding Linear is. The
gates are drawn from ``seed``, the task and the layer alone, so a run is
reproducible and the gates need not be stored (they are kept anyway: one byte
per unit and task).

The paper's best results combine XdG with a weight penalty (EWC or SI) on the
shared units; that combination (``ewc_lambda``) is out of scope here: this is
XdG alone. The forward hooks stay on the model after training but do nothing
outside a training step or :meth:`XdG.eval_model` (no task is current then).

>>> s = XdG(xdg_gating=0.5, seed=1)
>>> [int(g.sum()) for g in s.gates(task=0, sizes=[4, 6])]   # units kept per layer
[2, 3]
>>> torch.equal(s.gates(0, [6])[0], XdG(xdg_gating=0.5, seed=1).gates(0, [6])[0])
True
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from edgecl.errors import ConfigError
from edgecl.host.strategies.base import Strategy, TaskView

__all__ = ["XdG"]

# Modules that act on each unit separately: the gate goes after the last of them.
_ELEMENTWISE = (
    nn.BatchNorm1d,
    nn.Identity,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Dropout,
)


class XdG(Strategy):
    """A fixed random gate of hidden units per task.

    Parameters
    ----------
    xdg_gating : float
        Share of each hidden layer's units silenced for a task, in [0, 1).
    seed : int
        Seeds the gates (with the task and layer index).
    """

    name = "xdg"
    keeps_bn_statistics = True  # silenced units still feed their BatchNorm statistics
    scenarios = ("task-il",)
    scenario_reason = "the task id chooses which hidden units are active at test time"

    def __init__(self, xdg_gating: float = 0.8, seed: int = 0) -> None:
        if not 0.0 <= xdg_gating < 1.0:
            raise ConfigError(f"xdg_gating = {xdg_gating}: must be in [0, 1)")
        self.xdg_gating = float(xdg_gating)
        self.seed = int(seed)
        self.masks_: dict[int, list[torch.Tensor]] = {}  # task → one bool gate per layer
        self._task: int | None = None  # the task whose gate the hooks apply; None: no gating
        self._sizes: list[int] = []
        self._hooked: nn.Module | None = None
        self._handles: list[RemovableHandle] = []
        self._cache: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}

    def gates(self, task: int, sizes: list[int]) -> list[torch.Tensor]:
        """Task ``task``'s gates for layers of ``sizes`` units (True = unit active)."""
        out = []
        for layer, n in enumerate(sizes):
            keep = max(1, int(round((1.0 - self.xdg_gating) * n)))
            on = np.random.default_rng([self.seed, task, layer]).permutation(n)[:keep]
            g = torch.zeros(n, dtype=torch.bool)
            g[torch.from_numpy(on)] = True
            out.append(g)
        return out

    def before_task(self, model: nn.Module, task: TaskView) -> None:
        self._install(model)
        self._task = task.index

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        self._task = None

    def eval_model(self, model: nn.Module, task: int) -> nn.Module:
        self._install(model)
        return _Gated(model, self, task)

    def report(self) -> dict[str, object]:
        return {
            "xdg_mask_bytes": self.nbytes(),
            "xdg_gated_layers": len(self._sizes),
            "xdg_active_units": [int(g.sum()) for g in self.gates(0, self._sizes)],
        }

    def _gate(self, layer: int, like: torch.Tensor) -> torch.Tensor:
        t = self._task
        assert t is not None
        key = (t, layer, like.device, like.dtype)
        if key not in self._cache:
            if t not in self.masks_:
                self.masks_[t] = self.gates(t, self._sizes)
            self._cache[key] = self.masks_[t][layer].to(like.device, like.dtype)
        return self._cache[key]

    def _install(self, model: nn.Module) -> None:
        model = getattr(model, "module", model)  # DDP: hook the model itself
        if self._hooked is model:
            return
        for h in self._handles:
            h.remove()
        self._handles, self._cache = [], {}
        points = _gate_points(model)
        self._sizes = [n for n, _ in points]
        for layer, (_, module) in enumerate(points):
            self._handles.append(module.register_forward_hook(self._hook(layer)))
        self._hooked = model

    def _hook(self, layer: int):
        def gate(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if self._task is None:
                return None
            return output * self._gate(layer, output)

        return gate


class _Gated(nn.Module):
    """``model`` run with task ``task``'s gates (the strategy's hooks read the current task)."""

    def __init__(self, model: nn.Module, strategy: XdG, task: int) -> None:
        super().__init__()
        self.model = model
        self._strategy = strategy
        self._task = task
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = self._strategy._task
        self._strategy._task = self._task
        try:
            return self.model(x)
        finally:
            self._strategy._task = before


def _gate_points(model: nn.Module) -> list[tuple[int, nn.Module]]:
    """``(units, module to hook)`` for each hidden Linear (every Linear but the classifier)."""
    head = getattr(model, "classifier", None)
    points: dict[int, tuple[int, nn.Module]] = {}
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq)
        for i, m in enumerate(children):
            if isinstance(m, nn.Linear) and m is not head:
                k = i
                while k + 1 < len(children) and isinstance(children[k + 1], _ELEMENTWISE):
                    k += 1
                points[id(m)] = (m.out_features, children[k])
    for m in model.modules():  # a Linear outside any Sequential: gate its own output
        if isinstance(m, nn.Linear) and m is not head and id(m) not in points:
            points[id(m)] = (m.out_features, m)
    return list(points.values())
