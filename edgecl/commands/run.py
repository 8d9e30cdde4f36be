"""``edgecl run``: the on-device daemon."""

from __future__ import annotations

import argparse
import os
import sys

# -- run ---------------------------------------------------------------------

_RUN_EPILOG = """\
examples:
  edgecl run --source /dev/ttyUSB0 --state /var/lib/edgecl
      the shipped IMU bundle on a serial sensor; checkpoints resume after a restart
  edgecl run --source socket://127.0.0.1:7000 --out predictions.ndjson --stats-every 5
  edgecl run --features 64 --source - --max-classes 10 < embeddings.ndjson
      no bundle: each {"x": [...]} already is a 64-d embedding
  edgecl run --source /dev/ttyUSB0 --state /var/lib/edgecl --new-user
      the watch changed hands: restart the per-user embedding statistics from the
      pre-training prior (everything learned from labels is kept)
  edgecl run --source /dev/ttyUSB0 --state /var/lib/edgecl --bundle new/ --reset-state
      a new bundle: the old state (of another bundle) is moved into
      /var/lib/edgecl/replaced-<time>/ and learning restarts from the new bundle's head

State: checkpoints every --checkpoint-every labels / --checkpoint-seconds, and in
between a label journal (every label learned, every window observed) fsynced every
--journal-fsync seconds; a restart resumes from both. State belongs to its bundle:
state of another bundle is refused with exit status 2 (use --reset-state).

Wire protocol (one JSON object per line): {"x": [..]} a raw row or feature
vector, {"x": [..], "y": 3} labelled, {"label": 3, "seq": 1042} a delayed label
for prediction seq, {"cmd": "stats"|"checkpoint"|"reset-user"} with --control. Out, one line
per window: {"seq": 1042, "pred": 2, "p": 0.91, "us": 180}, and {"stats": {...}}
lines. Bad input is counted per reason in the stats, never fatal. SIGTERM/SIGINT:
final checkpoint and exit 0; SIGHUP: a stats line.
"""


def add_run(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "run",
        parents=[common],
        help="the on-device daemon: sensor stream in, predictions out, learning from labels",
        description="Read sensor rows or feature vectors from a serial port, socket, stdin or\n"
        "file; predict every window; learn from every label; checkpoint and resume.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--source",
        required=True,
        metavar="URL",
        help="/dev/ttyUSB0, socket://HOST:PORT, rfc2217://, loop://, - (stdin) or a file",
    )
    io.add_argument("--out", default="-", metavar="URL", help="- (stdout, default), file or URL")
    io.add_argument("--format", choices=["ndjson", "csv", "framed"], default="ndjson")
    io.add_argument("--max-line", type=int, metavar="BYTES", help="line cap (default 65536)")
    io.add_argument("--control", action="store_true", help='accept {"cmd": ...} messages')
    io.add_argument("--follow", action="store_true", help="file source: wait for more at EOF")
    m = p.add_argument_group("model")
    which = m.add_mutually_exclusive_group()
    which.add_argument("--bundle", metavar="B", help="bundle directory (default: shipped IMU)")
    which.add_argument(
        "--features", type=int, metavar="DIM", help="no bundle: x is already a DIM embedding"
    )
    m.add_argument("--profile", metavar="P.toml", help="device profile (default: x86-cpu)")
    m.add_argument(
        "--bundle-pubkey",
        metavar="PUB",
        help="require the bundle signed by this Ed25519 key (default: the profile's "
        "bundle_public_key, else $EDGECL_BUNDLE_PUBKEY)",
    )
    m.add_argument("--no-learn", action="store_true", help="predict only (a frozen head)")
    m.add_argument(
        "--new-user",
        action="store_true",
        help="start a new user: reset the per-user embedding statistics (labels learned stay)",
    )
    m.add_argument("--label-rule", choices=["majority", "last"], help="row labels → window")
    m.add_argument("--pending", type=int, metavar="N", help="windows kept for delayed labels")
    m.add_argument("--head", choices=["ncm", "slda", "softmax"], help="new learner only")
    m.add_argument("--max-classes", type=int, metavar="N", help="new learner only")
    m.add_argument("--budget-bytes", type=int, metavar="N", help="new learner only")
    s = p.add_argument_group("state and timers")
    s.add_argument("--state", metavar="DIR", help="checkpoint directory (default: "
                   "$STATE_DIRECTORY under systemd; none: no checkpoints)")  # fmt: skip
    s.add_argument("--checkpoint-every", type=int, metavar="N", help="learned labels (profile)")
    s.add_argument("--checkpoint-seconds", type=float, metavar="S", help="seconds (profile)")
    s.add_argument(
        "--journal-fsync", type=float, metavar="S", help="label journal fsync period (profile)"
    )
    s.add_argument(
        "--reset-state",
        action="store_true",
        help="move the state directory's files aside (into replaced-<time>/, nothing is "
        "deleted) and start from the bundle head",
    )
    s.add_argument("--stats-every", type=float, metavar="S", help="stats line period (10; 0 off)")
    s.add_argument("--baudrate", type=int, metavar="N", help="serial speed (profile)")
    s.add_argument("--serial-timeout", type=float, metavar="S", help="read timeout (profile)")
    s.add_argument("--reconnect-max", type=float, metavar="S", help="backoff cap (default 5)")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.set_defaults(func=cmd_run)


def _stderr_logging(level: str, prefix: str) -> None:
    import logging

    logger = logging.getLogger("edgecl")
    logger.setLevel(level.upper())
    if not any(getattr(h, "_edgecl", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{prefix}: %(levelname)s %(message)s"))
        handler._edgecl = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def cmd_run(args: argparse.Namespace) -> int:
    """``edgecl run``: build the daemon from flags + device profile, run until stopped."""
    from edgecl.runtime.checkpoint import StateMismatchError
    from edgecl.runtime.launch import build_daemon, config_from_profile
    from edgecl.runtime.profile import DeviceProfile

    _stderr_logging(args.log_level, "edgecl run")
    profile = DeviceProfile.load(args.profile) if args.profile else DeviceProfile.default()
    state = args.state
    if state is None and os.environ.get("STATE_DIRECTORY"):
        state = os.environ["STATE_DIRECTORY"].split(":")[0]  # systemd StateDirectory=
    config = config_from_profile(
        profile,
        source=args.source,
        out=args.out,
        state_dir=state,
        format=args.format,
        max_line=args.max_line,
        control=args.control,
        follow=args.follow,
        learn=not args.no_learn,
        label_rule=args.label_rule,
        pending=args.pending,
        checkpoint_every_samples=args.checkpoint_every,
        checkpoint_every_s=args.checkpoint_seconds,
        journal_fsync_s=args.journal_fsync,
        stats_every_s=args.stats_every,
        baudrate=args.baudrate,
        serial_timeout_s=args.serial_timeout,
        reconnect_max_s=args.reconnect_max,
    )
    if args.reset_state and state is None:
        print("edgecl run: --reset-state needs a state directory (--state)", file=sys.stderr)
        return 2
    try:
        daemon = build_daemon(
            config,
            bundle=args.bundle,
            features=args.features,
            profile=profile,
            learner_options={
                "head": args.head,
                "max_classes": args.max_classes,
                "budget_bytes": args.budget_bytes,
            },
            public_key=args.bundle_pubkey,
            reset_state=args.reset_state,
        )
    except StateMismatchError as exc:
        # One line, exit 2: systemd's RestartPreventExitStatus=2 stops the restart loop.
        print(f"edgecl run: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if args.new_user:
        daemon.reset_user()
        print("edgecl run: new user: per-user statistics restart from the prior", file=sys.stderr)
    if state is None:
        print("edgecl run: no --state: learning is not checkpointed", file=sys.stderr)
    return daemon.run()
