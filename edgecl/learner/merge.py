"""Exact merging of prototype heads: what several devices learned, combined.

NCM and SLDA heads are sums: per class a count, a total weight and a weighted
sum of embeddings, and (SLDA) one pooled within-class scatter matrix. The head
trained on the union of several devices' labelled windows is therefore a
function of their statistics alone, whatever the order and however the windows
were split — the property Fed3R, FedNCM and analytic federated learning rely
on. :class:`HeadStats` holds those statistics; ``a + b`` combines two of them
exactly and ``total - part`` removes a part again (a *delta*: what a device
learned since the snapshot it last uploaded), with the pooled-scatter rule of
Chan, Golub & LeVeque (1979)::

    W = W_a + W_b,   μ = (W_a μ_a + W_b μ_b) / W
    S = S_a + S_b + Σ_c (W_a W_b / W)(μ_a − μ_b)(μ_a − μ_b)ᵀ

The arithmetic is float64; merged means and scatter equal those of a learner
fed the concatenated stream to round-off (tests check 1e-9 relative). No
window ever leaves a device: only these sums do.

Not merged, by design: the per-user standardisation statistics describe the
current wearer and stay on the device (each device keeps its own; the prior
must match, since it comes from the bundle), and the softmax head's replay
buffer (it holds embeddings). Softmax heads have no sufficient statistics;
:func:`average_softmax` averages their weights, Fisher-weighted where a Fisher
exists — an approximation, unlike the prototype heads' merge.

>>> import numpy as np
>>> from edgecl import LearnerConfig, StreamingLearner
>>> cfg = LearnerConfig(dim=2, max_classes=3, head="slda", budget_bytes=10_000)
>>> a, b, union = (StreamingLearner(cfg) for _ in range(3))
>>> X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [1.0, 3.0]]); y = np.array([0, 1, 0, 1])
>>> a.learn_many(X[:2], y[:2]); b.learn_many(X[2:], y[2:]); union.learn_many(X, y)
>>> a.merge(b)
>>> np.allclose(a.head.means_, union.head.means_), np.allclose(a.statistics().scatter,
...     union.statistics().scatter)
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgecl.errors import ConfigError, StateFileError
from edgecl.learner.state import arrays_digest

if TYPE_CHECKING:
    from edgecl.learner.learner import StreamingLearner

__all__ = ["MERGEABLE_HEADS", "HeadStats", "average_softmax", "check_compatible"]

#: Heads whose statistics merge exactly.
MERGEABLE_HEADS = ("ncm", "slda")


@dataclass(frozen=True)
class HeadStats:
    """Sufficient statistics of an NCM or SLDA head (float64, owned copies).

    ``counts`` (C,) int64 samples per class, ``weights`` (C,) their total weight,
    ``sums`` (C, d) weighted sums of embeddings, ``scatter`` (d, d) the pooled
    within-class scatter (SLDA; ``None`` for NCM). Build one with
    :meth:`StreamingLearner.statistics`; combine with ``+``, take a delta with ``-``.
    """

    counts: np.ndarray
    weights: np.ndarray
    sums: np.ndarray
    scatter: np.ndarray | None = None

    @property
    def means(self) -> np.ndarray:
        """Weighted class means (rows of empty classes are 0)."""
        w = np.where(self.weights > 0, self.weights, 1.0)
        return self.sums / w[:, None]

    @property
    def n(self) -> int:
        """Samples in these statistics."""
        return int(self.counts.sum())

    @classmethod
    def empty(cls, max_classes: int, dim: int, scatter: bool) -> HeadStats:
        """Statistics of nothing learned (the identity of ``+``)."""
        return cls(
            np.zeros(max_classes, dtype=np.int64),
            np.zeros(max_classes),
            np.zeros((max_classes, dim)),
            np.zeros((dim, dim)) if scatter else None,
        )

    def validate(self, where: str = "statistics") -> HeadStats:
        """Raise :class:`~edgecl.errors.StateFileError` unless shapes, dtypes and values
        are consistent: finite, counts ≥ 0, weight > 0 exactly where count > 0, a
        symmetric scatter with a non-negative diagonal. Returns ``self``."""
        c = self.counts
        if c.ndim != 1 or c.dtype != np.int64:
            raise StateFileError(f"{where}: counts must be a 1-d int64 array")
        C = c.shape[0]
        if self.weights.shape != (C,) or self.sums.ndim != 2 or self.sums.shape[0] != C:
            raise StateFileError(f"{where}: weights/sums shapes do not match {C} classes")
        d = self.sums.shape[1]
        arrays = [self.weights, self.sums]
        if self.scatter is not None:
            if self.scatter.shape != (d, d):
                raise StateFileError(f"{where}: scatter is {self.scatter.shape}, not ({d}, {d})")
            arrays.append(self.scatter)
        for a in arrays:
            if a.dtype != np.float64 or not np.isfinite(a).all():
                raise StateFileError(f"{where}: statistics must be finite float64")
        if (c < 0).any():
            raise StateFileError(f"{where}: negative class counts")
        if (self.weights < 0).any() or ((self.weights > 0) != (c > 0)).any():
            raise StateFileError(f"{where}: class weights do not add up to the class counts")
        if (self.sums[c == 0] != 0).any():
            raise StateFileError(f"{where}: an empty class has a non-zero sum")
        S = self.scatter
        if S is not None:
            scale = max(float(np.abs(S).max()), 1.0)
            if not np.allclose(S, S.T, rtol=0, atol=1e-9 * scale):
                raise StateFileError(f"{where}: scatter is not symmetric")
            if (np.diag(S) < -1e-9 * scale).any():
                raise StateFileError(f"{where}: scatter has a negative diagonal")
        return self

    def check_like(self, other: HeadStats) -> None:
        """Raise :class:`~edgecl.errors.ConfigError` unless ``other`` has this head's shape."""
        if not isinstance(other, HeadStats):
            raise TypeError(f"cannot combine HeadStats with {type(other).__name__}")
        if other.sums.shape != self.sums.shape or (other.scatter is None) != (self.scatter is None):
            raise ConfigError(
                f"statistics of different heads: {self.sums.shape} "
                f"{'slda' if self.scatter is not None else 'ncm'} vs {other.sums.shape} "
                f"{'slda' if other.scatter is not None else 'ncm'}"
            )

    def __add__(self, other: HeadStats) -> HeadStats:
        """The statistics of both sample sets together (exact, order-free)."""
        self.check_like(other)
        W = self.weights + other.weights
        sums = self.sums + other.sums
        S = None
        if self.scatter is not None and other.scatter is not None:
            S = self.scatter + other.scatter
            both = (self.counts > 0) & (other.counts > 0)
            if both.any():
                D = self.means[both] - other.means[both]
                f = self.weights[both] * other.weights[both] / W[both]
                S += (D * f[:, None]).T @ D
            S = 0.5 * (S + S.T)
        return HeadStats(self.counts + other.counts, W, sums, S)

    def __sub__(self, part: HeadStats) -> HeadStats:
        """What ``self`` holds beyond ``part`` (``part`` must be a subset of it): the
        inverse of ``+``, so ``part + (self - part)`` equals ``self`` to round-off."""
        self.check_like(part)
        counts = self.counts - part.counts
        if (counts < 0).any():
            bad = np.flatnonzero(counts < 0).tolist()
            raise StateFileError(
                f"the base is not part of these statistics: classes {bad} have fewer "
                f"samples than the base (a delta against the wrong snapshot?)"
            )
        fresh = counts > 0
        W = np.where(fresh, self.weights - part.weights, 0.0)
        if (W[fresh] <= 0).any():
            raise StateFileError("the base holds more weight than these statistics")
        sums = np.where(fresh[:, None], self.sums - part.sums, 0.0)
        S = None
        if self.scatter is not None and part.scatter is not None:
            S = self.scatter - part.scatter
            both = fresh & (part.counts > 0)
            if both.any():
                mu_b = sums[both] / W[both][:, None]
                D = part.means[both] - mu_b
                f = part.weights[both] * W[both] / self.weights[both]
                S -= (D * f[:, None]).T @ D
            S = 0.5 * (S + S.T)
        return HeadStats(counts, W, sums, S)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays, by name (what a fleet upload carries)."""
        out = {"counts": self.counts, "weights": self.weights, "sums": self.sums}
        if self.scatter is not None:
            out["scatter"] = self.scatter
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str = "statistics") -> HeadStats:
        """Rebuild from :meth:`arrays` (validated; arrays are copied)."""
        try:
            st = cls(
                np.array(arrays["counts"]),
                np.array(arrays["weights"]),
                np.array(arrays["sums"]),
                None if arrays.get("scatter") is None else np.array(arrays["scatter"]),
            )
        except KeyError as exc:
            raise StateFileError(f"{where}: array {exc} missing") from None
        return st.validate(where)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    def digest(self) -> str:
        """sha256 of the arrays (names, dtypes, shapes, bytes): identifies a snapshot."""
        return arrays_digest(self.arrays())


def check_compatible(learners: list[StreamingLearner], where: list[str] | None = None) -> None:
    """Raise :class:`~edgecl.errors.ConfigError` (one line naming the difference) unless
    every learner belongs to the same bundle (config ``tag``), has the same config and,
    when standardising, the same pre-training prior."""
    names = where or [f"learner {i}" for i in range(len(learners))]
    first, n0 = learners[0], names[0]
    for lr, name in zip(learners[1:], names[1:], strict=True):
        if lr.config.tag != first.config.tag:
            raise ConfigError(
                f"{name} belongs to {lr.config.tag or 'no bundle'} but {n0} to "
                f"{first.config.tag or 'no bundle'}: states of different bundles never merge"
            )
        if lr.config != first.config:
            a, b = first.config.to_dict(), lr.config.to_dict()
            diff = sorted(k for k in a if a[k] != b.get(k) and k != "tag")
            shown = ", ".join(f"{k}={a[k]!r} vs {b.get(k)!r}" for k in diff[:4])
            raise ConfigError(f"{n0} and {name} have different configs: {shown}")
        ua, ub = first.user, lr.user
        if (
            ua is not None
            and ub is not None
            and not (
                np.array_equal(ua.prior_mean_, ub.prior_mean_)
                and np.array_equal(ua.prior_var_, ub.prior_var_)
            )
        ):
            raise ConfigError(f"{n0} and {name} standardise with different priors")


def average_softmax(learners: list[StreamingLearner]) -> np.ndarray:
    """Fisher-weighted average of softmax heads' parameters θ — APPROXIMATE.

    Per parameter, ``θ = Σ_k F_k θ_k / Σ_k F_k`` with each head's running diagonal
    Fisher (plus a small floor so a parameter no head is sure about averages
    plainly); heads without a Fisher weigh every parameter by their sample count.
    A linear softmax trained on the union would differ: SGD is not a sum.
    """
    num = np.zeros_like(learners[0].head.theta_)
    den = np.zeros_like(num)
    for lr in learners:
        n = float(lr.head.counts_.sum())
        if n == 0:
            continue
        fisher = lr.fisher
        if fisher is not None and float(fisher.fisher_.max()) > 0:
            F = fisher.fisher_ / float(fisher.fisher_.max()) + 1e-3
            F = F * n
        else:
            F = np.full_like(num, n)
        num += F * lr.head.theta_
        den += F
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out
