"""Unplug and replug the daemon's port, over and over, during one run.

examples:
  python tools/replug.py --link pty --cycles 20     # a pty behind a udev-like symlink
  python tools/replug.py --link tcp --cycles 20     # socket://, the peer resets (RST)

``edgecl run --features 3`` (its own process) reads ``--link``: ``pty`` — a
symlink that points at a fresh pseudo-terminal each cycle (as udev's
``/dev/serial/by-id`` names do when a USB adapter comes back), unplugged by
closing both ends and removing the link; ``tcp`` — ``socket://`` to a server
here that resets the connection (``SO_LINGER`` 0 → RST) and stops listening.
Each cycle sends labelled samples once the daemon has (re)connected, waits for
all their predictions, unplugs, and measures the daemon's CPU time (user +
system, from ``/proc``) while the port is gone. Reported: reconnects survived,
predictions vs samples sent, and CPU while absent as a share of one core.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np

from edgecl.runtime.protocol import format_sample


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Daemon:
    def __init__(self, source: str, workdir: Path) -> None:
        cmd = [sys.executable, "-m", "edgecl.cli", "run", "--features", "3"]
        cmd += ["--max-classes", "2", "--budget-bytes", "60000", "--source", source]
        cmd += ["--stats-every", "0", "--serial-timeout", "0.05", "--reconnect-max", "0.5"]
        cmd += ["--state", str(workdir / "state"), "--log-level", "info"]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        self.preds = 0
        self.stats: dict = {}
        self.logs: queue.Queue[str] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._out, daemon=True),
            threading.Thread(target=self._err, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _out(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(b'{"stats"'):
                self.stats = json.loads(line)["stats"]
            else:
                self.preds += 1

    def _err(self) -> None:
        for line in self.proc.stderr:
            self.logs.put(line.decode(errors="replace"))

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if text in self.logs.get(timeout=0.1):
                    return
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
        raise RuntimeError(f"daemon never logged {text!r}")

    def wait_preds(self, n: int, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while self.preds < n and time.monotonic() < end:
            time.sleep(0.01)
        if self.preds < n:
            raise RuntimeError(f"{self.preds} predictions, expected {n}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(30)
        for t in self._threads:
            t.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return rc


def _lines(rng: np.random.Generator, n: int) -> bytes:
    X = rng.normal(size=(n, 3))
    return b"".join(format_sample(x, int(x[0] > 0)) for x in X)


def replug(link: str, cycles: int, per_cycle: int, absent_s: float, workdir: Path) -> dict:
    rng = np.random.default_rng(0)
    cpu_absent, sent = [], 0
    if link == "pty":
        path = workdir / "ttyEDGE"
        master, slave = os.openpty()
        tty.setraw(slave)
        os.symlink(os.ttyname(slave), path)
        d = _Daemon(str(path), workdir)
        d.wait_log("ready:")
    else:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        port = srv.getsockname()[1]
        srv.listen(1)
        d = _Daemon(f"socket://127.0.0.1:{port}", workdir)
        conn, _ = srv.accept()
        d.wait_log("ready:")
    for c in range(cycles):
        if c:  # plug it back in
            if link == "pty":
                master, slave = os.openpty()
                tty.setraw(slave)
                os.symlink(os.ttyname(slave), path)
            else:
                srv = socket.socket()
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind(("127.0.0.1", port))
                srv.listen(1)
                srv.settimeout(30)
                conn, _ = srv.accept()
            d.wait_log("connected again")
        data = _lines(rng, per_cycle)
        if link == "pty":
            os.write(master, data)
        else:
            conn.sendall(data)
        sent += per_cycle
        d.wait_preds(sent)
        # Unplug.
        if link == "pty":
            os.unlink(path)
            os.close(slave)
            os.close(master)
        else:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            srv.close()
        d.wait_log("connection lost")
        t0, c0 = time.monotonic(), cpu_seconds(d.proc.pid)
        time.sleep(absent_s)
        cpu_absent.append((cpu_seconds(d.proc.pid) - c0) / (time.monotonic() - t0))
    rc = d.stop()
    return {
        "link": link,
        "cycles": cycles,
        "samples_sent": sent,
        "predictions": d.preds,
        "reconnects": d.stats.get("reconnects"),
        "rejects": d.stats.get("rejects"),
        "exit": rc,
        "absent_s_each": absent_s,
        "cpu_while_absent_max": round(max(cpu_absent), 4),
        "cpu_while_absent_mean": round(float(np.mean(cpu_absent)), 4),
    }


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--link", choices=["pty", "tcp"], default="pty")
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--per-cycle", type=int, default=200, help="samples sent per connection")
    p.add_argument("--absent", type=float, default=2.0, help="seconds unplugged each cycle")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgecl-replug-") as tmp:
        res = replug(args.link, args.cycles, args.per_cycle, args.absent, Path(tmp))
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    ok = (
        res["exit"] == 0
        and res["predictions"] == res["samples_sent"]
        and res["reconnects"] == args.cycles - 1
        and res["cpu_while_absent_max"] < 0.10
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
