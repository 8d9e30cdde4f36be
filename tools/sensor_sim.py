"""Replay an IMU row stream as a live sensor: over a pty, a TCP port or stdout.

The engine is :mod:`edgecl.sim` (in the package, so ``edgecl demo`` has it
too); this is its command line.

examples:
  python tools/sensor_sim.py pty --subjects 6 7 --rate 50
      prints the pty path; then: edgecl run --source /dev/pts/N
  python tools/sensor_sim.py tcp --port 7000 --rate 0 --garbage 0.01 --nan 0.01
      then: edgecl run --source socket://127.0.0.1:7000
  python tools/sensor_sim.py stdout --limit 2000 --labels rows | edgecl run --source -
  python tools/sensor_sim.py tcp --disconnect-every 5000 --down 2   # the port vanishes

At the end (or on Ctrl-C) it prints a JSON report to stderr (or --report FILE):
rows, windows and labels sent, and every injected fault by the reject reason the
daemon counts it under, so the daemon's stats can be checked against it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from edgecl.sim import (
    FAULTS,
    SensorSimulator,
    SimConfig,
    load_rows,
    serve_pty,
    serve_stream,
    serve_tcp,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensor_sim.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mode", choices=["pty", "tcp", "stdout"], help="how to serve the stream")
    p.add_argument("--data", metavar="D.npz", help="row-stream npz (default: embedded watch_imu)")
    p.add_argument("--subjects", type=int, nargs="+", metavar="ID", help="only these subjects")
    p.add_argument("--limit", type=int, metavar="ROWS", help="stop after this many rows")
    p.add_argument("--rate", type=float, default=50.0, help="rows/s (default 50; 0 = max)")
    p.add_argument("--window", type=int, default=100, help="rows per window (the bundle's)")
    p.add_argument("--hop", type=int, default=50, help="rows between windows (the bundle's)")
    p.add_argument("--labels", choices=["delayed", "rows", "none"], default="delayed")
    p.add_argument("--label-delay", type=int, default=2, metavar="W", help="in windows")
    p.add_argument("--unlabelled", type=float, default=0.0, metavar="F", help="never labelled")
    for kind, reason in FAULTS.items():
        p.add_argument(
            f"--{kind.replace('_', '-')}",
            type=float,
            default=0.0,
            metavar="P",
            help=f"per-row probability of a fault line ({reason})",
        )
    p.add_argument("--port", type=int, default=7000, help="tcp: port (0 = any free one)")
    p.add_argument("--disconnect-every", type=int, default=0, metavar="ROWS", help="tcp only")
    p.add_argument("--down", type=float, default=1.0, metavar="S", help="tcp: seconds down")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", metavar="FILE", help="write the JSON report here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows, labels = load_rows(args.data, args.subjects)
    if args.limit:
        rows, labels = rows[: args.limit], labels[: args.limit]
    cfg = SimConfig(
        rate=args.rate,
        window=args.window,
        hop=args.hop,
        labels=args.labels,
        label_delay=args.label_delay,
        unlabelled=args.unlabelled,
        seed=args.seed,
        **{kind: getattr(args, kind) for kind in FAULTS},
    )
    sim = SensorSimulator(rows, labels, cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def say(text: object) -> None:
        print(text, file=sys.stderr if args.mode == "stdout" else sys.stdout, flush=True)

    try:
        if args.mode == "pty":
            serve_pty(sim, on_path=say, stop=stop.is_set)
        elif args.mode == "tcp":
            serve_tcp(
                sim,
                port=args.port,
                on_port=lambda port: say(f"socket://127.0.0.1:{port}"),
                stop=stop.is_set,
                disconnect_every=args.disconnect_every,
                down_s=args.down,
            )
        else:
            serve_stream(sim, sys.stdout.buffer, stop=stop.is_set)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    report = json.dumps(sim.report())
    if args.report:
        Path(args.report).write_text(report + "\n", encoding="utf-8")
    print(report, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
