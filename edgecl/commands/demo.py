"""``edgecl demo``: simulated sensor → daemon, live accuracy."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from edgecl.commands._common import (
    _write_json,
)

# -- demo --------------------------------------------------------------------

_DEMO_EPILOG = """\
examples:
  edgecl demo                      about a minute: subjects 6 and 7 at 1000 rows/s
  edgecl demo --seconds 10         a quick look
  edgecl demo --rate 50 --seconds 1200 --label-delay 5
      real time, labels five windows late
  edgecl demo --data build/watch_unseen.npz --subjects 8 9 10
      three users no part of edgecl has seen (python tools/watch_extra.py builds the file)
"""


def add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="simulated sensor → edgecl run → live accuracy on users the bundle never saw",
        description="Replay two smartwatch users the shipped bundle was not pre-trained on\n"
        "over a pseudo-terminal into `edgecl run`. Each labels only its first recording of\n"
        "every exercise; the rest is never labelled. Report accuracy on those held-out\n"
        "recordings (frozen head, standardisation only, edgecl) and, on labelled windows,\n"
        "prequential accuracy beside majority, repeat-last and frozen baselines.",
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=60.0, help="stop after (default 60)")
    p.add_argument("--rate", type=float, default=1000.0, help="rows/s (default 1000; 0 = max)")
    p.add_argument("--subjects", type=int, nargs="+", default=[6, 7], metavar="ID")
    p.add_argument("--bundle", metavar="B", help="sensor bundle (default: the shipped one)")
    p.add_argument("--data", metavar="D.npz", help="row-stream data (default: embedded IMU)")
    p.add_argument("--label-delay", type=int, default=2, metavar="W", help="in windows")
    p.add_argument(
        "--calibration",
        type=int,
        default=1,
        metavar="K",
        help="recordings of each exercise a user labels (default 1); the rest is held out",
    )
    p.add_argument("--plot", metavar="OUT.png", default="edgecl-demo.png",
                   help="rolling accuracy plot, if matplotlib is installed")  # fmt: skip
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--json", metavar="OUT", help="write the results as JSON ('-' = stdout)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``edgecl demo``: see :mod:`edgecl.demo`."""
    from edgecl.demo import run_demo

    plot = None
    if not args.no_plot and importlib.util.find_spec("matplotlib") is not None:
        plot = args.plot
    result = run_demo(
        seconds=args.seconds,
        rate=args.rate,
        subjects=tuple(args.subjects),
        bundle=args.bundle,
        data=args.data,
        label_delay=args.label_delay,
        calibration=args.calibration,
        plot=plot,
        out=sys.stderr if args.json == "-" else sys.stdout,
    )
    if args.json:
        _write_json(result, args.json)
    return 0
