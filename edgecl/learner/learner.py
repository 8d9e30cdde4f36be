"""StreamingLearner: a head, the memory it owns and per-user standardisation, under one budget.

The learner is task-free and class-incremental: it never needs task ids and a
new label may appear at any time, up to ``max_classes``. Everything is
preallocated at construction from ``budget_bytes``: the optional per-user
standardisation (:class:`~edgecl.learner.usernorm.UserNorm`) and the head with
what it owns — NCM and SLDA their statistics only, the softmax head its replay
buffer (which takes what the budget leaves) and, with ``ewc_lambda > 0``, its
Fisher. Input is validated before anything changes, so a bad sample raises
:class:`~edgecl.errors.InputError` (a ``ValueError``) and leaves the learner
exactly as it was.

Three verbs change the state: :meth:`learn_one` (a labelled sample),
:meth:`observe_one` (any embedded window, labelled or not: the unsupervised
user statistics; a no-op unless ``standardize``) and :meth:`reset_user`.

>>> import numpy as np
>>> lr = StreamingLearner(LearnerConfig(dim=3, max_classes=4, head="slda", budget_bytes=20_000))
>>> lr.learn_many(np.eye(3), np.array([0, 1, 2]))
>>> int(lr.predict_one(np.array([0.0, 0.9, 0.1])))
1
>>> rep = lr.memory_report()
>>> rep["state_bytes"] <= rep["budget_bytes"], rep["buffer_capacity"]
(True, 0)
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgecl.errors import BudgetError, ConfigError, InputError
from edgecl.learner.config import LearnerConfig
from edgecl.learner.fisher import OnlineFisher
from edgecl.learner.fleet_memory import FleetMemory
from edgecl.learner.heads import head_class, make_head
from edgecl.learner.merge import MERGEABLE_HEADS, HeadStats, average_softmax, check_compatible
from edgecl.learner.reservoir import ReservoirBuffer
from edgecl.learner.usernorm import UserNorm

__all__ = ["StreamingLearner", "plan_budget"]


def plan_budget(cfg: LearnerConfig) -> dict[str, int]:
    """Split ``cfg.budget_bytes`` among the parts the config needs, before allocating.

    Keys: ``head_bytes``, ``fisher_bytes``, ``buffer_bytes``, ``buffer_capacity``,
    ``user_bytes`` and ``state_bytes`` (their sum). Only the softmax head owns a
    buffer and a Fisher; NCM and SLDA plan 0 for both. Raises
    :class:`~edgecl.errors.BudgetError` when the fixed parts do not fit.
    """
    user = UserNorm.nbytes_for(cfg.dim) if cfg.standardize else 0
    if user > cfg.budget_bytes:
        raise BudgetError(
            f"budget_bytes={cfg.budget_bytes:,} is too small: per-user standardisation alone "
            f"needs {user:,} B for dim={cfg.dim}"
        )
    plan = head_class(cfg).plan(cfg, cfg.budget_bytes - user)
    plan["user_bytes"] = user
    plan["state_bytes"] = (
        plan["head_bytes"] + plan["fisher_bytes"] + plan["buffer_bytes"] + plan["user_bytes"]
    )
    return plan


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
        self.head = make_head(config, self._plan)
        self.user: UserNorm | None = (
            UserNorm(config.dim, config.standardize_prior_n) if config.standardize else None
        )
        self.n_learned = 0
        self.fleet: FleetMemory | None = None  # set by join_fleet

    @property
    def buffer(self) -> ReservoirBuffer | None:
        """The replay buffer the head owns (softmax), else None."""
        return self.head.parts().get("buffer")

    @property
    def fisher(self) -> OnlineFisher | None:
        """The online Fisher the head owns (softmax with ``ewc_lambda > 0``), else None."""
        return self.head.parts().get("fisher")

    def parts(self) -> dict[str, Any]:
        """Every stateful component, by state-file prefix: head, what it owns, user."""
        own: dict[str, Any] = {"head": self.head, **self.head.parts()}
        if self.user is not None:
            own["user"] = self.user
        if self.fleet is not None:
            own["fleet"] = self.fleet
        return own

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

    def _weight(self, w: Any) -> float:
        if w is None:
            return self.config.label_weight
        if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.number)):
            raise InputError(f"weight {w!r} must be a number")
        w = float(w)
        if not (np.isfinite(w) and w > 0):
            raise InputError(f"weight {w} must be finite and > 0")
        if self.config.head == "softmax" and w != 1.0:
            raise InputError("the softmax head takes no sample weight (w must be 1)")
        return w

    # -- learning ------------------------------------------------------------
    def learn_one(self, x: Any, y: Any, w: float | None = None) -> None:
        """Learn one labelled sample with weight ``w`` (default ``label_weight``).

        Test-then-train callers predict first. ``learn_one`` does not update the
        user statistics: call :meth:`observe_one` once for every embedded
        window, labelled or not.
        """
        v, label, weight = self._vector(x), self._label(y), self._weight(w)
        self._learn(v, label, weight)

    def learn_many(self, X: Any, Y: Any, w: float | None = None, groups: Any = None) -> None:
        """Learn rows of ``X`` in order; identical to the ``learn_one`` loop.

        The whole batch is validated first: one bad row rejects the batch and
        the learner is left unchanged.

        ``groups`` (pre-training with ``standardize``): the subject of every row.
        Each group is z-scored with its own mean and variance before the head
        learns it, and the averages of the groups' statistics become the prior
        of a new user (the current user is reset). This is how a head is fitted
        so that the device's per-user standardisation agrees with it.
        """
        M = self._matrix(X)
        L = self._labels(Y, M.shape[0])
        weight = self._weight(w)
        if groups is not None:
            if self.user is None:
                raise ConfigError("learn_many(groups=...) needs LearnerConfig.standardize = True")
            G = np.asarray(groups)
            if G.shape != (M.shape[0],) or G.dtype.kind not in "iu":
                raise InputError(
                    f"groups has shape {G.shape} / dtype {G.dtype}; need ({M.shape[0]},) integers"
                )
            Z, mean, var = UserNorm.fit_groups(M, G)
            for i in range(M.shape[0]):
                self.head.learn(Z[i], int(L[i]), weight)
            self.n_learned += M.shape[0]
            self.user.set_prior(mean, var)
            return
        for i in range(M.shape[0]):
            self._learn(M[i], int(L[i]), weight)

    def _learn(self, x: np.ndarray, y: int, w: float) -> None:
        z = x if self.user is None else self.user.transform(x)
        self.head.learn(z, y, w)
        self.n_learned += 1

    def observe_one(self, x: Any) -> None:
        """Add one embedded window (labelled or not) to the current user's statistics.

        A no-op unless ``standardize``; validated like :meth:`learn_one`.
        """
        v = self._vector(x)
        if self.user is not None:
            self.user.observe_one(v)

    def observe_many(self, X: Any) -> None:
        """:meth:`observe_one` for every row of ``X`` (validated as a whole first)."""
        M = self._matrix(X)
        if self.user is not None:
            self.user.observe_many(M)

    def reset_user(self) -> None:
        """Start a new user: forget the user statistics, keep everything learned.

        The labels learned so far stay in the head (nothing learned is lost);
        only the running mean/variance restart from the pre-training prior.
        """
        if self.user is not None:
            self.user.reset()

    def _z(self, M: np.ndarray) -> np.ndarray:
        return M if self.user is None else self.user.transform(M)

    # -- prediction ----------------------------------------------------------
    def scores(self, X: Any) -> np.ndarray:
        """Head scores ``(n, max_classes)`` of the rows of ``X`` (log-probabilities up to
        a per-row constant; ``-inf`` for classes never learned), after standardisation."""
        return self.head.scores(self._z(self._matrix(X)))

    def _proba(self, M: np.ndarray) -> np.ndarray:
        s = self.head.scores(self._z(M))
        s -= s.max(axis=1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def predict_one(self, x: Any) -> int:
        """Most likely class of ``x``, or -1 before any label was learned."""
        v = self._vector(x)
        if not self.head.seen_mask.any():
            return -1
        return int(np.argmax(self.head.scores(self._z(v[None, :]))[0]))

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
        return np.argmax(self.head.scores(self._z(M)), axis=1).astype(np.int64)

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

    # -- merging (fleet) -------------------------------------------------------
    def statistics(self) -> HeadStats:
        """The head's sufficient statistics (NCM, SLDA): what a fleet upload is made of.

        Raises :class:`~edgecl.errors.ConfigError` for a softmax head (it has none).
        """
        if self.config.head not in MERGEABLE_HEADS:
            raise ConfigError(
                f"a {self.config.head} head has no sufficient statistics; exact merging and "
                f"deltas need head='ncm' or 'slda' (softmax heads: average_softmax, approximate)"
            )
        return self.head.statistics()

    def merge(self, *others: StreamingLearner) -> None:
        """Add what ``others`` learned to this learner, in place.

        NCM/SLDA: exact — the head becomes the one a learner fed all the streams would
        have (to round-off), whatever their order or split. Softmax: Fisher-weighted
        parameter averaging (approximate, see :func:`~edgecl.learner.merge.average_softmax`).
        Everything is checked before anything changes: same bundle (config ``tag``),
        same config, valid statistics; else :class:`~edgecl.errors.ConfigError` or
        :class:`~edgecl.errors.StateFileError` and this learner is untouched. This
        learner keeps its own user statistics, replay buffer and Fisher.
        """
        check_compatible([self, *others])
        if self.config.head not in MERGEABLE_HEADS:
            theta = average_softmax([self, *others])
            counts = sum((o.head.counts_ for o in others), self.head.counts_.copy())
            self.head.theta_[...] = theta
            self.head.counts_[...] = counts
            self.head._sync_seen()
        else:
            total = self.statistics()
            for i, other in enumerate(others):
                total = total + other.statistics().validate(f"learner {i + 1}")
            self.apply_statistics(total)
        self.n_learned += sum(o.n_learned for o in others)

    def join_fleet(self, device: str, base: HeadStats | None = None) -> FleetMemory:
        """Start keeping fleet bookkeeping (saved with the state; see
        :mod:`edgecl.learner.fleet_memory`). ``base``: the merged head this learner
        starts from — the bundle head it was loaded from (default: its statistics now,
        right for a learner that has learned nothing since). Raises
        :class:`~edgecl.errors.BudgetError` when the bookkeeping does not fit the budget.
        Joining again only renames the device."""
        if self.fleet is not None:
            self.fleet.device = device
            return self.fleet
        cfg = self.config
        st = self.statistics()
        need = FleetMemory.nbytes_for(cfg.max_classes, cfg.dim, st.scatter is not None)
        have = self.memory_report()["state_bytes"]
        if have + need > cfg.budget_bytes:
            raise BudgetError(
                f"budget_bytes={cfg.budget_bytes:,} is too small to join a fleet: the state "
                f"holds {have:,} B and the fleet bookkeeping needs {need:,} B more"
            )
        fleet = FleetMemory(cfg.max_classes, cfg.dim, st.scatter is not None)
        fleet.set_base(st if base is None else base.validate("fleet base"))
        fleet.device = device
        self.fleet = fleet
        return fleet

    def apply_statistics(self, stats: HeadStats) -> None:
        """Replace the head's statistics by ``stats`` (validated first; derived arrays
        are rebuilt exactly). The fleet client uses this to adopt a merged head."""
        mine = self.statistics()
        mine.check_like(stats)
        stats.validate("merged statistics")
        self.head.set_statistics(stats)

    # -- memory and persistence ----------------------------------------------
    def memory_report(self) -> dict[str, int]:
        """Every allocated byte, by part; ``state_bytes <= budget_bytes`` always."""
        head = self.head.nbytes
        fisher, buf = self.fisher, self.buffer
        fisher_bytes = fisher.nbytes if fisher is not None else 0
        buf_bytes = buf.nbytes if buf is not None else 0
        user_bytes = self.user.nbytes if self.user is not None else 0
        fleet_bytes = self.fleet.nbytes if self.fleet is not None else 0
        return {
            "budget_bytes": self.config.budget_bytes,
            "state_bytes": head + fisher_bytes + buf_bytes + user_bytes + fleet_bytes,
            "head_bytes": head,
            "fisher_bytes": fisher_bytes,
            "buffer_bytes": buf_bytes,
            "user_bytes": user_bytes,
            "fleet_bytes": fleet_bytes,
            "buffer_capacity": buf.capacity if buf is not None else 0,
            "buffer_len": len(buf) if buf is not None else 0,
            "buffer_seen": buf.seen if buf is not None else 0,
            "user_windows": self.user.n_ if self.user is not None else 0,
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
        buf = self.buffer
        extra = "" if buf is None else f", buffer={len(buf)}/{buf.capacity}"
        if self.user is not None:
            extra += f", user_windows={self.user.n_}"
        return (
            f"StreamingLearner(head={c.head!r}, dim={c.dim}, max_classes={c.max_classes}, "
            f"learned={self.n_learned}{extra})"
        )
