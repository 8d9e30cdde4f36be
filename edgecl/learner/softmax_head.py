"""The softmax head: a linear classifier trained by SGD, with latent replay and EWC++.

:class:`SoftmaxHead` is the one head that needs memory beyond its weights: it
owns a :class:`~edgecl.learner.reservoir.ReservoirBuffer` of past embeddings
(latent replay) and, with ``ewc_lambda > 0``, an
:class:`~edgecl.learner.fisher.OnlineFisher` (EWC++). Each learned sample is one
SGD step on itself plus ``replay_k`` replayed samples. The prototype heads (NCM,
SLDA) are in ``heads.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecl.errors import BudgetError
from edgecl.learner.config import LearnerConfig
from edgecl.learner.fisher import OnlineFisher
from edgecl.learner.heads import _F8, _Head
from edgecl.learner.reservoir import ReservoirBuffer

__all__ = ["SoftmaxHead"]


class SoftmaxHead(_Head):
    """Linear softmax classifier ``θ = [W | b]`` of shape (max_classes, dim + 1).

    :meth:`learn` replays ``replay_k`` samples from the head's own reservoir
    buffer (latent replay), takes one SGD step on the new sample plus them
    (:meth:`step_rows`), and stores the new sample. The logits of classes never
    seen are masked out, so a new class does not push down the others before it
    exists. With ``ewc_lambda > 0`` the head also owns an :class:`OnlineFisher`
    that pulls it toward its anchors (EWC++), consolidated when the loss plateaus.
    """

    name = "softmax"

    def __init__(self, cfg: LearnerConfig, buffer_capacity: int = 0) -> None:
        super().__init__(cfg)
        self.buffer = ReservoirBuffer(
            buffer_capacity,
            cfg.dim,
            dtype=cfg.buffer_dtype,
            seed=cfg.seed,
            policy=cfg.buffer_policy,
            max_classes=cfg.max_classes,
        )
        self.fisher: OnlineFisher | None = None
        if cfg.ewc_lambda > 0:
            self.fisher = OnlineFisher(
                self.fisher_shape(cfg),
                lam=cfg.ewc_lambda,
                decay=cfg.fisher_decay,
                consolidate_every=cfg.consolidate_every,
                on_plateau=cfg.consolidate_on_plateau,
                window=cfg.loss_window,
                peak_ratio=cfg.peak_ratio,
                plateau_tol=cfg.plateau_tol,
            )
        self.lr = cfg.lr
        self.weight_decay = cfg.weight_decay
        self.fisher_mode = cfg.fisher_mode
        self.theta_ = np.zeros((cfg.max_classes, cfg.dim + 1), dtype=np.float64)
        # Preallocated batch rows [x | 1] (the new sample, then replay_k replayed
        # ones) and their labels: the hot path fills them in place.
        self._xb = np.ones((1 + cfg.replay_k, cfg.dim + 1), dtype=np.float64)
        self._yb = np.zeros(1 + cfg.replay_k, dtype=np.int64)
        self._rows = np.arange(1 + cfg.replay_k)

    @staticmethod
    def nbytes_for(cfg: LearnerConfig) -> int:
        work = _F8 * (1 + cfg.replay_k) * (cfg.dim + 3)
        return _F8 * cfg.max_classes * (cfg.dim + 2) + work + _Head._mask_nbytes(cfg)

    @staticmethod
    def fisher_shape(cfg: LearnerConfig) -> tuple[int, int]:
        """Shape of θ, the parameters EWC protects."""
        return (cfg.max_classes, cfg.dim + 1)

    @classmethod
    def plan(cls, cfg: LearnerConfig, room: int) -> dict[str, int]:
        """Head and Fisher first; the replay buffer takes what ``room`` leaves
        (or exactly ``buffer_capacity`` slots when the config fixes it)."""
        head = cls.nbytes_for(cfg)
        fisher = (
            OnlineFisher.nbytes_for(cls.fisher_shape(cfg), cfg.loss_window)
            if cfg.ewc_lambda > 0
            else 0
        )
        buf_fixed = ReservoirBuffer.fixed_bytes(cfg.max_classes, cfg.buffer_policy)
        fixed = head + fisher + buf_fixed
        per_item = ReservoirBuffer.bytes_per_item(cfg.dim, cfg.buffer_dtype)
        if fixed > room:
            raise BudgetError(
                f"budget_bytes={cfg.budget_bytes:,} is too small: the softmax head needs "
                f"{head:,} B, the Fisher {fisher:,} B and the buffer counters {buf_fixed:,} B "
                f"(= {fixed:,} B, {room:,} B available) for dim={cfg.dim}, "
                f"max_classes={cfg.max_classes}"
            )
        slots = (room - fixed) // per_item
        if cfg.buffer_capacity is None:
            capacity = slots
        elif cfg.buffer_capacity > slots:
            raise BudgetError(
                f"buffer_capacity={cfg.buffer_capacity:,} needs {cfg.buffer_capacity * per_item:,} "
                f"B but budget_bytes={cfg.budget_bytes:,} leaves {room - fixed:,} B after the "
                f"fixed parts ({cfg.budget_bytes - room + fixed:,} B): at most {slots:,} slots fit"
            )
        else:
            capacity = cfg.buffer_capacity
        if cfg.replay_k > 0 and capacity == 0:
            raise BudgetError(
                f"replay_k={cfg.replay_k} needs a replay buffer, but budget_bytes="
                f"{cfg.budget_bytes:,} leaves no room for one slot ({per_item} B) after "
                f"{cfg.budget_bytes - room + fixed:,} B of fixed parts"
            )
        return {
            "head_bytes": head,
            "fisher_bytes": fisher,
            "buffer_bytes": buf_fixed + capacity * per_item,
            "buffer_capacity": capacity,
        }

    def parts(self) -> dict[str, Any]:
        own: dict[str, Any] = {"buffer": self.buffer}
        if self.fisher is not None:
            own["fisher"] = self.fisher
        return own

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts_": self.counts_, "theta_": self.theta_}

    def cache_arrays(self) -> dict[str, np.ndarray]:
        return {**super().cache_arrays(), "xb": self._xb, "yb": self._yb, "rows": self._rows}

    def learn(self, x: np.ndarray, y: int, w: float = 1.0) -> None:
        """Replay, one SGD step (EWC-regularised when the head owns a Fisher), store ``x``.

        ``w`` must be 1: SGD takes no sample weight (the config enforces it).
        """
        Xw, Yw = self.work_rows()
        Xw[0] = x
        Yw[0] = y
        n = self.buffer.sample_into(Xw[1:], Yw[1:])
        loss = self.step_rows(1 + n, self.fisher)
        if self.fisher is not None and self.fisher.observe_loss(loss):
            self.fisher.consolidate(self.theta_)
        self.buffer.add(x, y)

    def _logits(self, X: np.ndarray) -> np.ndarray:
        s = X @ self.theta_[:, :-1].T
        s += self.theta_[:, -1]
        s += self._mask
        return s

    def scores(self, X: np.ndarray) -> np.ndarray:
        return self._logits(X)

    def work_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Views of the preallocated batch: X rows (1 + replay_k, dim) and labels.

        Fill row 0 with the new sample and the next rows with replayed ones,
        then call :meth:`step_rows` with the number of rows filled.
        """
        return self._xb[:, :-1], self._yb

    def step(self, X: np.ndarray, Y: np.ndarray, fisher: OnlineFisher | None) -> float:
        """SGD step on the batch ``(X, Y)``; ``X[0], Y[0]`` is the new sample.

        Copies the batch into the work rows and calls :meth:`step_rows`; at most
        ``1 + replay_k`` rows.
        """
        m = X.shape[0]
        if not 1 <= m <= self._yb.shape[0]:
            raise ValueError(f"batch of {m} rows: need 1 to {self._yb.shape[0]} (1 + replay_k)")
        self._xb[:m, :-1] = X
        self._yb[:m] = Y
        return self.step_rows(m, fisher)

    def step_rows(self, m: int, fisher: OnlineFisher | None) -> float:
        """SGD step on the first ``m`` work rows; row 0 is the new sample.

        Returns the cross-entropy of the new sample before the step (the
        prequential loss the plateau detector watches). When ``fisher`` is given,
        its running Fisher is updated from the new sample and, once anchored,
        the step is pulled toward the anchors (:meth:`OnlineFisher.proximal_step`).
        """
        Xb, Y = self._xb[:m], self._yb[:m]
        y0 = int(Y[0])
        self._count(y0)
        G = Xb @ self.theta_.T
        G += self._mask
        G -= G.max(axis=1, keepdims=True)
        np.exp(G, out=G)
        G /= G.sum(axis=1, keepdims=True)
        loss = -float(np.log(max(G[0, y0], 1e-300)))
        G[self._rows[:m], Y] -= 1.0  # ∂CE/∂logits = p − onehot
        if fisher is not None:
            g0 = G[0]
            if self.fisher_mode == "true":
                # E_{y~p}[(p_c − 1[c=y])²] = p_c(1 − p_c): the expected Fisher of a softmax row.
                p0 = g0.copy()
                p0[y0] += 1.0
                g2 = p0 * (1.0 - p0)
            else:
                g2 = g0 * g0
            fisher.update_outer(g2, Xb[0] * Xb[0])
        G *= self.lr / m
        step = G.T @ Xb
        if self.weight_decay:
            step += (self.lr * self.weight_decay) * self.theta_
        self.theta_ -= step
        if fisher is not None:
            # The EWC term as a proximal (implicit) step: the gradient step for small
            # ηλF, and unlike it never overshooting the anchor when ηλF > 2 (stiff EWC).
            fisher.proximal_step(self.theta_, self.lr)
        return loss
