"""OnlineFisher: a running diagonal Fisher and EWC anchors, with task-free triggers.

EWC (Kirkpatrick et al. 2017) pulls parameters toward anchors θ* with a
penalty ``λ/2 · Σ F (θ − θ*)²`` weighted by the diagonal Fisher ``F``. EWC++
(Chaudhry et al. 2018, "Riemannian walk for incremental learning") keeps one
running Fisher ``F ← γF + (1−γ)g²`` instead of one per task, which is what a
device with no task boundaries needs.

The learner applies the penalty as a proximal (implicit) step after its SGD
step θ': ``θ ← argmin ‖θ − θ'‖²/2η + λ/2 · Σ F (θ − θ*)² = (θ' + ηλF θ*) / (1 + ηλF)``
(:meth:`OnlineFisher.proximal_step`). To first order in ηλF it is the gradient
step ``θ' − ηλF(θ' − θ*)``; unlike that step it never overshoots the anchor,
however stiff the penalty (ηλF > 2).

Without task boundaries, *when* to refresh the anchors is the question.
Two triggers, both optional:

* every ``N`` samples;
* when the training loss plateaus after a peak (Aljundi, Kelchtermans &
  Tuytelaars 2019, "Task-free continual learning"): the loss is averaged over
  non-overlapping windows; a window mean ``peak_ratio`` above the reference
  marks a peak (the data changed; the first window counts as one: the first
  data is the first "task"). A plateau is a window that no longer falls by more
  than ``plateau_tol`` *after* one that did (the new data was being learned and
  now is), and it consolidates. A loss that never falls after its peak — a flat
  loss, or data the model cannot learn — never consolidates.

>>> import numpy as np
>>> f = OnlineFisher((2, 3), lam=2.0, decay=0.5)
>>> f.update_outer(np.ones(2), np.ones(3))  # the first update sets F (no decay toward 0)
>>> f.consolidate(np.zeros((2, 3)))
>>> theta = np.full((2, 3), 3.0)
>>> f.proximal_step(theta, 0.5)  # (3 + ηλF·0) / (1 + ηλF) with ηλF = 0.5 · 2 · 1
>>> theta[0].tolist()
[1.5, 1.5, 1.5]
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
        self._peak = False  # a peak was seen: wait for the loss to fall
        self._falling = False  # after the peak, a window fell: the next flat one is a plateau
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

    # -- Fisher and proximal step -------------------------------------------
    def update_outer(self, u: np.ndarray, v: np.ndarray) -> None:
        """Fold one squared gradient, given as the outer product ``u vᵀ``, into the Fisher.

        ``F ← γF + (1−γ) u vᵀ`` (the first update sets ``F = u vᵀ``: no decay toward
        the zero initialisation). A linear softmax layer's squared gradient is always
        ``(∂L/∂logits)² ⊗ [x | 1]²``, so the head never forms it.
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

    def proximal_step(self, theta: np.ndarray, lr: float) -> None:
        """Pull ``theta`` toward the anchors in place: ``θ ← (θ + ηλF θ*) / (1 + ηλF)``.

        The minimiser of ``‖θ − θ'‖²/2η + λ/2 · Σ F (θ − θ*)²`` for ``θ' = theta``,
        ``η = lr``. No-op before the first consolidation.
        """
        if not self._anchored:
            return
        k = self.fisher_ * (lr * self.lam)
        theta += k * self.anchor_
        k += 1.0
        theta /= k

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
        falls = self._prev >= 0 and mean < (1.0 - self.plateau_tol) * self._prev
        fire = False
        if self._ref < 0:
            # The first window is the first data: learning it is the first "task".
            self._ref, self._peak = mean, True
        elif not self._peak:
            if mean > (1.0 + self.peak_ratio) * self._ref:
                self._peak = True
            else:
                self._ref = min(self._ref, mean)
        elif falls:
            self._falling = True
        elif self._falling:
            fire, self._peak, self._falling, self._ref = True, False, False, mean
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
            "falling": self._falling,
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
            # Absent from states saved before the detector required a fall after the peak.
            self._falling = bool(counters.get("falling", False))
            self.consolidations = int(counters["consolidations"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFileError(f"fisher counters are invalid: {exc}") from None
        if not 0 <= self._fill < self.window:
            raise StateFileError(f"fisher loss-window fill {self._fill} out of range")
