"""The ``edgecl`` command line: plain argparse, one function per subcommand.

Each subcommand lives in its own module of :mod:`edgecl.commands` as a pair:
``add_<name>(subparsers, common)`` declares its flags and ``cmd_<name>(args) ->
int`` runs it; :data:`_COMMANDS` lists the adders. Heavy imports (torch,
onnxruntime) happen inside the ``cmd_`` functions, so ``--help`` is fast and a
device without the host extra can run every device command. Exit codes: 0 ok,
1 failed (one ``edgecl: error: ...`` line on stderr; the traceback too with
``--debug``), 2 usage.

>>> main(["--version"])  # doctest: +ELLIPSIS
edgecl ...
0
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable

from edgecl.commands import bench, demo, evaluate, export, fleet, merge, pretrain, run
from edgecl.commands._common import UsageError

__all__ = ["main"]

# One adder per subcommand; each sets ``func`` to its cmd_* function.
_COMMANDS: list[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]] = [
    evaluate.add_eval,
    export.add_export,
    run.add_run,
    pretrain.add_pretrain,
    bench.add_bench,
    demo.add_demo,
    merge.add_merge,
    fleet.add_fleet,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``edgecl`` parser with every subcommand."""
    from edgecl import __version__

    parser = argparse.ArgumentParser(
        prog="edgecl",
        description="Continual learning on edge devices: a frozen extractor plus a numpy "
        "streaming learner that learns one sample at a time under a fixed memory budget.",
        epilog="example: edgecl eval --scenario domain-il --head slda",
    )
    parser.add_argument("--version", action="version", version=f"edgecl {__version__}")
    # Flags every subcommand accepts, after its name (`edgecl eval --debug`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``edgecl`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from edgecl.errors import EdgeclError

    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"edgecl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgecl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`edgecl eval --json - | head`): nothing left to say to it;
        # point stdout at devnull so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (EdgeclError, ValueError, OSError, ImportError) as exc:
        if args.debug:
            traceback.print_exc()
        msg = " ".join(str(exc).split()) or type(exc).__name__
        print(f"edgecl: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
