"""Crash safety: ``kill -9`` loops (tools/crash_test.py, 4 kills) and a failing checkpoint write."""

from __future__ import annotations

import errno
import json
import logging
import os

import numpy as np
from helpers import import_tool

from edgecl import StreamingLearner
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.protocol import format_sample


def _tool():
    return import_tool("crash_test")


def test_kills_while_learning_lose_at_most_the_label_in_flight(tmp_path, capsys):
    """A few kills; the figures come from `python tools/crash_test.py --kills 20`."""
    out = tmp_path / "crash.json"
    rc = _tool().main(["--kills", "4", "--every", "3", "--seed", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0, res
    kill = res["kill_9"]
    assert kill["kills"] == 4 and kill["corrupt_states"] == 0 and not kill["failures"]
    assert kill["resumes_byte_identical"] == 4 and 0 <= kill["lost_max"] <= 1
    # Every kill after the first prediction; where each landed is counted.
    assert kill["landed"]["startup"] == 0 and sum(kill["landed"].values()) == 4
    assert res["disk_full"]["ok"] and res["disk_full"]["checkpoint_errors"] >= 1
    amp = res["journal_write_amplification"]
    assert amp["bytes_per_learned_label"] == 277 and amp["bytes_per_observed_window"] == 265


def test_a_failed_checkpoint_write_keeps_the_old_one_and_the_daemon_serving(
    tmp_path, monkeypatch, caplog
):
    rng = np.random.default_rng(0)
    state = tmp_path / "state"
    opts = {"max_classes": 2, "budget_bytes": 60_000}

    def run(n, name):
        src = tmp_path / f"{name}.ndjson"
        src.write_bytes(b"".join(format_sample(rng.normal(size=3), i % 2) for i in range(n)))
        cfg = DaemonConfig(
            source=str(src),
            out=str(tmp_path / f"{name}.out"),
            state_dir=str(state),
            stats_every_s=0,
            checkpoint_every_samples=10,
            warmup=0,
        )
        d = build_daemon(cfg, features=3, learner_options=opts)
        assert d.run(install_signals=False) == 0
        return d, (tmp_path / f"{name}.out").read_text().splitlines()

    run(10, "first")
    (old,) = state.glob("learner-*.safetensors")
    before = old.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with caplog.at_level(logging.ERROR, logger="edgecl.run"):
        d, lines = run(35, "full")
    snap = json.loads(lines[-1])["stats"]
    # Every sample served; tries at 10, 20, 30 learned labels and at exit, all failed.
    assert sum('"seq"' in s for s in lines) == 35 and snap["learned"] == 35
    assert snap["checkpoint_errors"] == 4 and snap["checkpoints"] == 0
    assert caplog.text.count("checkpoint failed") == 4 and "No space left" in caplog.text
    assert snap["journal_errors"] == 1  # its fsync failed too (logged once, then off)
    assert sorted(state.glob("*learner*")) == [old] and old.read_bytes() == before  # no temp files
    assert StreamingLearner.load(old).n_learned == 10
    monkeypatch.undo()
    # Space again: the next run resumes from the old checkpoint plus the 35 labels the
    # journal holds (written, though never fsynced), and writes new checkpoints.
    d, _ = run(10, "again")
    # The 35 replayed labels are due for a checkpoint at once; then the final one.
    assert d.learner.n_learned == 55 and d.stats.checkpoints == 2
