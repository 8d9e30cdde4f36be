"""``edgecl run`` security follow-ups: a signed bundle key, and a private state directory."""

from __future__ import annotations

import logging
import os
import shutil
import stat

import numpy as np
import pytest

from edgecl import LearnerConfig, StreamingLearner
from edgecl.cli import main
from edgecl.errors import BundleError, StateFileError
from edgecl.runtime.bundle import default_bundle_path
from edgecl.runtime.checkpoint import CheckpointStore
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.profile import DeviceProfile
from edgecl.runtime.signing import PUBKEY_ENV, SIGNATURE

CFG = LearnerConfig(dim=3, max_classes=2, head="ncm", budget_bytes=10_000)


# -- a private state directory -------------------------------------------------------


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_group_or_world_accessible_state_dir_is_made_private(tmp_path, caplog):
    d = tmp_path / "state"
    d.mkdir()
    os.chmod(d, 0o755)
    with caplog.at_level(logging.WARNING, logger="edgecl.run"):
        store = CheckpointStore(d)
    assert _mode(d) == 0o700
    assert "changed to 0700" in caplog.text
    lr = StreamingLearner(CFG)
    lr.learn_one(np.array([1.0, 0.0, 0.0]), 0)
    assert _mode(store.save(lr)) == 0o600


def test_a_private_state_dir_is_left_alone_without_a_warning(tmp_path, caplog):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    with caplog.at_level(logging.WARNING, logger="edgecl.run"):
        CheckpointStore(d)
    assert _mode(d) == 0o700 and not caplog.records


def test_a_state_dir_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)  # as if another user ran it
    with pytest.raises(StateFileError, match="owned by uid"):
        CheckpointStore(d)
    with pytest.raises(StateFileError, match="owned by uid"):
        build_daemon(
            DaemonConfig(source="loop://", state_dir=str(d)),
            features=3,
            learner_options={"max_classes": 2, "budget_bytes": 60_000},
        )


# -- edgecl run --bundle-pubkey ------------------------------------------------------

crypto = pytest.importorskip  # the [sign] extra; `make dev` installs it


@pytest.fixture
def keys(tmp_path):
    crypto("cryptography")
    from edgecl.runtime.signing import write_keypair

    a_key, a_pub = write_keypair(tmp_path / "a")
    _, b_pub = write_keypair(tmp_path / "b")
    return {"a.key": a_key, "a.pub": a_pub, "b.pub": b_pub}


@pytest.fixture
def signed(tmp_path, keys, monkeypatch):
    from edgecl.runtime.signing import sign_bundle

    monkeypatch.delenv(PUBKEY_ENV, raising=False)
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    sign_bundle(dst, keys["a.key"])
    assert (dst / SIGNATURE).exists()
    return dst


def _cfg(tmp_path):
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    return DaemonConfig(source=str(empty), out=str(tmp_path / "out"), stats_every_s=0, warmup=0)


def test_build_daemon_checks_the_signature_with_the_given_key(signed, keys, tmp_path, caplog):
    from edgecl.runtime.signing import fingerprint, load_public_key

    with caplog.at_level(logging.INFO, logger="edgecl.run"):
        d = build_daemon(_cfg(tmp_path), bundle=signed, public_key=keys["a.pub"])
    assert d.windower is not None
    assert f"signed by {fingerprint(load_public_key(keys['a.pub']))}" in caplog.text
    with pytest.raises(BundleError, match="signature"):
        build_daemon(_cfg(tmp_path), bundle=signed, public_key=keys["b.pub"])


def test_build_daemon_takes_the_profile_key_by_default(signed, keys, tmp_path):
    prof = tmp_path / "device.toml"
    prof.write_text(f'name = "pi"\nbundle_public_key = "{keys["b.pub"]}"\n')
    with pytest.raises(BundleError, match="signature"):
        build_daemon(_cfg(tmp_path), bundle=signed, profile=DeviceProfile.load(prof))
    # An explicit key wins over the profile's.
    d = build_daemon(
        _cfg(tmp_path), bundle=signed, profile=DeviceProfile.load(prof), public_key=keys["a.pub"]
    )
    assert d.windower is not None


def test_cli_run_bundle_pubkey_flag(signed, keys, tmp_path, capsys):
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    base = ["run", "--bundle", str(signed), "--source", str(empty), "--out", str(tmp_path / "o")]
    base += ["--stats-every", "0", "--log-level", "error"]
    assert main([*base, "--bundle-pubkey", str(keys["a.pub"])]) == 0
    assert main([*base, "--bundle-pubkey", str(keys["b.pub"])]) != 0
    assert "signature" in capsys.readouterr().err


def test_cli_run_honours_the_environment_key(signed, keys, tmp_path, monkeypatch, capsys):
    unsigned = tmp_path / "unsigned"
    shutil.copytree(default_bundle_path(), unsigned)
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    monkeypatch.setenv(PUBKEY_ENV, str(keys["a.pub"]))
    argv = ["run", "--bundle", str(unsigned), "--source", str(empty), "--out", str(tmp_path / "o")]
    assert main([*argv, "--stats-every", "0", "--log-level", "error"]) != 0
    assert "manifest.sig" in capsys.readouterr().err
