"""Putting a daemon together: bundle or ``features=DIM`` → extractor; state → learner.

The learner comes from, in order: the newest checkpoint in ``state_dir`` that
verifies (the one before if it is corrupt), the bundle's ``head.safetensors``,
or a new :class:`~edgecl.StreamingLearner` (``learner_options``: LearnerConfig
fields such as ``head``, ``max_classes``, ``budget_bytes``; the budget defaults
to the device profile's ``memory_budget_bytes``); then the label journal's
records are replayed onto it (:mod:`edgecl.runtime.journal`). Serial,
checkpoint and journal defaults come from the device profile, flags override them.

State belongs to its bundle: the learner's ``tag`` is ``bundle:<sha256 of the
bundle's manifest.json bytes>`` (``features:<dim>`` without a bundle), written
into every checkpoint and journal header. A checkpoint (or, before the first
checkpoint, a journal) with another owner is refused with
:class:`~edgecl.runtime.checkpoint.StateMismatchError` (``edgecl run`` exits 2);
``reset_state=True`` first moves the directory's files aside and starts over from
the bundle head. The dimension check in :class:`Daemon` stays as a second guard.

>>> d = build_daemon(DaemonConfig(source="loop://"), features=8,
...                  learner_options={"max_classes": 3, "budget_bytes": 50_000})
>>> d.learner.config.dim, d.learner.config.max_classes, d.windower is None
(8, 3, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import BundleError, ConfigError
from edgecl.learner import LearnerConfig, StreamingLearner
from edgecl.learner.state import fsync_dir, state_bytes
from edgecl.runtime.checkpoint import CheckpointStore, check_owner, lock_state_dir, owner_tag
from edgecl.runtime.daemon import Daemon, DaemonConfig
from edgecl.runtime.journal import JOURNAL, LEARN, Journal, apply_records, read_journal
from edgecl.runtime.options import warn_ignored_options
from edgecl.runtime.transport import check_source

__all__ = ["IdentityExtractor", "build_daemon", "config_from_profile", "manifest_sha256"]

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
    from edgecl.learner.slda_woodbury import large_dim_options

    fields = {"head": "slda", "max_classes": max(2, n_classes), "budget_bytes": budget}
    fields.update({k: v for k, v in options.items() if v is not None})
    fields.update(large_dim_options(str(fields["head"]), dim))
    return LearnerConfig(dim=dim, **fields)


def manifest_sha256(bundle: Any) -> str:
    """sha256 of the bundle's ``manifest.json`` bytes (read again; must still parse to
    the manifest that was verified at load)."""
    known = getattr(bundle, "manifest_sha256", None)
    if isinstance(known, str):
        return known
    from edgecl.runtime.manifest import parse_manifest, read_manifest_bytes

    raw = read_manifest_bytes(Path(bundle.path))
    if parse_manifest(raw, Path(bundle.path) / "manifest.json") != bundle.manifest:
        raise BundleError(f"{bundle.path}: manifest.json changed after the bundle was loaded")
    return hashlib.sha256(raw).hexdigest()


def _tagged(learner: StreamingLearner, tag: str) -> StreamingLearner:
    # The tag is a note (compare=False): it changes no behaviour, only the state file.
    learner.config = learner.config.replace(tag=tag)
    return learner


def build_daemon(config: DaemonConfig, **kwargs: Any) -> Daemon:
    """A ready :class:`Daemon` (see :func:`_build_daemon` for the keyword arguments),
    holding its state directory's lock (:func:`lock_state_dir`) until it closes: a
    second daemon, or a fleet round, on the same directory is refused meanwhile."""
    lock = None
    if config.state_dir:
        lock = lock_state_dir(CheckpointStore(config.state_dir).directory)
    try:
        daemon = _build_daemon(config, **kwargs)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    daemon.state_lock = lock
    return daemon


def _build_daemon(
    config: DaemonConfig,
    *,
    bundle: Any = None,
    features: int | None = None,
    profile: Any = None,
    learner_options: dict[str, Any] | None = None,
    public_key: Any = None,
    reset_state: bool = False,
    **kwargs: Any,
) -> Daemon:
    """A ready :class:`Daemon`: extractor from ``bundle`` (a path or Bundle; None → the
    shipped default) or ``features=DIM``; the learner from the newest valid checkpoint
    in ``state_dir``, else the bundle's head, else fresh (``learner_options``:
    LearnerConfig fields for that case, e.g. ``max_classes``, ``head``).

    ``public_key`` (a PEM path, bytes or key; None: the profile's
    ``bundle_public_key``, else ``$EDGECL_BUNDLE_PUBKEY``) makes a bundle given as a
    path load only with a valid signature (:meth:`Bundle.load`).

    With a ``state_dir``: the newest checkpoint must belong to this bundle (else
    :class:`~edgecl.runtime.checkpoint.StateMismatchError`); ``reset_state`` first
    moves the directory's files into a ``replaced-<time>/`` subdirectory. The label
    journal is replayed and handed to the daemon, which appends to it."""
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
        tag = owner_tag(features=features)
        origin, about = "new learner", f"no bundle: {features}-d features"
    else:
        from edgecl.runtime.bundle import Bundle

        if public_key is None and profile is not None:
            public_key = getattr(profile, "bundle_public_key", None)
        b = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle, public_key=public_key)
        extractor = b.extractor(profile)
        window = b.window
        initial = b.initial_learner()
        tag = owner_tag(manifest_sha256(b))
        n_classes = max_classes or len(b.class_names) or 16
        origin = f"bundle head {b.head_path}" if initial is not None else "new learner"
        signer = b.signed_by or "nobody (not checked)"
        about = f"bundle {b.path} (manifest sha256 {tag[7:]}), signed by {signer}"
    learner = path = sha = None
    store = CheckpointStore(config.state_dir) if config.state_dir else None
    if store is not None:
        if reset_state:
            moved = store.move_aside()
            log.warning("--reset-state: old state moved to %s", moved or "(nothing to move)")
        learner, path, sha = store.load_with_digest()
        if learner is not None and path is not None:
            if not check_owner(learner.config.tag, tag, str(path)):
                _tagged(learner, tag)
            origin = f"checkpoint {path}"
        else:
            _check_journal_owner(store.directory, tag)

    def start_state() -> StreamingLearner:
        lr = initial
        if lr is None:
            budget = profile.memory_budget_bytes if profile is not None else 8_000_000
            lr = StreamingLearner(_fresh_config(extractor.dim, n_classes, options, budget))
        return _tagged(lr, tag)

    if learner is None:
        learner = start_state()
    if origin != "new learner":  # the new-learner flags cannot apply: say so, once
        warn_ignored_options(learner_options, origin)
    journal: Journal | None = None
    if store is not None:
        base = path.name if path is not None else "initial"
        if sha is None:
            sha = hashlib.sha256(state_bytes(learner)).hexdigest()

        def superseded() -> dict[str, str]:
            older = store.digests()
            if path is not None:  # the initial state, if the journal never saw a checkpoint
                older[hashlib.sha256(state_bytes(start_state())).hexdigest()] = "initial"
            return older

        journal = _recover_journal(
            store.directory, learner, tag, base, sha, superseded, config.journal_fsync_s
        )
        if journal.replayed:
            origin += f" + {journal.replayed} journal records"
    # Logged only now: a refused state directory leaves one line on stderr, the error.
    log.info("%s", about)
    log.info("learner: %r from %s", learner, origin)
    try:
        return Daemon(config, extractor, learner, window=window, journal=journal, **kwargs)
    except BaseException:
        if journal is not None:
            journal.close()
        raise


def _check_journal_owner(directory: Path, tag: str) -> None:
    """No checkpoint yet: a journal of another owner is another bundle's state too."""
    with contextlib.suppress(FileNotFoundError):
        header = read_journal(directory / JOURNAL).header
        if header is not None and header["tag"] != tag:
            check_owner(header["tag"], tag, str(directory / JOURNAL))


def _recover_journal(
    directory: Path,
    learner: StreamingLearner,
    tag: str,
    base: str,
    base_sha256: str,
    superseded: Callable[[], dict[str, str]],
    fsync_s: float,
) -> Journal:
    """Replay ``directory/journal.wal`` onto ``learner`` if it follows this very base
    (``base_sha256``: the state ``learner`` was loaded from), and return the journal
    to keep appending to.

    A journal over one of the ``superseded()`` states (earlier checkpoints, the initial
    learner) was cut short by a crash between a checkpoint and its restart: the newer
    checkpoint already holds its records. Any other journal with records (another base,
    an unreadable header) is not replayed: it is kept as ``journal.wal.stale-<time>``
    and logged. A torn tail is cut off and logged.
    """
    for tmp in directory.glob(f".{JOURNAL}.*.tmp"):  # a journal restart cut short
        with contextlib.suppress(OSError):
            tmp.unlink()
    path, dim = directory / JOURNAL, learner.config.dim

    def fresh() -> Journal:
        return Journal.start(
            directory, dim=dim, tag=tag, base=base, base_sha256=base_sha256, fsync_s=fsync_s
        )

    try:
        got = read_journal(path)
    except FileNotFoundError:
        return fresh()
    h = got.header
    if h is not None and h["base_sha256"] == base_sha256 and h["dim"] == dim:
        n = apply_records(learner, got.records)
        labels = sum(r.kind == LEARN for r in got.records)
        log.info("journal: replayed %d records (%d labels) onto %s", n, labels, base)
        if got.dropped:
            log.warning(
                "journal: dropped %d bytes after record %d (%s: a write cut short by a crash)",
                got.dropped,
                len(got.records),
                got.reason,
            )
        j = Journal.resume(path, got, fsync_s)
        j.replayed, j.replayed_labels = n, labels
        return j
    if h is not None and not got.records and not got.dropped:
        return fresh()  # nothing in it to lose
    if h is not None and h["base_sha256"] in superseded():
        log.info("journal follows %s, which the newer %s holds; a new journal", h["base"], base)
        return fresh()
    aside = _set_aside(path, "stale")
    if h is None:
        why = f"unreadable ({got.reason})"
    else:
        why = f"follows {h['base']} (sha256 {h['base_sha256'][:16]}…), not {base}"
    log.warning(
        "journal %s: not replayed onto %s (sha256 %s…); kept as %s",
        why,
        base,
        base_sha256[:16],
        aside.name,
    )
    return fresh()


def _set_aside(path: Path, why: str) -> Path:
    """Rename a file that must not be used to ``<name>.<why>-<time>`` (kept, not deleted)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    dest, i = path.with_name(f"{path.name}.{why}-{stamp}"), 1
    while dest.exists():
        dest, i = path.with_name(f"{path.name}.{why}-{stamp}-{i}"), i + 1
    path.rename(dest)
    fsync_dir(path.parent, tolerant=True)
    return dest


def config_from_profile(profile: Any, **overrides: Any) -> DaemonConfig:
    """A :class:`DaemonConfig` whose serial and checkpoint defaults come from a device profile."""
    base = {
        "baudrate": profile.baudrate,
        "serial_timeout_s": profile.serial_timeout_s,
        "checkpoint_every_samples": profile.checkpoint_every_samples,
        "checkpoint_every_s": profile.checkpoint_every_s,
        "journal_fsync_s": getattr(profile, "journal_fsync_s", 1.0),
    }
    base.update({k: v for k, v in overrides.items() if v is not None})
    return DaemonConfig(**base)
