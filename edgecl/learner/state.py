"""Learner state files: safetensors arrays + checksummed JSON metadata, written atomically.

Layout: one ``.safetensors`` file. Arrays are named ``<part>.<name>`` (``head.means_``,
``buffer.X_``, ``fisher.fisher_``, ``user.sum_``): the head, what the head owns (the
softmax head's buffer and Fisher) and the per-user standardisation, when configured.
Its ``__metadata__`` holds one key, ``edgecl``, whose value is canonical JSON
``{"body": {...}, "sha256": "..."}``: the body has the format name and version,
the edgecl version, the config, every counter and RNG state, and
``arrays_sha256``; ``sha256`` is the digest of the canonical body.
(One key only: safetensors writes metadata keys in hash-map order, which would
make the bytes differ from run to run.)

safetensors has no checksum of its own, so a corrupted file could load
silently. :func:`load_state` therefore checks (1) the header parses, (2) the
file is byte-for-byte the canonical serialisation of what it holds (catches
edits that parse to the same values, e.g. in header padding), (3) the arrays
digest and (4) the metadata digest — any flipped byte or truncation fails with
:class:`~edgecl.errors.StateFileError`. Writes go to a temp file in the same
directory, are fsynced, renamed over the target and the directory is fsynced,
so a crash leaves either the old file or the new one, never a mix. Files are
created with mode 0600. Nothing is ever unpickled.

Versions. 2 (this one): heads own their memory (no buffer for NCM/SLDA), NCM
and SLDA carry class ``weights_``, and the ``user`` part holds the per-user
standardisation; a learner that joined a fleet also saves the ``fleet`` part
(:mod:`edgecl.learner.fleet_memory`: the merged head it last adopted, its last
upload), so a merge and its bookkeeping land in one atomic write. Version 1
files still load: their NCM/SLDA buffer arrays (which no NCM/SLDA head ever
read) are dropped, class weights are the class
counts (every v1 sample had weight 1), and standardisation is off — the
learner predicts exactly as it did.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from edgecl.errors import ConfigError, StateFileError

if TYPE_CHECKING:
    from edgecl.learner.learner import StreamingLearner

__all__ = [
    "FORMAT",
    "READABLE_VERSIONS",
    "VERSION",
    "arrays_digest",
    "atomic_write_bytes",
    "canonical_json",
    "fsync_dir",
    "load_state",
    "load_state_bytes",
    "read_container",
    "save_state",
    "state_bytes",
    "verify_canonical",
    "write_new_file",
]

FORMAT = "edgecl.learner"
VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_HEADER = 1 << 20  # a header beyond 1 MiB is not one we wrote


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and raw bytes, in sorted name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """Sorted keys, no spaces, no NaN: one text per value, so digests and bytes are stable."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _meta_digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(("edgecl-state-v1\n" + canonical_json(body)).encode()).hexdigest()


def _collect(learner: StreamingLearner) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    counters: dict[str, Any] = {"learner": {"n_learned": learner.n_learned}}
    for part, obj in learner.parts().items():
        for name, a in obj.arrays().items():
            arrays[f"{part}.{name}"] = np.ascontiguousarray(a)
        counters[part] = obj.counters()
    return arrays, counters


def state_bytes(learner: StreamingLearner) -> bytes:
    """The exact bytes :func:`save_state` writes (deterministic for a given state)."""
    from edgecl import __version__

    arrays, counters = _collect(learner)
    body = {
        "format": FORMAT,
        "version": VERSION,
        "edgecl": __version__,
        "config": learner.config.to_dict(),
        "counters": counters,
        "arrays_sha256": arrays_digest(arrays),
    }
    meta = canonical_json({"body": body, "sha256": _meta_digest(body)})
    return st_save(arrays, metadata={"edgecl": meta})


def write_new_file(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (never an existing file, never through a symlink), write, fsync.

    ``O_EXCL | O_NOFOLLOW``: a file or symlink planted at ``path`` makes this fail
    instead of being written through or keeping its old permissions.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike[str], *, tolerant: bool = False) -> None:
    """fsync a directory so a rename or a new entry in it is durable.

    With ``tolerant``, a filesystem that refuses fsync on directories is accepted.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        if not tolerant:
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file, whole."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    tmp = directory / f".{target.name}.{os.getpid()}.tmp"
    # A fresh file, never an old one: a stale temp file keeps its old mode under O_TRUNC,
    # and O_EXCL refuses a symlink planted there instead of writing through it.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        write_new_file(tmp, data, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def save_state(learner: StreamingLearner, path: str | os.PathLike[str]) -> None:
    """Atomically write ``learner``'s state to ``path`` (mode 0600)."""
    atomic_write_bytes(path, state_bytes(learner))


def read_container(
    raw: bytes, where: str, *, what: str = "state file", max_header: int = MAX_HEADER
) -> tuple[dict[str, np.ndarray], str]:
    """Arrays and the ``edgecl`` metadata text of a safetensors file edgecl wrote.

    The shared reader of learner state files and host checkpoints: checks the
    header length, parses it, and requires exactly one metadata key, ``edgecl``.
    Raises :class:`StateFileError` naming ``what`` the file should have been.
    """
    if len(raw) < 8:
        raise StateFileError(f"{where}: truncated ({len(raw)} bytes), not a {what}")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > max_header or 8 + n > len(raw):
        raise StateFileError(f"{where}: truncated or corrupt header (length field {n})")
    try:
        header = json.loads(raw[8 : 8 + n])
        meta = header.get("__metadata__")
        arrays = st_load(raw)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise StateFileError(f"{where}: corrupt safetensors data ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("edgecl"), str):
        raise StateFileError(f"{where}: not an edgecl {what} (no edgecl metadata)")
    if set(meta) != {"edgecl"}:
        raise StateFileError(f"{where}: unexpected metadata keys {sorted(meta)}")
    return arrays, meta["edgecl"]


def verify_canonical(raw: bytes, arrays: dict[str, np.ndarray], meta: Any, where: str) -> None:
    """Fail unless ``raw`` is byte-for-byte the canonical file of ``arrays`` + ``meta``.

    Catches edits that still parse to the same values (header padding, key order,
    number spellings) — anything a digest over the parsed values would miss.
    """
    try:
        canonical = st_save(arrays, metadata={"edgecl": canonical_json(meta)})
    except Exception as exc:
        raise StateFileError(f"{where}: arrays cannot be re-serialised ({exc})") from None
    if canonical != raw:
        raise StateFileError(f"{where}: file bytes differ from their canonical form (corrupted)")


def load_state(path: str | os.PathLike[str]) -> StreamingLearner:
    """Read and verify a state file; raise :class:`StateFileError` on any mismatch."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise StateFileError(f"{where}: cannot read state file ({exc.strerror})") from None
    return load_state_bytes(raw, where)


def load_state_bytes(raw: bytes, where: str = "<bytes>") -> StreamingLearner:
    """:func:`load_state` for bytes already in memory (e.g. a bundle's verified head).

    ``where`` names the source in error messages.
    """
    from edgecl.learner.config import LearnerConfig
    from edgecl.learner.learner import StreamingLearner

    arrays, text = read_container(raw, where)
    try:
        wrapped = json.loads(text)
        info, digest = wrapped["body"], wrapped["sha256"]
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise StateFileError(f"{where}: metadata is not edgecl JSON ({exc})") from None
    if not isinstance(info, dict) or digest != _meta_digest(info):
        raise StateFileError(f"{where}: metadata checksum mismatch (file corrupted)")
    verify_canonical(raw, arrays, wrapped, where)
    if info.get("format") != FORMAT:
        raise StateFileError(f"{where}: format {info.get('format')!r}, expected {FORMAT!r}")
    version = info.get("version")
    if version not in READABLE_VERSIONS:
        raise StateFileError(
            f"{where}: state format version {version}, this edgecl reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    if info.get("arrays_sha256") != arrays_digest(arrays):
        raise StateFileError(f"{where}: array checksum mismatch (file corrupted)")
    stored = info.get("config")
    counters = info.get("counters", {})
    if version == 1 and isinstance(stored, dict):
        stored, arrays, counters = _upgrade_v1(stored, arrays, counters)
    try:
        cfg = LearnerConfig.from_dict(stored)
    except (ConfigError, KeyError, TypeError) as exc:
        raise StateFileError(f"{where}: stored config is invalid ({exc})") from None
    learner = StreamingLearner(cfg)
    if any(k.startswith("fleet.") for k in arrays):
        try:
            learner.join_fleet("")  # restored below
        except ValueError as exc:
            raise StateFileError(f"{where}: {exc}") from None
    parts = learner.parts()
    expected = {f"{p}.{n}" for p, obj in parts.items() for n in obj.arrays()}
    if set(arrays) != expected:
        raise StateFileError(
            f"{where}: arrays {sorted(set(arrays) ^ expected)} do not match the stored config"
        )
    try:
        for part, obj in parts.items():
            prefix = part + "."
            own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            obj.restore(own, counters[part])
        learner.n_learned = int(counters["learner"]["n_learned"])
    except (KeyError, TypeError) as exc:
        raise StateFileError(f"{where}: counters incomplete ({exc})") from None
    return learner


def _upgrade_v1(
    config: dict[str, Any], arrays: dict[str, np.ndarray], counters: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """A version-1 state in version-2 form (verified v1 bytes in, same predictions out)."""
    if config.get("head") == "softmax":
        return config, arrays, counters
    # NCM/SLDA never read their v1 buffer: drop it; every v1 sample had weight 1.
    config = {**config, "buffer_capacity": None}
    arrays = {k: v for k, v in arrays.items() if not k.startswith("buffer.")}
    counts = arrays.get("head.counts_")
    if isinstance(counts, np.ndarray):
        arrays["head.weights_"] = counts.astype(np.float64)
    counters = {k: v for k, v in counters.items() if k != "buffer"}
    return config, arrays, counters
