"""Signed bundles: Ed25519 over manifest.json; with a key configured, nothing unsigned loads."""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("cryptography")  # the [sign] extra; `make dev` installs it

from edgecl.cli import main  # noqa: E402
from edgecl.errors import BundleError, ProfileError  # noqa: E402
from edgecl.runtime.bundle import MANIFEST, Bundle, default_bundle_path  # noqa: E402
from edgecl.runtime.profile import DeviceProfile  # noqa: E402
from edgecl.runtime.signing import (  # noqa: E402
    PUBKEY_ENV,
    SIGNATURE,
    fingerprint,
    load_public_key,
    sign_bundle,
    write_keypair,
)

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch):
    monkeypatch.delenv(PUBKEY_ENV, raising=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    a_key, a_pub = write_keypair(d / "a")
    b_key, b_pub = write_keypair(d / "b")
    return {"a.key": a_key, "a.pub": a_pub, "b.key": b_key, "b.pub": b_pub}


@pytest.fixture
def unsigned(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    assert not (dst / SIGNATURE).exists()
    return dst


@pytest.fixture
def signed(unsigned, keys) -> Path:
    sign_bundle(unsigned, keys["a.key"])
    return unsigned


# -- round trip ----------------------------------------------------------------------


def test_signed_bundle_loads_with_its_key_given_as_path_bytes_or_object(signed, keys):
    fp = fingerprint(load_public_key(keys["a.pub"]))
    for key in (keys["a.pub"], str(keys["a.pub"]), keys["a.pub"].read_bytes()):
        b = Bundle.load(signed, public_key=key)
        assert b.signed_by == fp
    b = Bundle.load(signed, public_key=load_public_key(keys["a.pub"]))
    assert b.signed_by == fp and b.embedding_dim == 64
    assert len((signed / SIGNATURE).read_bytes()) == 64


def test_without_a_key_the_signature_is_ignored_and_logged_at_debug(signed, unsigned, caplog):
    with caplog.at_level(logging.DEBUG, logger="edgecl.runtime.bundle"):
        b = Bundle.load(signed)
    assert b.signed_by is None
    assert any("not checked" in r.message and r.levelno == logging.DEBUG for r in caplog.records)
    (signed / SIGNATURE).write_bytes(b"garbage")  # not even looked at without a key
    assert Bundle.load(signed).signed_by is None


def test_key_configured_but_no_signature_is_refused(unsigned, keys):
    with pytest.raises(BundleError, match=r"manifest\.sig: missing; a bundle public key"):
        Bundle.load(unsigned, public_key=keys["a.pub"])


def test_manifest_resigned_with_another_key_is_refused(signed, keys):
    sign_bundle(signed, keys["b.key"])
    assert Bundle.load(signed, public_key=keys["b.pub"]).signed_by
    fp_a = fingerprint(load_public_key(keys["a.pub"]))
    with pytest.raises(BundleError, match=f"does not verify with public key {fp_a}"):
        Bundle.load(signed, public_key=keys["a.pub"])


def test_edited_manifest_with_valid_hashes_is_refused(signed, keys):
    """The attack a signature exists for: a new model whose hash the attacker wrote in."""
    m = json.loads((signed / MANIFEST).read_text())
    m["class_names"][0] = "EVIL"
    (signed / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    assert Bundle.load(signed).class_names[0] == "EVIL"  # fine while no key is configured
    with pytest.raises(BundleError, match="does not verify"):
        Bundle.load(signed, public_key=keys["a.pub"])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_flipped_bit_in_manifest_or_signature_is_refused(signed, keys, data):
    name = data.draw(st.sampled_from([MANIFEST, SIGNATURE]))
    p = signed / name
    raw = p.read_bytes()
    i = data.draw(st.integers(0, len(raw) - 1))
    bad = bytearray(raw)
    bad[i] ^= 1 << data.draw(st.integers(0, 7))
    p.write_bytes(bytes(bad))
    try:
        with pytest.raises(BundleError):
            Bundle.load(signed, public_key=keys["a.pub"])
    finally:
        p.write_bytes(raw)


@pytest.mark.parametrize("size", [0, 63, 65, 4096])
def test_signature_of_the_wrong_size_is_refused(signed, keys, size):
    (signed / SIGNATURE).write_bytes(b"\x01" * size)
    with pytest.raises(BundleError, match="signature|64"):
        Bundle.load(signed, public_key=keys["a.pub"])


def test_signature_symlinked_from_outside_is_refused(signed, keys, tmp_path):
    outside = tmp_path / "elsewhere.sig"
    shutil.move(signed / SIGNATURE, outside)
    (signed / SIGNATURE).symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle directory"):
        Bundle.load(signed, public_key=keys["a.pub"])


def test_model_swapped_in_a_signed_bundle_is_still_caught_by_its_hash(signed, keys):
    p = signed / "model.onnx"
    raw = bytearray(p.read_bytes())
    raw[100] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256"):
        Bundle.load(signed, public_key=keys["a.pub"])


def test_a_damaged_bundle_is_never_signed(unsigned, keys):
    p = unsigned / "head.safetensors"
    raw = bytearray(p.read_bytes())
    raw[5000] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256"):
        sign_bundle(unsigned, keys["a.key"])
    assert not (unsigned / SIGNATURE).exists()


def test_manifest_swapped_between_verifying_and_signing_is_not_signed(unsigned, keys, monkeypatch):
    import edgecl.runtime.signing as signing

    real = signing.read_manifest_bytes

    def swapped(root):
        return real(root).replace(b'"PEN"', b'"EVIL"')

    monkeypatch.setattr(signing, "read_manifest_bytes", swapped)
    with pytest.raises(BundleError, match="changed while it was being signed"):
        sign_bundle(unsigned, keys["a.key"])
    assert not (unsigned / SIGNATURE).exists()


# -- where the key comes from ----------------------------------------------------------


def test_environment_variable_configures_the_key(signed, unsigned, keys, monkeypatch, tmp_path):
    monkeypatch.setenv(PUBKEY_ENV, str(keys["a.pub"]))
    assert Bundle.load(signed).signed_by is not None
    with pytest.raises(BundleError, match="missing"):
        Bundle.load()  # the shipped bundle is unsigned
    assert Bundle.load(public_key=False).signed_by is None  # explicit opt-out for tools
    monkeypatch.setenv(PUBKEY_ENV, str(keys["b.pub"]))
    with pytest.raises(BundleError, match="does not verify"):
        Bundle.load(signed)
    monkeypatch.setenv(PUBKEY_ENV, str(tmp_path / "nope.pub"))
    with pytest.raises(BundleError, match=rf"nope.pub: cannot read public key .*\${PUBKEY_ENV}"):
        Bundle.load(signed)
    monkeypatch.setenv(PUBKEY_ENV, "  ")
    assert Bundle.load(signed).signed_by is None  # empty counts as unset


def test_device_profile_names_the_key_relative_to_itself(signed, keys, tmp_path):
    prof = tmp_path / "etc" / "device.toml"
    prof.parent.mkdir()
    shutil.copy(keys["a.pub"], prof.parent / "bundle.pub")
    prof.write_text('name = "pi"\nbundle_public_key = "bundle.pub"\n')
    p = DeviceProfile.load(prof)
    assert p.bundle_public_key_path == prof.parent / "bundle.pub"
    assert Bundle.load(signed, public_key=p.bundle_public_key).signed_by is not None
    assert DeviceProfile.default().bundle_public_key is None
    for bad in ("", " ", "a\0b", 3):
        with pytest.raises(ProfileError, match="bundle_public_key"):
            DeviceProfile.from_dict({"name": "pi", "bundle_public_key": bad})


def test_cli_bench_honours_the_profile_key(keys, tmp_path, capsys):
    prof = tmp_path / "device.toml"
    prof.write_text(f'name = "pi"\nbundle_public_key = "{keys["a.pub"]}"\n')
    rc = main(["bench", "--profile", str(prof), "--n", "1", "--warmup", "0", "--json", "-"])
    err = capsys.readouterr().err
    assert rc == 1 and "manifest.sig: missing" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"not a key", "not a PEM public key"),
        (b"", "not a PEM public key"),
    ],
)
def test_bad_public_key_files_are_refused(signed, tmp_path, text, message):
    p = tmp_path / "k.pub"
    p.write_bytes(text)
    with pytest.raises(BundleError, match=message):
        Bundle.load(signed, public_key=p)


def test_keys_of_another_algorithm_are_refused(signed, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    k = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "ec.pub"
    pub.write_bytes(
        k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(BundleError, match="not an Ed25519 public key"):
        Bundle.load(signed, public_key=pub)
    priv = tmp_path / "ec.key"
    priv.write_bytes(
        k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(BundleError, match="not an Ed25519 private key"):
        sign_bundle(signed, priv)


def test_encrypted_private_key_is_refused_with_a_reason(unsigned, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    p = tmp_path / "enc.key"
    p.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(BundleError, match="unencrypted PEM"):
        sign_bundle(unsigned, p)


def test_cryptography_missing_fails_closed_with_the_install_hint(signed, keys, monkeypatch):
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(BundleError, match=r"pip install 'edgecl\[sign\]'"):
        Bundle.load(signed, public_key=keys["a.pub"])
    monkeypatch.setenv(PUBKEY_ENV, str(keys["a.pub"]))
    with pytest.raises(BundleError, match="cryptography"):
        Bundle.load(signed)
    monkeypatch.delenv(PUBKEY_ENV)
    assert Bundle.load(signed).embedding_dim == 64  # no key: cryptography is not needed


# -- key files and tools -----------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_can_read_and_never_overwrites(tmp_path):
    key, pub = write_keypair(tmp_path / "k" / "dev")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    with pytest.raises(BundleError, match="exists; not overwriting"):
        write_keypair(tmp_path / "k" / "dev")
    assert key.read_bytes() == before


def _tool():
    sys.path.insert(0, str(TOOLS))
    try:
        return importlib.import_module("bundle_keys")
    finally:
        sys.path.remove(str(TOOLS))


def test_bundle_keys_tool_keygen_sign_verify(unsigned, tmp_path, capsys):
    tool = _tool()
    stem = tmp_path / "keys" / "fleet"
    assert tool.main(["keygen", "--out", str(stem)]) == 0
    assert tool.main(["verify", str(unsigned), "--pubkey", f"{stem}.pub"]) == 1
    assert "manifest.sig: missing" in capsys.readouterr().err
    assert tool.main(["sign", str(unsigned), "--key", f"{stem}.key"]) == 0
    assert tool.main(["verify", str(unsigned), "--pubkey", f"{stem}.pub"]) == 0
    assert "signature OK" in capsys.readouterr().out
    assert stat.S_IMODE((unsigned / SIGNATURE).stat().st_mode) == 0o644


def _openssl3() -> str | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    out = subprocess.run([exe, "version"], capture_output=True, text=True, timeout=30)
    return exe if out.stdout.startswith("OpenSSL 3") else None


@pytest.mark.skipif(_openssl3() is None, reason="needs the OpenSSL 3 command line")
def test_keys_and_signatures_interoperate_with_openssl(unsigned, tmp_path):
    exe = _openssl3()

    def run(*args):
        subprocess.run([exe, *args], check=True, capture_output=True, timeout=60)

    key, pub = tmp_path / "o.key", tmp_path / "o.pub"
    run("genpkey", "-algorithm", "ed25519", "-out", str(key))
    run("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    sig = unsigned / SIGNATURE
    run("pkeyutl", "-sign", "-inkey", str(key), "-rawin", "-in", str(unsigned / MANIFEST),
        "-out", str(sig))  # fmt: skip
    assert Bundle.load(unsigned, public_key=pub).signed_by is not None
    sign_bundle(unsigned, key)  # and edgecl signs with OpenSSL's key; OpenSSL verifies
    run("pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin",
        "-in", str(unsigned / MANIFEST), "-sigfile", str(sig))  # fmt: skip


# -- export --sign-key -------------------------------------------------------------------


def _tiny_checkpoint(path: Path) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    import torch

    from edgecl.host.checkpoint import save_checkpoint
    from edgecl.host.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (6,), 3, embed_dim=4).eval()
    meta = {
        "normalisation": {"mean": [0.0], "std": [1.0]},
        "class_names": ["a", "b", "c"],
        "window": None,
        "provenance": {"seed": 0},
    }
    save_checkpoint(path, model, meta)
    return path


def test_cli_export_signs_with_sign_key(keys, tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "b"
    rc = main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--head", "none",
               "--sign-key", str(keys["a.key"]), "--json", "-"])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    fp = fingerprint(load_public_key(keys["a.pub"]))
    assert report["signed_by"] == fp
    assert sorted(os.listdir(out)) == [MANIFEST, SIGNATURE, "model.onnx"]
    assert Bundle.load(out, public_key=keys["a.pub"]).signed_by == fp
    with pytest.raises(BundleError, match="does not verify"):
        Bundle.load(out, public_key=keys["b.pub"])
    # Unsigned re-export over it leaves no stale signature behind.
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--head", "none",
                 "--force"]) == 0  # fmt: skip
    assert not (out / SIGNATURE).exists()


def test_cli_export_with_a_bad_key_fails_before_exporting(tmp_path, capsys):
    ckpt = _tiny_checkpoint(tmp_path / "tiny.safetensors")
    bad = tmp_path / "bad.key"
    bad.write_text("nope")
    out = tmp_path / "b"
    rc = main(["export", "--checkpoint", str(ckpt), "--out", str(out), "--sign-key", str(bad)])
    err = capsys.readouterr().err
    assert rc == 1 and "not a PEM private key" in err and err.count("\n") == 1
    assert not out.exists()
