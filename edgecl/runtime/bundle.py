"""Bundle: the directory ``edgecl export`` writes and ``edgecl run`` loads, verified.

A bundle holds ``manifest.json``, ``model.onnx`` and optionally
``head.safetensors`` (DESIGN §4). The manifest (format ``edgecl.bundle``,
version 1) names the files, carries the sha256 of each, and describes the
model: input name, shape and dtype, normalisation, window, embedding dim,
class names, opset and training provenance. A minimal manifest::

    {"format": "edgecl.bundle", "format_version": 1,
     "model": {"file": "model.onnx", "sha256": "<hex>", "opset": 17,
               "input": {"name": "x", "shape": ["batch", 100, 6], "dtype": "float32"},
               "output": {"name": "embedding", "shape": ["batch", 64], "dtype": "float32"}},
     "embedding_dim": 64, "class_names": ["PEN", "ABD"],
     "normalisation": {"mean": [0.0], "std": [1.0], "axis": -1, "in_graph": true},
     "window": {"length": 100, "hop": 50, "channels": ["ax", ...], "rate_hz": 50},
     "head": {"file": "head.safetensors", "sha256": "<hex>", "kind": "slda"},
     "provenance": {...}}

:meth:`Bundle.load` trusts nothing: the manifest must be a JSON object of the
right format and version with every required key; every file it names must be
a plain file name inside the bundle directory (no absolute path, no ``..``,
no separator, no symlink leading out), and each file's sha256 must match. Any
failure raises :class:`~edgecl.errors.BundleError` naming the path and the
problem. :meth:`Bundle.extractor` and :meth:`Bundle.initial_learner` read their
file once more, check its sha256 again and build from the bytes they checked;
the head is verified once more, byte for byte, by the learner's own state loader.

When a public key is configured (the ``public_key`` argument or
``$EDGECL_BUNDLE_PUBKEY``), ``manifest.sig`` must hold a valid Ed25519
signature of ``manifest.json`` by that key, checked before the manifest is
even parsed; see :mod:`edgecl.runtime.signing`. Without a key a signature is
ignored.

>>> b = Bundle.load()            # the bundle shipped inside the package
>>> b.embedding_dim, b.input_shape, b.window.length, b.window.hop
(64, (100, 6), 100, 50)
>>> b.class_names
('PEN', 'ABD', 'FEL', 'IR', 'ER', 'TRAP', 'ROW')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecl.errors import BundleError, StateFileError
from edgecl.learner.state import fsync_dir, write_new_file
from edgecl.runtime.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    inside,
    manifest_bytes,
    parse_manifest,
    read_manifest_bytes,
    read_regular,
)
from edgecl.runtime.signing import (
    SIGNATURE,
    SIGNATURE_BYTES,
    configured_public_key,
    fingerprint,
    load_private_key,
    sign_manifest,
    verify_manifest,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edgecl.learner import StreamingLearner
    from edgecl.runtime.extractor import OnnxExtractor
    from edgecl.runtime.profile import DeviceProfile

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "SIGNATURE",
    "Bundle",
    "WindowSpec",
    "default_bundle_path",
    "file_sha256",
    "manifest_bytes",
    "write_bundle",
]

log = logging.getLogger(__name__)


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (``edgecl/bundles/default``)."""
    return Path(__file__).resolve().parents[1] / "bundles" / "default"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class WindowSpec:
    """How raw sensor rows become one model input: ``length`` rows every ``hop`` rows.

    >>> WindowSpec(100, 50, ("ax", "ay"), 50.0).seconds
    2.0
    """

    length: int
    hop: int
    channels: tuple[str, ...]
    rate_hz: float | None = None

    @property
    def seconds(self) -> float | None:
        """Window duration in seconds, when the rate is known."""
        return None if not self.rate_hz else self.length / self.rate_hz


class Bundle:
    """A verified bundle directory; build it with :meth:`load`."""

    def __init__(self, path: Path, manifest: dict[str, Any], signed_by: str | None = None) -> None:
        self.path = path
        self.manifest = manifest
        #: Fingerprint of the public key whose signature was verified at load, or None.
        self.signed_by = signed_by

    # -- loading -----------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        public_key: Any = None,
    ) -> Bundle:
        """Read and verify the bundle at ``path`` (default: the shipped bundle).

        Parameters
        ----------
        path : path-like, optional
            The bundle directory; None loads the bundle shipped in the package.
        public_key : path-like, bytes, Ed25519PublicKey, None or False
            Require ``manifest.sig`` to be this key's Ed25519 signature of the
            manifest: a PEM file path, PEM bytes or a key object. None: the key
            named by ``$EDGECL_BUNDLE_PUBKEY`` if set, else no check. False: no
            signature check at all.

        Raises
        ------
        BundleError
            A file is missing, the manifest is malformed or of another format
            version, a path is unsafe, or a sha256 does not match; with a public
            key, also a missing or invalid signature, or ``cryptography`` missing.
        """
        root = Path(default_bundle_path() if path is None else path)
        key = configured_public_key(public_key)  # first: a bad key fails before any I/O
        raw = read_manifest_bytes(root)
        signed_by = None
        if key is not None:
            _check_signature(root, raw, key)
            signed_by = fingerprint(key)
            log.info("%s: manifest signature verified (public key %s)", root, signed_by)
        elif (root / SIGNATURE).exists():
            log.debug("%s: %s present but no public key configured; not checked", root, SIGNATURE)
        bundle = cls(root, parse_manifest(raw, root / MANIFEST), signed_by)
        bundle._verify_file("model")
        if bundle.manifest.get("head") is not None:
            bundle._verify_file("head")
        return bundle

    def _verify_file(self, key: str) -> bytes:
        entry = self.manifest[key]
        p = inside(self.path, entry["file"], f"{key}.file")
        data = read_regular(p, size=entry.get("bytes"), what=f"{key} file")
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise BundleError(
                f"{p}: sha256 {digest[:16]}… does not match the manifest's "
                f"{entry['sha256'][:16]}… (file corrupted or replaced)"
            )
        return data

    # -- description ---------------------------------------------------------------
    @property
    def model_path(self) -> Path:
        """Path of the ONNX model."""
        return self.path / self.manifest["model"]["file"]

    @property
    def head_path(self) -> Path | None:
        """Path of the initial learner state, or None when the bundle has none."""
        head = self.manifest.get("head")
        return None if head is None else self.path / head["file"]

    @property
    def embedding_dim(self) -> int:
        """Length of the embeddings the model produces."""
        return int(self.manifest["embedding_dim"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one model input, without the batch axis."""
        return tuple(int(d) for d in self.manifest["model"]["input"]["shape"][1:])

    @property
    def input_name(self) -> str:
        """Name of the model's input tensor."""
        return str(self.manifest["model"]["input"]["name"])

    @property
    def window(self) -> WindowSpec | None:
        """How raw sensor rows are windowed for this model (None for non-sensor models)."""
        w = self.manifest["window"]
        if w is None:
            return None
        rate = w.get("rate_hz")
        return WindowSpec(
            int(w["length"]),
            int(w["hop"]),
            tuple(w["channels"]),
            None if rate is None else float(rate),
        )

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the pre-training classes (label ``i`` is ``class_names[i]``)."""
        return tuple(self.manifest["class_names"])

    @property
    def excluded_classes(self) -> tuple[int, ...]:
        """Class ids pre-training and the initial head never saw (empty when none).

        Bundles for class-incremental learning (``edgecl pretrain
        --exclude-classes``); the device learns these classes from its own labels.
        """
        return tuple(int(c) for c in self.manifest.get("excluded_classes") or ())

    @property
    def normalisation(self) -> dict[str, Any] | None:
        """``{"mean", "std", "axis", "in_graph"}`` or None."""
        return self.manifest["normalisation"]

    # -- use -----------------------------------------------------------------------
    def extractor(self, profile: DeviceProfile | None = None, batch: int = 64) -> OnnxExtractor:
        """An :class:`~edgecl.runtime.extractor.OnnxExtractor` for this bundle.

        The model's bytes are read and hashed again and the session is built from
        those very bytes, so a file swapped after :meth:`load` cannot slip in.
        """
        from edgecl.runtime.extractor import OnnxExtractor

        data = self._verify_file("model")
        return OnnxExtractor(
            data,
            profile=profile,
            normalisation=self.normalisation,
            input_shape=self.input_shape,
            dim=self.embedding_dim,
            batch=batch,
        )

    def initial_learner(self) -> StreamingLearner | None:
        """The learner state fitted at export (``head.safetensors``), or None.

        As for the model, the head's bytes are read and hashed again, and the
        learner is built from those very bytes: a file swapped between the hash
        and a second read cannot slip in.
        """
        if self.head_path is None:
            return None
        from edgecl.learner.state import load_state_bytes

        raw = self._verify_file("head")
        try:
            learner = load_state_bytes(raw, str(self.head_path))
        except StateFileError as exc:
            raise BundleError(f"{exc} (the bundle's initial learner state)") from None
        if learner.config.dim != self.embedding_dim:
            raise BundleError(
                f"{self.head_path}: learner dim {learner.config.dim} != "
                f"embedding_dim {self.embedding_dim} of the bundle"
            )
        return learner

    def __repr__(self) -> str:
        return (
            f"Bundle({str(self.path)!r}, input_shape={self.input_shape}, "
            f"embedding_dim={self.embedding_dim}, classes={len(self.class_names)})"
        )


def _check_signature(root: Path, manifest: bytes, key: Any) -> None:
    sig_path = root / SIGNATURE
    if not sig_path.exists() and not sig_path.is_symlink():
        raise BundleError(
            f"{sig_path}: missing; a bundle public key is configured ({fingerprint(key)}), "
            "so only signed bundles load (edgecl export --sign-key, or "
            "tools/bundle_keys.py sign)"
        )
    p = inside(root, SIGNATURE, "signature")
    sig = read_regular(p, max_bytes=SIGNATURE_BYTES, what="signature")
    verify_manifest(manifest, sig, key, str(root / MANIFEST))


# -- writing ---------------------------------------------------------------------


def write_bundle(
    path: str | os.PathLike[str],
    manifest: dict[str, Any],
    model: bytes,
    head: bytes | None = None,
    *,
    overwrite: bool = False,
    sign_key: str | os.PathLike[str] | Ed25519PrivateKey | None = None,
) -> Bundle:
    """Write a bundle directory and return it, loaded back and verified.

    ``manifest`` is completed here: ``model.file``/``sha256``/``bytes`` and the
    ``head`` entry (``file``/``sha256``/``bytes``, keeping other keys the caller
    put under ``"head"``) are filled from the bytes given. The files go to a
    temporary sibling directory, are fsynced, and the directory is renamed into
    place, so a reader never sees half a bundle. An existing bundle at ``path``
    is replaced only with ``overwrite``; a non-empty directory that is not a
    bundle is never touched. With ``sign_key`` (an Ed25519 private key or its
    PEM file) ``manifest.sig`` is written too, and the bundle is loaded back
    with the matching public key.
    """
    signer = None if sign_key is None else load_private_key(sign_key)
    out = Path(path)
    m = json.loads(json.dumps(manifest))  # a deep, JSON-clean copy
    m["model"] = {
        **m.get("model", {}),
        "file": "model.onnx",
        "sha256": hashlib.sha256(model).hexdigest(),
        "bytes": len(model),
    }
    files = {"model.onnx": model}
    if head is None:
        m["head"] = None
    else:
        m["head"] = {
            **(m.get("head") or {}),
            "file": "head.safetensors",
            "sha256": hashlib.sha256(head).hexdigest(),
            "bytes": len(head),
        }
        files["head.safetensors"] = head
    files[MANIFEST] = manifest_bytes(m)
    if signer is not None:
        files[SIGNATURE] = sign_manifest(files[MANIFEST], signer)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise BundleError(f"{out}: exists and is not a directory; choose another --out")
        if any(out.iterdir()):
            if not (out / MANIFEST).is_file():
                raise BundleError(
                    f"{out}: a non-empty directory that is not a bundle; not replacing it"
                )
            if not overwrite:
                raise BundleError(f"{out}: a bundle already exists (pass --force to replace it)")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{out.name}.tmp-{os.getpid()}"
    old = parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    try:
        for name, data in files.items():
            write_new_file(tmp / name, data, 0o644)
        fsync_dir(tmp, tolerant=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(parent, tolerant=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    # Read back with the signer's own key, or with no signature check: a host that
    # sets $EDGECL_BUNDLE_PUBKEY still writes unsigned bundles it may sign later.
    return Bundle.load(out, public_key=False if signer is None else signer.public_key())
