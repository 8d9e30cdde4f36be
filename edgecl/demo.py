"""``edgecl demo``: a simulated smartwatch → the daemon → accuracy on users it never saw.

The sensor simulator replays subjects 6 and 7 of the embedded IMU data — the two
the shipped bundle was *not* pre-trained on — over a pseudo-terminal, as a
serial sensor would. Each user labels only their first recording of every
exercise (the new-user calibration of ``edgecl eval --scenario new-user``);
those labels arrive a couple of windows late, and every other recording is
never labelled: it is held out. Where the wearer changes, the simulator sends
``{"cmd": "reset-user"}``. ``edgecl run`` (a separate process, as on a device)
reads the pty with the default bundle, predicts every window, updates the
user's embedding statistics from every window and learns from every label.

This module scores each prediction against the truth and reports two things,
each beside its baselines on the very same windows:

* **held-out recordings** (never labelled): the frozen pre-trained head, the
  head with per-user standardisation only (computed here, causally: each window
  is predicted before it is observed), and the daemon;
* **labelled windows**, prequentially (predicted before their label arrives):
  the daemon beside majority-so-far, repeat-the-previous-label and the frozen
  head. Recording-ordered windows are strongly autocorrelated, so
  repeat-the-previous-label is hard to beat here; the held-out figure is the one
  that says whether learning helped.
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

from edgecl.errors import ConfigError, DataError, EdgeclError
from edgecl.sim import DEFAULT_DATA, SensorSimulator, SimConfig, serve_pty

__all__ = ["run_demo"]

RESET_USER = b'{"cmd":"reset-user"}\n'


def _rows(data: str | None, subjects: tuple[int, ...]) -> dict[str, np.ndarray]:
    path = Path(data) if data else DEFAULT_DATA
    with np.load(path, allow_pickle=False) as d:
        missing = [k for k in ("x", "y", "subject", "recording") if k not in d.files]
        if missing:
            raise DataError(f"{path}: missing {missing}; the demo needs the IMU row layout")
        keep = np.isin(d["subject"], list(subjects))
        if not keep.any():
            have = sorted(int(s) for s in np.unique(d["subject"]))
            raise DataError(f"{path}: no rows for subjects {list(subjects)}; it has {have}")
        out = {k: np.asarray(d[k])[keep] for k in ("x", "y", "subject", "recording")}
    # One wearer after another, in the order given, each in recorded order (files may
    # interleave subjects' recordings).
    rank = {s: i for i, s in enumerate(subjects)}
    order = np.argsort([rank[int(s)] for s in out["subject"]], kind="stable")
    out = {k: v[order] for k, v in out.items()}
    out["x"] = out["x"].astype(np.float32)
    return out


def run_demo(
    *,
    seconds: float = 60.0,
    rate: float = 1000.0,
    subjects: tuple[int, ...] = (6, 7),
    bundle: str | None = None,
    data: str | None = None,
    label_delay: int = 2,
    calibration: int = 1,
    plot: str | None = None,
    out: TextIO = sys.stdout,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the demo; print the live line and summary to ``out``; return the results."""
    from edgecl.eval.adapt import new_user_split
    from edgecl.runtime.bundle import Bundle

    b = Bundle.load(bundle)
    if b.window is None:
        raise ConfigError(f"bundle {b.path} has no window spec: the demo needs a sensor bundle")
    w = b.window
    r = _rows(data, subjects)
    rows = r["x"]
    teach = np.zeros(len(rows), dtype=bool)
    for calib, _ in new_user_split(r["subject"], r["recording"], r["y"], calibration).values():
        teach[calib] = True
    changes = np.flatnonzero(np.diff(r["subject"])) + 1
    sim = SensorSimulator(
        rows,
        r["y"],
        SimConfig(rate=rate, window=w.length, hop=w.hop, label_delay=label_delay, seed=seed),
        teach=teach,
        extra={int(i): RESET_USER for i in changes},
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
        "--control",
    ]
    print(
        f"edgecl demo: replaying subjects {', '.join(map(str, subjects))} (held out of "
        f"pre-training) at {rate:g} rows/s over {paths[0]} → edgecl run; each labels only "
        f"its first {calibration} recording(s) of every exercise, the rest is held out",
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
    return _summary(b, sim, rows, r["subject"], preds, stats, time.monotonic() - t0, plot, out)


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


def _offline(b: Any, emb: np.ndarray, subj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frozen head, and the head with per-user standardisation only (no labels):
    each window predicted before it is observed, statistics reset where the user changes."""
    head = b.initial_learner()
    if head is None:
        none = np.full(len(emb), -1)
        return none, none
    frozen = head.predict_many(emb)
    std = np.empty(len(emb), dtype=np.int64)
    for i, e in enumerate(emb):
        if i and subj[i] != subj[i - 1]:
            head.reset_user()
        std[i] = head.predict_one(e)
        head.observe_one(e)
    return frozen, std


def _baselines(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Majority-so-far and repeat-the-previous-label predictions over ``truth`` in order."""
    counts = np.zeros(max(1, int(truth.max(initial=0)) + 1), dtype=np.int64)
    major = np.full(len(truth), -1)
    last = np.full(len(truth), -1)
    for i, t in enumerate(truth):
        if i:
            major[i] = int(np.argmax(counts))
            last[i] = truth[i - 1]
        counts[t] += 1
    return major, last


def _summary(b, sim, rows, row_subject, preds, stats, elapsed, plot, out) -> dict[str, Any]:
    w = b.window
    n = len(preds)
    truth = np.array(sim.window_labels[:n])
    taught = np.array(sim.window_taught[:n], dtype=bool)
    adapt = np.array([preds.get(s, -1) for s in range(n)])
    windows = np.lib.stride_tricks.sliding_window_view(rows, w.length, axis=0)[:: w.hop][:n]
    emb = b.extractor().embed_many(np.ascontiguousarray(windows.transpose(0, 2, 1)))
    # A window belongs to the subject of its last row (the row whose label decides teaching).
    subj = row_subject[np.arange(n) * w.hop + w.length - 1] if n else np.empty(0, int)
    frozen, std = _offline(b, emb, subj)
    held = ~taught
    result: dict[str, Any] = {
        "windows": n,
        "labels": int(stats.get("learned", 0)),
        "heldout_windows": int(held.sum()),
        "seconds": round(elapsed, 1),
        "heldout": {
            "frozen": _acc(frozen[held], truth[held]),
            "standardised": _acc(std[held], truth[held]),
            "adapted": _acc(adapt[held], truth[held]),
            "by_subject": {},
        },
        "prequential": {
            "adapted": _acc(adapt[taught], truth[taught]),
            "baselines": {},
        },
        "p50_us": stats.get("p50_us"),
        "p99_us": stats.get("p99_us"),
        "rss_mb": stats.get("rss_mb"),
        "state_bytes": stats.get("state_bytes"),
        "user_resets": stats.get("user_resets", 0),
        "rejects": stats.get("rejects", {}),
    }
    h = result["heldout"]
    h["gain"] = None if h["adapted"] is None else round(h["adapted"] - h["frozen"], 4)
    major, last = _baselines(truth[taught])
    result["prequential"]["baselines"] = {
        "majority": _acc(major, truth[taught]),
        "repeat_last": _acc(last, truth[taught]),
        "frozen": _acc(frozen[taught], truth[taught]),
    }
    print(
        f"\n{n} windows of {w.length} rows ({w.seconds or 0:g} s): {result['labels']} labels "
        f"learned, {int(held.sum())} held out (never labelled), {elapsed:.1f} s",
        file=out,
    )
    print("\nheld-out recordings (never labelled), accuracy:", file=out)
    print(f"{'':14}{'frozen head':>13}{'standardised':>14}{'edgecl':>9}{'gain':>8}", file=out)
    for s in np.unique(subj):
        m = held & (subj == s)
        fa, sa, aa = (_acc(p[m], truth[m]) for p in (frozen, std, adapt))
        gain = None if aa is None else round(aa - fa, 4)
        h["by_subject"][int(s)] = {
            "windows": int(m.sum()),
            "frozen": fa,
            "standardised": sa,
            "adapted": aa,
            "gain": gain,
        }
        print(f"subject {int(s):<6}{_f(fa):>13}{_f(sa):>14}{_f(aa):>9}{_f(gain, 1):>8}", file=out)
    print(
        f"{'all':<14}{_f(h['frozen']):>13}{_f(h['standardised']):>14}{_f(h['adapted']):>9}"
        f"{_f(h['gain'], 1):>8}",
        file=out,
    )
    p, bl = result["prequential"], result["prequential"]["baselines"]
    print(
        f"\nlabelled windows, prequential (before each label arrived): edgecl "
        f"{_f(p['adapted'])} | majority {_f(bl['majority'])}, repeat-last "
        f"{_f(bl['repeat_last'])}, frozen {_f(bl['frozen'])}",
        file=out,
    )
    p50, p99 = result["p50_us"], result["p99_us"]
    print(
        f"daemon: p50 {p50} µs, p99 {p99} µs per window; RSS {result['rss_mb']} MB; "
        f"learner state {result['state_bytes'] or 0:,} B; user resets "
        f"{result['user_resets']}; rejects {result['rejects'] or 0}",
        file=out,
    )
    if plot and n:
        _plot(plot, truth, frozen, adapt, held, subj, out)
        result["plot"] = plot
    return result


def _f(v: float | None, signed: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _acc(pred: np.ndarray, truth: np.ndarray) -> float | None:
    return round(float(np.mean(pred == truth)), 4) if len(truth) else None


def _plot(path: str, truth, frozen, adapt, held, subj, out: TextIO, k: int = 50) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install 'edgecl[plot]')", file=out)
        return
    # Rolling accuracy over held-out (never labelled) windows only.
    idx = np.flatnonzero(held)
    k = max(1, min(k, len(idx)))
    kernel = np.ones(k) / k
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, pred in (("frozen pre-trained head", frozen), ("edgecl, adapting", adapt)):
        hit = (pred[idx] == truth[idx]).astype(float)
        ax.plot(idx[k - 1 :], np.convolve(hit, kernel, mode="valid"), label=name)
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
        ylabel=f"accuracy, last {k} held-out windows",
        ylim=(0, 1.02),
        title="new users, never-labelled recordings: frozen head vs edgecl on-device",
    )
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}", file=out)
