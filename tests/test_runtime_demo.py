"""With the shipped default bundle: end to end over socket://, the demo over a pty,
and the device-side import boundary (no torch, modest RSS).

The held-out subjects 6 and 7 were not in the bundle's pre-training; streaming
their labels must lift accuracy above the frozen pre-trained head's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecl.cli import main
from edgecl.runtime.bundle import Bundle, default_bundle_path
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.windowing import sliding_windows
from edgecl.sim import SensorSimulator, SimConfig, load_rows, serve_tcp

pytestmark = pytest.mark.skipif(
    not (default_bundle_path() / "manifest.json").is_file(), reason="no default bundle"
)


def _frozen_accuracy(bundle: Bundle, rows: np.ndarray, truth: list[int]) -> float:
    w = bundle.window
    windows = np.ascontiguousarray(sliding_windows(rows, w.length, w.hop))[: len(truth)]
    pred = bundle.initial_learner().predict_many(bundle.extractor().embed_many(windows))
    return float(np.mean(pred == np.array(truth)))


def test_socket_end_to_end_adapts_to_new_subjects(tmp_path):
    bundle = Bundle.load()
    x, y = load_rows(subjects=[6, 7])
    sim = SensorSimulator(x, y, SimConfig(rate=0, label_delay=2))
    ports: list[int] = []
    server = threading.Thread(
        target=serve_tcp, args=(sim,), kwargs={"port": 0, "on_port": ports.append, "settle_s": 0.2}
    )
    server.start()
    while not ports:
        time.sleep(0.01)
    out = tmp_path / "out.ndjson"
    d = build_daemon(
        DaemonConfig(
            source=f"socket://127.0.0.1:{ports[0]}",
            out=str(out),
            stats_every_s=0,
            serial_timeout_s=0.05,
        ),
        bundle=bundle,
    )
    t = threading.Thread(target=d.run, kwargs={"install_signals": False})
    t.start()
    server.join(120)
    end = time.monotonic() + 30
    while d.stats.windows < sim.sent_windows and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.2)  # the last labels
    d.stop()
    t.join(10)
    lines = [json.loads(s) for s in out.read_text().splitlines()]
    preds = {o["seq"]: o["pred"] for o in lines if "seq" in o}
    stats = lines[-1]["stats"]
    assert sorted(preds) == list(range(sim.sent_windows)) and sim.sent_windows == 1043
    assert stats["learned"] == sim.sent_labels == 1043 and stats["rejects"] == {}
    adapting = np.mean([preds[s] == sim.window_labels[s] for s in range(sim.sent_windows)])
    frozen = _frozen_accuracy(bundle, x, sim.window_labels)
    assert adapting > frozen + 0.005, (adapting, frozen)
    assert d.learner.n_learned == 2191 + 1043  # the bundle head's samples + every label


def test_demo_over_a_pty(tmp_path, capsys):
    out = tmp_path / "demo.json"
    plot = tmp_path / "demo.png"
    rc = main(["demo", "--seconds", "120", "--rate", "0", "--json", str(out), "--plot", str(plot)])
    assert rc == 0
    res = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert "frozen head" in text and "subject 7" in text and "repeat-last" in text
    # Each user labels its first recording of every exercise; the rest is held out.
    assert res["windows"] == 1043 and 400 < res["labels"] < 640
    assert res["labels"] + res["heldout_windows"] == 1043
    held = res["heldout"]
    assert set(held["by_subject"]) == {"6", "7"} and held["gain"] == pytest.approx(
        held["adapted"] - held["frozen"], abs=1e-3
    )
    base = res["prequential"]["baselines"]
    assert set(base) == {"majority", "repeat_last", "frozen"}
    assert base["repeat_last"] > 0.9  # recording-ordered windows: strongly autocorrelated
    assert res["user_resets"] == 1  # the wearer changed once, and the daemon was told
    assert res["rejects"] == {} and 0 < res["rss_mb"] < 120
    pytest.importorskip("matplotlib")
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_daemon_process_never_imports_torch_and_stays_small():
    code = """
import json, sys
import numpy as np
import edgecl.cli, edgecl.demo
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.stats import rss_bytes
d = build_daemon(DaemonConfig(source="loop://"))
w = np.zeros(d.extractor.input_shape, np.float32)
for _ in range(200):
    d.learner.predict_proba_one(d.extractor.embed(w))
print(json.dumps({"mods": sorted(m for m in ("torch", "onnx") if m in sys.modules),
                  "rss_mb": rss_bytes() / 2**20}))
"""
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    got = json.loads(res.stdout)
    assert got["mods"] == []
    assert got["rss_mb"] < 120


def test_run_new_user_restarts_the_user_statistics(tmp_path):
    """The shipped bundle standardises per user: `edgecl run` observes every window, and
    `--new-user` restarts the statistics from the prior while keeping what was learned."""
    from edgecl.learner.state import load_state
    from edgecl.runtime.protocol import format_sample

    x, _ = load_rows(subjects=[6])
    src = tmp_path / "rows.ndjson"
    src.write_bytes(b"".join(format_sample(r) for r in x[:1050]))  # 20 windows, no labels
    state = tmp_path / "state"
    base = ["run", "--out", str(tmp_path / "out"), "--state", str(state), "--log-level", "error"]
    assert main([*base, "--source", str(src)]) == 0
    first = load_state(sorted(state.glob("*.safetensors"))[-1])
    assert first.user.n_ == 20 and first.config.standardize
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    assert main([*base, "--source", str(empty), "--new-user"]) == 0
    second = load_state(sorted(state.glob("*.safetensors"))[-1])
    assert second.user.n_ == 0 and second.n_learned == first.n_learned
    np.testing.assert_array_equal(second.head.means_, first.head.means_)
