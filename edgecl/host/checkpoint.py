"""Model checkpoints: one ``.safetensors`` file, weights plus checksummed JSON metadata.

The file holds the model's ``state_dict`` (as plain arrays) and one metadata
key, ``edgecl``, whose value is canonical JSON::

    {"format": 1, "kind": "edgecl.checkpoint", "spec": {...}, "meta": {...},
     "arrays_sha256": "...", "sha256": "..."}

``spec`` rebuilds the architecture (:func:`edgecl.host.models.build_model`),
``meta`` is what the caller passed (normalisation, class names, window,
provenance, ...), ``arrays_sha256`` covers every tensor's name, dtype, shape
and bytes, and ``sha256`` covers the rest of the JSON. safetensors has no
checksum of its own (DESIGN §9), so :func:`load_checkpoint` verifies both
digests and that the file is byte-for-byte the canonical serialisation of what
it holds; any flipped byte or truncation raises
:class:`~edgecl.errors.StateFileError`. Writes are atomic (temp file, fsync,
rename) via :func:`edgecl.learner.state.atomic_write_bytes`. Nothing is pickled.

:func:`read_checkpoint_meta` verifies and returns the JSON without building a
model (numpy only), e.g. to show a checkpoint's provenance.

>>> import tempfile, torch
>>> from pathlib import Path
>>> from edgecl.host.models import build_model
>>> m = build_model("imu-cnn", (100, 6), 7)
>>> path = Path(tempfile.mkdtemp()) / "model.safetensors"
>>> save_checkpoint(path, m, {"class_names": list("ABCDEFG")})
>>> m2, meta = load_checkpoint(path)
>>> meta["class_names"][:2], m2.spec == m.spec
(['A', 'B'], True)
>>> all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
True
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import save as st_save

from edgecl.errors import ConfigError, StateFileError
from edgecl.learner.state import (
    arrays_digest,
    atomic_write_bytes,
    canonical_json,
    read_container,
    verify_canonical,
)

if TYPE_CHECKING:
    from edgecl.host.models import EdgeModel

__all__ = ["FORMAT", "KIND", "load_checkpoint", "read_checkpoint_meta", "save_checkpoint"]

FORMAT = 1
KIND = "edgecl.checkpoint"
MAX_HEADER = 1 << 22  # 4 MiB: room for many tensor entries and a long provenance


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(("edgecl-checkpoint-v1\n" + canonical_json(body)).encode()).hexdigest()


def _jsonable(obj: Any, where: str = "meta") -> Any:
    """Plain JSON values; numpy scalars/arrays and tuples converted; NaN/inf become None."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ConfigError(f"{where}: key {k!r} is not a string (JSON needs str keys)")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, where) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ConfigError(f"{where}: {type(obj).__name__} is not JSON-serialisable")


def checkpoint_bytes(model: EdgeModel, meta: dict[str, Any]) -> bytes:
    """The exact bytes :func:`save_checkpoint` writes (deterministic for given weights)."""
    arrays = {name: t.detach().cpu().contiguous().numpy() for name, t in model.state_dict().items()}
    body = {
        "format": FORMAT,
        "kind": KIND,
        "spec": _jsonable(model.spec, "spec"),
        "meta": _jsonable(dict(meta)),
        "arrays_sha256": arrays_digest(arrays),
    }
    header = canonical_json({**body, "sha256": _digest(body)})
    return st_save(arrays, metadata={"edgecl": header})


def save_checkpoint(path: str | os.PathLike[str], model: EdgeModel, meta: dict[str, Any]) -> None:
    """Atomically write ``model``'s weights, spec and ``meta`` to ``path`` (mode 0644).

    ``meta`` must be JSON-able (numpy scalars and arrays are converted; NaN/inf
    become ``null``); by convention it carries ``normalisation``,
    ``class_names``, ``window`` and ``provenance`` (see the checkpoint docs).
    """
    atomic_write_bytes(path, checkpoint_bytes(model, meta), mode=0o644)


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise StateFileError(f"{where}: cannot read checkpoint ({exc.strerror})") from None
    arrays, text = read_container(raw, where, what="checkpoint", max_header=MAX_HEADER)
    try:
        info = json.loads(text)
        digest = info.pop("sha256")
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise StateFileError(f"{where}: metadata is not edgecl JSON ({exc})") from None
    if digest != _digest(info):
        raise StateFileError(f"{where}: metadata checksum mismatch (file corrupted)")
    if info.get("kind") != KIND:
        raise StateFileError(f"{where}: kind {info.get('kind')!r}, expected {KIND!r}")
    if info.get("format") != FORMAT:
        raise StateFileError(
            f"{where}: checkpoint format {info.get('format')}, this edgecl reads {FORMAT}"
        )
    if info.get("arrays_sha256") != arrays_digest(arrays):
        raise StateFileError(f"{where}: weights checksum mismatch (file corrupted)")
    verify_canonical(raw, arrays, {**info, "sha256": digest}, where)
    return arrays, info


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify ``path`` and return its JSON (``format``, ``kind``, ``spec``, ``meta``, ...).

    Needs numpy only, not torch. Raises :class:`StateFileError` like :func:`load_checkpoint`.
    """
    return _read(path)[1]


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[EdgeModel, dict[str, Any]]:
    """Read and verify a checkpoint; return ``(model, meta)``.

    The model is rebuilt from the stored spec, on the CPU, in eval mode. ``meta``
    is the dict given to :func:`save_checkpoint` (JSON round trip).

    Raises
    ------
    StateFileError
        The file is truncated, corrupted (either checksum), of another format or
        its weights do not fit the stored architecture.
    """
    import torch

    from edgecl.host.models import build_model

    where = str(path)
    arrays, info = _read(path)
    try:
        spec = dict(info["spec"])
        model = build_model(**spec)
    except (ConfigError, KeyError, TypeError) as exc:
        raise StateFileError(f"{where}: stored model spec is invalid ({exc})") from None
    expected = model.state_dict()
    if set(arrays) != set(expected):
        raise StateFileError(
            f"{where}: weights {sorted(set(arrays) ^ set(expected))} do not match the spec"
        )
    state = {}
    for name, ref in expected.items():
        a = arrays[name]
        if tuple(a.shape) != tuple(ref.shape):
            raise StateFileError(
                f"{where}: weight {name} has shape {a.shape}, the spec needs {tuple(ref.shape)}"
            )
        state[name] = torch.from_numpy(a.copy())
    model.load_state_dict(state)
    model.eval()
    return model, info.get("meta", {})
