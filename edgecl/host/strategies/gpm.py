"""Gradient projection memory (Saha, Garg & Roy 2021, "Gradient Projection Memory for
Continual Learning", ICLR).

After each task, the inputs of every ``nn.Linear`` layer on up to
``gpm_samples`` training samples form a representation matrix ``R``; its top
left-singular vectors span the input space the task used. They are added to
that layer's basis ``M`` (orthonormal columns) as in the paper's eq. 8–9: the
part of ``R`` the basis already explains counts towards the energy, and only as
many new directions of the residual ``R − M Mᵀ R`` are added as it takes to
reach ``gpm_threshold`` of ``‖R‖²_F`` (:func:`grow_basis`). While later tasks
train, each layer's gradient is projected out of that space,
``G ← G − G M Mᵀ``, so the layer's outputs on the old tasks' inputs stay
(almost) unchanged.

edgecl's choices, beyond the paper:

* the bias joins the weight as one more input column fed a constant 1, so
  ``[W b]`` is projected as a whole (the paper's networks have no biases);
* the singular vectors come from the eigenvectors of ``R Rᵀ / n`` (the same
  vectors, the eigenvalues are the squared singular values), which processes
  under ``torchrun`` can average before deciding, so all keep the same basis;
* the paper trains with plain SGD. Adam's per-coordinate scaling would turn a
  projected gradient back into the old space, so the *update* is projected
  too, in :meth:`GPM.after_step` (as Adam-NSCL, Wang et al. 2021, does); with
  SGD that second projection changes nothing;
* BatchNorm's affine parameters are frozen after the first task (gradient
  dropped), as in the paper's code, since they would shift every later layer's
  inputs; ``bn_policy="auto"`` likewise keeps the task-1 running statistics;
* convolutions are not protected (the paper's conv rule is not implemented):
  on ``cnn`` and ``imu-cnn`` only the last extractor Linear and the classifier
  are. On ``mlp`` every weight layer is.

It runs in every scenario. In class-IL the shared output layer still
interferes: old inputs' logits are kept only up to the threshold, and nothing
calibrates the new classes' logits against the old ones on old inputs, so
expect little gain over fine-tuning there.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecl.errors import ConfigError
from edgecl.host import ddp
from edgecl.host.strategies.base import Strategy, TaskView

__all__ = ["GPM", "grow_basis"]


def grow_basis(gram: torch.Tensor, basis: torch.Tensor | None, threshold: float) -> torch.Tensor:
    """Basis ``M`` grown by the fewest residual directions reaching ``threshold`` of the energy.

    Parameters
    ----------
    gram : Tensor
        ``R Rᵀ / n`` for representation columns ``R`` (d, n): shape (d, d).
    basis : Tensor or None
        Orthonormal columns (d, k) kept so far.
    threshold : float
        Fraction of ``trace(gram)`` the grown basis must explain.

    Returns
    -------
    Tensor
        Orthonormal columns (d, k') with k' ≥ k, the old ones first (float64).

    >>> g = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))
    >>> grow_basis(g, None, 0.75).abs().T.tolist()
    [[1.0, 0.0, 0.0]]
    >>> grow_basis(g, None, 0.9).shape   # 0.8 of the energy is not enough
    torch.Size([3, 2])
    """
    gram = gram.double()
    d = gram.shape[0]
    basis = gram.new_zeros(d, 0) if basis is None else basis.double()
    proj = torch.eye(d, dtype=gram.dtype, device=gram.device) - basis @ basis.T
    resid = proj @ gram @ proj
    total = torch.trace(gram)
    need = float(threshold * total - (total - torch.trace(resid)))
    if need <= 0 or basis.shape[1] == d:
        return basis
    vals, vecs = torch.linalg.eigh((resid + resid.T) / 2)  # ascending
    vals, vecs = vals.flip(0).clamp_min(0), vecs.flip(1)
    k = int((torch.cumsum(vals, 0) < need).sum()) + 1
    k = min(k, d - basis.shape[1])
    # Re-orthonormalise: the residual's eigenvectors are orthogonal to M only up to rounding.
    q, _ = torch.linalg.qr(torch.cat([basis, proj @ vecs[:, :k]], dim=1))
    return q


class GPM(Strategy):
    """Gradient projection memory on every Linear layer.

    Parameters
    ----------
    gpm_threshold : float
        Fraction of each layer's input energy the basis must explain (0.97 is
        the paper's CIFAR-100 starting value, which it also raises per task;
        its other benchmarks used 0.95–0.99). Kept fixed here.
    gpm_samples : int
        Training samples whose layer inputs form the representation matrix.

    >>> s = GPM()
    >>> s.report(), s.nbytes()
    ({'basis_dims': {}}, 0)
    """

    name = "gpm"
    keeps_bn_statistics = True  # protects weights only: keep the task-1 statistics

    def __init__(self, gpm_threshold: float = 0.97, gpm_samples: int = 300) -> None:
        if not 0 < gpm_threshold <= 1:
            raise ConfigError(f"gpm_threshold = {gpm_threshold}: must be in (0, 1]")
        if isinstance(gpm_samples, bool) or int(gpm_samples) != gpm_samples or gpm_samples < 1:
            raise ConfigError(f"gpm_samples = {gpm_samples!r}: must be an integer >= 1")
        self.gpm_threshold = float(gpm_threshold)
        self.gpm_samples = int(gpm_samples)
        self.basis_: dict[str, torch.Tensor] = {}  # layer name → (in [+1 for bias], k)
        self._start: dict[str, torch.Tensor] = {}

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        layers = _linears(model)
        grams = {n: None for n in layers}
        counts = dict.fromkeys(layers, 0)

        def hook(name: str, m: nn.Linear):
            def collect(_module, inputs):
                r = inputs[0].detach().reshape(-1, m.in_features).double()
                if m.bias is not None:
                    r = torch.cat([r, r.new_ones(len(r), 1)], dim=1)
                g = r.T @ r
                grams[name] = g if grams[name] is None else grams[name] + g
                counts[name] += len(r)

            return collect

        handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in layers.items()]
        was_training = model.training
        model.eval()  # the learned function: running statistics, as EWC's Fisher
        seen = 0
        try:
            with torch.no_grad():
                for x, _, _ in task.batches():
                    model(x[: self.gpm_samples - seen])
                    seen += min(len(x), self.gpm_samples - seen)
                    if seen == self.gpm_samples:
                        break
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        if seen == 0:
            raise ValueError("the task has no training batches")
        mean = ddp.all_average({n: grams[n] / counts[n] for n in layers})
        for n, m in layers.items():
            old = self.basis_.get(n)
            grown = grow_basis(mean[n], old, self.gpm_threshold)
            self.basis_[n] = grown.to(m.weight.device, torch.float32)

    def before_step(self, model: nn.Module) -> None:
        if not self.basis_:
            return
        self._start = {}
        for n, m in _linears(model).items():
            basis = self.basis_[n]
            if m.weight.grad is not None:
                bias_grad = None
                if m.bias is not None:
                    bias_grad = torch.zeros_like(m.bias) if m.bias.grad is None else m.bias.grad
                w, b = _split(m, _out_of(basis, _joined(m.weight.grad, bias_grad)))
                m.weight.grad = w
                if m.bias is not None:
                    m.bias.grad = b
            self._start[n] = _joined(m.weight, m.bias).detach().clone()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                for p in m.parameters():
                    p.grad = None  # frozen after the first task: the optimiser skips it

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for n, m in _linears(model).items():
            if n in self._start:
                start = self._start[n]
                step = _joined(m.weight, m.bias) - start
                w, b = _split(m, start + _out_of(self.basis_[n], step))
                m.weight.copy_(w)
                if b is not None:
                    m.bias.copy_(b)

    def report(self) -> dict[str, object]:
        return {"basis_dims": {n: int(b.shape[1]) for n, b in self.basis_.items()}}


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.weight.requires_grad
    }


def _joined(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[W b]`` (or their gradients), one row per output unit; ``W`` alone without a bias."""
    if bias is None:
        return weight
    return torch.cat([weight, bias[:, None]], dim=1)


def _split(m: nn.Linear, joined: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = joined[:, : m.in_features].contiguous()
    return w, (joined[:, m.in_features].contiguous() if m.bias is not None else None)


def _out_of(basis: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``rows`` with their component in span(basis) removed: ``G − G M Mᵀ``."""
    return rows - (rows @ basis) @ basis.T
