"""StreamingLearner: a head, a replay buffer and an online Fisher under one byte budget.

The learner is task-free and class-incremental: it never needs task ids and a
new label may appear at any time, up to ``max_classes``. Everything is
preallocated at construction from ``budget_bytes``: the head for all classes,
the Fisher and anchors (softmax head with ``ewc_lambda > 0``), and the replay
buffer takes what remains. Input is validated before anything changes, so a bad
sample raises :class:`~edgecl.errors.InputError` (a ``ValueError``) and leaves
the learner exactly as it was.

>>> import numpy as np
>>> lr = StreamingLearner(LearnerConfig(dim=3, max_classes=4, head="slda", budget_bytes=20_000))
>>> lr.learn_many(np.eye(3), np.array([0, 1, 2]))
>>> int(lr.predict_one(np.array([0.0, 0.9, 0.1])))
1
>>> rep = lr.memory_report()
>>> rep["state_bytes"] <= rep["budget_bytes"]
True
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgecl.errors import BudgetError, InputError
from edgecl.learner.config import LearnerConfig
from edgecl.learner.fisher import OnlineFisher
from edgecl.learner.heads import SoftmaxHead, head_nbytes, make_head
from edgecl.learner.reservoir import ReservoirBuffer

__all__ = ["StreamingLearner", "plan_budget"]


def plan_budget(cfg: LearnerConfig) -> dict[str, int]:
    """Split ``cfg.budget_bytes`` into head, Fisher and buffer bytes, before allocating.

    Raises :class:`~edgecl.errors.BudgetError` when the fixed parts do not fit.
    """
    head = head_nbytes(cfg)
    fisher = _fisher_shape(cfg)
    fisher_bytes = OnlineFisher.nbytes_for(fisher, cfg.loss_window) if fisher else 0
    buf_fixed = ReservoirBuffer.fixed_bytes(cfg.max_classes, cfg.buffer_policy)
    fixed = head + fisher_bytes + buf_fixed
    per_item = ReservoirBuffer.bytes_per_item(cfg.dim, cfg.buffer_dtype)
    if fixed > cfg.budget_bytes:
        raise BudgetError(
            f"budget_bytes={cfg.budget_bytes:,} is too small: the {cfg.head} head needs "
            f"{head:,} B, the Fisher {fisher_bytes:,} B and the buffer counters {buf_fixed:,} B "
            f"(= {fixed:,} B) for dim={cfg.dim}, max_classes={cfg.max_classes}"
        )
    room = (cfg.budget_bytes - fixed) // per_item
    if cfg.buffer_capacity is None:
        capacity = room
    elif cfg.buffer_capacity > room:
        raise BudgetError(
            f"buffer_capacity={cfg.buffer_capacity:,} needs {cfg.buffer_capacity * per_item:,} B "
            f"but budget_bytes={cfg.budget_bytes:,} leaves {cfg.budget_bytes - fixed:,} B after "
            f"the fixed parts ({fixed:,} B): at most {room:,} slots fit"
        )
    else:
        capacity = cfg.buffer_capacity
    if cfg.head == "softmax" and cfg.replay_k > 0 and capacity == 0:
        raise BudgetError(
            f"replay_k={cfg.replay_k} needs a replay buffer, but budget_bytes={cfg.budget_bytes:,} "
            f"leaves no room for one slot ({per_item} B) after {fixed:,} B of fixed parts"
        )
    buffer_bytes = buf_fixed + capacity * per_item
    return {
        "head_bytes": head,
        "fisher_bytes": fisher_bytes,
        "buffer_bytes": buffer_bytes,
        "buffer_capacity": capacity,
        "state_bytes": head + fisher_bytes + buffer_bytes,
    }


def _fisher_shape(cfg: LearnerConfig) -> tuple[int, int] | None:
    # Only the softmax head has gradient-trained parameters for EWC to protect.
    if cfg.head == "softmax" and cfg.ewc_lambda > 0:
        return (cfg.max_classes, cfg.dim + 1)
    return None


class StreamingLearner:
    """Online, task-free, class-incremental learner over fixed-length vectors.

    Parameters
    ----------
    config : LearnerConfig
        All settings; see :class:`~edgecl.LearnerConfig`.
    """

    def __init__(self, config: LearnerConfig) -> None:
        if not isinstance(config, LearnerConfig):
            raise TypeError(f"StreamingLearner needs a LearnerConfig, got {type(config).__name__}")
        self.config = config
        self._plan = plan_budget(config)
        self.head = make_head(config)
        shape = _fisher_shape(config)
        self.fisher: OnlineFisher | None = None
        if shape is not None:
            self.fisher = OnlineFisher(
                shape,
                lam=config.ewc_lambda,
                decay=config.fisher_decay,
                consolidate_every=config.consolidate_every,
                on_plateau=config.consolidate_on_plateau,
                window=config.loss_window,
                peak_ratio=config.peak_ratio,
                plateau_tol=config.plateau_tol,
            )
        self.buffer = ReservoirBuffer(
            self._plan["buffer_capacity"],
            config.dim,
            dtype=config.buffer_dtype,
            seed=config.seed,
            policy=config.buffer_policy,
            max_classes=config.max_classes,
        )
        self.n_learned = 0

    # -- validation ----------------------------------------------------------
    def _vector(self, x: Any) -> np.ndarray:
        try:
            v = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"x must be numeric: {exc}") from None
        if v.shape != (self.config.dim,):
            raise InputError(f"x has shape {v.shape}; expected ({self.config.dim},)")
        if not np.isfinite(v).all():
            raise InputError("x contains NaN or inf")
        return v

    def _matrix(self, X: Any) -> np.ndarray:
        try:
            M = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"X must be numeric: {exc}") from None
        if M.ndim != 2 or M.shape[1] != self.config.dim:
            raise InputError(f"X has shape {M.shape}; expected (n, {self.config.dim})")
        if not np.isfinite(M).all():
            bad = int(np.flatnonzero(~np.isfinite(M).all(axis=1))[0])
            raise InputError(f"X row {bad} contains NaN or inf")
        return M

    def _label(self, y: Any) -> int:
        if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer)):
            raise InputError(f"label {y!r} must be an integer, got {type(y).__name__}")
        if not 0 <= y < self.config.max_classes:
            raise InputError(f"label {y} outside [0, {self.config.max_classes})")
        return int(y)

    def _labels(self, Y: Any, n: int) -> np.ndarray:
        L = np.asarray(Y)
        if L.shape != (n,):
            raise InputError(f"Y has shape {L.shape}; expected ({n},)")
        if L.dtype.kind not in "iu":
            raise InputError(f"Y must hold integers, got dtype {L.dtype}")
        bad = (L < 0) | (L >= self.config.max_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"Y[{i}] = {L[i]} outside [0, {self.config.max_classes})")
        return L.astype(np.int64)

    # -- learning ------------------------------------------------------------
    def learn_one(self, x: Any, y: Any) -> None:
        """Learn one labelled sample (test-then-train callers predict first)."""
        self._learn(self._vector(x), self._label(y))

    def learn_many(self, X: Any, Y: Any) -> None:
        """Learn rows of ``X`` in order; identical to the ``learn_one`` loop.

        The whole batch is validated first: one bad row rejects the batch and
        the learner is left unchanged.
        """
        M = self._matrix(X)
        L = self._labels(Y, M.shape[0])
        for i in range(M.shape[0]):
            self._learn(M[i], int(L[i]))

    def _learn(self, x: np.ndarray, y: int) -> None:
        head = self.head
        if isinstance(head, SoftmaxHead):
            # Experience replay: replay from memory first, then store the new sample.
            Xw, Yw = head.work_rows()
            Xw[0] = x
            Yw[0] = y
            n = self.buffer.sample_into(Xw[1:], Yw[1:])
            loss = head.step_rows(1 + n, self.fisher)
            if self.fisher is not None and self.fisher.observe_loss(loss):
                self.fisher.consolidate(head.theta_)
        else:
            head.learn(x, y)
        self.buffer.add(x, y)
        self.n_learned += 1

    # -- prediction ----------------------------------------------------------
    def _proba(self, M: np.ndarray) -> np.ndarray:
        s = self.head.scores(M)
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def predict_one(self, x: Any) -> int:
        """Most likely class of ``x``, or -1 before any label was learned."""
        v = self._vector(x)
        if not self.head.seen_mask.any():
            return -1
        return int(np.argmax(self.head.scores(v[None, :])[0]))

    def predict_proba_one(self, x: Any) -> dict[int, float]:
        """Probabilities over the classes seen so far (empty before any label)."""
        v = self._vector(x)
        seen = np.flatnonzero(self.head.seen_mask)
        if seen.size == 0:
            return {}
        p = self._proba(v[None, :])[0]
        return {int(c): float(p[c]) for c in seen}

    def predict_many(self, X: Any) -> np.ndarray:
        """Vectorised :meth:`predict_one` over the rows of ``X`` (int64 array)."""
        M = self._matrix(X)
        if not self.head.seen_mask.any():
            return np.full(M.shape[0], -1, dtype=np.int64)
        if M.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        return np.argmax(self.head.scores(M), axis=1).astype(np.int64)

    def predict_proba_many(self, X: Any) -> np.ndarray:
        """(n, max_classes) probabilities; columns of unseen classes are 0."""
        M = self._matrix(X)
        if not self.head.seen_mask.any():
            return np.zeros((M.shape[0], self.config.max_classes))
        return self._proba(M)

    @property
    def classes_(self) -> np.ndarray:
        """Labels learned at least once, ascending."""
        return np.flatnonzero(self.head.seen_mask)

    # -- memory and persistence ----------------------------------------------
    def memory_report(self) -> dict[str, int]:
        """Every allocated byte, by part; ``state_bytes <= budget_bytes`` always."""
        head = self.head.nbytes
        fisher = self.fisher.nbytes if self.fisher is not None else 0
        buf = self.buffer.nbytes
        return {
            "budget_bytes": self.config.budget_bytes,
            "state_bytes": head + fisher + buf,
            "head_bytes": head,
            "fisher_bytes": fisher,
            "buffer_bytes": buf,
            "buffer_capacity": self.buffer.capacity,
            "buffer_len": len(self.buffer),
            "buffer_seen": self.buffer.seen,
            "n_learned": self.n_learned,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state atomically to ``path`` (safetensors + checksummed JSON)."""
        from edgecl.learner.state import save_state

        save_state(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StreamingLearner:
        """Read a state file written by :meth:`save`; verifies every byte."""
        from edgecl.learner.state import load_state

        return load_state(path)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"StreamingLearner(head={c.head!r}, dim={c.dim}, max_classes={c.max_classes}, "
            f"learned={self.n_learned}, buffer={len(self.buffer)}/{self.buffer.capacity})"
        )
