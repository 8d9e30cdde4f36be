"""``edgecl demo``: a simulated smartwatch → the daemon → live accuracy on new users.

The sensor simulator replays subjects 6 and 7 of the embedded IMU data — the two
the shipped bundle was *not* pre-trained on — over a pseudo-terminal, as a
serial sensor would, with each window's label arriving a couple of windows late.
``edgecl run`` (a separate process, as on a device) reads the pty with the
default bundle, predicts every window and learns from every label. This module
reads the daemon's output, scores each prediction against the truth (test, then
train: prequential accuracy) and shows one live line; at the end it compares the
adapting learner with the frozen pre-trained head on the very same windows, per
subject, and draws the rolling accuracy of both when matplotlib is installed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from edgecl.errors import ConfigError, EdgeclError
from edgecl.sim import DEFAULT_DATA, SensorSimulator, SimConfig, load_rows, serve_pty

__all__ = ["run_demo"]


def run_demo(
    *,
    seconds: float = 60.0,
    rate: float = 1000.0,
    subjects: tuple[int, ...] = (6, 7),
    bundle: str | None = None,
    data: str | None = None,
    label_delay: int = 2,
    unlabelled: float = 0.0,
    plot: str | None = None,
    out: TextIO = sys.stdout,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the demo; print the live line and summary to ``out``; return the results."""
    from edgecl.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    if b.window is None:
        raise ConfigError(f"bundle {b.path} has no window spec: the demo needs a sensor bundle")
    w = b.window
    rows, labels = load_rows(data, list(subjects))
    with np.load(Path(data) if data else DEFAULT_DATA, allow_pickle=False) as d:
        row_subject = d["subject"][np.isin(d["subject"], list(subjects))]
    sim = SensorSimulator(
        rows,
        labels,
        SimConfig(
            rate=rate,
            window=w.length,
            hop=w.hop,
            label_delay=label_delay,
            unlabelled=unlabelled,
            seed=seed,
        ),
    )
    paths: list[str] = []
    stop = threading.Event()
    feeder = threading.Thread(
        target=serve_pty,
        args=(sim,),
        kwargs={"on_path": paths.append, "stop": stop.is_set, "linger_s": seconds},
    )
    feeder.daemon = True
    feeder.start()
    while not paths:
        time.sleep(0.01)
    state = tempfile.mkdtemp(prefix="edgecl-demo-")
    cmd = [
        sys.executable,
        "-m",
        "edgecl.cli",
        "run",
        "--source",
        paths[0],
        "--bundle",
        str(b.path),
        "--state",
        state,
        "--stats-every",
        "0.5",
        "--serial-timeout",
        "0.1",
        "--log-level",
        "warning",
    ]
    print(
        f"edgecl demo: replaying subjects {', '.join(map(str, subjects))} (held out of "
        f"pre-training) at {rate:g} rows/s over {paths[0]} → edgecl run",
        file=out,
    )
    daemon = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    preds: dict[int, int] = {}
    stats: dict[str, Any] = {}
    t0 = time.monotonic()
    live = _Live(out)
    buf = b""
    try:
        while True:
            ready, _, _ = select.select([daemon.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(daemon.stdout.fileno(), 65536)
                if not chunk:
                    break  # the daemon exited
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    _take(json.loads(line), preds, stats)
            elapsed = time.monotonic() - t0
            done = sim.position >= len(rows) and len(preds) >= sim.sent_windows
            live.show(elapsed, preds, sim.window_labels, stats)
            if done or elapsed >= seconds:
                break
    finally:
        stop.set()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        rest, err = daemon.communicate(timeout=60)
        for line in (buf + rest).splitlines():
            _take(json.loads(line), preds, stats)
        feeder.join(5)
        shutil.rmtree(state, ignore_errors=True)
    live.end()
    if daemon.returncode != 0:
        msg = err.decode(errors="replace").strip().splitlines()
        raise EdgeclError(f"the daemon failed (exit {daemon.returncode}): {msg[-1] if msg else ''}")
    return _summary(b, sim, rows, row_subject, preds, stats, time.monotonic() - t0, plot, out)


def _take(obj: dict[str, Any], preds: dict[int, int], stats: dict[str, Any]) -> None:
    if "seq" in obj:
        preds[obj["seq"]] = obj["pred"]
    elif "stats" in obj:
        stats.update(obj["stats"])


class _Live:
    """One status line: rewritten in place on a terminal, every 5 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.tty = out, out.isatty()
        self.last = -1e9

    def show(self, t: float, preds: dict[int, int], truth: list[int], stats: dict) -> None:
        if not stats or t - self.last < (0.25 if self.tty else 5.0):
            return  # nothing to show before the daemon's first stats line
        self.last = t
        n = len(preds)
        hits = sum(truth[s] == p for s, p in preds.items() if s < len(truth))
        acc = f"{hits / n:.3f}" if n else "  —  "
        p99 = stats.get("p99_us")
        line = (
            f"  {t:5.1f} s  windows {n:5d}  labels {stats.get('labels', 0):5d}  "
            f"accuracy {acc}  p99 {'—' if p99 is None else f'{p99:.0f} µs'}  "
            f"RSS {stats.get('rss_mb', 0):.0f} MB"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=self.out)
        self.out.flush()

    def end(self) -> None:
        if self.tty:
            print(file=self.out)


def _summary(b, sim, rows, row_subject, preds, stats, elapsed, plot, out) -> dict[str, Any]:
    w = b.window
    n = len(preds)
    truth = np.array(sim.window_labels[:n])
    adapt = np.array([preds.get(s, -1) for s in range(n)])
    windows = np.lib.stride_tricks.sliding_window_view(rows, w.length, axis=0)[:: w.hop][:n]
    emb = b.extractor().embed_many(np.ascontiguousarray(windows.transpose(0, 2, 1)))
    head = b.initial_learner()
    frozen = head.predict_many(emb) if head is not None else np.full(n, -1)
    subj = row_subject[np.arange(n) * w.hop] if n else np.empty(0, int)
    result: dict[str, Any] = {
        "windows": n,
        "labels": int(stats.get("learned", 0)),
        "seconds": round(elapsed, 1),
        "frozen_accuracy": _acc(frozen, truth),
        "prequential_accuracy": _acc(adapt, truth),
        "by_subject": {},
        "p50_us": stats.get("p50_us"),
        "p99_us": stats.get("p99_us"),
        "rss_mb": stats.get("rss_mb"),
        "state_bytes": stats.get("state_bytes"),
        "rejects": stats.get("rejects", {}),
    }
    print(
        f"\n{n} windows of {w.length} rows ({w.seconds or 0:g} s), "
        f"{result['labels']} labels learned, {elapsed:.1f} s",
        file=out,
    )
    print(f"{'':18}{'frozen head':>14}{'edgecl (adapting)':>20}", file=out)
    for s in np.unique(subj):
        m = subj == s
        fa, aa = _acc(frozen[m], truth[m]), _acc(adapt[m], truth[m])
        result["by_subject"][int(s)] = {"windows": int(m.sum()), "frozen": fa, "adapting": aa}
        print(f"subject {int(s):<10}{fa:>14.3f}{aa:>20.3f}   ({int(m.sum())} windows)", file=out)
    print(
        f"{'all':<18}{result['frozen_accuracy']:>14.3f}{result['prequential_accuracy']:>20.3f}",
        file=out,
    )
    p50, p99 = result["p50_us"], result["p99_us"]
    print(
        f"daemon: p50 {p50} µs, p99 {p99} µs per window; RSS {result['rss_mb']} MB; "
        f"learner state {result['state_bytes']:,} B; rejects {result['rejects'] or 0}",
        file=out,
    )
    if plot and n:
        _plot(plot, truth, frozen, adapt, subj, out)
        result["plot"] = plot
    return result


def _acc(pred: np.ndarray, truth: np.ndarray) -> float:
    return round(float(np.mean(pred == truth)), 4) if len(truth) else float("nan")


def _plot(path: str, truth, frozen, adapt, subj, out: TextIO, k: int = 100) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install 'edgecl[plot]')", file=out)
        return
    k = max(1, min(k, len(truth)))
    kernel = np.ones(k) / k
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, pred in (("frozen pre-trained head", frozen), ("edgecl, adapting", adapt)):
        hit = (pred == truth).astype(float)
        ax.plot(np.arange(k - 1, len(hit)), np.convolve(hit, kernel, mode="valid"), label=name)
    # Recordings of the subjects interleave: shade each subject's windows in its colour.
    edges = np.concatenate([[0], np.flatnonzero(np.diff(subj)) + 1, [len(subj)]])
    colours = {int(v): f"C{2 + i}" for i, v in enumerate(np.unique(subj))}
    named: set[int] = set()
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        who = int(subj[a])
        label = None if who in named else f"subject {who} windows"
        named.add(who)
        ax.axvspan(a, b, color=colours[who], alpha=0.12, lw=0, label=label)
    ax.set(
        xlabel="window (2 s of sensor data each)",
        ylabel=f"accuracy, last {k} windows",
        ylim=(0, 1.02),
        title="held-out subjects: frozen head vs edgecl learning on-device",
    )
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}", file=out)
