"""``edgecl bench``: per-window latency and memory against a device profile."""

from __future__ import annotations

import argparse

from edgecl.commands._common import (
    UsageError,
    _write_json,
)

# -- bench -------------------------------------------------------------------

_BENCH_EPILOG = """\
examples:
  edgecl bench                                   the shipped bundle, x86-cpu defaults
  edgecl bench --profile devices/raspberry-pi-4.toml --json bench.json
  edgecl bench --bundle out/bundle --head ncm --n 5000 --ort-sweep

Times embed (onnxruntime), predict and learn per window, and the three together
(e2e: every window labelled, the daemon's worst case). Exit code 1 when the
profile's targets (p99 e2e latency, learner state within the memory budget)
are missed.
"""


def add_bench(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from edgecl.learner import HEADS

    p = sub.add_parser(
        "bench",
        parents=[common],
        help="time embed / predict / learn per window against a device profile",
        description="Latency and memory of the daemon's per-window work on this machine.",
        epilog=_BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", metavar="B", help="bundle directory (default: the shipped one)")
    p.add_argument("--profile", metavar="P.toml", help="device profile (default: x86-cpu)")
    p.add_argument("--head", choices=HEADS, help="learner head (default: the bundle's head)")
    p.add_argument("--n", type=int, default=2000, help="timed windows (default 2000)")
    p.add_argument("--warmup", type=int, default=200, help="untimed windows first (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ort-sweep",
        action="store_true",
        help="also time embed with 2 threads, with spinning and with the other arena setting",
    )
    p.add_argument("--json", metavar="OUT", help="write the result as JSON ('-' = stdout only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """``edgecl bench``: time the per-window work, print a table, exit 1 on missed targets."""
    from edgecl.bench import format_table, ort_sweep, run_bench
    from edgecl.runtime.bundle import Bundle
    from edgecl.runtime.profile import DeviceProfile

    if args.n < 1 or args.warmup < 0:
        raise UsageError(f"--n {args.n} --warmup {args.warmup}: need n >= 1 and warmup >= 0")
    profile = DeviceProfile.load(args.profile) if args.profile else DeviceProfile.default()
    # The profile's bundle_public_key, else $EDGECL_BUNDLE_PUBKEY, else no signature check.
    bundle = Bundle.load(args.bundle, public_key=profile.bundle_public_key)
    res = run_bench(
        bundle,
        profile,
        n=args.n,
        warmup=args.warmup,
        head=args.head,
        seed=args.seed,
        progress=not args.no_progress and args.json != "-",
    )
    if args.ort_sweep:
        res["ort_sweep"] = ort_sweep(bundle, profile, n=max(50, args.n // 4), seed=args.seed)
    if args.json:
        _write_json(res, args.json)
    if args.json != "-":
        print(format_table(res))
    return 0 if res["targets_met"] else 1
