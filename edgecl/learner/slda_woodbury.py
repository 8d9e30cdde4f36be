"""Streaming LDA at large dimension: the precision kept current by Woodbury updates, spread out.

The lazy :class:`~edgecl.learner.heads.SLDAHead` re-inverts the d×d shrunk
covariance every ``slda_refresh_every`` samples — O(d³), fine at d = 64 and
hopeless at the thousands of dimensions a random-feature stage produces
(RanDumb, Prabhu et al. NeurIPS 2024; RanPAC, McDonnell et al. NeurIPS 2023).
This head (``slda_update="woodbury"``) keeps ``Q = (S + rI)⁻¹`` current instead,
where ``S`` is the scatter and ``r = ε/(1−ε)·N_ref`` the shrinkage ridge: the
``k = slda_batch`` rank-one rows ``F`` queued by learning are folded in at once
by the Woodbury identity (Woodbury 1950; Sherman & Morrison 1950)::

    Q ← Q − Q Fᵀ (I + F Q Fᵀ)⁻¹ F Q          O(d²·k) per k samples

and the class coefficients ``Q μ_c`` are recomputed for every class. Since the
shrunk covariance is ``(1−ε)S/N + εI = ((1−ε)/N)(S + rI)`` with
``r = εN/(1−ε)``, scores are ``N/(1−ε) · (μ_cᵀQx − ½ μ_cᵀQμ_c)``.

**The fold is spread over the next k learn calls**, one row panel per call, so
that no call pays for a whole block (d = 2,048, k = 64: 25-50 ms on one core):
(A) the columns ``I`` of ``[F; μ] Q`` (``Q`` is symmetric: ``[F; μ] Q_Iᵀ``) and
their share of ``F Q Fᵀ``; (B) ``M = (I + F Q Fᵀ)⁻¹`` (k×k) and the next
coefficients ``μ Q_new = μQ − (μQFᵀ) M (FQ)`` for the class means at the block's
fill; (C) the rows ``I`` of ``Q`` (``−= (QFᵀ)_I M FQ``) and the upper rows of
``S`` (``+= F_Iᵀ F``); (D) publish coefficients and intercepts. Per sample that
is ~(5 + 2C/k)·d² flops, all in GEMMs; panels are cut so every step costs about
the same, and the fold ends before the next block fills. ``S`` is stored as its
upper triangle (rows ``i ≤ j``; nothing reads it on the hot path, and numpy
writes a transposed mirror element by element, which doubled a step's time);
``Q`` is kept whole. Predictions use the published coefficients: exactly LDA's
for the scatter of every sample but the last < 2k rank-one rows and class means
at most 2k samples old, with the ridge ``r_ref`` (tested at every call). A class
seen for the first time scores at once, against the published precision
(mid-phase C, the row panels already updated are taken back out). :meth:`settle`
finishes everything now.

**Exact inversion** (O(d³): LAPACK's LU inverse, ~1 s at d = 2,048 on one core;
not spread) happens at a block boundary when the total weight has grown 4×
since the last one, so that the ridge follows N — but at most once per d
samples, which keeps its amortised cost O(d²) per sample like the fold's, unless
the ridge has fallen 16× behind (possible once, early) — and every
``slda_exact_every`` samples (round-off): five times in split-MNIST's 60,000
samples at d = 2,048. While nothing has been folded yet (``S = 0``) it is free.
(A 2×2 block recursion on explicit Schur complements was 2.5× faster and lost all
accuracy on rank-deficient scatters — random ReLU features of a 64-d embedding:
residual 180 — so it is not used.)

**Precision.** Statistics (means, weights, scatter) are float64. The panel
products — the block's scatter contribution, ``QFᵀ``, the update — run in
``slda_dtype``; in float32 each block's scatter contribution carries a relative
round-off of ~2⁻²⁴·√k before its float64 accumulation (float64 mode: ~1e-16).
After 10⁴ updates the precision is within 1e-9 (float64) / 1e-3 (float32) of a
fresh inverse; on a rank-deficient scatter (κ ~ 1e7) float32 cannot hold it
(κ·2⁻²⁴), but its predictions still agree with float64's (both tested).

**State.** ``precision_`` and the block in flight (``fold_*``, in ``slda_dtype``)
and the published ``coef_`` and ``intercept_`` (float64: scoring casts nothing)
are saved, so a loaded learner predicts and keeps learning bit for bit like the
one that was saved; the budget counts them. The statistics are
``sym(scatter_)`` plus the rows in flight that phase C has not added yet plus
``pending_[:n_pending]``: :meth:`statistics` returns their sum,
:meth:`set_statistics` replaces them, and :meth:`refresh` with ``force=True``
rebuilds every derived array from them exactly — also after ``scatter_``,
``means_`` … were changed from outside (then ``scatter_`` must be symmetric).

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
from edgecl.learner.merge import HeadStats
from edgecl.learner.woodbury_plan import WOODBURY_MIN_DIM, fold_plan, large_dim_options

__all__ = ["WOODBURY_MIN_DIM", "WoodburySLDAHead", "fold_plan", "large_dim_options"]

# An exact inversion when the total weight has grown this much since the last one.
_GROWTH = 4.0


class WoodburySLDAHead(SLDAHead):
    """SLDA whose precision is updated by rank-k Woodbury steps spread over learn calls;
    see the module docstring."""

    def __init__(self, cfg: LearnerConfig) -> None:
        _Head.__init__(self, cfg)
        d, c, k = cfg.dim, cfg.max_classes, cfg.slda_batch
        dt = np.dtype(cfg.slda_dtype)
        self.shrinkage = cfg.slda_shrinkage
        self.exact_every = cfg.slda_exact_every
        self.batch = k
        # Statistics (float64); scatter_ kept as its upper triangle.
        self.means_ = np.zeros((c, d), dtype=np.float64)
        self.weights_ = np.zeros(c, dtype=np.float64)
        self.scatter_ = np.zeros((d, d), dtype=np.float64)
        self.pending_ = np.zeros((k, d), dtype=np.float64)
        # Published: Q = (S + r_ref·I)⁻¹ (whole) and what scores use.
        self.precision_ = np.zeros((d, d), dtype=dt)
        self.coef_ = np.zeros((c, d), dtype=np.float64)  # float64: scoring casts nothing
        self.intercept_ = np.zeros(c, dtype=np.float64)
        # The block in flight.
        self.fold_x_ = np.zeros((k + c, d), dtype=dt)  # [F; μ]: its rows, the means at fill
        self.fold_qu_ = np.zeros((k + c, d), dtype=dt)  # [F; μ] Q; after B: [FQ; μ Q_new]
        self.fold_inner_ = np.zeros((k, k), dtype=dt)  # F Q Fᵀ; after B: (I + F Q Fᵀ)⁻¹
        self.fold_weights_ = np.zeros(c, dtype=np.float64)  # class weights at fill
        self._n_pending = 0
        self._n_updates = 0
        self._ref_weight = 0.0  # N_ref: total weight at the last exact inversion (0 = none)
        self._exact_at = 0  # samples at the last exact inversion
        self._fold_n = 0  # rows in the block in flight (0 = none)
        self._fold_step = 0  # its next step
        self.exact_inversions = 0  # this process only (not state)

    @staticmethod
    def nbytes_for(cfg: LearnerConfig) -> int:
        d, c, k = cfg.dim, cfg.max_classes, cfg.slda_batch
        size = np.dtype(cfg.slda_dtype).itemsize
        # scatter, pending, means, coef; counts, weights, intercept, fold_weights
        state64 = _F8 * (d * d + k * d + 2 * c * d + 4 * c)
        # precision, fold_x, fold_qu, fold_inner
        derived = size * (d * d + 2 * d * (k + c) + k * k)
        return state64 + derived + _Head._mask_nbytes(cfg)

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            **super().arrays(),
            "precision_": self.precision_,
            "coef_": self.coef_,
            "intercept_": self.intercept_,
            "fold_x_": self.fold_x_,
            "fold_qu_": self.fold_qu_,
            "fold_inner_": self.fold_inner_,
            "fold_weights_": self.fold_weights_,
        }

    def cache_arrays(self) -> dict[str, np.ndarray]:
        return _Head.cache_arrays(self)

    def counters(self) -> dict[str, Any]:
        return {
            **super().counters(),
            "ref_weight": self._ref_weight,
            "exact_at": self._exact_at,
            "fold_n": self._fold_n,
            "fold_step": self._fold_step,
        }

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        _Head.restore(self, arrays, counters)
        self._restore_counters(arrays, counters)
        try:
            self._ref_weight = float(counters["ref_weight"])
            self._exact_at = int(counters["exact_at"])
            self._fold_n = int(counters["fold_n"])
            self._fold_step = int(counters["fold_step"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"slda counters are invalid: {exc}") from None
        if not (np.isfinite(self._ref_weight) and 0 <= self._exact_at <= self._n_updates):
            raise StateFileError("slda woodbury counters out of range")
        steps = len(self._plan[0]) + len(self._plan[1])
        if not (
            (0 < self._fold_n <= self.batch and 0 <= self._fold_step < steps)
            or self._fold_n == self._fold_step == 0
        ):
            raise StateFileError(f"slda fold counters {self._fold_n}/{self._fold_step} invalid")
        for name in ("precision_", "coef_", "fold_x_", "fold_qu_", "fold_inner_"):
            if not np.isfinite(getattr(self, name)).all():
                raise StateFileError(f"slda {name} is not finite")

    @property
    def _plan(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return fold_plan(self.dim, self.batch, self.max_classes)

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
        elif self._n_pending == self.batch:
            self._block_full()
        elif W == 0.0:
            self._coef_now(np.array([y]))  # a class seen for the first time scores at once
        if self._fold_n:
            self._step()

    def _block_full(self) -> None:
        self._finish_fold()  # normally done already: a fold fits in k calls
        total = float(self.weights_.sum())
        since = self._n_updates - self._exact_at
        grown = total >= _GROWTH * self._ref_weight
        # One O(d³) inversion per d samples at most (amortised O(d²), like the fold) — unless
        # it is free (S = 0) or the ridge has fallen 16× behind (once, early in a stream).
        if grown and since < self.dim and total < _GROWTH**2 * self._ref_weight:
            grown = self._scatter_is_zero()
        due = self.exact_every and since >= self.exact_every
        if grown or due:
            self._exact()
        self._begin_fold()

    def _begin_fold(self) -> None:
        n, k = self._n_pending, self.batch
        X = self.fold_x_
        X[:n] = self.pending_[:n]
        X[n:k] = 0.0  # a short block (settle): zero rows change nothing
        seen = self.weights_ > 0
        X[k : k + int(seen.sum())] = self.means_[seen]  # the seen classes only, in order
        self.fold_weights_[...] = self.weights_
        self.fold_inner_[...] = 0.0
        self._n_pending = 0
        self._fold_n = n
        self._fold_step = 0

    def _finish_fold(self) -> None:
        while self._fold_n:
            self._step()

    def settle(self) -> None:
        """Finish the fold in flight and fold the queued rows now (O(d²k)): afterwards the
        published coefficients reflect every sample learned (with the ridge ``r_ref``)."""
        self._finish_fold()
        if self._n_pending and self._ref_weight > 0:
            self._begin_fold()
            self._finish_fold()

    def _step(self) -> None:
        """One step of the fold in flight (see the module docstring)."""
        s, k = self._fold_step, self.batch
        a, c = self._plan
        na, nc = len(a) - 1, len(c) - 1
        then = self.fold_weights_ > 0  # classes seen at fill: rows k: of fold_x_
        m = k + int(then.sum())
        Q, X, P = self.precision_, self.fold_x_[:m], self.fold_qu_[:m]
        UQ, inner = P[:k], self.fold_inner_  # F Q = (Q Fᵀ)ᵀ, rows contiguous
        if s < na:  # A: columns of [F; μ] Q and F Q Fᵀ, one panel
            r0, r1 = a[s], a[s + 1]
            P[:, r0:r1] = X @ Q[r0:r1].T  # Q symmetric: the columns of X Q are X Q_Iᵀ
            inner += X[:k, r0:r1] @ UQ[:, r0:r1].T
        elif s == na:  # B: M = (I + F Q Fᵀ)⁻¹; the next coefficients Q_new μ = Qμ − QU M QUᵀμ
            inner[np.diag_indices(k)] += 1.0
            inv = np.linalg.inv(inner.astype(np.float64))
            inner[...] = 0.5 * (inv + inv.T)
            P[k:] -= ((X[k:] @ UQ.T) @ inner) @ UQ
        elif s < na + 1 + nc:  # C: rows of Q and upper rows of the scatter, one row panel
            i = s - na - 1
            r0, r1 = c[i], c[i + 1]
            Q[r0:r1] -= (UQ[:, r0:r1].T @ inner) @ UQ
            self.scatter_[r0:r1, r0:] += X[:k, r0:r1].T @ X[:k, r0:]
        else:  # D: publish
            self.coef_[then] = P[k:]
            mu = X[k:].astype(np.float64)
            self.intercept_[then] = -0.5 * np.einsum("cd,cd->c", mu, self.coef_[then])
            self._fold_n = self._fold_step = 0
            self._coef_now(np.flatnonzero(self.seen_mask & ~then))
            return
        self._fold_step = s + 1

    def _exact(self) -> None:
        """Re-invert ``S + rI`` with the ridge of the current total weight (nothing may be
        in flight: ``scatter_`` then holds every folded row)."""
        total = float(self.weights_.sum())
        ridge = self.shrinkage / (1.0 - self.shrinkage) * total
        Q = self.precision_
        if not self._scatter_is_zero():
            A = _sym(self.scatter_)
            A[np.diag_indices_from(A)] += ridge
            Q[...] = np.linalg.inv(A)
        else:  # nothing folded yet: the inverse of r·I
            Q[...] = 0.0
            Q[np.diag_indices_from(Q)] = 1.0 / ridge
        self._ref_weight = total
        self._exact_at = self._n_updates
        self.exact_inversions += 1
        self._coef_now(np.flatnonzero(self.seen_mask))

    def _scatter_is_zero(self) -> bool:
        # A sum of outer products is zero exactly when its trace is: d reads, not d².
        return not np.trace(self.scatter_) > 0

    def _coef_now(self, rows: np.ndarray) -> None:
        """Coefficients of ``rows`` from their current means against the published precision
        (in phase C: Q with the update of the row panels done so far taken back out)."""
        if rows.size == 0:
            return
        Q = self.precision_
        M = self.means_[rows]
        Md = M.astype(Q.dtype)
        C = Md @ Q  # μᵀQ = (Qμ)ᵀ: Q is symmetric
        done = self._fold_step - len(self._plan[0]) if self._fold_n else 0  # C panels done
        if done > 0:
            r, k = self._plan[1][done], self.batch
            UQ, inner = self.fold_qu_[:k], self.fold_inner_
            # Q_pub − Q = (QFᵀ M F Q) on its first r rows.
            C += ((Md[:, :r] @ UQ[:, :r].T) @ inner) @ UQ
        self.coef_[rows] = C
        self.intercept_[rows] = -0.5 * np.einsum("cd,cd->c", M, C.astype(np.float64))

    # -- statistics --------------------------------------------------------------
    def _full_scatter(self) -> np.ndarray:
        """scatter_ mirrored, plus the rows in flight its panels hold not yet, plus the
        queued rows: the scatter of every sample learned."""
        S = _sym(self.scatter_)
        if self._fold_n:
            a, c = self._plan
            done = max(0, self._fold_step - len(a))  # C panels done
            r, F = c[done], self.fold_x_[: self.batch, :].astype(np.float64)
            S[r:, r:] += F[:, r:].T @ F[:, r:]
        p = self.pending_[: self._n_pending]
        S += p.T @ p
        return S

    def statistics(self) -> HeadStats:
        """Copies of the sufficient statistics: ``scatter_`` plus the rows in flight."""
        sums = self.means_ * self.weights_[:, None]
        return HeadStats(self.counts_.copy(), self.weights_.copy(), sums, self._full_scatter())

    def set_statistics(self, st: HeadStats) -> None:
        """Replace everything learned by ``st`` and rebuild the derived arrays exactly."""
        self._fold_n = self._fold_step = 0
        super().set_statistics(st)

    def covariance(self) -> np.ndarray:
        """Σ = scatter / Σw over every sample learned (before shrinkage)."""
        total = float(self.weights_.sum())
        return self._full_scatter() / (total if total > 0 else 1.0)

    def refresh(self, force: bool = False) -> None:
        """With ``force``: rebuild the precision, coefficients and intercepts exactly from
        the statistics (the rows in flight and queued are added to ``scatter_`` first; the
        ridge follows the current total weight) — O(d³). Without: nothing (the fold
        progresses inside :meth:`learn`, one panel per call)."""
        if not force:
            return
        self.scatter_[...] = self._full_scatter()
        self._n_pending = self._fold_n = self._fold_step = 0
        if float(self.weights_.sum()) > 0:
            self._exact()
        else:  # nothing learned: the next sample starts afresh
            self._ref_weight = 0.0

    def drift(self) -> float:
        """Largest |Q − (S + r_ref·I)⁻¹| relative to max |Q|, after :meth:`settle`: the
        round-off the Woodbury steps have accumulated since the last exact inversion
        (O(d³); for tests and tools)."""
        self.settle()
        if self._ref_weight == 0.0:
            return 0.0
        A = self._full_scatter()
        A[np.diag_indices_from(A)] += self.shrinkage / (1.0 - self.shrinkage) * self._ref_weight
        exact = np.linalg.inv(A)
        return float(np.abs(self.precision_ - exact).max() / np.abs(exact).max())

    def precision(self) -> np.ndarray:
        """The published precision as a full symmetric matrix (a copy; float64)."""
        return self.precision_.astype(np.float64)

    # -- scoring -----------------------------------------------------------------
    def scores(self, X: np.ndarray) -> np.ndarray:
        total = float(self.weights_.sum())
        s = X @ self.coef_.T
        s += self.intercept_
        s *= total / (1.0 - self.shrinkage) if total > 0 else 1.0
        s += self._mask
        return s


def _sym(A: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle ``A`` holds (a new array)."""
    S = np.triu(A)
    S += np.triu(A, 1).T
    return S
