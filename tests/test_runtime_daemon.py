"""The daemon loop, in-process: modes, delayed labels, checkpoints, control, sd_notify,
and end to end with the sensor simulator over a real pty and over socket:// with drops.

A small numpy extractor (per-channel mean and std of a window) stands in for the
ONNX bundle, so these tests need no bundle; tests/test_runtime_demo.py covers it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edgecl import LearnerConfig, StreamingLearner
from edgecl.errors import ConfigError
from edgecl.runtime.bundle import WindowSpec
from edgecl.runtime.daemon import Daemon, DaemonConfig
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.protocol import format_label, format_sample
from edgecl.runtime.sdnotify import Notifier
from edgecl.runtime.windowing import sliding_windows, windows_by_segment
from edgecl.sim import SensorSimulator, SimConfig, load_rows, serve_pty, serve_tcp

L, H, C = 20, 10, 6


class MeanStd:
    """Window (L, C) -> [mean, std] per channel; remembers what it was given."""

    dim = 2 * C
    input_shape = (L, C)
    providers: list[str] = []

    def __init__(self, record: bool = False):
        self.seen: list[np.ndarray] | None = [] if record else None

    def embed(self, w):
        if self.seen is not None:
            self.seen.append(np.array(w))
        return np.concatenate([w.mean(0), w.std(0)]).astype(np.float32)

    def warmup(self, n=3):
        pass


def _learner(dim=2 * C, classes=7, head="slda"):
    return StreamingLearner(
        LearnerConfig(dim=dim, max_classes=classes, head=head, budget_bytes=60_000)
    )


def _daemon(tmp_path, data: bytes, *, extractor=None, learner=None, window=True, **cfg):
    src = tmp_path / "in.ndjson"
    src.write_bytes(data)
    config = DaemonConfig(
        source=str(src),
        out=str(tmp_path / "out.ndjson"),
        **{"stats_every_s": 0, "serial_timeout_s": 0.05, **cfg},
    )
    ext = extractor or MeanStd()
    return Daemon(
        config,
        ext,
        learner or _learner(ext.dim),
        window=WindowSpec(L, H, tuple("abcdef")) if window else None,
    )


def _out(d_or_path):
    path = d_or_path if isinstance(d_or_path, (str, os.PathLike)) else d_or_path.config.out
    lines = [json.loads(s) for s in Path(path).read_text(encoding="utf-8").splitlines()]
    return [o for o in lines if "seq" in o], [o["stats"] for o in lines if "stats" in o]


def _imu(n=3000):
    x, y = load_rows(subjects=[6])
    return x[:n], y[:n]


# -- modes -------------------------------------------------------------------


def test_features_mode_delayed_labels_and_their_rejects(tmp_path):
    lines = [format_sample([1, 0, 0], 0), format_sample([0, 1, 0], 1), format_sample([0, 0, 1])]
    lines += [format_label(2, 2), format_label(2, 2)]  # learned, then a duplicate
    lines += [format_label(1, 99)]  # a window that does not exist
    lines += [format_sample([1, 1, 0]) for _ in range(5)]  # pending=4: seq 2 forgotten
    lines += [format_label(0, 2), format_label(0, 7)]
    d = _daemon(
        tmp_path,
        b"".join(lines),
        extractor=build_daemon(DaemonConfig(source="loop://"), features=3).extractor,
        learner=_learner(3, 3),
        window=False,
        pending=4,
    )
    assert d.run(install_signals=False) == 0
    preds, stats = _out(d)
    assert [p["seq"] for p in preds] == list(range(8))
    assert preds[0]["pred"] == -1 and preds[2]["pred"] in (0, 1)
    final = stats[-1]
    assert final["samples"] == 8 and final["windows"] == 8
    assert final["labels"] == 4 and final["learned"] == 4  # y=0, y=1, seq 2, seq 7
    assert final["rejects"] == {"duplicate_seq": 1, "unknown_seq": 2}
    assert d.learner.n_learned == 4


def test_windowed_mode_matches_offline_windows_and_labels(tmp_path):
    x, y = _imu(1000)
    sim = SensorSimulator(x, y, SimConfig(window=L, hop=H, labels="rows"))
    ext = MeanStd(record=True)
    d = _daemon(tmp_path, b"".join(sim.lines()), extractor=ext)
    d.run(install_signals=False)
    preds, stats = _out(d)
    offline = sliding_windows(x, L, H)
    assert [p["seq"] for p in preds] == list(range(len(offline)))
    np.testing.assert_array_equal(np.array(ext.seen), offline)
    ref = windows_by_segment(x, y, np.zeros(len(y), int), L, H)
    assert stats[-1]["learned"] == len(ref) == d.learner.n_learned
    # The learner saw exactly the offline windows with their majority labels.
    twin = _learner()
    twin.learn_many(np.array([ext.embed(w) for w in offline]), ref.y)
    assert twin.save(tmp_path / "a") is None and d.learner.save(tmp_path / "b") is None
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_frozen_head_never_learns(tmp_path):
    x, y = _imu(500)
    sim = SensorSimulator(x, y, SimConfig(window=L, hop=H, label_delay=0))
    d = _daemon(tmp_path, b"".join(sim.lines()), learn=False)
    d.run(install_signals=False)
    _, stats = _out(d)
    assert stats[-1]["labels"] == sim.report()["labels"] > 0
    assert stats[-1]["learned"] == 0 and d.learner.n_learned == 0


def test_config_is_validated():
    with pytest.raises(ConfigError, match="pending"):
        DaemonConfig(source="-", pending=0)
    with pytest.raises(ConfigError, match="label_rule"):
        DaemonConfig(source="-", label_rule="first")
    with pytest.raises(ConfigError, match="format"):
        DaemonConfig(source="-", format="xml")
    with pytest.raises(ConfigError, match="learner dim"):
        Daemon(DaemonConfig(source="-"), MeanStd(), _learner(dim=5))


# -- checkpoints -------------------------------------------------------------


def _labelled_features(n, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    Y = (X[:, 0] > 0).astype(int)
    return X, Y, b"".join(format_sample(x, int(t)) for x, t in zip(X, Y, strict=True))


def test_checkpoints_every_n_keep_two_and_resume(tmp_path):
    X, Y, data = _labelled_features(250)
    state = tmp_path / "state"
    cfg = {"state_dir": str(state), "checkpoint_every_samples": 100}
    d = _daemon(
        tmp_path,
        data,
        learner=_learner(3, 2),
        window=False,
        extractor=build_daemon(DaemonConfig(source="-"), features=3).extractor,
        **cfg,
    )
    d.run(install_signals=False)
    names = sorted(p.name for p in state.glob("learner-*"))
    # At 100 and 200 labels, and the final one at exit (250): the oldest is pruned.
    assert names == ["learner-00000002.safetensors", "learner-00000003.safetensors"]
    assert StreamingLearner.load(state / names[-1]).n_learned == 250
    d2 = build_daemon(DaemonConfig(source=str(tmp_path / "in.ndjson"), **cfg), features=3)
    assert d2.learner.n_learned == 250  # resumed from the newest


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    state = tmp_path / "state"
    cfg = DaemonConfig(source="-", state_dir=str(state))
    d = build_daemon(cfg, features=3, learner_options={"max_classes": 2, "budget_bytes": 60_000})
    X, Y, _ = _labelled_features(20)
    for i in range(20):
        d.learner.learn_one(X[i], int(Y[i]))
        if i in (9, 19):
            d.store.save(d.learner)
    newest = sorted(state.glob("learner-*"))[-1]
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    newest.write_bytes(bytes(raw))
    (state / ".learner-00000009.safetensors.123.tmp").write_bytes(b"torn write")
    with caplog.at_level(logging.INFO, logger="edgecl.run"):
        d2 = build_daemon(cfg, features=3)
    assert d2.learner.n_learned == 10  # the previous checkpoint
    assert any("corrupt" in r.message and newest.name in r.message for r in caplog.records)
    assert any("learner-00000001" in r.message for r in caplog.records)
    assert sorted(p.name for p in state.glob("learner-*")) == [
        "learner-00000001.safetensors",
        "learner-00000002.safetensors.corrupt",
    ]
    d2.learner.learn_one(X[0], int(Y[0]))
    assert d2.store.save(d2.learner).name == "learner-00000003.safetensors"  # never reused
    # Both bad: a new learner (features mode has no bundle head to fall back to).
    for p in state.glob("*.safetensors"):
        p.write_bytes(b"garbage")
    assert build_daemon(cfg, features=3).learner.n_learned == 0


def test_control_commands(tmp_path):
    X, Y, data = _labelled_features(5)
    data += b'{"cmd": "checkpoint"}\n{"cmd": "stats"}\n{"cmd": "nope"}\n'
    ext = build_daemon(DaemonConfig(source="-"), features=3).extractor
    d = _daemon(
        tmp_path,
        data,
        learner=_learner(3, 2),
        extractor=ext,
        window=False,
        state_dir=str(tmp_path / "s"),
        control=True,
    )
    d.run(install_signals=False)
    _, stats = _out(d)
    assert len(stats) == 2  # on demand, and at exit
    assert stats[0]["checkpoints"] == 1 and stats[-1]["rejects"] == {"bad_cmd": 1}
    d = _daemon(tmp_path, data, learner=_learner(3, 2), extractor=ext, window=False)
    d.run(install_signals=False)
    assert _out(d)[1][-1]["rejects"] == {"control_disabled": 3}


def test_sd_notify_ready_watchdog_stopping(tmp_path):
    sock_path = str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock_path)
    rx.settimeout(5)
    src = tmp_path / "in.ndjson"
    src.write_bytes(b"")
    notifier = Notifier(env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "40000"})
    d = Daemon(
        DaemonConfig(
            source=str(src),
            out=str(tmp_path / "o"),
            follow=True,
            serial_timeout_s=0.01,
            stats_every_s=0,
        ),
        MeanStd(),
        _learner(),
        window=WindowSpec(L, H, tuple("abcdef")),
        notifier=notifier,
    )
    t = threading.Thread(target=d.run, kwargs={"install_signals": False})
    t.start()
    try:
        msgs = [rx.recv(4096).decode() for _ in range(4)]
    finally:
        d.stop()
        t.join(5)
    assert msgs[0].startswith("READY=1")
    assert msgs[1:] == ["WATCHDOG=1"] * 3
    rest = []
    with pytest.raises(TimeoutError):
        while True:
            rest.append(rx.recv(4096).decode())
            rx.settimeout(0.2)
    assert "STOPPING=1" in rest
    rx.close()


# -- end to end --------------------------------------------------------------


def _run_in_thread(d):
    t = threading.Thread(target=d.run, kwargs={"install_signals": False})
    t.start()
    return t


def test_pty_end_to_end_with_faults(tmp_path):
    x, y = _imu(6000)
    faults = {"garbage": 0.01, "truncated": 0.01, "nan": 0.01, "bad_dim": 0.01}
    sim = SensorSimulator(
        x, y, SimConfig(rate=0, window=L, hop=H, label_delay=3, unlabelled=0.2, **faults)
    )
    path: list[str] = []
    server = threading.Thread(target=serve_pty, args=(sim,), kwargs={"on_path": path.append})
    server.start()
    while not path:
        time.sleep(0.01)
    d = Daemon(
        DaemonConfig(
            source=path[0], out=str(tmp_path / "out"), stats_every_s=0, serial_timeout_s=0.05
        ),
        MeanStd(),
        _learner(),
        window=WindowSpec(L, H, tuple("abcdef")),
    )
    t = _run_in_thread(d)
    server.join(60)
    d.stop()
    t.join(10)
    preds, stats = _out(d)
    rep = sim.report()
    assert [p["seq"] for p in preds] == list(range(rep["windows"]))  # every window
    final = stats[-1]
    assert final["samples"] == rep["rows"] == 6000
    assert Counter(final["rejects"]) == Counter(rep["injected"])  # counters add up
    assert final["learned"] == final["labels"] == rep["labels"] > 0.7 * rep["windows"]
    acc = np.mean([p["pred"] == sim.window_labels[p["seq"]] for p in preds[len(preds) // 2 :]])
    assert acc > 0.5  # it learns (7 classes; chance ≈ 0.14)


def test_socket_end_to_end_survives_the_port_vanishing(tmp_path):
    x, y = _imu(3000)
    sim = SensorSimulator(x, y, SimConfig(rate=0, window=L, hop=H, label_delay=1))
    ports: list[int] = []
    stop = threading.Event()
    server = threading.Thread(
        target=serve_tcp,
        args=(sim,),
        kwargs={
            "port": 0,
            "on_port": ports.append,
            "stop": stop.is_set,
            "disconnect_every": 1000,
            "down_s": 0.5,
            "settle_s": 0.1,
        },
    )
    server.start()
    while not ports:
        time.sleep(0.01)
    d = Daemon(
        DaemonConfig(
            source=f"socket://127.0.0.1:{ports[0]}",
            out=str(tmp_path / "out"),
            stats_every_s=0,
            serial_timeout_s=0.05,
            reconnect_max_s=0.2,
        ),
        MeanStd(),
        _learner(),
        window=WindowSpec(L, H, tuple("abcdef")),
    )
    t = _run_in_thread(d)
    server.join(60)
    time.sleep(0.3)
    d.stop()
    t.join(10)
    stop.set()
    preds, stats = _out(d)
    rep, final = sim.report(), stats[-1]
    assert rep["disconnects"] == 2 and final["reconnects"] == 2
    assert final["samples"] == 3000 and final["windows"] == rep["windows"] == len(preds)
    assert final["learned"] == rep["labels"] and "unknown_seq" not in final["rejects"]
    assert d.source.connects == 3


class Flat:
    """A bundle without a window spec: each x is one (2, 3) model input, sent flat."""

    dim = 3
    input_shape = (2, 3)
    providers: list[str] = []

    def __init__(self):
        self.seen = []

    def embed(self, x):
        self.seen.append(np.array(x))
        return np.asarray(x, np.float32).sum(axis=0)

    def warmup(self, n=3):
        pass


@pytest.mark.parametrize("fmt", ["csv", "framed"])
def test_features_mode_reshapes_inputs_in_csv_and_framed(tmp_path, fmt):
    from edgecl.runtime.framing import encode_frame

    rows = [([1, 2, 3, 4, 5, 6], 0), ([6, 5, 4, 3, 2, 1], 1)]
    if fmt == "csv":
        data = b"".join(b"%s,%d\n" % (",".join(map(str, x)).encode(), y) for x, y in rows)
        data += b"1,2,3\n"  # bad_dim
    else:
        data = b"".join(encode_frame(format_sample(x, y).strip()) for x, y in rows)
        data += b"\x00noise"  # bad_frame
    ext = Flat()
    d = _daemon(tmp_path, data, extractor=ext, learner=_learner(3, 2), window=False, format=fmt)
    d.run(install_signals=False)
    preds, stats = _out(d)
    assert len(preds) == 2 and stats[-1]["learned"] == 2
    np.testing.assert_array_equal(ext.seen[1], [[6, 5, 4], [3, 2, 1]])
    assert stats[-1]["rejects"] == ({"bad_dim": 1} if fmt == "csv" else {"bad_frame": 1})


def test_time_based_checkpoint_only_when_something_changed(tmp_path):
    X, Y, data = _labelled_features(5)
    state = tmp_path / "state"
    ext = build_daemon(DaemonConfig(source="-"), features=3).extractor
    d = _daemon(
        tmp_path,
        data,
        learner=_learner(3, 2),
        extractor=ext,
        window=False,
        state_dir=str(state),
        checkpoint_every_samples=0,
        checkpoint_every_s=0.05,
        follow=True,
        serial_timeout_s=0.01,
    )
    t = _run_in_thread(d)
    end = time.monotonic() + 10
    while not list(state.glob("*.safetensors")) and time.monotonic() < end:
        time.sleep(0.01)
    time.sleep(0.3)  # several more periods, nothing new learned
    d.stop()
    t.join(10)
    assert [p.name for p in state.glob("*.safetensors")] == ["learner-00000001.safetensors"]
    assert d.stats.checkpoints == 1


def _std_learner(dim):
    cfg = LearnerConfig(dim=dim, max_classes=3, head="slda", budget_bytes=60_000, standardize=True)
    return StreamingLearner(cfg)


def test_every_window_updates_the_user_statistics_and_reset_user(tmp_path):
    """Labelled or not, every embedded window is observed (after its prediction);
    {"cmd": "reset-user"} restarts the statistics, keeps the labels, checkpoints."""
    rng = np.random.default_rng(0)
    X = rng.normal(5.0, 2.0, size=(12, 3))
    lines = [format_sample(x, int(i % 2)) if i < 4 else format_sample(x) for i, x in enumerate(X)]
    data = b"".join(lines)
    ext = build_daemon(DaemonConfig(source="-"), features=3).extractor
    state = tmp_path / "s"
    d = _daemon(tmp_path, data, learner=_std_learner(3), extractor=ext, window=False,
                state_dir=str(state), control=True)  # fmt: skip
    d.run(install_signals=False)
    user = d.learner.user
    assert user.n_ == 12
    np.testing.assert_allclose(user.sum_, (X.astype(np.float32) - user.prior_mean_).sum(0))
    assert _out(d)[1][-1]["user_windows"] == 12
    # A frozen daemon observes nothing.
    frozen = _daemon(tmp_path, data, learner=_std_learner(3), extractor=ext, window=False,
                     learn=False)  # fmt: skip
    frozen.run(install_signals=False)
    assert frozen.learner.user.n_ == 0 and frozen.learner.n_learned == 0
    # reset-user: statistics restart, labels stay, a checkpoint is written at once.
    d2 = _daemon(tmp_path, data + b'{"cmd": "reset-user"}\n', learner=_std_learner(3),
                 extractor=ext, window=False, state_dir=str(state), control=True,
                 checkpoint_every_s=0)  # fmt: skip
    d2.run(install_signals=False)
    assert d2.learner.user.n_ == 0 and d2.learner.n_learned == 4
    stats = _out(d2)[1][-1]
    assert stats["user_resets"] == 1 and stats["user_windows"] == 0
    resumed = build_daemon(DaemonConfig(source="-", state_dir=str(state)), features=3).learner
    assert resumed.user.n_ == 0 and resumed.n_learned == 4


def test_cli_slda_checkpoint_is_the_head_not_a_buffer(tmp_path):
    """`edgecl run --features` (an SLDA learner under the profile's 8 MB budget) used to
    fill and checkpoint an 8 MB replay buffer that SLDA never reads."""
    from edgecl.cli import main
    from edgecl.learner.state import load_state

    X, _, data = _labelled_features(50, dim=64)
    src = tmp_path / "in.ndjson"
    src.write_bytes(data)
    state = tmp_path / "s"
    argv = ["run", "--features", "64", "--source", str(src), "--out", str(tmp_path / "o"),
            "--state", str(state), "--max-classes", "32", "--log-level", "error"]  # fmt: skip
    assert main(argv) == 0
    (ckpt,) = sorted(state.glob("*.safetensors"))
    lr = load_state(ckpt)
    assert lr.n_learned == 50 and lr.buffer is None
    assert ckpt.stat().st_size <= 2 * lr.memory_report()["head_bytes"]


def test_a_second_process_on_a_running_daemons_state_dir_is_refused(tmp_path):
    """The state directory has one writer: a daemon holds its lock while it runs."""
    import subprocess
    import sys

    from edgecl.runtime.checkpoint import StateDirBusy, lock_state_dir

    state = tmp_path / "state"
    d = build_daemon(DaemonConfig(source="-", state_dir=str(state)), features=3)
    probe = (
        "import sys\nfrom edgecl.runtime.checkpoint import lock_state_dir, StateDirBusy\n"
        "try:\n    lock_state_dir(sys.argv[1])\nexcept StateDirBusy as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    busy = subprocess.run([sys.executable, "-c", probe, str(state)], capture_output=True, text=True)
    assert busy.returncode == 3 and f"pid {os.getpid()}" in busy.stdout
    d.state_lock.close()  # what run() does when the daemon stops
    free = subprocess.run([sys.executable, "-c", probe, str(state)], capture_output=True, text=True)
    assert free.returncode == 0, free.stdout
    lock = lock_state_dir(state)  # and this process can take it again
    lock.close()
    assert StateDirBusy.__mro__[1].__name__ == "StateFileError"
