"""UserNorm: per-user standardisation of embeddings, unsupervised and exact.

A frozen extractor maps one movement of two people to different places:
wrist size, watch fit and personal style shift and scale every embedding
dimension. Standardising each user's embeddings with that user's own mean and
variance removes most of it without a single label — the per-domain
normalisation of AdaBN (Li et al. 2016, "Revisiting batch normalization for
practical domain adaptation") applied to a stream. For the head to agree, it
is pre-trained on embeddings standardised per pre-training subject
(:meth:`StreamingLearner.learn_many` with ``groups``), and the average of those
subjects' statistics becomes the *prior* of a new user.

The user's statistics are pooled with the prior as ``n0`` pseudo-windows
(``standardize_prior_n``)::

    mean = m0 + S1 / (n0 + n)                       S1 = Σ (x − m0)
    var  = (n0·v0 + S2) / (n0 + n) − (S1 / (n0 + n))²   S2 = Σ (x − m0)²
    z    = (x − mean) / sqrt(var + eps)

so a new user starts at the prior and owns the statistics after about ``n0``
windows. Sums are taken around the prior mean ``m0`` (no cancellation when the
mean is far from 0) and are plain sums, so they add exactly across devices.
``eps`` (:data:`EPS`) keeps dimensions that never vary (dead ReLUs) finite.

>>> import numpy as np
>>> u = UserNorm(2, prior_n=0.0)
>>> u.observe_many(np.array([[1.0, 10.0], [3.0, 30.0]]))
>>> u.mean().tolist(), u.var().tolist()
([2.0, 20.0], [1.0, 100.0])
>>> u.reset()
>>> u.n_
0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import StateFileError

__all__ = ["EPS", "UserNorm"]

#: Added to every variance before the square root (embedding units²).
EPS = 1e-6
_F8 = 8


class UserNorm:
    """Running per-user mean/variance with a prior; see the module docstring.

    Parameters
    ----------
    dim : int
        Embedding length.
    prior_n : float
        Weight of the prior statistics, in windows.
    """

    def __init__(self, dim: int, prior_n: float) -> None:
        self.dim = dim
        self.prior_n = float(prior_n)
        self.prior_mean_ = np.zeros(dim, dtype=np.float64)
        self.prior_var_ = np.ones(dim, dtype=np.float64)
        self.sum_ = np.zeros(dim, dtype=np.float64)  # S1 = Σ (x − m0)
        self.sumsq_ = np.zeros(dim, dtype=np.float64)  # S2 = Σ (x − m0)²
        self.n_ = 0
        # Derived: the current shift and scale, refreshed after every change.
        self._shift = np.zeros(dim, dtype=np.float64)
        self._scale = np.ones(dim, dtype=np.float64)
        self._work = np.zeros(dim, dtype=np.float64)
        self._refresh()

    @staticmethod
    def nbytes_for(dim: int) -> int:
        """Bytes of every array a UserNorm of ``dim`` allocates."""
        return _F8 * 7 * dim

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self.arrays().values(), *self.cache_arrays().values()))

    def cache_arrays(self) -> dict[str, np.ndarray]:
        """Arrays derived from the statistics (allocated, counted, rebuilt on load)."""
        return {"shift": self._shift, "scale": self._scale, "work": self._work}

    # -- statistics ------------------------------------------------------------
    def mean(self) -> np.ndarray:
        """The current user's mean (prior-pooled)."""
        w = self.prior_n + self.n_
        return self.prior_mean_ + self.sum_ / w if w > 0 else self.prior_mean_.copy()

    def var(self) -> np.ndarray:
        """The current user's variance (prior-pooled), before ``EPS``."""
        w = self.prior_n + self.n_
        if w <= 0:  # no prior weight and no window yet
            return self.prior_var_.copy()
        d = self.sum_ / w
        return np.maximum((self.prior_n * self.prior_var_ + self.sumsq_) / w - d * d, 0.0)

    def _refresh(self) -> None:
        self._shift[...] = self.mean()
        np.sqrt(self.var() + EPS, out=self._scale)
        np.divide(1.0, self._scale, out=self._scale)

    def observe_one(self, x: np.ndarray) -> None:
        """Add one validated float64 embedding to the user's statistics."""
        np.subtract(x, self.prior_mean_, out=self._work)
        self.sum_ += self._work
        self._work *= self._work
        self.sumsq_ += self._work
        self.n_ += 1
        self._refresh()

    def observe_many(self, X: np.ndarray) -> None:
        """Add the rows of ``X``; equals the :meth:`observe_one` loop up to summation order."""
        if X.shape[0] == 0:
            return
        D = X - self.prior_mean_
        self.sum_ += D.sum(axis=0)
        self.sumsq_ += np.einsum("nd,nd->d", D, D)
        self.n_ += int(X.shape[0])
        self._refresh()

    def reset(self) -> None:
        """Forget the current user (the prior stays): a new user starts."""
        self.sum_[...] = 0.0
        self.sumsq_[...] = 0.0
        self.n_ = 0
        self._refresh()

    def set_prior(self, mean: np.ndarray, var: np.ndarray) -> None:
        """Replace the prior (pre-training's average user) and forget the current user."""
        self.prior_mean_[...] = mean
        self.prior_var_[...] = var
        self.reset()

    # -- the transform -----------------------------------------------------------
    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(X − mean) / sqrt(var + EPS)`` for a 1-D or 2-D float64 array (a new array)."""
        Z = X - self._shift
        Z *= self._scale
        return Z

    @staticmethod
    def fit_groups(X: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Z-score each group of rows with its own statistics.

        Returns ``(Z, mean, var)``: the standardised rows, and the averages over
        groups of the group means and variances (the prior for a new user).
        """
        Z = np.empty_like(X)
        means, variances = [], []
        for g in np.unique(groups):
            rows = groups == g
            mu, v = X[rows].mean(axis=0), X[rows].var(axis=0)
            Z[rows] = (X[rows] - mu) / np.sqrt(v + EPS)
            means.append(mu)
            variances.append(v)
        return Z, np.mean(means, axis=0), np.mean(variances, axis=0)

    # -- persistence ---------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "prior_mean_": self.prior_mean_,
            "prior_var_": self.prior_var_,
            "sum_": self.sum_,
            "sumsq_": self.sumsq_,
        }

    def counters(self) -> dict[str, Any]:
        return {"n": self.n_}

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        for name, dst in self.arrays().items():
            src = arrays.get(name)
            if src is None or src.shape != dst.shape or src.dtype != dst.dtype:
                raise StateFileError(f"user array {name!r} missing or of the wrong shape")
            dst[...] = src
        try:
            n = counters["n"]
        except (KeyError, TypeError) as exc:
            raise StateFileError(f"user counters are invalid: {exc}") from None
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise StateFileError(f"user window count {n!r} is not a count")
        if (self.prior_var_ < 0).any() or (self.sumsq_ < 0).any():
            raise StateFileError("user statistics hold a negative variance or square sum")
        self.n_ = n
        self._refresh()
