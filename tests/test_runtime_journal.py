"""The label journal (a crash loses no learned label) and state tied to its bundle (issue 12)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, StreamingLearner
from edgecl.learner.state import state_bytes
from edgecl.runtime.bundle import default_bundle_path
from edgecl.runtime.checkpoint import CheckpointStore, StateMismatchError
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.journal import (
    JOURNAL,
    LEARN,
    MAGIC,
    OBSERVE,
    RESET_USER,
    Journal,
    parse_journal,
    read_journal,
    record_bytes,
)
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.protocol import format_sample

DIM = 3

# -- the file format ---------------------------------------------------------------------


FLOATS = st.floats(-1e6, 1e6, width=32)


def _ops():
    vec = st.lists(FLOATS, min_size=DIM, max_size=DIM).map(lambda v: np.array(v, np.float32))
    learn = st.tuples(st.just(LEARN), vec, st.integers(0, 9), st.integers(0, 2**40))
    observe = st.tuples(st.just(OBSERVE), vec, st.just(-1), st.just(-1))
    reset = st.tuples(st.just(RESET_USER), st.none(), st.just(-1), st.just(-1))
    return st.lists(st.one_of(learn, observe, reset), max_size=6)


def _write(ops) -> tuple[bytes, int]:
    """A journal holding ``ops``, and where its header ends."""
    with tempfile.TemporaryDirectory() as d:
        j = Journal.start(d, dim=DIM, tag="features:3", base="initial", base_sha256="a" * 64)
        header_end = j.size
        for kind, x, y, seq in ops:
            if kind == LEARN:
                j.learn(x, y, seq)
            elif kind == OBSERVE:
                j.observe(x)
            else:
                j.reset_user()
        j.close()
        return (Path(d) / JOURNAL).read_bytes(), header_end


def _same(records, ops) -> bool:
    if len(records) != len(ops):
        return False
    for r, (kind, x, y, seq) in zip(records, ops, strict=True):
        if r.kind != kind or (kind == LEARN and (r.y, r.seq) != (y, seq)):
            return False
        if x is not None and not np.array_equal(r.x, x):
            return False
    return True


@settings(max_examples=40, deadline=None)
@given(_ops())
def test_a_journal_cut_at_any_byte_replays_exactly_the_whole_records_before_it(ops):
    data, header_end = _write(ops)
    ends = np.cumsum([header_end] + [record_bytes(k, DIM) for k, *_ in ops])
    assert ends[-1] == len(data)
    got = parse_journal(data)
    assert _same(got.records, ops) and got.dropped == 0 and got.reason is None
    for cut in range(len(data) + 1):
        got = parse_journal(data[:cut])
        whole = int(np.searchsorted(ends, cut, side="right")) - 1  # records ending <= cut
        if cut < header_end:
            assert got.header is None and got.records == [] and got.dropped == cut
            continue
        assert got.header["base_sha256"] == "a" * 64
        assert _same(got.records, ops[:whole]), cut
        assert got.good_end == ends[whole] and got.dropped == cut - ends[whole]


@settings(max_examples=40, deadline=None)
@given(_ops(), st.data())
def test_a_flipped_byte_stops_replay_at_the_damaged_record(ops, data):
    raw, header_end = _write(ops)
    at = data.draw(st.integers(len(MAGIC), len(raw) - 1))
    bad = bytearray(raw)
    bad[at] ^= data.draw(st.integers(1, 255))
    got = parse_journal(bytes(bad))
    ends = np.cumsum([header_end] + [record_bytes(k, DIM) for k, *_ in ops])
    damaged = int(np.searchsorted(ends, at, side="right")) - 1  # index of the record hit
    if at < header_end:
        assert got.header is None and got.records == []
    else:
        assert _same(got.records, ops[:damaged]) and got.dropped == len(raw) - ends[damaged]


def test_record_sizes_are_the_write_amplification():
    # 64-d (the shipped bundle): 277 B per learned label, 265 B per observed window.
    assert record_bytes(LEARN, 64) == 8 + 1 + 8 + 4 + 256
    assert record_bytes(OBSERVE, 64) == 8 + 1 + 256
    with pytest.raises(ValueError, match="float32"):
        _write([(OBSERVE, np.zeros(DIM), -1, -1)])  # float64 would replay rounded


def test_fsync_at_most_every_period_and_a_failed_write_stops_the_journal(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    x = np.ones(DIM, np.float32)
    j = Journal.start(tmp_path, dim=DIM, tag="t", base="b", base_sha256="0" * 64, fsync_s=0)
    synced.clear()
    for _ in range(3):
        j.observe(x)
    assert len(synced) == 3  # 0: after every record
    j.fsync_s = 60.0
    j.sync()
    synced.clear()
    for _ in range(3):
        j.observe(x)
    j.tick()
    assert synced == []  # not yet due
    j.tick(time.monotonic() + 61)
    assert len(synced) == 1
    # A failed write: counted, logged, no more records (one after a torn one would be lost).
    monkeypatch.setattr(os, "write", lambda fd, b: (_ for _ in ()).throw(OSError(28, "full")))
    j.observe(x)
    assert j.errors == 1 and j.broken
    monkeypatch.undo()
    size = (tmp_path / JOURNAL).stat().st_size
    j.observe(x)
    assert (tmp_path / JOURNAL).stat().st_size == size
    assert j.restart("learner-00000001.safetensors", "1" * 64) and not j.broken
    j.observe(x)
    j.close()
    got = read_journal(tmp_path / JOURNAL)
    assert got.header["base"] == "learner-00000001.safetensors" and len(got.records) == 1


# -- replay through the daemon ----------------------------------------------------------

OPTS = {"max_classes": 3, "budget_bytes": 60_000, "standardize": True}


def _stream(n, seed, reset_at=None):
    """Samples (some unlabelled) and the learner operations the daemon makes of them."""
    rng = np.random.default_rng(seed)
    X = rng.normal(3.0, 2.0, size=(n, DIM)).astype(np.float32)
    lines, ops = [], []
    for i, x in enumerate(X):
        y = None if i % 3 == 2 else int(i % 3)
        lines.append(format_sample(x) if y is None else format_sample(x, y))
        ops.append(("observe", x))  # predict → observe → learn
        if y is not None:
            ops.append(("learn", x, y))
        if i == reset_at:
            lines.append(b'{"cmd": "reset-user"}\n')
            ops.append(("reset",))
    return b"".join(lines), ops


def _reference(ops):
    cfg = LearnerConfig(dim=DIM, head="slda", tag=f"features:{DIM}", **OPTS)
    ref = StreamingLearner(cfg)
    for op in ops:
        if op[0] == "observe":
            ref.observe_one(op[1])
        elif op[0] == "learn":
            ref.learn_one(op[1], op[2])
        else:
            ref.reset_user()
    return ref


def _run(tmp_path, state, data, *, crash, name="in", **cfg):
    """Run the daemon over ``data``; ``crash``: no final checkpoint (as after kill -9)."""
    src = tmp_path / f"{name}.ndjson"
    src.write_bytes(data)
    config = DaemonConfig(
        source=str(src),
        out=str(tmp_path / f"{name}.out"),
        state_dir=str(state),
        stats_every_s=0,
        control=True,
        warmup=0,
        **{"checkpoint_every_s": 0, **cfg},
    )
    d = build_daemon(config, features=DIM, learner_options=OPTS)
    if crash:
        real = d.checkpoint
        d.checkpoint = lambda final=False: None if final else real()
    assert d.run(install_signals=False) == 0
    return d


def _resume(state):
    d = build_daemon(
        DaemonConfig(source="-", state_dir=str(state)), features=DIM, learner_options=OPTS
    )
    d.journal.close()
    return d


def test_resume_equals_a_learner_fed_exactly_the_surviving_records(tmp_path, caplog):
    state = tmp_path / "state"
    data, ops = _stream(30, 0, reset_at=17)
    d = _run(tmp_path, state, data, crash=True, checkpoint_every_samples=4)
    assert d.stats.checkpoints >= 5 and d.learner.user.n_ == 12  # reset at window 17
    got = read_journal(state / JOURNAL)
    newest = sorted(state.glob("learner-*.safetensors"))[-1]
    # The journal after a checkpoint names it, by file name and sha256 of its bytes.
    assert got.header["base"] == newest.name
    assert got.header["base_sha256"] == hashlib.sha256(newest.read_bytes()).hexdigest()
    assert 0 < len(got.records) < len(ops)
    # A torn tail: the last record lost 3 of its bytes.
    with open(state / JOURNAL, "r+b") as f:
        f.truncate(f.seek(0, 2) - 3)
    with caplog.at_level(logging.INFO, logger="edgecl.run"):
        d2 = _resume(state)
    assert f"replayed {len(got.records) - 1} records" in caplog.text
    assert "dropped" in caplog.text and "torn record" in caplog.text
    assert state_bytes(d2.learner) == state_bytes(_reference(ops[:-1]))
    # The torn tail is cut off, so records appended after it replay too.
    more, more_ops = _stream(7, 1)
    _run(tmp_path, state, more, crash=True, name="more", checkpoint_every_samples=1000)
    assert state_bytes(_resume(state).learner) == state_bytes(_reference(ops[:-1] + more_ops))


def test_while_checkpoints_fail_the_journal_keeps_everything(tmp_path, monkeypatch):
    state = tmp_path / "state"
    data, ops = _stream(10, 2, reset_at=5)

    def no_space(self, learner):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CheckpointStore, "save", no_space)
    d = _run(tmp_path, state, data, crash=True, checkpoint_every_samples=2)
    assert d.stats.checkpoint_errors >= 4 and d.stats.user_resets == 1
    monkeypatch.undo()
    assert not list(state.glob("learner-*"))  # the journal over the initial state holds all
    assert state_bytes(_resume(state).learner) == state_bytes(_reference(ops))


def test_a_journal_over_another_base_is_kept_aside_not_replayed(tmp_path, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    data, ops = _stream(12, 0)
    _run(tmp_path, a, data, crash=True, checkpoint_every_samples=3)
    _run(tmp_path, b, data[: len(data) // 2], crash=False, name="b", checkpoint_every_samples=3)
    expected = state_bytes(_resume(b).learner)
    shutil.copy(a / JOURNAL, b / JOURNAL)  # records over a's checkpoint, not b's
    with caplog.at_level(logging.WARNING, logger="edgecl.run"):
        d = _resume(b)
    assert state_bytes(d.learner) == expected
    assert "not replayed" in caplog.text
    (stale,) = b.glob(f"{JOURNAL}.stale-*")
    assert stale.read_bytes() == (a / JOURNAL).read_bytes()  # kept, not deleted


def test_a_crash_between_checkpoint_and_journal_restart_replays_nothing_twice(tmp_path, caplog):
    state = tmp_path / "state"
    data, ops = _stream(12, 0)
    _run(tmp_path, state, data, crash=True, checkpoint_every_samples=5)
    d = _resume(state)  # base + journal = every op
    assert state_bytes(d.learner) == state_bytes(_reference(ops))
    d.store.save(d.learner)  # checkpoint written; killed before the journal restart
    with caplog.at_level(logging.INFO, logger="edgecl.run"):
        again = _resume(state)
    assert state_bytes(again.learner) == state_bytes(_reference(ops))
    assert "which the newer" in caplog.text and not list(state.glob("*.stale-*"))


# -- state tied to its bundle ------------------------------------------------------------


def test_an_untagged_checkpoint_is_adopted_with_a_warning(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    old = StreamingLearner(LearnerConfig(dim=DIM, max_classes=2, budget_bytes=60_000))
    old.learn_one(np.ones(DIM), 1)
    old.save(state / "learner-00000001.safetensors")
    with caplog.at_level(logging.WARNING, logger="edgecl.run"):
        d = _resume(state)
    assert d.learner.n_learned == 1 and d.learner.config.tag == "features:3"
    assert "records no bundle" in caplog.text


def test_a_journal_of_another_owner_before_any_checkpoint_is_refused(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    j = Journal.start(state, dim=4, tag="features:4", base="initial", base_sha256="0" * 64)
    j.observe(np.zeros(4, np.float32))
    j.close()
    with pytest.raises(StateMismatchError, match="features:4, not to this run's features:3"):
        _resume(state)


def test_move_aside_moves_every_file_and_deletes_nothing(tmp_path):
    store = CheckpointStore(tmp_path / "s")
    assert store.move_aside() is None
    (store.directory / "learner-00000001.safetensors").write_bytes(b"a")
    (store.directory / JOURNAL).write_bytes(b"b")
    (store.directory / "replaced-old").mkdir()
    dest = store.move_aside()
    assert sorted(p.name for p in store.directory.iterdir()) == sorted(["replaced-old", dest.name])
    assert (dest / JOURNAL).read_bytes() == b"b" and oct(dest.stat().st_mode)[-3:] == "700"


def _bundle_copy(tmp_path) -> Path:
    """The shipped bundle with another manifest (same model, same dimension)."""
    dst = tmp_path / "bundle2"
    shutil.copytree(default_bundle_path(), dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["provenance"]["note"] = "retrained"
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    (dst / "manifest.sig").unlink(missing_ok=True)
    return dst


def _cli(*args, cwd):
    cmd = [sys.executable, "-m", "edgecl.cli", "run", "--stats-every", "0", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd)


def test_a_bundle_swap_exits_2_with_one_line_and_reset_state_moves_the_old_state_aside(
    tmp_path,
):
    one, two = default_bundle_path(), _bundle_copy(tmp_path)
    sha = {b: hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest() for b in (one, two)}
    rng = np.random.default_rng(0)
    src = tmp_path / "rows.ndjson"
    src.write_bytes(b"".join(format_sample(rng.normal(size=6), 2) for _ in range(150)))
    state = tmp_path / "state"
    common = ("--state", state, "--source", src, "--out", tmp_path / "out")
    first = _cli("--bundle", one, *common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in state.iterdir() if p.name != "lock"}
    assert any(n.startswith("learner-") for n in before)
    swapped = _cli("--bundle", two, *common, cwd=tmp_path)
    assert swapped.returncode == 2
    (line,) = swapped.stderr.splitlines()  # one line, nothing else
    assert sha[one] in line and sha[two] in line and "edgecl run --reset-state" in line
    assert {p.name: p.read_bytes() for p in state.iterdir() if p.name != "lock"} == before
    reset = _cli("--bundle", two, *common, "--reset-state", cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    (aside,) = state.glob("replaced-*")
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == before  # moved, not deleted
    (ckpt,) = state.glob("learner-*.safetensors")
    assert StreamingLearner.load(ckpt).config.tag == f"bundle:{sha[two]}"
