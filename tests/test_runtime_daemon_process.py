"""``edgecl run`` as a real process: signals, and ``kill -9`` at a random moment.

The daemon runs in features mode (``--features 3``: no bundle needed) reading
labelled samples from its stdin.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgecl import LearnerConfig, StreamingLearner
from edgecl.runtime.protocol import format_sample

BUDGET = 60_000


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    Y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 1).astype(int)
    return X, Y, [format_sample(x, int(t)) for x, t in zip(X, Y, strict=True)]


def _start(state, *extra, source="-"):
    cmd = [
        sys.executable,
        "-m",
        "edgecl.cli",
        "run",
        "--features",
        "3",
        "--source",
        source,
        "--state",
        str(state),
        "--max-classes",
        "3",
        "--budget-bytes",
        str(BUDGET),
        "--stats-every",
        "0",
        "--serial-timeout",
        "0.05",
        *extra,
    ]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _read_lines(proc, n, timeout=30.0):
    """Read stdout until ``n`` prediction lines; returns all parsed lines."""
    out, preds = [], 0
    end = time.monotonic() + timeout
    while preds < n and time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        obj = json.loads(line)
        out.append(obj)
        preds += "seq" in obj
    assert preds >= n, f"only {preds} predictions"
    return out


def _stop(proc, sig):
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, [json.loads(s) for s in out.splitlines()], err.decode()


def test_sigterm_writes_a_final_checkpoint_and_exits_0(tmp_path):
    X, Y, lines = _samples(120)
    proc = _start(tmp_path / "state", "--checkpoint-every", "1000000")
    proc.stdin.write(b"".join(lines))
    proc.stdin.flush()
    _read_lines(proc, 120)
    rc, rest, err = _stop(proc, signal.SIGTERM)
    assert rc == 0, err
    assert rest[-1]["stats"]["learned"] == 120 and rest[-1]["stats"]["checkpoints"] == 1
    (ckpt,) = (tmp_path / "state").glob("*.safetensors")
    assert StreamingLearner.load(ckpt).n_learned == 120


def test_sighup_prints_stats_and_sigint_stops(tmp_path):
    X, Y, lines = _samples(30)
    proc = _start(tmp_path / "state")
    proc.stdin.write(b"".join(lines) + b"garbage\n")
    proc.stdin.flush()
    _read_lines(proc, 30)
    proc.send_signal(signal.SIGHUP)
    stats = json.loads(proc.stdout.readline())["stats"]
    assert stats["samples"] == 30 and stats["rejects"] == {"bad_json": 1}
    assert stats["rss_mb"] > 0 and stats["p99_us"] >= stats["p50_us"] > 0
    rc, _, err = _stop(proc, signal.SIGINT)
    assert rc == 0, err


def test_kill_9_loses_at_most_the_label_in_flight(tmp_path):
    every, n = 50, 1000
    X, Y, lines = _samples(n, seed=1)
    state = tmp_path / "state"
    rng = np.random.default_rng()
    kill_after = int(rng.integers(every + 1, n - 10))
    proc = _start(state, "--checkpoint-every", str(every))
    proc.stdin.write(b"".join(lines))
    proc.stdin.flush()
    seen = _read_lines(proc, kill_after)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: maybe mid-checkpoint
    # Read the rest through the same buffered reader: communicate() reads the raw pipe and
    # would miss lines readline() already buffered (an undercount by one or more).
    out = proc.stdout.read()
    proc.communicate(timeout=30)  # stdout is at EOF: this reaps and closes the pipes
    processed = len(seen) + out.count(b'"seq"')
    assert proc.returncode == -signal.SIGKILL
    # Restart on an empty input: it must resume cleanly from the newest checkpoint.
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    proc2 = _start(state, source=str(empty))
    out2, err2 = proc2.communicate(timeout=60)
    assert proc2.returncode == 0, err2.decode()
    assert "from checkpoint" in err2.decode() and "corrupt" not in err2.decode()
    assert "journal records" in err2.decode()  # the labels after the checkpoint came back
    saved = sorted(state.glob("*.safetensors"))
    assert 1 <= len(saved) <= 2 and not list(state.glob(".*.tmp"))
    resumed = StreamingLearner.load(saved[-1])  # the restart's final checkpoint
    k = resumed.n_learned
    assert json.loads(out2.splitlines()[-1])["stats"]["n_learned"] == k
    # Checkpoint + journal: only the label whose prediction was out can be lost ...
    assert processed - 1 <= k <= processed, (kill_after, processed, k)
    # ... and the state is exactly that of a learner fed the first k samples.
    twin = StreamingLearner(
        LearnerConfig(dim=3, max_classes=3, head="slda", budget_bytes=BUDGET, tag="features:3")
    )
    twin.learn_many(X[:k], Y[:k])
    twin.save(tmp_path / "twin.safetensors")
    assert (tmp_path / "twin.safetensors").read_bytes() == saved[-1].read_bytes()


def test_systemd_notify_protocol_from_a_real_process(tmp_path):
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(tmp_path / "notify"))
    rx.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "100000"}
    cmd = [
        sys.executable,
        "-m",
        "edgecl.cli",
        "run",
        "--features",
        "3",
        "--source",
        "-",
        "--serial-timeout",
        "0.02",
        "--stats-every",
        "0",
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        got = [rx.recv(4096).decode() for _ in range(3)]
        proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in got[-1]:
            got.append(rx.recv(4096).decode())
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        rx.close()
    assert got[0].startswith("READY=1") and got[1:3] == ["WATCHDOG=1", "WATCHDOG=1"]
    assert proc.returncode == 0


def test_systemd_unit_is_hardened():
    unit = (Path(__file__).parents[1] / "devices" / "edgecl.service").read_text()
    keys = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v.strip())
    expect = {
        "Type": "notify",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",  # state of another bundle: retrying cannot help
        "StateDirectory": "edgecl",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "DynamicUser": "yes",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }
    for k, v in expect.items():
        assert keys.get(k) == [v], k
    assert keys["WatchdogSec"] and " run " in keys["ExecStart"][0]
    if shutil.which("systemd-analyze"):
        fixed = unit.replace("/opt/edgecl/bin/edgecl", sys.executable)
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"edgecl-test-{os.getpid()}.service"
        path.write_text(fixed)
        try:
            res = subprocess.run(
                ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
            )
        finally:
            path.unlink()
        assert res.returncode == 0 and "edgecl" not in res.stderr, res.stderr
