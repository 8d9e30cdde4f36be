"""LearnerConfig: every setting of a StreamingLearner, frozen and validated.

A config holds settings only; learned arrays live in the components (their
names end in ``_``, as in scikit-learn). Errors name the field, the value and
the allowed range.

>>> cfg = LearnerConfig(dim=8, max_classes=4, head="ncm", budget_bytes=100_000)
>>> cfg.head
'ncm'
>>> LearnerConfig(dim=0, max_classes=4)
Traceback (most recent call last):
...
edgecl.errors.ConfigError: LearnerConfig.dim = 0: must be an integer in [1, 1048576]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from edgecl.errors import ConfigError

__all__ = ["HEADS", "LearnerConfig"]

HEADS = ("ncm", "slda", "softmax")
_BUFFER_DTYPES = ("float16", "float32")
_POLICIES = ("reservoir", "class_balanced")
_FISHER_MODES = ("empirical", "true")
_SLDA_UPDATES = ("lazy", "woodbury")


@dataclass(frozen=True)
class LearnerConfig:
    """Settings of a :class:`~edgecl.StreamingLearner`.

    Every field has a default except ``dim`` and ``max_classes``. Construction
    validates every field and raises :class:`~edgecl.errors.ConfigError`.
    """

    # Length of every embedding / feature vector the learner sees.
    dim: int
    # Labels must lie in [0, max_classes); head arrays are preallocated for all of them.
    max_classes: int
    # "ncm" (nearest class mean), "slda" (streaming LDA) or "softmax" (SGD + replay + EWC).
    head: str = "slda"
    # Hard cap on all preallocated learner arrays; the replay buffer takes what the head leaves.
    budget_bytes: int = 2_000_000
    # Replay buffer slots (softmax head only; NCM/SLDA never replay, so they own no buffer):
    # None = as many as the budget allows, 0 = no buffer.
    buffer_capacity: int | None = None
    # float16 halves buffer memory; embeddings rarely need more than 11 mantissa bits.
    buffer_dtype: str = "float16"
    # "reservoir" = Vitter's Algorithm R; "class_balanced" = CBRS (Chrysakis & Moens 2020).
    buffer_policy: str = "reservoir"
    # Replayed buffer samples per softmax SGD step (latent replay).
    replay_k: int = 8
    # Softmax SGD step size.
    lr: float = 0.05
    # L2 weight decay of the softmax head; keeps logits bounded on unnormalised features.
    weight_decay: float = 0.0
    # EWC penalty strength λ in λ/2·ΣF(θ−θ*)²; 0 disables the Fisher (and its memory).
    ewc_lambda: float = 0.0
    # EWC++ running-Fisher decay γ in F ← γF + (1−γ)g².
    fisher_decay: float = 0.99
    # "empirical" uses the observed label's gradient; "true" the expectation under the model.
    fisher_mode: str = "empirical"
    # Refresh the EWC anchors every N learned samples (0 = never by count).
    consolidate_every: int = 0
    # Refresh the anchors when the training loss plateaus after a peak (task-free trigger).
    consolidate_on_plateau: bool = True
    # Samples per loss window of the plateau detector.
    loss_window: int = 50
    # A window mean this much above the reference (relative) counts as a loss peak.
    peak_ratio: float = 0.5
    # After a peak, a window that falls by less than this (relative) counts as a plateau.
    plateau_tol: float = 0.05
    # SLDA covariance shrinkage ε in (1−ε)Σ + εI (Hayes & Kanan 2020 use 1e-4).
    slda_shrinkage: float = 1e-4
    # Recompute the SLDA precision at predict time once this many samples arrived since.
    slda_refresh_every: int = 32
    # Rank-1 covariance updates batched into one GEMM of this many rows (speed only).
    slda_batch: int = 32
    # "lazy": recompute the precision by inversion every slda_refresh_every samples (exact, O(d³));
    # "woodbury": keep it current by a rank-k Woodbury update per slda_batch samples (O(d²) per
    # sample), for large d such as random-feature stages (M in the thousands).
    slda_update: str = "lazy"
    # Woodbury mode: dtype of the precision and class coefficients (float32 halves memory and time).
    slda_dtype: str = "float64"
    # Woodbury mode: an exact re-inversion bounds round-off and ridge drift every this many samples
    # (also whenever the total weight has grown 4× since the last one); 0 = only the 4× rule.
    slda_exact_every: int = 20_000
    # Per-user standardisation: z-score every embedding with the current user's running
    # mean/variance (updated by observe_one from every window, labelled or not) before the head.
    standardize: bool = False
    # Weight, in windows, of the prior statistics (pre-training's average user) in the user's
    # running mean/variance: a new user starts at the prior and owns the statistics after ~this
    # many windows (300 = 5 min of 2 s windows at a 1 s hop; smaller priors measured worse on
    # held-out users, README "User adaptation").
    standardize_prior_n: float = 300.0
    # Weight of each labelled sample learned without an explicit ``w`` (NCM and SLDA): a weight
    # w counts a device label as w pre-training samples in the class means and the covariance.
    label_weight: float = 1.0
    # The only source of randomness (buffer replacement and replay sampling).
    seed: int = 0
    # Free-form note carried into state files (e.g. the bundle it belongs to).
    tag: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _int(self, "dim", 1, 1 << 20)
        _int(self, "max_classes", 2, 1 << 16)
        _choice(self, "head", HEADS)
        _int(self, "budget_bytes", 1, 1 << 40)
        if self.buffer_capacity is not None:
            _int(self, "buffer_capacity", 0, 1 << 31)
        _choice(self, "buffer_dtype", _BUFFER_DTYPES)
        _choice(self, "buffer_policy", _POLICIES)
        _int(self, "replay_k", 0, 4096)
        _float(self, "lr", 0.0, 10.0, low_open=True)
        _float(self, "weight_decay", 0.0, 1.0)
        _float(self, "ewc_lambda", 0.0, 1e12)
        _float(self, "fisher_decay", 0.0, 1.0, high_open=True)
        _choice(self, "fisher_mode", _FISHER_MODES)
        _int(self, "consolidate_every", 0, 1 << 40)
        _bool(self, "consolidate_on_plateau")
        _int(self, "loss_window", 2, 1 << 20)
        _float(self, "peak_ratio", 0.0, 100.0, low_open=True)
        _float(self, "plateau_tol", 0.0, 1.0)
        _float(self, "slda_shrinkage", 0.0, 1.0)
        _int(self, "slda_refresh_every", 1, 1 << 40)
        _int(self, "slda_batch", 1, 4096)
        _choice(self, "slda_update", _SLDA_UPDATES)
        _choice(self, "slda_dtype", ("float64", "float32"))
        _int(self, "slda_exact_every", 0, 1 << 40)
        if self.slda_update == "woodbury" and not 0 < self.slda_shrinkage < 1:
            raise ConfigError(
                f"LearnerConfig.slda_shrinkage = {self.slda_shrinkage!r}: the woodbury update "
                "needs a shrinkage in (0, 1) (its ridge keeps the precision finite)"
            )
        _bool(self, "standardize")
        _float(self, "standardize_prior_n", 0.0, 1e12)
        _float(self, "label_weight", 0.0, 1e6, low_open=True)
        if self.head == "softmax" and self.label_weight != 1.0:
            raise ConfigError(
                f"LearnerConfig.label_weight = {self.label_weight!r}: the softmax head learns by "
                "SGD and takes no sample weight (1.0); tune lr instead"
            )
        if self.head != "softmax" and self.buffer_capacity:
            raise ConfigError(
                f"LearnerConfig.buffer_capacity = {self.buffer_capacity!r}: only the softmax "
                f"head replays; the {self.head} head owns no buffer (use None or 0)"
            )
        _int(self, "seed", 0, (1 << 63) - 1)
        if not isinstance(self.tag, str) or len(self.tag) > 256:
            raise ConfigError(f"LearnerConfig.tag = {self.tag!r}: must be a string of ≤ 256 chars")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (the state-file form)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnerConfig:
        """Build a config from a dict; unknown keys are an error, not ignored."""
        if not isinstance(data, dict):
            raise ConfigError(f"LearnerConfig: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"LearnerConfig: unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> LearnerConfig:
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"LearnerConfig: unknown field(s) {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


def _int(cfg: LearnerConfig, name: str, lo: int, hi: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"LearnerConfig.{name} = {v!r}: must be an integer in [{lo}, {hi}]")


def _float(
    cfg: LearnerConfig,
    name: str,
    lo: float,
    hi: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > lo if low_open else v >= lo) and (v < hi if high_open else v <= hi)
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ConfigError(
            f"LearnerConfig.{name} = {v!r}: must be a number in {left}{lo}, {hi}{right}"
        )
    object.__setattr__(cfg, name, float(v))


def _choice(cfg: LearnerConfig, name: str, choices: tuple[str, ...]) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        raise ConfigError(f"LearnerConfig.{name} = {v!r}: must be one of {', '.join(choices)}")


def _bool(cfg: LearnerConfig, name: str) -> None:
    v = getattr(cfg, name)
    if not isinstance(v, bool):
        raise ConfigError(f"LearnerConfig.{name} = {v!r}: must be true or false")
