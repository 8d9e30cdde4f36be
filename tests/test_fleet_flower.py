"""`edgecl fleet` on real Flower processes (SuperLink, SuperNodes, ClientApp subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import small_watch

from edgecl import StreamingLearner
from edgecl.cli import main
from edgecl.fleet.launch import free_port
from edgecl.fleet.states import bundle_base

flwr = pytest.importorskip("flwr", reason="the [fleet] extra (flwr 1.42) is not installed")

EDGECL = [sys.executable, "-m", "edgecl"]


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_two_devices_one_round_through_server_and_client_commands(tmp_path):
    """`edgecl fleet server` + two `edgecl fleet client`: one exact round, then both adopt."""
    port = free_port()
    start = bundle_base(None)
    rng = np.random.default_rng(0)
    union = bundle_base(None)
    for k in range(2):  # two devices that already learned a few labels on their own
        lr = bundle_base(None)
        X = rng.normal(size=(12, lr.config.dim))
        y = rng.integers(0, 7, 12)
        lr.learn_many(X, y)
        union.learn_many(X, y)
        lr.save(tmp_path / f"dev{k}.safetensors")
    out = tmp_path / "out"
    t0 = time.monotonic()
    server = subprocess.Popen(
        [*EDGECL, "fleet", "server", "--devices", "2", "--rounds", "1", "--insecure",
         "--address", f"127.0.0.1:{port}", "--out", str(out), "--timeout", "300",
         "--json", str(tmp_path / "report.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    clients = [
        subprocess.Popen(
            [
                *EDGECL,
                "fleet",
                "client",
                "--state",
                str(tmp_path / f"dev{k}.safetensors"),
                "--superlink",
                f"127.0.0.1:{port}",
                "--insecure",
                "--device",
                f"dev{k}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for k in range(2)
    ]
    try:
        text, _ = server.communicate(timeout=400)
    finally:
        _stop(server)
        for c in clients:
            _stop(c)
    seconds = time.monotonic() - t0
    assert server.returncode == 0, text
    assert "2 accepted, 0 refused" in text
    report = json.loads((tmp_path / "report.json").read_text())
    sizes = report["rounds"][0]["upload_bytes"]
    assert set(sizes) == {"dev0", "dev1"} and max(sizes.values()) <= 100 * 1024
    merged = StreamingLearner.load(out / "merged.safetensors")
    a, b = merged.statistics(), union.statistics()
    np.testing.assert_array_equal(a.counts, b.counts)
    assert np.abs(a.scatter - b.scatter).max() <= 1e-9 * np.abs(b.scatter).max()
    for k in range(2):  # the final broadcast: each device now holds the merged head
        dev = StreamingLearner.load(tmp_path / f"dev{k}.safetensors")
        assert dev.statistics().n == b.n and dev.fleet.device == f"dev{k}"
    assert start.statistics().n < b.n
    print(f"two-device round through the CLI: {seconds:.1f} s")


def test_simulate_two_wearers(tmp_path, capsys):
    data = small_watch(tmp_path / "two.npz")
    rc = main(["fleet", "simulate", "--data", str(data), "--rounds", "1", "--timeout", "300",
               "--out", str(tmp_path / "sim"), "--json", str(tmp_path / "sim.json")])  # fmt: skip
    assert rc == 0
    r = json.loads((tmp_path / "sim.json").read_text())
    assert [d["wearer"] for d in r["devices"]] == [6, 7]
    ex = r["exactness"]
    assert ex["same_predictions"] and ex["scatter_rel"] < 1e-9 and ex["means_rel"] < 1e-9
    for d in r["devices"]:  # the fleet head is the central head
        assert d["fleet"]["others"] == pytest.approx(d["central"]["others"], abs=1e-12)
    assert "identical predictions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["fleet", "client", "--state", "s", "--superlink", "h:1"], "--root-certificates"),
        (
            [
                "fleet",
                "client",
                "--state",
                "s",
                "--superlink",
                "h:1",
                "--insecure",
                "--root-certificates",
                "ca.pem",
            ],
            "exclude",
        ),  # fmt: skip
        (["fleet", "server", "--devices", "2"], "--ssl-ca-certfile"),
    ],
)
def test_tls_is_required_unless_insecure_is_explicit(argv, msg, capsys):
    assert main(argv) == 2
    assert msg in capsys.readouterr().err


def test_processes_are_gone_after_a_run(tmp_path):
    """No SuperLink/SuperNode/helper outlives a simulation (the test above ran one)."""
    mine = str(tmp_path.parent)
    left = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if ("flower-super" in cmd or "flwr-" in cmd) and mine in cmd:
                left.append(cmd)
    assert not left
