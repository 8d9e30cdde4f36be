"""Streaming LDA at large dimension: the precision kept current by Woodbury updates.

The lazy :class:`~edgecl.learner.heads.SLDAHead` re-inverts the d×d shrunk
covariance every ``slda_refresh_every`` samples — O(d³), fine at d = 64 and
hopeless at the thousands of dimensions a random-feature stage produces
(RanDumb, Prabhu et al. NeurIPS 2024; RanPAC, McDonnell et al. NeurIPS 2023).
This head (``slda_update="woodbury"``) keeps ``Q = (S + rI)⁻¹`` current instead,
where ``S`` is the scatter and ``r = ε/(1−ε)·N_ref`` the shrinkage ridge: the
``slda_batch`` rank-one rows ``U`` queued by learning are folded in at once by
the Woodbury identity (Woodbury 1950; Sherman & Morrison 1950)::

    Q ← Q − Q Uᵀ (I + U Q Uᵀ)⁻¹ U Q          O(d²·k) per k samples

and the class coefficients ``Q μ_c`` are recomputed for every class in the
same step (O(C·d²) per block). Since the shrunk covariance is
``(1−ε)S/N + εI = ((1−ε)/N)(S + rI)`` with ``r = εN/(1−ε)``, scores are
``N/(1−ε) · (μ_cᵀQx − ½ μ_cᵀQμ_c)``; the ridge's ``N`` is frozen at the last
exact inversion (``N_ref``), which happens when the total weight has grown 4×
since the previous one and every ``slda_exact_every`` samples — bounding both
round-off and the ridge's drift (a few exact inversions over a whole stream).

Between blocks, a class that learned keeps the coefficients of its mean at the
last block (at most ``slda_batch − 1`` samples old); a class seen for the first
time gets its coefficients at once. ``Q``, the coefficients and the intercepts
are part of the saved state (in ``slda_dtype``), so a loaded learner predicts
and keeps learning bit for bit like the one that was saved; the budget counts
them.

>>> import numpy as np
>>> from edgecl import LearnerConfig, StreamingLearner
>>> cfg = LearnerConfig(dim=5, max_classes=3, head="slda", slda_update="woodbury",
...                     slda_batch=4, budget_bytes=100_000)
>>> lr = StreamingLearner(cfg)
>>> lr.learn_many(np.eye(5)[[0, 1, 2, 0, 1, 2]] * 3, np.array([0, 1, 2, 0, 1, 2]))
>>> int(lr.predict_one(np.array([0.0, 2.9, 0.1, 0.0, 0.0])))
1
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import StateFileError
from edgecl.learner.config import LearnerConfig
from edgecl.learner.heads import _F8, SLDAHead, _Head

__all__ = ["WOODBURY_MIN_DIM", "WoodburySLDAHead", "large_dim_options"]

# An exact inversion when the total weight has grown this much since the last one.
_GROWTH = 4.0
#: From this embedding length on, an SLDA head made by export, eval or run defaults to the
#: Woodbury update in float32 (the lazy head's O(d³) refresh costs ~40 ms at d = 784).
WOODBURY_MIN_DIM = 512


def large_dim_options(head: str, dim: int) -> dict[str, Any]:
    """LearnerConfig fields for an SLDA head of ``dim`` made without explicit settings.

    >>> large_dim_options("slda", 2048)
    {'slda_update': 'woodbury', 'slda_dtype': 'float32', 'slda_batch': 64}
    >>> large_dim_options("slda", 64), large_dim_options("ncm", 4096)
    ({}, {})
    """
    if head != "slda" or dim < WOODBURY_MIN_DIM:
        return {}
    return {"slda_update": "woodbury", "slda_dtype": "float32", "slda_batch": 64}


class WoodburySLDAHead(SLDAHead):
    """SLDA whose precision is updated by rank-k Woodbury steps; see the module docstring."""

    def __init__(self, cfg: LearnerConfig) -> None:
        _Head.__init__(self, cfg)
        d, c = cfg.dim, cfg.max_classes
        dt = np.dtype(cfg.slda_dtype)
        self.shrinkage = cfg.slda_shrinkage
        self.exact_every = cfg.slda_exact_every
        self.means_ = np.zeros((c, d), dtype=np.float64)
        self.weights_ = np.zeros(c, dtype=np.float64)
        self.scatter_ = np.zeros((d, d), dtype=np.float64)
        self.pending_ = np.zeros((cfg.slda_batch, d), dtype=np.float64)
        self.precision_ = np.zeros((d, d), dtype=dt)  # Q = (S + rI)⁻¹
        self.coef_ = np.zeros((c, d), dtype=dt)  # Q μ_c at the last block
        self.intercept_ = np.zeros(c, dtype=np.float64)  # −½ μ_cᵀ Q μ_c
        self._n_pending = 0
        self._n_updates = 0
        self._ref_weight = 0.0  # N_ref: total weight at the last exact inversion (0 = none)
        self._exact_at = 0  # samples at the last exact inversion
        self.exact_inversions = 0  # this process only (not state)

    @staticmethod
    def nbytes_for(cfg: LearnerConfig) -> int:
        d, c, k = cfg.dim, cfg.max_classes, cfg.slda_batch
        size = np.dtype(cfg.slda_dtype).itemsize
        state64 = _F8 * (d * d + k * d + c * d + 3 * c)  # scatter, pending, means, weights...
        return state64 + size * (d * d + c * d) + _Head._mask_nbytes(cfg)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            **super().arrays(),
            "precision_": self.precision_,
            "coef_": self.coef_,
            "intercept_": self.intercept_,
        }

    def cache_arrays(self) -> dict[str, np.ndarray]:
        return _Head.cache_arrays(self)

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "ref_weight": self._ref_weight, "exact_at": self._exact_at}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        _Head.restore(self, arrays, counters)
        self._restore_counters(arrays, counters)
        try:
            self._ref_weight = float(counters["ref_weight"])
            self._exact_at = int(counters["exact_at"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"slda counters are invalid: {exc}") from None
        if not (np.isfinite(self._ref_weight) and 0 <= self._exact_at <= self._n_updates):
            raise StateFileError("slda woodbury counters out of range")
        if not (np.isfinite(self.precision_).all() and np.isfinite(self.coef_).all()):
            raise StateFileError("slda precision or coefficients are not finite")

    # -- learning ----------------------------------------------------------------
    def learn(self, x: np.ndarray, y: int, w: float) -> None:
        W = float(self.weights_[y])
        delta = x - self.means_[y]
        if W > 0:  # the first sample of a class adds nothing to the scatter
            self.pending_[self._n_pending] = delta * np.sqrt(W * w / (W + w))
            self._n_pending += 1
        self.means_[y] += delta * (w / (W + w))
        self.weights_[y] = W + w
        self._count(y)
        self._n_updates += 1
        if self._ref_weight == 0.0:
            self._exact()  # the very first sample: Q = I / r
        elif self._n_pending == self.pending_.shape[0]:
            self._flush()
        elif W == 0.0:
            self._coef(np.array([y]))  # a class seen for the first time scores at once

    def _flush(self) -> None:
        U = self.pending_
        self.scatter_ += U.T @ U
        self._n_pending = 0
        total = float(self.weights_.sum())
        grown = total >= _GROWTH * self._ref_weight
        due = self.exact_every and self._n_updates - self._exact_at >= self.exact_every
        if grown or due:
            self._exact()
            return
        Q = self.precision_
        Ud = U.astype(Q.dtype, copy=False)
        QU = Q @ Ud.T  # d×k
        inner = Ud @ QU
        inner[np.diag_indices_from(inner)] += 1.0
        Q -= QU @ np.linalg.solve(inner, QU.T)
        self._coef(np.flatnonzero(self.seen_mask))

    def _exact(self) -> None:
        """Re-invert ``S + rI`` with the ridge of the current total weight."""
        total = float(self.weights_.sum())
        ridge = self.shrinkage / (1.0 - self.shrinkage) * total
        A = self.scatter_.copy()
        A[np.diag_indices_from(A)] += ridge
        self.precision_[...] = np.linalg.inv(A)
        self._ref_weight = total
        self._exact_at = self._n_updates
        self.exact_inversions += 1
        self._coef(np.flatnonzero(self.seen_mask))

    def _coef(self, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        Q = self.precision_
        M = self.means_[rows]
        C = M.astype(Q.dtype, copy=False) @ Q  # Q symmetric: (Q μ)ᵀ = μᵀ Q
        self.coef_[rows] = C
        self.intercept_[rows] = -0.5 * np.einsum("cd,cd->c", M, C.astype(np.float64))

    def refresh(self, force: bool = False) -> None:
        """Nothing to do: the precision is always current (see :meth:`drift`)."""

    def drift(self) -> float:
        """Largest |Q − (S + r_ref·I)⁻¹| relative to max |Q|: the round-off the Woodbury
        steps have accumulated since the last exact inversion (O(d³); for tests and tools)."""
        if self._ref_weight == 0.0:
            return 0.0
        A = self.scatter_.copy()
        A[np.diag_indices_from(A)] += self.shrinkage / (1.0 - self.shrinkage) * self._ref_weight
        exact = np.linalg.inv(A)
        return float(np.abs(self.precision_ - exact).max() / np.abs(exact).max())

    # -- scoring -----------------------------------------------------------------
    def scores(self, X: np.ndarray) -> np.ndarray:
        total = float(self.weights_.sum())
        s = X @ self.coef_.T.astype(np.float64, copy=False)
        s += self.intercept_
        s *= total / (1.0 - self.shrinkage) if total > 0 else 1.0
        s += self._mask
        return s
