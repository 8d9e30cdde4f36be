"""The bundle manifest (``manifest.json``): its schema, its checks, its canonical bytes.

Format ``edgecl.bundle``, version 1. Required keys: ``format``,
``format_version``, ``model`` (``file``, ``sha256``, ``opset``, ``input``
{``name``, ``shape`` = ``["batch", d1, ...]``, ``dtype`` = ``"float32"``},
``output``), ``embedding_dim``, ``class_names``, ``normalisation`` (object or
null: ``mean``, ``std``, ``axis``, ``in_graph``), ``window`` (object or null:
``length``, ``hop``, ``channels``, ``rate_hz``; must match the input shape)
and ``provenance``; ``head`` is optional (``file``, ``sha256``, ``kind``,
``standardize``: whether the learner standardises embeddings per user), and so
is ``excluded_classes`` (distinct class ids, each an index of ``class_names``,
that pre-training and the initial head never saw; absent in older bundles),
and so is ``random_features`` (object or null; absent means none): the
random-feature stage inside ``model.onnx`` (:mod:`edgecl.runtime.random_features`),
exactly the keys ``kind`` (``"rff"`` or ``"relu"``), ``m`` (= ``embedding_dim``),
``gamma`` (a finite number > 0 for ``rff``, null for ``relu``), ``seed``
(integer >= 0) and ``input_dim`` (the stage's input length, >= 1).
``model`` and ``head`` may give ``bytes``, the file's size, which is then
checked before the file is read. Every file name must be a plain name inside
the bundle directory. The manifest itself is at most 1 MiB (refused from its
size alone) and must parse without deep nesting. Anything else raises
:class:`~edgecl.errors.BundleError` naming the manifest and the problem.

>>> print(manifest_bytes({"b": 1, "a": "x"}).decode(), end="")
{
  "a": "x",
  "b": 1
}
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from edgecl.errors import BundleError
from edgecl.runtime.random_features import KINDS

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "REQUIRED",
    "check_manifest",
    "inside",
    "manifest_bytes",
    "parse_manifest",
    "read_manifest",
    "read_manifest_bytes",
    "read_regular",
]

FORMAT = "edgecl.bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 1 << 20  # class names and provenance fit in far less
REQUIRED = (
    "format",
    "format_version",
    "model",
    "embedding_dim",
    "class_names",
    "normalisation",
    "window",
    "provenance",
)
_DTYPES = ("float32",)


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical manifest text: sorted keys, 2-space indent, trailing newline (diff-friendly)."""
    text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def read_manifest(root: Path) -> dict[str, Any]:
    """Read, parse and check ``root/manifest.json``; raise :class:`BundleError` on any flaw."""
    return parse_manifest(read_manifest_bytes(root), root / MANIFEST)


def read_manifest_bytes(root: Path) -> bytes:
    """The raw bytes of ``root/manifest.json``: a regular file inside ``root``, at most 1 MiB.

    A larger file is refused from its size alone, before any of it is read.
    """
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory (no such directory)")
    mpath = inside(root, MANIFEST, "manifest")
    return read_regular(mpath, max_bytes=MAX_MANIFEST_BYTES, what="manifest")


def parse_manifest(raw: bytes, where: Path) -> dict[str, Any]:
    """Parse and check manifest bytes read from ``where``; any flaw is a :class:`BundleError`.

    >>> parse_manifest(b"[" * 100_000 + b"]" * 100_000, Path("m.json"))
    Traceback (most recent call last):
    ...
    edgecl.errors.BundleError: m.json: not valid JSON (nested too deeply)
    """
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:  # a "JSON bomb" of nested brackets; must not escape as is
        raise BundleError(f"{where}: not valid JSON (nested too deeply)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise BundleError(f"{where}: not valid JSON ({exc})") from None
    try:
        check_manifest(manifest, where)
    except BundleError:
        raise
    except (TypeError, ValueError, KeyError, OverflowError, RecursionError) as exc:
        # The checks test types before use; this is the net under them for values no
        # check foresaw (an integer too large for a float, say): still one BundleError.
        raise BundleError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None
    return manifest


def read_regular(
    path: Path, *, max_bytes: int | None = None, size: int | None = None, what: str = "file"
) -> bytes:
    """Bytes of the regular file ``path``, refusing by its size before reading.

    ``max_bytes`` caps the size; ``size`` demands an exact one (the manifest's
    ``bytes``). The file is opened non-blocking and checked with ``fstat`` on the
    open descriptor, so a FIFO or device swapped in after a check cannot block
    the reader or feed it without end.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path}: {what} is not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise BundleError(
                f"{path}: {st.st_size:,} bytes, more than a {what} may hold ({max_bytes:,})"
            )
        if size is not None and st.st_size != size:
            raise BundleError(f"{path}: {st.st_size:,} bytes, the manifest says {size:,}")
        try:
            data = f.read(max_bytes + 1 if max_bytes is not None else -1)
        except OSError as exc:
            raise BundleError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if max_bytes is not None and len(data) > max_bytes:  # grew after the fstat
        raise BundleError(f"{path}: more than a {what} may hold ({max_bytes:,} bytes)")
    if size is not None and len(data) != size:
        raise BundleError(f"{path}: {len(data):,} bytes, the manifest says {size:,}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def inside(root: Path, name: Any, field: str) -> Path:
    """``root / name`` when ``name`` is a plain file name that stays inside ``root``."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"{root}: manifest {field} = {name!r} is not a file name")
    bad = (
        name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or os.path.isabs(name)
        or Path(name).name != name
    )
    if bad:
        raise BundleError(
            f"{root}: manifest {field} = {name!r}: must be a plain file name inside the bundle"
        )
    p = root / name
    if not p.exists():
        raise BundleError(f"{p}: missing (named by the manifest's {field})")
    real_root = root.resolve()
    real = p.resolve()
    if real_root not in real.parents:
        raise BundleError(f"{p}: resolves to {real}, outside the bundle directory {real_root}")
    if not real.is_file():
        raise BundleError(f"{p}: not a regular file")
    return p


def _need(cond: bool, where: Path, what: str) -> None:
    if not cond:
        raise BundleError(f"{where}: {what}")


def _is_int(v: Any, lo: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def check_manifest(m: Any, where: Path) -> None:
    """Check the manifest ``m`` read from ``where``; the files it names must exist."""
    _need(isinstance(m, dict), where, "the manifest must be a JSON object")
    missing = [k for k in REQUIRED if k not in m]
    _need(not missing, where, f"missing key(s) {', '.join(missing)}")
    _need(m["format"] == FORMAT, where, f"format {m['format']!r}, expected {FORMAT!r}")
    v = m["format_version"]
    _need(
        _is_int(v) and v == FORMAT_VERSION,
        where,
        f"format_version {v!r}; this edgecl reads version {FORMAT_VERSION}",
    )
    model = m["model"]
    _need(isinstance(model, dict), where, "model must be an object")
    for k in ("file", "sha256", "opset", "input", "output"):
        _need(k in model, where, f"model.{k} is missing")
    _check_file_entry(model, "model", where)
    _need(_is_int(model["opset"], 7), where, f"model.opset {model['opset']!r} is not an opset")
    inp = model["input"]
    _need(isinstance(inp, dict) and {"name", "shape", "dtype"} <= set(inp), where,
          "model.input needs name, shape and dtype")  # fmt: skip
    _need(isinstance(inp["name"], str) and inp["name"] != "", where, "model.input.name is empty")
    shape = inp["shape"]
    _need(
        isinstance(shape, list) and len(shape) >= 2 and all(_is_int(d) for d in shape[1:]),
        where,
        f"model.input.shape {shape!r}: expected [batch, d1, ...] with positive sizes",
    )
    _need(inp["dtype"] in _DTYPES, where, f"model.input.dtype {inp['dtype']!r} not in {_DTYPES}")
    dim = m["embedding_dim"]
    _need(_is_int(dim), where, f"embedding_dim {dim!r} must be a positive integer")
    names = m["class_names"]
    _need(
        isinstance(names, list) and all(isinstance(n, str) for n in names),
        where,
        "class_names must be a list of strings",
    )
    excluded = m.get("excluded_classes", [])
    _need(
        isinstance(excluded, list)
        and all(_is_int(c, 0) and c < len(names) for c in excluded)
        and len(set(excluded)) == len(excluded),
        where,
        f"excluded_classes {excluded!r:.60} must be a list of distinct class ids "
        f"in [0, {len(names)})",
    )
    _check_normalisation(m["normalisation"], len(shape) - 1, where)
    _check_window(m["window"], tuple(shape[1:]), where)
    _need(isinstance(m["provenance"], dict), where, "provenance must be an object")
    _check_random_features(m.get("random_features"), dim, where)
    head = m.get("head")
    if head is not None:
        _need(isinstance(head, dict), where, "head must be an object or null")
        _check_file_entry(head, "head", where)
        std = head.get("standardize", False)
        _need(isinstance(std, bool), where, f"head.standardize {std!r} must be true or false")


def _check_file_entry(entry: dict[str, Any], key: str, where: Path) -> None:
    _need("file" in entry and "sha256" in entry, where, f"{key} needs file and sha256")
    inside(where.parent, entry["file"], f"{key}.file")
    n = entry.get("bytes")
    _need(n is None or _is_int(n, 0), where, f"{key}.bytes {n!r} is not a file size")
    h = entry["sha256"]
    ok = isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)
    _need(ok, where, f"{key}.sha256 {h!r} is not a lowercase hex sha256")


def _finite(v: Any) -> bool:
    """A JSON number that is a finite float (an integer beyond float range is not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _check_normalisation(norm: Any, ndim: int, where: Path) -> None:
    if norm is None:
        return
    _need(isinstance(norm, dict), where, "normalisation must be an object or null")
    for k in ("mean", "std"):
        v = norm.get(k)
        ok = isinstance(v, list) and len(v) >= 1
        ok = ok and all(_finite(e) for e in v)
        _need(ok, where, f"normalisation.{k} must be a non-empty list of finite numbers")
    _need(all(s > 0 for s in norm["std"]), where, "normalisation.std must be > 0")
    axis = norm.get("axis", -1)
    _need(_is_int(axis, -ndim) and axis < ndim, where, f"normalisation.axis {axis!r} out of range")
    _need(isinstance(norm.get("in_graph", False), bool), where, "normalisation.in_graph: bool")


def _check_random_features(rf: Any, dim: int, where: Path) -> None:
    if rf is None:
        return
    keys = ("gamma", "input_dim", "kind", "m", "seed")
    _need(
        isinstance(rf, dict) and sorted(rf) == list(keys),
        where,
        f"random_features must be null or an object with exactly the keys {', '.join(keys)}",
    )
    kind = rf["kind"]
    _need(kind in KINDS, where, f"random_features.kind {kind!r:.40} not in {KINDS}")
    _need(
        _is_int(rf["m"]) and rf["m"] == dim,
        where,
        f"random_features.m {rf['m']!r:.40} must equal embedding_dim {dim}",
    )
    _need(_is_int(rf["input_dim"]), where, "random_features.input_dim must be an integer >= 1")
    _need(_is_int(rf["seed"], 0), where, "random_features.seed must be an integer >= 0")
    g = rf["gamma"]
    if kind == "rff":
        ok = _finite(g) and g > 0
        _need(ok, where, f"random_features.gamma {g!r:.40} must be a finite number > 0 for rff")
    else:
        _need(g is None, where, f"random_features.gamma {g!r:.40} must be null for relu")


def _check_window(w: Any, input_shape: tuple[int, ...], where: Path) -> None:
    if w is None:
        return
    _need(isinstance(w, dict), where, "window must be an object or null")
    for k in ("length", "hop", "channels"):
        _need(k in w, where, f"window.{k} is missing")
    _need(_is_int(w["length"]) and _is_int(w["hop"]), where, "window length/hop must be >= 1")
    ch = w["channels"]
    _need(
        isinstance(ch, list) and len(ch) >= 1 and all(isinstance(c, str) for c in ch),
        where,
        "window.channels must be a non-empty list of names",
    )
    rate = w.get("rate_hz")
    _need(
        rate is None
        or (isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0),
        where,
        f"window.rate_hz {rate!r} must be a positive number or null",
    )
    _need(
        input_shape == (w["length"], len(ch)),
        where,
        f"window ({w['length']} rows × {len(ch)} channels) does not match the model input "
        f"{list(input_shape)}",
    )
