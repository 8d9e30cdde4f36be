"""EWC with a Kronecker-factored Fisher: the online structured Laplace approximation.

Ritter, Botev & Barber 2018, "Online Structured Laplace Approximations for
Overcoming Catastrophic Forgetting" (NeurIPS), with the Kronecker factors of
K-FAC (Martens & Grosse 2015). For a Linear layer ``s = W a + b`` write
``W̄ = [W | b]`` and ``ā = [a; 1]``; its block of the Fisher is approximated by
``A ⊗ G`` with ``A = E[ā āᵀ]`` (layer inputs) and ``G = E[g gᵀ]`` (gradients
of the loss with respect to the layer's pre-activation output ``s``). The
penalty is then, per layer, ``λ/2 · vec(ΔW̄)ᵀ (A ⊗ G) vec(ΔW̄) = λ/2 · tr(ΔW̄ᵀ G ΔW̄ A)``
with ``ΔW̄ = W̄ − W̄*`` (column-major ``vec``), so unlike the diagonal Fisher it
sees how the weights of one unit and of one input move together.

**Online.** After task ``t`` the earlier terms are multiplied by
``fisher_decay`` (γ, default 1: a plain sum) and the task's ``A_t ⊗ G_t`` is
added; the anchor ``W̄*`` is the weights after the latest task, as in the
online Laplace recursion. A sum of Kronecker products is not one, so the
per-task factors are kept and the penalty sums their quadratic forms (memory
grows by ``(d_in+1)² + d_out²`` floats per layer per task, counted in
``buffer_bytes``).

**Scale** (DESIGN §9). Like :func:`~edgecl.host.strategies.ewc.diagonal_fisher`,
the factors come from the gradient of each *batch-mean* loss over
``fisher_batches`` batches: ``A`` is the mean of ``ā āᵀ`` over all samples and
``G`` is the mean over batches of ``Σ_{i∈b} g_i g_iᵀ`` with
``g_i = ∂(mean_b ℓ)/∂s_i`` (= the per-sample gradient / batch size). So ``A ⊗ G``
is the per-sample K-FAC Fisher divided by the batch size, the scale at which
λ = 1e5 fits the reference table. Exact identity (tested): with one sample per
batch and the same input in every batch, ``A ⊗ G`` *is* the Fisher
``E_b[vec ∇W̄ vec ∇W̄ᵀ]`` of the batch loss, whose diagonal is ``diagonal_fisher``'s.

**Other layers.** Parameters outside Linear layers (BatchNorm affine
weights, convolutions) keep a diagonal Fisher (``diagonal_fisher``, decayed
the same way, from a second pass over ``fisher_batches`` batches), so every
trainable weight is protected. A Linear layer is assumed to run once per
forward pass (true of every edgecl model); a shared one would keep its last call.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecl.host.strategies.base import Strategy, TaskView, trainable
from edgecl.host.strategies.ewc import (
    _all_average,
    check_fisher_options,
    diagonal_fisher,
    fisher_labels,
)

__all__ = ["KFACEWC", "kronecker_factors", "linear_layers"]


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers whose weight trains, by module name."""
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.weight.requires_grad
    }


def kronecker_factors(
    model: nn.Module,
    task: TaskView,
    n_batches: int,
    mode: str = "empirical",
    generator: torch.Generator | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(A, G)`` of every trainable Linear layer over ``n_batches`` batches (scale: module doc).

    ``A`` is ``(d_in + 1, d_in + 1)`` (the last row/column is the bias input,
    absent for a layer without bias), ``G`` is ``(d_out, d_out)``; float32.
    ``mode`` is as in :func:`~edgecl.host.strategies.ewc.diagonal_fisher`.
    """
    check_fisher_options(fisher=mode, fisher_batches=n_batches)
    layers = linear_layers(model)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        m.register_forward_hook(lambda _m, args, out, n=n: seen.__setitem__(n, (args[0], out)))
        for n, m in layers.items()
    ]
    A = {n: 0.0 for n in layers}
    G = {n: 0.0 for n in layers}
    was_training = model.training
    model.eval()  # the learned function, not one batch's BatchNorm statistics (as ewc.py)
    try:
        for x, y, tid in task.cycle(n_batches):
            seen.clear()
            logits = task.logits(model, x, tid).float()
            loss = nn.functional.cross_entropy(logits, fisher_labels(logits, y, mode, generator))
            names = list(seen)
            grads = torch.autograd.grad(loss, [seen[n][1] for n in names], allow_unused=True)
            for n, g in zip(names, grads, strict=True):
                m = layers[n]
                a = seen[n][0].detach().float().reshape(-1, m.in_features)
                if m.bias is not None:
                    a = torch.cat([a, a.new_ones(len(a), 1)], dim=1)
                g = a.new_zeros(len(a), m.out_features) if g is None else g.detach().float()
                g = g.reshape(-1, m.out_features)
                A[n] = A[n] + a.T @ a / len(a)
                G[n] = G[n] + g.T @ g  # g already carries the batch mean's 1/B
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: (A[n] / n_batches, G[n] / n_batches) for n in layers if torch.is_tensor(A[n])}


def _augmented(layer: nn.Linear, weights: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """``[W | b]`` of ``layer`` called ``name``, from ``weights`` (parameter name → tensor)."""
    w = weights[_join(name, "weight")]
    if layer.bias is None:
        return w
    return torch.cat([w, weights[_join(name, "bias")].unsqueeze(1)], dim=1)


def _join(module: str, param: str) -> str:
    """A parameter's name in ``named_parameters()`` (the root module's name is empty)."""
    return f"{module}.{param}" if module else param


class KFACEWC(Strategy):
    """EWC with one Kronecker-factored Fisher block per Linear layer (online, one anchor).

    Parameters
    ----------
    ewc_lambda : float
        λ in ``λ/2 · Σ_layers tr(ΔW̄ᵀ G ΔW̄ A)`` (same scale as EWC's λ).
    fisher : {"empirical", "true"}
        Observed labels, or labels sampled from the model (as EWC).
    fisher_batches : int
        Batches averaged per task.
    fisher_decay : float
        γ in ``F ← γ·F + F_t`` (1: every task alike).
    seed : int
        Seeds the label sampling of the true Fisher.

    >>> KFACEWC(ewc_lambda=1e5).penalty(nn.Linear(2, 2), None, None) is None  # no task yet
    True
    """

    name = "kfac-ewc"
    keeps_bn_statistics = True  # a weight penalty, as EWC (DESIGN §9)

    def __init__(
        self,
        ewc_lambda: float = 1e5,
        fisher: str = "empirical",
        fisher_batches: int = 300,
        fisher_decay: float = 1.0,
        seed: int = 0,
    ) -> None:
        check_fisher_options(
            ewc_lambda=ewc_lambda,
            fisher=fisher,
            fisher_batches=fisher_batches,
            fisher_decay=fisher_decay,
        )
        self.ewc_lambda = float(ewc_lambda)
        self.fisher = fisher
        self.fisher_batches = int(fisher_batches)
        self.fisher_decay = float(fisher_decay)
        self._gen = torch.Generator().manual_seed(seed)
        #: layer name → one ``(A_t, G_t)`` per finished task (decay folded into G)
        self.factors_: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        #: diagonal Fisher of the parameters outside Linear layers
        self.diagonal_: dict[str, torch.Tensor] = {}
        self.anchor_: dict[str, torch.Tensor] = {}

    def after_task(self, model: nn.Module, task: TaskView) -> None:
        gen, n, mode = self._gen, self.fisher_batches, self.fisher
        new = kronecker_factors(model, task, n, mode, gen)
        flat = _all_average({f"{k}/{i}": f for k, pair in new.items() for i, f in enumerate(pair)})
        for k in new:
            old = [(a, self.fisher_decay * g) for a, g in self.factors_.get(k, [])]
            self.factors_[k] = [*old, (flat[f"{k}/0"], flat[f"{k}/1"])]
        layers = linear_layers(model).items()
        covered = {_join(k, p) for k, m in layers for p, _ in m.named_parameters(recurse=False)}
        rest = [p for p in trainable(model) if p not in covered]
        if rest:
            diag = _all_average(diagonal_fisher(model, task, n, mode, gen))
            self.diagonal_ = {
                p: self.fisher_decay * self.diagonal_[p] + diag[p]
                if p in self.diagonal_
                else diag[p]
                for p in rest
            }
        self.anchor_ = {p: v.detach().clone() for p, v in trainable(model).items()}

    def penalty(self, model, x, logits) -> torch.Tensor | None:
        if not self.anchor_:
            return None
        params = trainable(model)
        total = torch.zeros((), device=next(iter(params.values())).device)
        for k, m in linear_layers(model).items():
            dw = _augmented(m, params, k) - _augmented(m, self.anchor_, k)
            for a, g in self.factors_.get(k, []):
                total = total + ((g @ dw @ a) * dw).sum()  # tr(ΔWᵀ G ΔW A), A and G symmetric
        for p, f in self.diagonal_.items():
            total = total + (f * (params[p] - self.anchor_[p]) ** 2).sum()
        return 0.5 * self.ewc_lambda * total
