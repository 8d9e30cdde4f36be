"""Measure ``edgecl run``: throughput over a pty, latency per window, RSS, kill -9 cost.

examples:
  python tools/bench_daemon.py                       # default bundle, subjects 6+7, core 1
  python tools/bench_daemon.py --kill-trials 10 --json daemon.json

1. Throughput: ``tools/sensor_sim.py pty --rate 0`` (its own process) feeds the
   daemon (``edgecl run``, pinned to ``--core``) as fast as it reads; rows/s is
   rows over the time between the first and the last prediction line, and the
   daemon's own CPU seconds per row come from ``wait4``.
2. Latency: the daemon's ``p50_us``/``p99_us`` (row that completes a window →
   prediction line written), plus an in-process breakdown (embed, predict,
   learn) on the same core.
3. Memory: the daemon's RSS and peak RSS; whether torch/onnx got imported.
4. ``kill -9`` at a random moment (``--kill-trials``): labelled 64-d samples on
   stdin, checkpoints every 1000 (the x86-cpu profile); the restart replays the
   label journal, so at most the sample in flight is lost (``lost_le_1``).
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

ROOT = Path(__file__).resolve().parents[1]


def _pin(core: int):
    return lambda: os.sched_setaffinity(0, {core})


def throughput(core: int, subjects: list[int]) -> dict:
    sim = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tools" / "sensor_sim.py"),
            "pty",
            "--rate",
            "0",
            "--subjects",
            *map(str, subjects),
            "--report",
            "/dev/stderr",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    path = sim.stdout.readline().strip()
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgecl.cli",
            "run",
            "--source",
            path,
            "--stats-every",
            "0",
            "--serial-timeout",
            "0.1",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        preexec_fn=_pin(core),
    )
    times: list[float] = []
    stats: dict = {}

    def read() -> None:
        for line in daemon.stdout:
            obj = json.loads(line)
            if "seq" in obj:
                times.append(time.perf_counter())
            else:
                stats.update(obj["stats"])

    reader = threading.Thread(target=read)
    reader.start()
    report = json.loads(sim.communicate(timeout=600)[1].strip().splitlines()[-1])
    deadline = time.monotonic() + 30
    while len(times) < report["windows"] and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(daemon.pid, 0)
    daemon.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    span = times[-1] - times[0]
    rows_in_span = report["rows"] * (len(times) - 1) / max(1, report["windows"])
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "rows": report["rows"],
        "windows": len(times),
        "windows_sent": report["windows"],
        "rows_per_s": round(rows_in_span / span),
        "daemon_cpu_s": round(cpu, 2),
        "cpu_us_per_row": round(cpu / report["rows"] * 1e6, 1),
        "p50_us": stats.get("p50_us"),
        "p99_us": stats.get("p99_us"),
        "rss_mb": stats.get("rss_mb"),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "rejects": stats.get("rejects"),
        "exit_code": daemon.returncode,
    }


def breakdown(core: int, subjects: list[int]) -> dict:
    os.sched_setaffinity(0, {core})
    from edgecl.eval.metrics import percentiles
    from edgecl.runtime.bundle import Bundle
    from edgecl.runtime.windowing import sliding_windows, windows_by_segment
    from edgecl.sim import load_rows

    b = Bundle.load()
    ext, lr = b.extractor(), b.initial_learner()
    x, y = load_rows(subjects=subjects)
    W = np.ascontiguousarray(sliding_windows(x, b.window.length, b.window.hop))
    Y = windows_by_segment(x, y, np.zeros(len(y), int), b.window.length, b.window.hop).y
    ext.warmup(20)
    t = {"embed": [], "predict": [], "learn": []}
    for i in range(len(W)):
        t0 = time.perf_counter()
        e = ext.embed(W[i])
        t1 = time.perf_counter()
        lr.predict_proba_one(e)
        t2 = time.perf_counter()
        lr.learn_one(e, int(Y[i]))
        if hasattr(lr.head, "refresh"):
            lr.head.refresh()  # as the daemon does: off the prediction path
        t3 = time.perf_counter()
        t["embed"].append(t1 - t0)
        t["predict"].append(t2 - t1)
        t["learn"].append(t3 - t2)
    out = {k: percentiles(np.array(v) * 1e6, (50, 99)) for k, v in t.items()}
    out["torch_imported"] = "torch" in sys.modules
    out["onnx_imported"] = "onnx" in sys.modules
    return out


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.flush()
    except (BrokenPipeError, ValueError):
        pass  # the daemon was killed mid-write


def kill_trials(n: int, every: int, rng: np.random.Generator) -> list[dict]:
    from edgecl.learner import StreamingLearner
    from edgecl.runtime.protocol import format_sample

    X = rng.normal(size=(4 * every, 64)).astype(np.float32)
    Y = rng.integers(0, 7, size=len(X))
    data = b"".join(format_sample(a, int(b)) for a, b in zip(X, Y, strict=True))
    trials = []
    for _ in range(n):
        state = Path(tempfile.mkdtemp(prefix="edgecl-kill-"))
        base = [
            sys.executable,
            "-m",
            "edgecl.cli",
            "run",
            "--features",
            "64",
            "--max-classes",
            "7",
            "--state",
            str(state),
            "--stats-every",
            "0",
            "--serial-timeout",
            "0.05",
            "--checkpoint-every",
            str(every),
            "--log-level",
            "error",
        ]
        proc = subprocess.Popen(
            [*base, "--source", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        # A writer thread: stdin and stdout pipes would otherwise fill up and deadlock.
        feed = threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True)
        feed.start()
        kill_after = int(rng.integers(1, len(X)))
        seen = 0
        while seen < kill_after:
            seen += b'"seq"' in proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        # Read the rest through the same buffered reader: communicate() reads the raw
        # pipe and would skip lines readline() already buffered (lost < 0).
        rest = proc.stdout.read()
        proc.communicate()
        processed = seen + rest.count(b'"seq"')
        empty = state / "empty"
        empty.write_bytes(b"")
        again = subprocess.run([*base, "--source", str(empty)], capture_output=True, timeout=120)
        newest = sorted(state.glob("learner-*.safetensors"))
        k = StreamingLearner.load(newest[-1]).n_learned if newest else 0
        trials.append(
            {
                "processed": processed,
                "checkpointed": k,
                "lost": processed - k,
                "lost_le_1": 0 <= processed - k <= 1,
                "restart_exit": again.returncode,
            }
        )
    return trials


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--core", type=int, default=1, help="CPU core for the daemon")
    p.add_argument("--subjects", type=int, nargs="+", default=[6, 7])
    p.add_argument("--kill-trials", type=int, default=5)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "python": platform.python_version(),
        "throughput": throughput(args.core, args.subjects),
        "breakdown_us": breakdown(args.core, args.subjects),
        "kill_9": kill_trials(
            args.kill_trials, args.checkpoint_every, np.random.default_rng(args.seed)
        ),
    }
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
