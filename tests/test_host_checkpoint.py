"""Checkpoints: exact round trip, and every corruption is rejected."""

from __future__ import annotations

import json
import struct

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgecl.errors import StateFileError  # noqa: E402
from edgecl.host.checkpoint import (  # noqa: E402
    checkpoint_bytes,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from edgecl.host.models import build_model  # noqa: E402

META = {
    "normalisation": {"mean": [0.1] * 6, "std": [2.0] * 6},
    "class_names": ["PEN", "ABD", "FEL"],
    "window": {"length": 32, "hop": 16, "channels": list("abcdef"), "rate_hz": 50},
    "provenance": {"data": "x.npz", "epochs": 1, "seed": 0, "accuracy": 0.5},
}


def _trained_model():
    torch.manual_seed(1)
    m = build_model("imu-cnn", (32, 6), 3, embed_dim=8, width=4)
    m.train()
    m(torch.randn(16, 32, 6))  # moves the BatchNorm running statistics
    return m


def test_round_trip_is_exact(tmp_path):
    m = _trained_model()
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, m, META)
    m2, meta = load_checkpoint(path)
    assert meta == META
    assert m2.spec == m.spec and not m2.training
    s1, s2 = m.state_dict(), m2.state_dict()
    assert list(s1) == list(s2)
    for k in s1:
        assert s1[k].dtype == s2[k].dtype and torch.equal(s1[k], s2[k]), k
    x = torch.randn(5, 32, 6)
    assert torch.equal(m.eval()(x), m2(x))
    # Deterministic bytes: saving the loaded model again gives the same file.
    assert checkpoint_bytes(m2, meta) == path.read_bytes()
    info = read_checkpoint_meta(path)
    assert info["format"] == 1 and info["spec"] == m.spec and info["meta"] == META


def test_numpy_and_nan_meta_become_json(tmp_path):
    import numpy as np

    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _trained_model(), {"mean": np.zeros(2, np.float32), "acc": float("nan")})
    assert load_checkpoint(path)[1] == {"mean": [0.0, 0.0], "acc": None}


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_flipped_byte_is_rejected(tmp_path_factory, data):
    raw = checkpoint_bytes(_trained_model(), META)
    pos = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(raw)
    bad[pos] ^= 1 << bit
    path = tmp_path_factory.mktemp("c") / "bad.safetensors"
    path.write_bytes(bytes(bad))
    with pytest.raises(StateFileError):
        load_checkpoint(path)


@pytest.mark.parametrize("cut", [0, 5, 100, -1])
def test_truncated_file_is_rejected(tmp_path, cut):
    raw = checkpoint_bytes(_trained_model(), META)
    path = tmp_path / "t.safetensors"
    path.write_bytes(raw[:cut])
    with pytest.raises(StateFileError):
        load_checkpoint(path)


def test_weight_change_with_recomputed_header_digest_is_rejected(tmp_path):
    """Editing a weight is caught by the array digest even if the JSON digest is redone."""
    raw = bytearray(checkpoint_bytes(_trained_model(), META))
    raw[-1] ^= 0xFF  # last byte of the last tensor
    path = tmp_path / "w.safetensors"
    path.write_bytes(bytes(raw))
    with pytest.raises(StateFileError, match="weights checksum"):
        load_checkpoint(path)


def test_learner_state_file_is_not_a_checkpoint(tmp_path):
    import numpy as np

    from edgecl import LearnerConfig, StreamingLearner

    lr = StreamingLearner(LearnerConfig(dim=3, max_classes=2, head="ncm", budget_bytes=50_000))
    lr.learn_one(np.ones(3), 1)
    lr.save(tmp_path / "s.safetensors")
    with pytest.raises(StateFileError):
        load_checkpoint(tmp_path / "s.safetensors")


def test_spec_that_does_not_fit_the_weights_is_rejected(tmp_path):
    """A consistent file whose spec was swapped for another architecture."""
    from safetensors.numpy import load, save

    from edgecl.host import checkpoint as ck

    raw = checkpoint_bytes(_trained_model(), META)
    (n,) = struct.unpack("<Q", raw[:8])
    info = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["edgecl"])
    info.pop("sha256")
    info["spec"]["embed_dim"] = 9
    header = ck.canonical_json({**info, "sha256": ck._digest(info)})
    path = tmp_path / "s.safetensors"
    path.write_bytes(save(load(raw), metadata={"edgecl": header}))
    with pytest.raises(StateFileError, match="shape|do not match"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(StateFileError, match="cannot read"):
        load_checkpoint(tmp_path / "nope.safetensors")
