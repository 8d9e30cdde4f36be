"""Ed25519 signatures of bundle manifests (optional extra: ``pip install 'edgecl[sign]'``).

``manifest.sig`` beside ``manifest.json`` is the raw 64-byte Ed25519 signature
(RFC 8032) of the manifest file's exact bytes. The manifest pins the sha256 of
``model.onnx`` and ``head.safetensors``, so one signature covers the bundle.

Keys are PEM files, the format OpenSSL writes: the private key is unencrypted
PKCS#8 (``-----BEGIN PRIVATE KEY-----``), the public key SubjectPublicKeyInfo
(``-----BEGIN PUBLIC KEY-----``). Make a pair with
``python tools/bundle_keys.py keygen --out KEYS/bundle`` or with OpenSSL::

    openssl genpkey -algorithm ed25519 -out bundle.key
    openssl pkey -in bundle.key -pubout -out bundle.pub

The verifying key of :meth:`edgecl.runtime.bundle.Bundle.load` is, in order:
its ``public_key`` argument (a path, PEM bytes or an ``Ed25519PublicKey``; the
CLI passes ``--bundle-pubkey`` or the device profile's ``bundle_public_key``),
else the file named by the environment variable ``EDGECL_BUNDLE_PUBKEY``, else
none. With a key, a bundle whose signature is missing, malformed or made with
another key is refused (:class:`~edgecl.errors.BundleError`), and so is every
bundle when ``cryptography`` is not installed: the check fails closed. Without
a key, a signature is not checked (a debug log line says so).

Verification uses the ``cryptography`` package (OpenSSL's Ed25519), imported
only when a key is in play; nothing else in edgecl needs it.

>>> SIGNATURE, SIGNATURE_BYTES, PUBKEY_ENV
('manifest.sig', 64, 'EDGECL_BUNDLE_PUBKEY')
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, Union

from edgecl.errors import BundleError
from edgecl.learner.state import write_new_file
from edgecl.runtime.manifest import MANIFEST, parse_manifest, read_manifest_bytes, read_regular

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from edgecl.runtime.bundle import Bundle

__all__ = [
    "INSTALL_HINT",
    "PUBKEY_ENV",
    "SIGNATURE",
    "SIGNATURE_BYTES",
    "configured_public_key",
    "fingerprint",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign_bundle",
    "sign_manifest",
    "verify_manifest",
    "write_keypair",
]

SIGNATURE = "manifest.sig"
SIGNATURE_BYTES = 64
PUBKEY_ENV = "EDGECL_BUNDLE_PUBKEY"
INSTALL_HINT = "pip install 'edgecl[sign]'"
MAX_KEY_BYTES = 16 * 1024  # a PEM Ed25519 key is ~120 bytes

KeySource = Union[str, os.PathLike, bytes, "Ed25519PublicKey"]


def _crypto() -> Any:
    """The ``cryptography`` Ed25519 and serialization modules, or a BundleError with the hint."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise BundleError(
            "bundle signatures need the 'cryptography' package, which is not installed "
            f"({INSTALL_HINT}); refusing to load a bundle unchecked while a public key is set"
        ) from None

    return SimpleNamespace(ed25519=ed25519, serialization=serialization, exceptions=exceptions)


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(os.path.expanduser(os.fspath(path)))
    return read_regular(p, max_bytes=MAX_KEY_BYTES, what=what)


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key (names a key in logs)."""
    s = _crypto().serialization
    raw = public_key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(source: KeySource, where: str | None = None) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file path, PEM bytes, or a key object.

    Raises
    ------
    BundleError
        Unreadable, not PEM, not Ed25519, or ``cryptography`` is missing.
    """
    m = _crypto()
    if isinstance(source, m.ed25519.Ed25519PublicKey):
        return source
    if isinstance(source, bytes):
        data, where = source, where or "<public key bytes>"
    elif isinstance(source, (str, os.PathLike)):
        data, where = _read_key_file(source, "public key"), where or os.fspath(source)
    else:
        raise BundleError(f"public key {source!r}: expected a PEM file path or PEM bytes")
    try:
        key = m.serialization.load_pem_public_key(data)
    except (ValueError, TypeError, m.exceptions.UnsupportedAlgorithm) as exc:
        raise BundleError(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, m.ed25519.Ed25519PublicKey):
        raise BundleError(f"{where}: a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_private_key(source: str | os.PathLike[str] | Ed25519PrivateKey) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PKCS#8 PEM file (or a key object)."""
    m = _crypto()
    if isinstance(source, m.ed25519.Ed25519PrivateKey):
        return source
    data = _read_key_file(source, "private key")
    try:
        key = m.serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # "Password was not given but private key is encrypted"
        raise BundleError(f"{source}: {exc}; edgecl reads unencrypted PEM keys") from None
    except (ValueError, m.exceptions.UnsupportedAlgorithm) as exc:
        raise BundleError(f"{source}: not a PEM private key ({exc})") from None
    if not isinstance(key, m.ed25519.Ed25519PrivateKey):
        raise BundleError(f"{source}: a {type(key).__name__}, not an Ed25519 private key")
    return key


def configured_public_key(
    public_key: KeySource | None | Literal[False] = None,
) -> Ed25519PublicKey | None:
    """The key a bundle must be signed with: the argument, else ``$EDGECL_BUNDLE_PUBKEY``.

    ``False`` means "check no signature" (ignores the environment); ``None``
    consults the environment variable; an empty variable counts as unset.

    >>> configured_public_key(False) is None
    True
    """
    if public_key is False:
        return None
    if public_key is None:
        env = os.environ.get(PUBKEY_ENV, "").strip()
        if not env:
            return None
        try:
            return load_public_key(env)
        except BundleError as exc:
            raise BundleError(f"{exc} (the key named by ${PUBKEY_ENV})") from None
    return load_public_key(public_key)


def sign_manifest(manifest: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The 64-byte Ed25519 signature of ``manifest`` (the exact bytes of ``manifest.json``)."""
    return private_key.sign(manifest)


def verify_manifest(
    manifest: bytes, signature: bytes, public_key: Ed25519PublicKey, where: str
) -> None:
    """Raise :class:`BundleError` unless ``signature`` is ``public_key``'s over ``manifest``."""
    m = _crypto()
    fp = fingerprint(public_key)
    if len(signature) != SIGNATURE_BYTES:
        raise BundleError(
            f"{where}: {len(signature)} bytes; an Ed25519 signature is {SIGNATURE_BYTES}"
        )
    try:
        public_key.verify(signature, manifest)
    except m.exceptions.InvalidSignature:
        raise BundleError(
            f"{where}: the signature does not verify with public key {fp} "
            "(manifest changed after signing, or signed with another key)"
        ) from None


def sign_bundle(
    path: str | os.PathLike[str], private_key: str | os.PathLike[str] | Ed25519PrivateKey
) -> Bundle:
    """Sign an existing bundle: write ``manifest.sig`` (mode 0644) for its manifest's bytes.

    The bundle is verified first (every sha256), so a damaged bundle is never
    signed, and the bytes signed must parse to the manifest just verified. The
    result is loaded back with the matching public key.
    """
    from edgecl.learner.state import atomic_write_bytes
    from edgecl.runtime.bundle import Bundle

    signer = load_private_key(private_key)
    root = Path(path)
    verified = Bundle.load(root, public_key=False)
    raw = read_manifest_bytes(root)
    if parse_manifest(raw, root / MANIFEST) != verified.manifest:
        raise BundleError(f"{root / MANIFEST}: changed while it was being signed; not signed")
    atomic_write_bytes(root / SIGNATURE, sign_manifest(raw, signer), mode=0o644)
    return Bundle.load(root, public_key=signer.public_key())


def generate_keypair() -> tuple[bytes, bytes]:
    """A new key pair as PEM bytes: (unencrypted PKCS#8 private key, public key)."""
    m = _crypto()
    s = m.serialization
    key = m.ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption())
    public = key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def write_keypair(stem: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``STEM.key`` (mode 0600) and ``STEM.pub`` (0644); never overwrites either."""
    stem = Path(stem)
    priv_path, pub_path = stem.with_name(stem.name + ".key"), stem.with_name(stem.name + ".pub")
    for p in (priv_path, pub_path):
        if p.exists() or p.is_symlink():
            raise BundleError(f"{p}: exists; not overwriting a key")
    private, public = generate_keypair()
    stem.parent.mkdir(parents=True, exist_ok=True)
    for p, data, mode in ((priv_path, private, 0o600), (pub_path, public, 0o644)):
        write_new_file(p, data, mode)
    return priv_path, pub_path
