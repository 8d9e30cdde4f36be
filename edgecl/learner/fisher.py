"""OnlineFisher: a running diagonal Fisher and EWC anchors, with task-free triggers.

EWC (Kirkpatrick et al. 2017) pulls parameters toward anchors θ* with a
penalty ``λ/2 · Σ F (θ − θ*)²`` weighted by the diagonal Fisher ``F``. EWC++
(Chaudhry et al. 2018, "Riemannian walk for incremental learning") keeps one
running Fisher ``F ← γF + (1−γ)g²`` instead of one per task, which is what a
device with no task boundaries needs.

Without task boundaries, *when* to refresh the anchors is the question.
Two triggers, both optional:

* every ``N`` samples;
* when the training loss plateaus after a peak (Aljundi, Kelchtermans &
  Tuytelaars 2019, "Task-free continual learning"): the loss is averaged over
  non-overlapping windows; a window mean ``peak_ratio`` above the reference
  marks a peak (the data changed); the next window that no longer falls by more
  than ``plateau_tol`` is a plateau (the new data is learned) and consolidates.

>>> import numpy as np
>>> f = OnlineFisher((2, 3), lam=2.0, decay=0.5)
>>> theta = np.zeros((2, 3))
>>> f.update(np.ones((2, 3)))  # the first update sets F (no decay toward 0)
>>> f.consolidate(theta)
>>> float(f.penalty(theta))
0.0
>>> float(f.penalty(theta + 1.0))  # λ/2 · Σ 1·1² over 6 entries
6.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import StateFileError

__all__ = ["OnlineFisher"]


class OnlineFisher:
    """Running diagonal Fisher ``fisher_`` and anchors ``anchor_`` of one parameter array.

    Parameters
    ----------
    shape : tuple of int
        Shape of the protected parameter array.
    lam : float
        Penalty strength λ.
    decay : float
        γ of the running average, in [0, 1).
    consolidate_every : int
        Consolidate every N :meth:`observe_loss` calls (0 = off).
    on_plateau : bool
        Consolidate when the loss plateaus after a peak.
    window, peak_ratio, plateau_tol
        Plateau detector settings (see the module docstring).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        lam: float,
        decay: float = 0.99,
        *,
        consolidate_every: int = 0,
        on_plateau: bool = True,
        window: int = 50,
        peak_ratio: float = 0.5,
        plateau_tol: float = 0.05,
    ) -> None:
        self.lam = float(lam)
        self.decay = float(decay)
        self.consolidate_every = int(consolidate_every)
        self.on_plateau = bool(on_plateau)
        self.window = int(window)
        self.peak_ratio = float(peak_ratio)
        self.plateau_tol = float(plateau_tol)
        self.fisher_ = np.zeros(shape, dtype=np.float64)
        self.anchor_ = np.zeros(shape, dtype=np.float64)
        self.losses_ = np.zeros(self.window, dtype=np.float64)
        self._n_updates = 0
        self._anchored = False
        self._n_losses = 0  # losses observed since the last consolidation by count
        self._fill = 0  # losses in the current window
        self._ref = -1.0  # reference window mean (last plateau); <0 = none yet
        self._prev = -1.0  # previous window mean
        self._peak = False
        self.consolidations = 0

    @staticmethod
    def nbytes_for(shape: tuple[int, ...], window: int) -> int:
        """Bytes an instance allocates: Fisher + anchors + the loss window."""
        return 2 * 8 * int(np.prod(shape)) + 8 * window

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())

    @property
    def anchored(self) -> bool:
        """True once :meth:`consolidate` has been called (the penalty is active)."""
        return self._anchored

    # -- Fisher and penalty --------------------------------------------------
    def update(self, sq_grad: np.ndarray) -> None:
        """Fold one squared gradient (or its expectation) into the running Fisher."""
        if self._n_updates == 0:
            self.fisher_[...] = sq_grad  # no decay toward the zero initialisation
        else:
            self.fisher_ *= self.decay
            self.fisher_ += (1.0 - self.decay) * sq_grad
        self._n_updates += 1

    def update_outer(self, u: np.ndarray, v: np.ndarray) -> None:
        """:meth:`update` with the squared gradient given as an outer product ``u vᵀ``.

        Saves the softmax head a temporary: its squared gradient is always
        ``(∂L/∂logits)² ⊗ [x | 1]²``.
        """
        if self._n_updates == 0:
            np.outer(u, v, out=self.fisher_)
        else:
            self.fisher_ *= self.decay
            self.fisher_ += np.outer((1.0 - self.decay) * u, v)
        self._n_updates += 1

    def consolidate(self, theta: np.ndarray) -> None:
        """Make the current parameters the anchors θ*."""
        self.anchor_[...] = theta
        self._anchored = True
        self.consolidations += 1

    def penalty(self, theta: np.ndarray) -> float:
        """``λ/2 · Σ F (θ − θ*)²`` (0 before the first consolidation)."""
        if not self._anchored:
            return 0.0
        d = theta - self.anchor_
        return 0.5 * self.lam * float(np.sum(self.fisher_ * d * d))

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """``∂ penalty / ∂θ = λ F (θ − θ*)``."""
        if not self._anchored:
            return np.zeros_like(self.fisher_)
        return self.lam * self.fisher_ * (theta - self.anchor_)

    # -- task-free trigger ---------------------------------------------------
    def observe_loss(self, loss: float) -> bool:
        """Record one training loss; return True when the anchors should be refreshed."""
        self._n_losses += 1
        if self.consolidate_every and self._n_losses >= self.consolidate_every:
            self._n_losses = 0
            return True
        if not self.on_plateau:
            return False
        self.losses_[self._fill] = loss
        self._fill += 1
        if self._fill < self.window:
            return False
        self._fill = 0
        mean = float(self.losses_.mean())
        fire = False
        if self._ref < 0:
            # The first window is the first data: learning it is the first "task".
            self._ref, self._peak = mean, True
        elif not self._peak and mean > (1.0 + self.peak_ratio) * self._ref:
            self._peak = True
        elif self._peak and self._prev >= 0 and mean >= (1.0 - self.plateau_tol) * self._prev:
            fire, self._peak, self._ref = True, False, mean
        elif not self._peak:
            self._ref = min(self._ref, mean)
        self._prev = mean
        return fire

    # -- state ---------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {"fisher_": self.fisher_, "anchor_": self.anchor_, "losses_": self.losses_}

    def counters(self) -> dict[str, Any]:
        return {
            "n_updates": self._n_updates,
            "anchored": self._anchored,
            "n_losses": self._n_losses,
            "fill": self._fill,
            "ref": self._ref,
            "prev": self._prev,
            "peak": self._peak,
            "consolidations": self.consolidations,
        }

    def restore(self, arrays: dict[str, np.ndarray], counters: dict[str, Any]) -> None:
        for name, dst in self.arrays().items():
            src = arrays.get(name)
            if src is None or src.shape != dst.shape or src.dtype != dst.dtype:
                raise StateFileError(f"fisher array {name!r} missing or of the wrong shape/dtype")
            dst[...] = src
        try:
            self._n_updates = int(counters["n_updates"])
            self._anchored = bool(counters["anchored"])
            self._n_losses = int(counters["n_losses"])
            self._fill = int(counters["fill"])
            self._ref = float(counters["ref"])
            self._prev = float(counters["prev"])
            self._peak = bool(counters["peak"])
            self.consolidations = int(counters["consolidations"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"fisher counters are invalid: {exc}") from None
        if not 0 <= self._fill < self.window:
            raise StateFileError(f"fisher loss-window fill {self._fill} out of range")
