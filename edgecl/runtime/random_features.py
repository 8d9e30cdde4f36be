"""Random-feature stages: a fixed random map between the input (or embedding) and the head.

Two kinds, each defined here once, in numpy; the ONNX graph ``edgecl export``
writes (:mod:`edgecl.host.random_features`) holds the very same float32
constants, and its output is checked against :meth:`RandomFeatures.transform`.

* ``rff`` — random Fourier features for the RBF kernel ``exp(-γ‖x − x'‖²)``
  (Rahimi & Recht 2007, "Random features for large-scale kernel machines"):
  ``φ(x) = √(2/M) · cos(W x + b)`` with ``W`` entries ~ N(0, 2γ) (std
  ``√(2γ)``) and ``b`` ~ U[0, 2π), so ``φ(x)·φ(x') ≈ exp(-γ‖x − x'‖²)``. In
  front of a streaming LDA on raw inputs this is RanDumb (Prabhu et al.,
  NeurIPS 2024).
* ``relu`` — ``φ(z) = max(0, W z)`` with ``W`` entries ~ N(0, 1/d), a random
  ReLU projection of a pre-trained embedding ``z`` of length ``d`` (RanPAC,
  McDonnell et al., NeurIPS 2023). ``gamma`` does not apply (None).

Weights come only from ``(kind, input_dim, m, gamma, seed)``: one
``numpy.random.default_rng(seed)`` draws ``W`` as an ``(m, input_dim)`` block of
standard normals, then (``rff``) ``b`` as ``m`` uniforms, all in float64, scaled,
then rounded once to float32. A host and a device regenerate identical arrays
from the manifest's ``random_features`` entry, so the stage is reproducible
without shipping ``W``.

Choosing γ without test data: :func:`median_gamma`, the median heuristic
``γ = 1 / median ‖x_i − x_j‖²`` over every pair ``i < j`` of the first ``n``
(1,000) training samples seen. On MNIST pixels in [0, 1] it gives γ ≈ 0.0095
(the first 1,000 of the file, or of the first class-IL task, digits 0 and 1);
random Fourier features work well there for γ ≈ 0.01–0.02.

>>> rf = RandomFeatures("rff", input_dim=3, m=4, gamma=0.5, seed=0)
>>> rf.transform(np.zeros((2, 3))).shape
(2, 4)
>>> bool(np.array_equal(rf.weights[0], RandomFeatures("rff", 3, 4, 0.5, seed=0).weights[0]))
True
>>> RandomFeatures("relu", input_dim=3, m=4, seed=1).to_json()
{'kind': 'relu', 'm': 4, 'gamma': None, 'seed': 1, 'input_dim': 3}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecl.errors import ConfigError

__all__ = ["GAMMA_SAMPLES", "KINDS", "MAX_M", "RandomFeatures", "make_stage", "median_gamma"]

KINDS = ("rff", "relu")
# Training samples the median heuristic looks at (all their pairs: ~500,000 distances).
GAMMA_SAMPLES = 1000
# W is m × input_dim float32 inside model.onnx; 2**16 features of a 784-pixel
# image are already 200 MB.
MAX_M = 1 << 16
_KEYS = ("kind", "m", "gamma", "seed", "input_dim")
_CHUNK = 2048  # rows per matmul in transform: bounds the float64 temporaries


def _positive_int(name: str, v: Any, hi: int | None = None) -> None:
    ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
    if not ok or (hi is not None and v > hi):
        allowed = ">= 1" if hi is None else f"in [1, {hi:,}]"
        raise ConfigError(f"random features: {name} = {v!r}: must be an integer {allowed}")


@dataclass(frozen=True)
class RandomFeatures:
    """A random-feature stage: its settings, and the weights they determine.

    Parameters
    ----------
    kind : {"rff", "relu"}
    input_dim : int
        Length of the (flattened) input, ``d``.
    m : int
        Number of features, the output length ``M``.
    gamma : float, optional
        RBF kernel width of ``rff`` (> 0, required); must be None for ``relu``.
    seed : int
        Seeds ``numpy.random.default_rng``, the only source of ``W`` and ``b``.
    """

    kind: str
    input_dim: int
    m: int
    gamma: float | None = None
    seed: int = 0
    # Derived from the settings, never learned: W (m, d) and b (m,) (None for relu),
    # float32 and read-only, exactly the constants of the ONNX graph.
    weights: tuple[np.ndarray, np.ndarray | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"random features: kind = {self.kind!r}: must be one of {', '.join(KINDS)}"
            )
        _positive_int("input_dim", self.input_dim)
        _positive_int("m", self.m, MAX_M)
        seed_ok = isinstance(self.seed, (int, np.integer)) and not isinstance(self.seed, bool)
        if not seed_ok or self.seed < 0:
            raise ConfigError(f"random features: seed = {self.seed!r}: must be an integer >= 0")
        if self.kind == "rff":
            g = self.gamma
            num = isinstance(g, (int, float, np.integer, np.floating)) and not isinstance(g, bool)
            ok = num and math.isfinite(g)
            if not ok or g <= 0:
                raise ConfigError(
                    f"random features: gamma = {g!r}: rff needs a finite kernel width > 0"
                )
            object.__setattr__(self, "gamma", float(g))
        elif self.gamma is not None:
            raise ConfigError(f"random features: gamma = {self.gamma!r}: relu takes no gamma")
        object.__setattr__(self, "input_dim", int(self.input_dim))
        object.__setattr__(self, "m", int(self.m))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "weights", self._draw())

    def _draw(self) -> tuple[np.ndarray, np.ndarray | None]:
        rng = np.random.default_rng(self.seed)
        w = rng.standard_normal((self.m, self.input_dim))
        b = None
        if self.kind == "relu":
            w /= math.sqrt(self.input_dim)
        else:
            assert self.gamma is not None
            w *= math.sqrt(2.0 * self.gamma)
            b = rng.uniform(0.0, 2.0 * math.pi, self.m).astype(np.float32)
            b.flags.writeable = False
        w32 = w.astype(np.float32)
        w32.flags.writeable = False
        return w32, b

    @property
    def scale(self) -> float:
        """The factor in front of the cosines: √(2/M) for ``rff``, 1 for ``relu``."""
        return math.sqrt(2.0 / self.m) if self.kind == "rff" else 1.0

    @property
    def nbytes(self) -> int:
        """Bytes of the float32 constants (``W`` and ``b``) the stage carries."""
        w, b = self.weights
        return int(w.nbytes + (0 if b is None else b.nbytes))

    def transform(self, x: Any, dtype: Any = np.float32) -> np.ndarray:
        """The features of a batch ``x`` (``(n, ...)``, flattened to ``(n, input_dim)``).

        Computed in float64 from the float32 ``W`` and ``b`` (the reference the
        ONNX graph is checked against), returned as ``dtype``.
        """
        a = np.asarray(x)
        a = a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)
        if a.shape[1] != self.input_dim:
            raise ValueError(
                f"random features: inputs of length {a.shape[1]}; the stage takes {self.input_dim}"
            )
        w, b = self.weights
        wt = w.astype(np.float64).T
        out = np.empty((a.shape[0], self.m), dtype=dtype)
        for i in range(0, a.shape[0], _CHUNK):
            z = a[i : i + _CHUNK].astype(np.float64) @ wt
            if b is None:
                np.maximum(z, 0.0, out=z)
            else:
                z += b
                np.cos(z, out=z)
                z *= self.scale
            out[i : i + _CHUNK] = z
        return out

    def transform32(self, x: Any) -> np.ndarray:
        """The features in float32 arithmetic, as the ONNX graph computes them (within ~1e-6
        of :meth:`transform`, which converts ``W`` to float64 on every call): for one
        sample at a time, where that conversion would cost more than the features."""
        a = np.asarray(x, dtype=np.float32)
        a = a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)
        if a.shape[1] != self.input_dim:
            raise ValueError(
                f"random features: inputs of length {a.shape[1]}; the stage takes {self.input_dim}"
            )
        w, b = self.weights
        z = a @ w.T
        if b is None:
            return np.maximum(z, 0.0, out=z)
        z += b
        np.cos(z, out=z)
        z *= np.float32(self.scale)
        return z

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``random_features`` entry: everything that makes the weights."""
        return {
            "kind": self.kind,
            "m": self.m,
            "gamma": self.gamma,
            "seed": self.seed,
            "input_dim": self.input_dim,
        }

    @classmethod
    def from_json(cls, d: Any) -> RandomFeatures:
        """Inverse of :meth:`to_json`; unknown or missing keys are errors."""
        if not isinstance(d, dict) or set(d) != set(_KEYS):
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ConfigError(f"random features: expected keys {list(_KEYS)}, got {got}")
        return cls(d["kind"], d["input_dim"], d["m"], d["gamma"], d["seed"])


def median_gamma(x: Any, n: int = GAMMA_SAMPLES) -> float:
    """The median heuristic: ``1 / median ‖x_i − x_j‖²`` over all pairs ``i < j < n``.

    ``x`` holds samples in the order they were seen (``(N, ...)``, flattened);
    only the first ``n`` are used, so no later (or test) data can leak in, and
    the result needs no random choice. Duplicate samples count as distance 0.

    >>> median_gamma(np.array([[0.0], [1.0], [3.0]]))  # distances² 1, 9, 4
    0.25

    Raises
    ------
    ConfigError
        Fewer than two samples, non-finite values, or a median of 0 (most of the
        first samples are identical): pass γ explicitly.
    """
    a = np.asarray(x, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)[:n]
    if a.shape[0] < 2:
        raise ConfigError(f"median heuristic for gamma: needs >= 2 samples, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ConfigError("median heuristic for gamma: the samples hold NaN or inf")
    a = a - a.mean(axis=0)  # distances are unchanged; the Gram expansion is more exact
    sq = np.einsum("ij,ij->i", a, a)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
    med = float(np.median(np.maximum(d2[np.triu_indices(a.shape[0], 1)], 0.0)))
    if not med > 0:
        raise ConfigError(
            "median heuristic for gamma: the median squared distance of the first "
            f"{a.shape[0]} samples is 0; pass gamma explicitly"
        )
    return 1.0 / med


def make_stage(
    kind: str,
    m: int,
    input_dim: int,
    *,
    gamma: float | None = None,
    seed: int = 0,
    samples: Callable[[], np.ndarray] | None = None,
) -> tuple[RandomFeatures, str]:
    """The stage, choosing γ for ``rff`` by :func:`median_gamma` when none is given.

    ``samples`` returns the training inputs of the stage in the order they are
    seen (only the first :data:`GAMMA_SAMPLES` are used). Returns the stage and
    where γ came from (``"given"``, ``"median heuristic on the first N training
    samples"`` or ``"n/a"`` for relu).
    """
    if kind not in KINDS:
        raise ConfigError(f"random features: kind = {kind!r}: must be one of {', '.join(KINDS)}")
    source = "n/a"
    if kind == "rff" and gamma is None:
        if samples is None:
            raise ConfigError(
                "random features: rff needs a kernel width; pass --gamma, or --data to "
                "choose it by the median heuristic"
            )
        x = samples()
        gamma = median_gamma(x)
        source = f"median heuristic on the first {min(len(x), GAMMA_SAMPLES)} training samples"
    elif kind == "rff":
        source = "given"
    elif gamma is not None:
        raise ConfigError("random features: --gamma applies to --kind rff, not relu")
    return RandomFeatures(kind, input_dim, m, gamma, seed), source
