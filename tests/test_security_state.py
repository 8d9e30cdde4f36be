"""The state directory: learner state and checkpoints are private (0600 files, 0700 directory),
and a file planted at the writer's temporary name is replaced, never written through.

tests/test_state.py checks 0600 for a plain save; these cover the umask, stale and
planted temporary files, and the daemon's checkpoint store end to end.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgecl import LearnerConfig, StreamingLearner
from edgecl.learner.state import atomic_write_bytes, state_bytes
from edgecl.runtime.checkpoint import CheckpointStore
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.protocol import format_sample

CFG = LearnerConfig(dim=3, max_classes=2, head="ncm", budget_bytes=10_000)


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)  # the most permissive umask a service could run with
    try:
        yield
    finally:
        os.umask(old)


def test_state_file_is_0600_even_with_umask_0(tmp_path, open_umask):
    path = tmp_path / "s.safetensors"
    StreamingLearner(CFG).save(path)
    assert _mode(path) == 0o600


def test_an_existing_world_readable_state_file_becomes_private(tmp_path):
    path = tmp_path / "s.safetensors"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    StreamingLearner(CFG).save(path)
    assert _mode(path) == 0o600


def test_a_stale_temp_file_does_not_pass_its_mode_on(tmp_path, open_umask):
    path = tmp_path / "s.safetensors"
    tmp = tmp_path / f".s.safetensors.{os.getpid()}.tmp"
    tmp.write_bytes(b"left by a crashed writer")
    os.chmod(tmp, 0o666)
    atomic_write_bytes(path, b"new state")
    assert path.read_bytes() == b"new state" and _mode(path) == 0o600
    assert not tmp.exists()


def test_a_symlink_planted_at_the_temp_name_is_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    state = tmp_path / "state"
    state.mkdir()
    path = state / "s.safetensors"
    planted = state / f".s.safetensors.{os.getpid()}.tmp"
    planted.symlink_to(victim)
    data = state_bytes(StreamingLearner(CFG))
    atomic_write_bytes(path, data)
    assert victim.read_bytes() == b"precious"
    assert path.read_bytes() == data and not path.is_symlink() and _mode(path) == 0o600
    assert not planted.exists() and not planted.is_symlink()


def test_checkpoint_store_is_private(tmp_path, open_umask):
    store = CheckpointStore(tmp_path / "state")
    lr = StreamingLearner(CFG)
    lr.learn_one(np.array([1.0, 0.0, 0.0]), 0)
    path = store.save(lr)
    assert _mode(tmp_path / "state") == 0o700
    assert _mode(path) == 0o600


def test_daemon_checkpoints_are_private(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"".join(format_sample(rng.normal(size=3), i % 2) for i in range(30)))
    state = tmp_path / "state"
    cfg = DaemonConfig(
        source=str(src),
        out=str(tmp_path / "out"),
        state_dir=str(state),
        stats_every_s=0,
        checkpoint_every_samples=10,
    )
    d = build_daemon(cfg, features=3, learner_options={"max_classes": 2, "budget_bytes": 60_000})
    assert d.run(install_signals=False) == 0
    files = sorted(state.iterdir())
    assert [p.name for p in files] == [
        "journal.wal",  # the label journal: as private as the checkpoints
        "learner-00000002.safetensors",
        "learner-00000003.safetensors",
        "lock",  # the state directory's writer lock (holds the daemon's pid)
    ]
    assert _mode(state) == 0o700
    assert all(_mode(p) == 0o600 for p in files)
