"""Soak test of ``edgecl run``: a million samples, RSS and latency over time.

examples:
  python tools/soak.py --samples 1000000 --plot tools/figures/soak.png    # make soak
  python tools/soak.py --bundle --samples 200000                          # default bundle

The daemon runs as its own process (``--features 16`` by default; ``--bundle``:
the shipped IMU bundle, fed raw 6-channel rows, one window per 50 rows) with
checkpoints on, reading stdin; a feeder thread writes seeded samples (half of
them labelled — in the bundle mode, every other 400-row segment — and
0.5 % malformed lines) as fast as the daemon takes them. The
daemon's own stats line every ``--every`` seconds gives RSS, p50/p99 latency
over its recent windows, and its counters. Reported: RSS drift after warm-up
(first 10 % of the samples), its range, and the spread of the per-interval
p99; ``--plot`` draws RSS and latency against samples processed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgecl.runtime.protocol import format_sample

DIM, CLASSES = 16, 6


def _feed(pipe, n: int, width: int, seed: int, segments: bool, chunk: int = 2000) -> None:
    """Samples to ``pipe``; ``segments``: raw rows in 400-row activity segments, every
    other segment labelled (a window's label is the majority of its rows')."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=2.0, size=(CLASSES, width))
    try:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            if segments:
                seg = (start + np.arange(m)) // 400
                y = (seg * 5 + 1) % CLASSES
                lab = seg % 2 == 0
            else:
                y = rng.integers(0, CLASSES, size=m)
                lab = rng.random(m) < 0.5
            X = means[y] + rng.normal(size=(m, width))
            bad = rng.random(m) < 0.005
            out = []
            for i in range(m):
                if bad[i]:
                    out.append(b'{"x": [1, 2]}\n' if i % 2 else b"garbage\n")
                else:
                    out.append(format_sample(X[i], int(y[i]) if lab[i] else None))
            pipe.write(b"".join(out))
        pipe.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def soak(samples: int, every: float, bundle: bool, seed: int) -> dict:
    state = tempfile.mkdtemp(prefix="edgecl-soak-")
    cmd = [sys.executable, "-m", "edgecl.cli", "run", "--source", "-", "--state", state]
    cmd += ["--stats-every", str(every), "--log-level", "warning"]
    if bundle:
        width = 6
    else:
        width = DIM
        cmd += ["--features", str(DIM), "--max-classes", str(CLASSES)]
        cmd += ["--budget-bytes", "2000000"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    feeder = threading.Thread(
        target=_feed, args=(proc.stdin, samples, width, seed, bundle), daemon=True
    )
    t0 = time.perf_counter()
    feeder.start()
    series, preds = [], 0
    for line in proc.stdout:
        if line.startswith(b'{"stats"'):
            s = json.loads(line)["stats"]
            s["t"] = time.perf_counter() - t0
            s["predictions"] = preds
            series.append(s)
        else:
            preds += 1
    proc.wait()
    seconds = time.perf_counter() - t0
    feeder.join(5)
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f"daemon exited {proc.returncode}")
    final = series[-1]
    run = [s for s in series[:-1] if s["p99_us"] is not None] or series
    warm = next((s for s in run if s["samples"] >= samples // 10), run[0])
    after = [s for s in run if s["samples"] >= warm["samples"]] + [final]
    rss = np.array([s["rss_mb"] for s in after])
    p99 = np.array([s["p99_us"] for s in after[:-1] if s["p99_us"] is not None])
    p50 = np.array([s["p50_us"] for s in after[:-1] if s["p50_us"] is not None])
    return {
        "mode": "default bundle" if bundle else f"features {DIM}",
        "samples_sent": samples,
        "samples": final["samples"],
        "predictions": preds,
        "learned": final["learned"],
        "rejects": final["rejects"],
        "checkpoints": final["checkpoints"],
        "seconds": round(seconds, 1),
        "samples_per_s": round(final["samples"] / seconds),
        "rss_warm_mb": float(rss[0]),
        "rss_end_mb": float(rss[-1]),
        "rss_drift_mb": round(float(rss[-1] - rss[0]), 1),
        "rss_range_after_warmup_mb": round(float(rss.max() - rss.min()), 1),
        "p50_us_median": round(float(np.median(p50)), 1) if p50.size else None,
        "p99_us_median": round(float(np.median(p99)), 1) if p99.size else None,
        "p99_us_min_max": [float(p99.min()), float(p99.max())] if p99.size else None,
        "p99_us_first_last_quarter": (
            [
                round(float(np.median(p99[: max(1, p99.size // 4)])), 1),
                round(float(np.median(p99[-max(1, p99.size // 4) :])), 1),
            ]
            if p99.size
            else None
        ),
        "series": [
            {k: s[k] for k in ("t", "samples", "rss_mb", "p50_us", "p99_us")} for s in series
        ],
    }


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [x for x in res["series"] if x["p99_us"] is not None]
    n = np.array([x["samples"] for x in s]) / 1e3
    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 4.6), sharex=True)
    a.plot(n, [x["rss_mb"] for x in s], color="C0")
    a.set_ylabel("RSS (MB)")
    lo = min(x["rss_mb"] for x in s)
    a.set_ylim(lo - 5, lo + 15)
    a.set_title(
        f"edgecl run soak, {res['mode']}: {res['samples']:,} samples in {res['seconds']:.0f} s; "
        f"RSS drift {res['rss_drift_mb']:+.1f} MB",
        fontsize=9,
    )
    b.plot(n, [x["p50_us"] for x in s], label="p50", color="C2")
    b.plot(n, [x["p99_us"] for x in s], label="p99", color="C3")
    b.set_ylabel("latency (µs)")
    b.set_xlabel(f"{'raw rows' if res['mode'] == 'default bundle' else 'samples'} (thousands)")
    b.set_ylim(0, None)
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=1_000_000)
    p.add_argument("--every", type=float, default=2.0, help="seconds between stats lines")
    p.add_argument("--bundle", action="store_true", help="the shipped bundle, raw IMU rows")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--plot", metavar="PNG")
    args = p.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        **soak(args.samples, args.every, args.bundle, args.seed),
    }
    if args.plot:
        plot(res, args.plot)
    text = json.dumps(res, indent=2)
    print(json.dumps({k: v for k, v in res.items() if k != "series"}, indent=2))
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
