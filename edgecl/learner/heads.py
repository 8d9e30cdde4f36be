"""Prediction heads over embeddings: NCM and streaming LDA (softmax: ``softmax_head.py``).

Every head preallocates its arrays for ``max_classes`` at construction, learns
one validated float64 sample at a time and scores a batch of samples. Classes
never seen score ``-inf``; the learner turns scores into labels/probabilities.

* :class:`NCMHead` — nearest class mean (Mensink et al. 2013). Stores per-class
  sums and counts, so its means are exactly the batch class means.
* :class:`SLDAHead` — Deep Streaming LDA (Hayes & Kanan 2020, "Lifelong machine
  learning with deep streaming linear discriminant analysis"): running class
  means plus one shared covariance updated by the rank-one rule
  ``Σ ← (NΣ + n/(n+1)·δδᵀ)/(N+1)``, ``δ = x − μ_y``. Rank-one updates are queued
  and applied ``slda_batch`` at a time as one GEMM (same sum, far fewer passes
  over the d×d matrix). The precision ``((1−ε)Σ + εI)⁻¹`` is a cache refreshed
  lazily, at predict time, once ``slda_refresh_every`` samples arrived.
* :class:`~edgecl.learner.softmax_head.SoftmaxHead` — a linear softmax classifier
  trained by SGD on each new sample plus replayed ones, optionally regularised by
  EWC++ (see ``fisher.py``); it lives in ``softmax_head.py``.

Each head owns the memory it needs and nothing else: NCM and SLDA hold their
statistics only (they never replay, so they own no buffer), the softmax head
owns its replay buffer and, with ``ewc_lambda > 0``, its online Fisher.
:meth:`_Head.plan` sizes a head and what it owns before anything is allocated;
:meth:`_Head.parts` lists the owned components for accounting and state files.

Sample weights. NCM and SLDA take a weight ``w`` per learned sample (default
``label_weight``): class means are weighted means, and the SLDA scatter adds
``W·w/(W+w)·δδᵀ`` for a class of weight ``W`` (the weighted rank-one update,
exact: it equals the batch scatter with the same weights), normalised by the
total weight. ``counts_`` still counts samples; ``weights_`` holds their weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import BudgetError, StateFileError
from edgecl.learner.config import LearnerConfig
from edgecl.learner.merge import HeadStats

__all__ = ["NCMHead", "SLDAHead", "head_class", "make_head"]

_F8 = 8  # bytes of a float64 / int64


class _Head:
    """Shared plumbing: class counts, state arrays, accounting."""

    name = "head"

    def __init__(self, cfg: LearnerConfig) -> None:
        self.dim = cfg.dim
        self.max_classes = cfg.max_classes
        self.counts_ = np.zeros(cfg.max_classes, dtype=np.int64)
        # Derived from counts_ and kept in step with it, so that scoring neither
        # recomputes ``counts_ > 0`` nor scatters -inf: it adds ``_mask`` (0 or -inf).
        self._seen = np.zeros(cfg.max_classes, dtype=bool)
        self._mask = np.full(cfg.max_classes, -np.inf)

    @staticmethod
    def _mask_nbytes(cfg: LearnerConfig) -> int:
        """Bytes of the seen-class caches every head holds."""
        return (1 + _F8) * cfg.max_classes

    @staticmethod
    def nbytes_for(cfg: LearnerConfig) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def plan(cls, cfg: LearnerConfig, room: int) -> dict[str, int]:
        """Bytes of the head and of what it owns, given ``room`` bytes for all of it.

        A head without replay owns no buffer and no Fisher. Raises
        :class:`~edgecl.errors.BudgetError` when the head does not fit.
        """
        head = cls.nbytes_for(cfg)
        if head > room:
            raise BudgetError(
                f"budget_bytes={cfg.budget_bytes:,} is too small: the {cfg.head} head needs "
                f"{head:,} B for dim={cfg.dim}, max_classes={cfg.max_classes}, but only "
                f"{room:,} B are left for it"
            )
        return {"head_bytes": head, "fisher_bytes": 0, "buffer_bytes": 0, "buffer_capacity": 0}

    def parts(self) -> dict[str, Any]:
        """Components the head owns (``{"buffer": …, "fisher": …}``), by state-file prefix."""
        return {}

    @property
    def seen_mask(self) -> np.ndarray:
        """Boolean mask of the classes learned at least once (read it, do not write it)."""
        return self._seen

    def _count(self, y: int) -> None:
        self.counts_[y] += 1
        if not self._seen[y]:
            self._seen[y] = True
            self._mask[y] = 0.0

    def _sync_seen(self) -> None:
        np.greater(self.counts_, 0, out=self._seen)
        self._mask[...] = np.where(self._seen, 0.0, -np.inf)

    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays that make up the learned state (saved to disk)."""
        return {"counts_": self.counts_}

    def cache_arrays(self) -> dict[str, np.ndarray]:
        """Arrays derived from the state (allocated, counted, not saved)."""
        return {"seen": self._seen, "mask": self._mask}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.arrays().values(), *self.cache_arrays().values()))

    def counters(self) -> dict[str, Any]:
        return {}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        for name, dst in self.arrays().items():
            src = arrays.get(name)
            if src is None or src.shape != dst.shape or src.dtype != dst.dtype:
                raise StateFileError(f"{self.name} array {name!r} missing or of the wrong shape")
            dst[...] = src
        if (self.counts_ < 0).any():
            raise StateFileError(f"{self.name}: negative class counts")
        self._sync_seen()

    def refresh(self, force: bool = False) -> None:
        """Bring derived caches up to date now (no-op unless a head caches something).

        Scoring refreshes lazily anyway; a caller with idle time (the daemon, right
        after a learn) calls this so the next prediction does not pay for it.
        """

    def learn(self, x: np.ndarray, y: int, w: float) -> None:  # pragma: no cover - abstract
        """Learn one validated float64 sample ``x`` of label ``y`` with weight ``w``."""
        raise NotImplementedError

    def scores(self, X: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _restore_weights(self, arrays: dict[str, np.ndarray]) -> None:
        w = getattr(self, "weights_", None)
        if w is None:
            return
        if not np.isfinite(w).all() or (w < 0).any() or ((w > 0) != (self.counts_ > 0)).any():
            raise StateFileError(f"{self.name}: class weights disagree with the class counts")


class NCMHead(_Head):
    """Nearest class mean: score = −½‖x − μ_c‖².

    >>> import numpy as np
    >>> from edgecl.learner.config import LearnerConfig
    >>> h = NCMHead(LearnerConfig(dim=2, max_classes=3, head="ncm"))
    >>> h.learn(np.array([0.0, 0.0]), 0, 1.0); h.learn(np.array([2.0, 2.0]), 0, 3.0)
    >>> h.means_[0].tolist()
    [1.5, 1.5]
    """

    name = "ncm"

    def __init__(self, cfg: LearnerConfig) -> None:
        super().__init__(cfg)
        self.sums_ = np.zeros((cfg.max_classes, cfg.dim), dtype=np.float64)  # Σ w·x
        self.weights_ = np.zeros(cfg.max_classes, dtype=np.float64)  # Σ w

    @staticmethod
    def nbytes_for(cfg: LearnerConfig) -> int:
        return _F8 * cfg.max_classes * (cfg.dim + 2) + _Head._mask_nbytes(cfg)

    @property
    def means_(self) -> np.ndarray:
        """Weighted class means (rows of unseen classes are 0)."""
        w = np.where(self.weights_ > 0, self.weights_, 1.0)
        return self.sums_ / w[:, None]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts_": self.counts_, "sums_": self.sums_, "weights_": self.weights_}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        super().restore(arrays, counters)
        self._restore_weights(arrays)

    def learn(self, x: np.ndarray, y: int, w: float) -> None:
        if w == 1.0:
            self.sums_[y] += x
        else:
            self.sums_[y] += w * x
        self.weights_[y] += w
        self._count(y)

    def statistics(self) -> HeadStats:
        """Copies of the sufficient statistics (see :mod:`edgecl.learner.merge`)."""
        return HeadStats(self.counts_.copy(), self.weights_.copy(), self.sums_.copy())

    def set_statistics(self, st: HeadStats) -> None:
        """Replace everything learned by ``st`` (validated by the caller)."""
        self.counts_[...] = st.counts
        self.weights_[...] = st.weights
        self.sums_[...] = st.sums
        self._sync_seen()

    def scores(self, X: np.ndarray) -> np.ndarray:
        mu = self.means_
        # −½‖x−μ‖² = x·μ − ½‖μ‖² − ½‖x‖²; the last term is kept so scores are true log-densities.
        s = X @ mu.T - 0.5 * np.einsum("cd,cd->c", mu, mu)[None, :]
        s -= 0.5 * np.einsum("nd,nd->n", X, X)[:, None]
        s += self._mask
        return s


class SLDAHead(_Head):
    """Streaming LDA with a shared, shrunk covariance (Hayes & Kanan 2020).

    Learned state: ``means_``, ``counts_``, ``weights_``, ``scatter_`` (sum of
    W·w/(W+w)·δδᵀ) and the queued rank-one rows ``pending_``. Caches:
    ``precision_``, ``coef_``, ``intercept_``.
    """

    name = "slda"

    def __init__(self, cfg: LearnerConfig) -> None:
        super().__init__(cfg)
        d, c = cfg.dim, cfg.max_classes
        self.shrinkage = cfg.slda_shrinkage
        self.refresh_every = cfg.slda_refresh_every
        self.means_ = np.zeros((c, d), dtype=np.float64)
        self.weights_ = np.zeros(c, dtype=np.float64)
        self.scatter_ = np.zeros((d, d), dtype=np.float64)
        self.pending_ = np.zeros((cfg.slda_batch, d), dtype=np.float64)
        self.precision_ = np.zeros((d, d), dtype=np.float64)
        self.coef_ = np.zeros((c, d), dtype=np.float64)
        self.intercept_ = np.zeros(c, dtype=np.float64)
        self._stale_rows = np.ones(c, dtype=bool)
        self._n_pending = 0
        self._n_updates = 0  # samples folded into the covariance (N)
        self._refreshed_at = -1  # N when the precision was last computed; -1 = never

    @staticmethod
    def nbytes_for(cfg: LearnerConfig) -> int:
        d, c = cfg.dim, cfg.max_classes
        return (
            _F8 * (2 * d * d + cfg.slda_batch * d + 2 * c * d + 3 * c) + c + _Head._mask_nbytes(cfg)
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "counts_": self.counts_,
            "weights_": self.weights_,
            "means_": self.means_,
            "scatter_": self.scatter_,
            "pending_": self.pending_,
        }

    def cache_arrays(self) -> dict[str, np.ndarray]:
        return {
            **super().cache_arrays(),
            "precision_": self.precision_,
            "coef_": self.coef_,
            "intercept_": self.intercept_,
            "stale_rows": self._stale_rows,
        }

    def counters(self) -> dict[str, Any]:
        return {"n_pending": self._n_pending, "n_updates": self._n_updates}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        super().restore(arrays, counters)
        self._restore_counters(arrays, counters)
        self._refreshed_at = -1
        self._stale_rows[:] = True

    def _restore_counters(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        try:
            self._n_pending = int(counters["n_pending"])
            self._n_updates = int(counters["n_updates"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"slda counters are invalid: {exc}") from None
        if not 0 <= self._n_pending < self.pending_.shape[0]:
            raise StateFileError(f"slda pending count {self._n_pending} out of range")
        if self._n_updates != int(self.counts_.sum()):
            raise StateFileError("slda update count disagrees with the class counts")
        self._restore_weights(arrays)

    def learn(self, x: np.ndarray, y: int, w: float) -> None:
        W = float(self.weights_[y])
        delta = x - self.means_[y]
        if W > 0:  # the first sample of a class adds W·w/(W+w) = 0 to the scatter
            self.pending_[self._n_pending] = delta * np.sqrt(W * w / (W + w))
            self._n_pending += 1
            if self._n_pending == self.pending_.shape[0]:
                self.scatter_ += self.pending_.T @ self.pending_
                self._n_pending = 0
        self.means_[y] += delta * (w / (W + w))
        self.weights_[y] = W + w
        self._count(y)
        self._n_updates += 1
        self._stale_rows[y] = True

    def statistics(self) -> HeadStats:
        """Copies of the sufficient statistics, queued rows folded into the scatter."""
        p = self.pending_[: self._n_pending]
        scatter = self.scatter_ + p.T @ p
        sums = self.means_ * self.weights_[:, None]
        return HeadStats(self.counts_.copy(), self.weights_.copy(), sums, scatter)

    def set_statistics(self, st: HeadStats) -> None:
        """Replace everything learned by ``st`` (validated by the caller) and rebuild
        the derived arrays exactly (:meth:`refresh` with ``force``)."""
        self.counts_[...] = st.counts
        self.weights_[...] = st.weights
        self.means_[...] = st.means
        self.scatter_[...] = st.scatter
        self.pending_[...] = 0.0
        self._n_pending = 0
        self._n_updates = int(st.counts.sum())
        self._sync_seen()
        self.refresh(force=True)

    def covariance(self) -> np.ndarray:
        """The current covariance estimate Σ = scatter / Σw (before shrinkage)."""
        p = self.pending_[: self._n_pending]
        total = float(self.weights_.sum())
        return (self.scatter_ + p.T @ p) / (total if total > 0 else 1.0)

    def refresh(self, force: bool = False) -> None:
        """Recompute the precision if it is missing or ``refresh_every`` samples old."""
        due = self._refreshed_at < 0 or self._n_updates - self._refreshed_at >= self.refresh_every
        if not (force or due):
            return
        cov = self.covariance()
        cov *= 1.0 - self.shrinkage
        cov[np.diag_indices_from(cov)] += self.shrinkage
        if self.shrinkage > 0:
            self.precision_[...] = np.linalg.inv(cov)
        else:
            self.precision_[...] = np.linalg.pinv(cov, hermitian=True)
        self._refreshed_at = self._n_updates
        self._stale_rows[:] = True

    def scores(self, X: np.ndarray) -> np.ndarray:
        self.refresh()
        seen = self.seen_mask
        # Row by row (one GEMV each) so a row's bits never depend on which others are stale.
        for c in np.flatnonzero(self._stale_rows & seen):
            w = self.precision_ @ self.means_[c]
            self.coef_[c] = w
            self.intercept_[c] = -0.5 * float(self.means_[c] @ w)
            self._stale_rows[c] = False
        s = X @ self.coef_.T
        s += self.intercept_
        s += self._mask
        return s


def head_class(cfg: LearnerConfig) -> type[_Head]:
    """The head class named by ``cfg.head`` (and ``slda_update`` for SLDA)."""
    # The other heads' modules import this one (for _Head): import them when asked.
    if cfg.head == "softmax":
        from edgecl.learner.softmax_head import SoftmaxHead

        return SoftmaxHead
    if cfg.head == "slda" and cfg.slda_update == "woodbury":
        from edgecl.learner.slda_woodbury import WoodburySLDAHead

        return WoodburySLDAHead
    return {"ncm": NCMHead, "slda": SLDAHead}[cfg.head]


def make_head(cfg: LearnerConfig, plan: dict[str, int]) -> _Head:
    """The head named by ``cfg.head``, with what it owns sized by ``plan``."""
    cls = head_class(cfg)
    if cfg.head == "softmax":
        return cls(cfg, plan["buffer_capacity"])  # type: ignore[call-arg]
    return cls(cfg)
