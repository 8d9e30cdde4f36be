"""Putting a daemon together: bundle or ``features=DIM`` → extractor; state → learner.

The learner comes from, in order: the newest checkpoint in ``state_dir`` that
verifies (the one before if it is corrupt), the bundle's ``head.safetensors``,
or a new :class:`~edgecl.StreamingLearner` (``learner_options``: LearnerConfig
fields such as ``head``, ``max_classes``, ``budget_bytes``; the budget defaults
to the device profile's ``memory_budget_bytes``). Serial and checkpoint
defaults come from the device profile, flags override them.

>>> d = build_daemon(DaemonConfig(source="loop://"), features=8,
...                  learner_options={"max_classes": 3, "budget_bytes": 50_000})
>>> d.learner.config.dim, d.learner.config.max_classes, d.windower is None
(8, 3, True)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgecl.errors import ConfigError
from edgecl.learner import LearnerConfig, StreamingLearner
from edgecl.runtime.checkpoint import CheckpointStore
from edgecl.runtime.daemon import Daemon, DaemonConfig
from edgecl.runtime.transport import check_source

__all__ = ["IdentityExtractor", "build_daemon", "config_from_profile"]

log = logging.getLogger("edgecl.run")


class IdentityExtractor:
    """The extractor for ``features=DIM``: the input already is the embedding."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.input_shape = (dim,)
        self.providers: list[str] = []

    def embed(self, x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float32).reshape(self.dim)

    def warmup(self, n: int = 3) -> None:
        """Nothing to warm up."""


def _fresh_config(dim: int, n_classes: int, options: dict[str, Any], budget: int) -> LearnerConfig:
    fields = {"head": "slda", "max_classes": max(2, n_classes), "budget_bytes": budget}
    fields.update({k: v for k, v in options.items() if v is not None})
    return LearnerConfig(dim=dim, **fields)


def build_daemon(
    config: DaemonConfig,
    *,
    bundle: Any = None,
    features: int | None = None,
    profile: Any = None,
    learner_options: dict[str, Any] | None = None,
    public_key: Any = None,
    **kwargs: Any,
) -> Daemon:
    """A ready :class:`Daemon`: extractor from ``bundle`` (a path or Bundle; None → the
    shipped default) or ``features=DIM``; the learner from the newest valid checkpoint
    in ``state_dir``, else the bundle's head, else fresh (``learner_options``:
    LearnerConfig fields for that case, e.g. ``max_classes``, ``head``).

    ``public_key`` (a PEM path, bytes or key; None: the profile's
    ``bundle_public_key``, else ``$EDGECL_BUNDLE_PUBKEY``) makes a bundle given as a
    path load only with a valid signature (:meth:`Bundle.load`)."""
    check_source(config.source)  # fail fast, before loading and warming up a model
    options = dict(learner_options or {})
    window = None
    initial: StreamingLearner | None = None
    max_classes = options.pop("max_classes", None)
    n_classes = max_classes or 16
    if features is not None:
        if bundle is not None:
            raise ConfigError("give a bundle or features=DIM, not both")
        extractor: Any = IdentityExtractor(features)
        origin = "new learner"
    else:
        from edgecl.runtime.bundle import Bundle

        if public_key is None and profile is not None:
            public_key = getattr(profile, "bundle_public_key", None)
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, public_key=public_key)
        log.info("bundle %s, signed by %s", b.path, b.signed_by or "nobody (not checked)")
        extractor = b.extractor(profile)
        window = b.window
        initial = b.initial_learner()
        n_classes = max_classes or len(b.class_names) or 16
        origin = f"bundle head {b.head_path}" if initial is not None else "new learner"
    learner = None
    if config.state_dir:
        learner, path = CheckpointStore(config.state_dir).load()
        if path is not None:
            origin = f"checkpoint {path}"
    if learner is None:
        learner = initial
    if learner is None:
        budget = profile.memory_budget_bytes if profile is not None else 8_000_000
        learner = StreamingLearner(_fresh_config(extractor.dim, n_classes, options, budget))
    log.info("learner: %r from %s", learner, origin)
    return Daemon(config, extractor, learner, window=window, **kwargs)


def config_from_profile(profile: Any, **overrides: Any) -> DaemonConfig:
    """A :class:`DaemonConfig` whose serial and checkpoint defaults come from a device profile."""
    base = {
        "baudrate": profile.baudrate,
        "serial_timeout_s": profile.serial_timeout_s,
        "checkpoint_every_samples": profile.checkpoint_every_samples,
        "checkpoint_every_s": profile.checkpoint_every_s,
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return DaemonConfig(**base)
