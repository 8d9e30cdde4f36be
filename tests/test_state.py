"""State files: exact round trip, deterministic bytes, every corruption detected."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, StateFileError, StreamingLearner
from edgecl.learner.checks import blobs
from edgecl.learner.state import atomic_write_bytes, state_bytes

CFG = LearnerConfig(
    dim=5, max_classes=4, head="softmax", budget_bytes=20_000, ewc_lambda=3.0, loss_window=8
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    lr = StreamingLearner(CFG)
    X, y = blobs(CFG, 60)
    lr.learn_many(X, y)
    path = tmp_path_factory.mktemp("state") / "learner.safetensors"
    lr.save(path)
    return lr, path.read_bytes()


def test_roundtrip_is_exact(saved, tmp_path):
    lr, raw = saved
    path = tmp_path / "s.safetensors"
    path.write_bytes(raw)
    back = StreamingLearner.load(path)
    assert state_bytes(back) == raw
    assert back.n_learned == lr.n_learned == 60
    for name, a in lr.head.arrays().items():
        assert np.array_equal(a, back.head.arrays()[name])
    assert back.buffer.counters() == lr.buffer.counters()
    assert back.fisher.counters() == lr.fisher.counters()


@pytest.mark.parametrize("head", ["ncm", "slda", "softmax"])
def test_same_seed_same_stream_same_file(head, tmp_path):
    cfg = LearnerConfig(dim=7, max_classes=3, head=head, budget_bytes=30_000, seed=11)
    X, y = blobs(cfg, 100, classes=3)
    for name in ("a", "b"):
        lr = StreamingLearner(cfg)
        lr.learn_many(X, y)
        lr.save(tmp_path / name)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    other = StreamingLearner(cfg.replace(seed=12))
    other.learn_many(X, y)
    if head == "softmax":  # replay sampling depends on the seed
        assert state_bytes(other) != (tmp_path / "a").read_bytes()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_changed_byte_is_detected(saved, tmp_path, data):
    _, raw = saved
    i = data.draw(st.integers(0, len(raw) - 1), label="offset")
    delta = data.draw(st.integers(1, 255), label="delta")
    bad = bytearray(raw)
    bad[i] = (raw[i] + delta) % 256
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(bad))
    with pytest.raises(StateFileError):
        StreamingLearner.load(path)


def test_every_single_bit_flip_in_the_header_is_detected(saved, tmp_path):
    _, raw = saved
    header_end = 8 + int.from_bytes(raw[:8], "little")
    path = tmp_path / "bit.safetensors"
    for i in range(header_end):
        for bit in range(8):
            bad = bytearray(raw)
            bad[i] ^= 1 << bit
            path.write_bytes(bytes(bad))
            with pytest.raises(StateFileError):
                StreamingLearner.load(path)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_truncation_and_extension_are_detected(saved, tmp_path, data):
    _, raw = saved
    cut = data.draw(st.integers(0, len(raw) - 1))
    path = tmp_path / "cut.safetensors"
    path.write_bytes(raw[:cut])
    with pytest.raises(StateFileError):
        StreamingLearner.load(path)
    path.write_bytes(raw + b"\0" * data.draw(st.integers(1, 64)))
    with pytest.raises(StateFileError):
        StreamingLearner.load(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(StateFileError, match="cannot read"):
        StreamingLearner.load(tmp_path / "nope.safetensors")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(StateFileError, match="not an edgecl state file"):
        StreamingLearner.load(tmp_path / "foreign.safetensors")
    (tmp_path / "text").write_text("hello, I am not a tensor file at all")
    with pytest.raises(StateFileError):
        StreamingLearner.load(tmp_path / "text")


def test_state_file_is_private_and_write_is_atomic(tmp_path):
    lr = StreamingLearner(CFG)
    path = tmp_path / "s.safetensors"
    lr.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]  # no temp left

    old = path.read_bytes()
    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # type: ignore[arg-type]
    assert path.read_bytes() == old  # the failed write left the old file whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]
