"""``edgecl merge``: combine what several devices learned into one state, exactly."""

from __future__ import annotations

import argparse

from edgecl.commands._common import UsageError, _write_json

_MERGE_EPILOG = """\
examples:
  edgecl merge watch1/state watch2/state --bundle default --out merged.safetensors
  edgecl merge a.safetensors b.safetensors --out ab.safetensors
  edgecl merge dev*/state --base last-merge.safetensors --out merged.safetensors --json -

STATE is a learner state file or an `edgecl run` state directory (its newest
checkpoint). NCM and SLDA heads merge exactly: the result equals one learner fed
every device's labelled windows, whatever the order. Devices that started from a
bundle's head all contain it: pass --bundle (or --base, the state they all last
adopted) so it is counted once. States of different bundles or configs are
refused. Softmax heads are averaged, Fisher-weighted (approximate).
"""


def add_merge(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "merge",
        parents=[common],
        help="merge the learner states of several devices (exact for NCM/SLDA)",
        description="Merge learner states: the head trained on the union of their data.",
        epilog=_MERGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("states", nargs="+", metavar="STATE", help="state files or state directories")
    p.add_argument("--out", required=True, metavar="MERGED", help="state file to write")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--bundle", metavar="B", help="count this bundle's head once ('default')")
    base.add_argument("--base", metavar="STATE", help="a state every STATE started from")
    p.add_argument("--json", metavar="OUT", help="write a summary as JSON ('-' = stdout only)")
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    """``edgecl merge``: load, check, merge, write atomically, print a summary."""
    import sys

    from edgecl.fleet.states import bundle_base, describe, load_learner, merge_learners

    if len(args.states) < 2 and args.base is None and args.bundle is None:
        raise UsageError("give at least two states (or one with --base/--bundle)")
    learners = [load_learner(s) for s in args.states]
    base = None
    if args.bundle is not None:
        base = bundle_base(None if args.bundle == "default" else args.bundle)
    elif args.base is not None:
        base = load_learner(args.base)
    inputs = [
        {"state": s, **(describe(lr.statistics()) if lr.config.head != "softmax" else {})}
        for s, lr in zip(args.states, learners, strict=True)
    ]
    merged = merge_learners(learners, base, names=list(args.states))
    merged.save(args.out)
    if base is None and all(lr.config.tag.startswith("bundle:") for lr in learners):
        print(
            "edgecl merge: warning: every state belongs to a bundle, whose pre-trained head "
            f"each one contains; without --bundle or --base it is counted {len(learners)} times",
            file=sys.stderr,
        )
    summary = {
        "out": args.out,
        "head": merged.config.head,
        "exact": merged.config.head != "softmax",
        "inputs": inputs,
        "base": args.bundle or args.base,
        "n_learned": merged.n_learned,
        "classes": int(merged.classes_.size),
    }
    if merged.config.head != "softmax":
        summary.update(describe(merged.statistics()))
    if args.json:
        _write_json(summary, args.json)
    if args.json != "-":
        kind = "exactly" if summary["exact"] else "by Fisher-weighted averaging (approximate)"
        print(
            f"merged {len(learners)} states {kind} -> {args.out}: "
            f"{summary['classes']} classes, {summary.get('samples', merged.n_learned):,} samples"
        )
    return 0
