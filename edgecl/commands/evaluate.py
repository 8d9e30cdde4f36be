"""``edgecl eval``: a streaming learner on a continual-learning stream."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
from typing import Any

from edgecl.commands._common import (
    DEFAULT_BUDGET_BYTES,
    DEFAULT_BUFFER_ITEMS,
    UsageError,
    _head_options,
    _write_json,
)

# -- eval --------------------------------------------------------------------

_EVAL_EPILOG = """\
examples:
  edgecl eval --scenario domain-il --head slda
      subjects of the embedded smartwatch IMU data as domains; subjects 6, 7 held out
  edgecl eval --data ../shared/data/mnist.npz --scenario class-il --head ncm --limit 2000 \\
      --json out.json --plot out.png
  edgecl eval --scenario class-il --head softmax --head-option weight_decay=1e-4 --json -

Scenarios: class-il (classes split into tasks, predict over all), task-il (same
tasks, predict within the task's classes), domain-il (pixel permutations for
images, subjects for IMU), task-free (class-il with blurred task boundaries).
"""


def add_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from edgecl.eval.streams import DEFAULT_BLUR, SCENARIOS
    from edgecl.learner import HEADS

    p = sub.add_parser(
        "eval",
        parents=[common],
        help="evaluate a streaming learner on a continual-learning stream",
        description="Prequential (test-then-train) evaluation of a streaming learner, one\n"
        "sample at a time: accuracy matrix, BWT, FWT, forgetting, memory and µs.",
        epilog=_EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", metavar="D.npz", help="dataset (default: the embedded watch_imu.npz)")
    p.add_argument("--scenario", choices=SCENARIOS, default="class-il", help="default: class-il")
    p.add_argument(
        "--bundle",
        metavar="B",
        help="embed samples with this bundle's extractor ('default' = the shipped one) "
        "instead of the hand-made IMU features / raw pixels",
    )
    g = p.add_argument_group("learner")
    g.add_argument("--head", choices=HEADS, default="slda", help="default: slda")
    g.add_argument(
        "--budget-bytes",
        type=int,
        metavar="N",
        help=f"learner memory budget (default: {DEFAULT_BUDGET_BYTES:,}, or the head plus "
        f"{DEFAULT_BUFFER_ITEMS} buffer slots if more)",
    )
    g.add_argument("--replay-k", type=int, metavar="N", help="replayed samples per softmax step")
    g.add_argument("--ewc-lambda", type=float, metavar="F", help="EWC strength (softmax head)")
    g.add_argument("--lr", type=float, metavar="F", help="softmax SGD step size")
    g.add_argument(
        "--head-option",
        action="append",
        metavar="KEY=VALUE",
        help="any other LearnerConfig field, e.g. buffer_dtype=float32 (repeatable)",
    )
    s = p.add_argument_group("stream")
    split = s.add_mutually_exclusive_group()
    split.add_argument("--classes-per-task", type=int, metavar="K", help="class splits (default 2)")
    split.add_argument(
        "--tasks", type=int, metavar="N", help="number of tasks (class split / permutations)"
    )
    s.add_argument(
        "--test-subjects",
        type=int,
        nargs="*",
        metavar="ID",
        help="IMU: subjects held out of training (default: last quarter; no ids: none)",
    )
    s.add_argument("--window", type=int, metavar="ROWS", help="IMU window (default: 2 s of rows)")
    s.add_argument("--hop", type=int, metavar="ROWS", help="IMU window step (default: window/2)")
    s.add_argument(
        "--blur",
        type=float,
        default=DEFAULT_BLUR,
        metavar="F",
        help=f"task-free boundary width, in tasks (default {DEFAULT_BLUR})",
    )
    s.add_argument("--limit", type=int, metavar="N", help="at most N training samples per task")
    s.add_argument("--seed", type=int, default=0, help="seeds the stream and the learner")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="OUT", help="write the result as JSON ('-' = stdout only)")
    o.add_argument("--plot", metavar="OUT.png", help="write accuracy plots (needs matplotlib)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _learner_config(args: argparse.Namespace, dim: int, n_classes: int) -> Any:
    from edgecl.learner import LearnerConfig, plan_budget

    known = {f.name for f in dataclasses.fields(LearnerConfig)} - {"dim"}
    # LearnerConfig needs max_classes >= 2, even for single-class data.
    fields: dict[str, Any] = {"max_classes": max(2, n_classes), "head": args.head}
    fields["seed"] = args.seed
    flags = {
        "budget_bytes": args.budget_bytes,
        "replay_k": args.replay_k,
        "ewc_lambda": args.ewc_lambda,
        "lr": args.lr,
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    extra = _head_options(args.head_option, known)
    clash = sorted(k for k in extra if k in flags and flags[k] is not None or k == "head")
    if clash:
        raise UsageError(f"--head-option {clash[0]}: use the --{clash[0].replace('_', '-')} flag")
    fields.update(extra)
    if "budget_bytes" not in fields:
        # Size the probe's buffer explicitly so the plan measures head + Fisher + slots.
        slots = fields.get("buffer_capacity")
        probe = LearnerConfig(
            dim=dim,
            **{
                **fields,
                "budget_bytes": 1 << 40,
                "buffer_capacity": DEFAULT_BUFFER_ITEMS if slots is None else slots,
            },
        )
        fields["budget_bytes"] = max(DEFAULT_BUDGET_BYTES, plan_budget(probe)["state_bytes"])
    return LearnerConfig(dim=dim, **fields)


def cmd_eval(args: argparse.Namespace) -> int:
    """``edgecl eval``: build the stream, run it, print/write the results."""
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ImportError("--plot needs matplotlib: pip install 'edgecl[plot]'")
    from edgecl.eval.datasets import load_dataset
    from edgecl.eval.runner import run_stream
    from edgecl.eval.streams import build_stream

    embed, window, hop = None, args.window, args.hop
    if args.bundle is not None:
        from edgecl.runtime.bundle import Bundle

        bundle = Bundle.load(None if args.bundle == "default" else args.bundle)
        ext = bundle.extractor()
        if bundle.window is not None:
            window = window or bundle.window.length
            hop = hop or bundle.window.hop

        def embed(X: Any) -> Any:
            X = X.reshape(len(X), *bundle.input_shape)
            return ext.embed_many(X)

    data = load_dataset(args.data, window=window, hop=hop, embed=embed)
    if embed is not None and args.scenario == "domain-il" and data.subject is None:
        raise UsageError(
            "--bundle with image domain-il: pixel permutations happen before the "
            "extractor, which eval does not do; use class-il or task-il"
        )
    stream = build_stream(
        data,
        args.scenario,
        classes_per_task=args.classes_per_task,
        n_tasks=args.tasks,
        test_subjects=args.test_subjects,
        limit=args.limit,
        blur=args.blur,
        seed=args.seed,
    )
    cfg = _learner_config(args, data.dim, data.n_classes)
    result = run_stream(stream, cfg, progress=not args.no_progress)
    report = result.to_json()
    if args.json:
        _write_json(report, args.json)
    if args.json != "-":
        print(_eval_summary(result))
    if args.plot:
        from edgecl.eval.plots import plot_result

        plot_result(result, args.plot)
    return 0


def _eval_summary(result: Any) -> str:
    """A readable table: accuracy matrix, held-out accuracy, metrics, time and memory."""
    r = result.to_json()
    names = [n if len(n) <= 12 else n[:11] + "…" for n in r["tasks"]]
    w = max(7, *(len(n) for n in names))
    fmt = _fmt_num
    lines = [
        f"edgecl eval: {r['scenario']} on {r['dataset']} — {r['head']} head, "
        f"{len(names)} tasks, {r['n_train']:,} training samples, {r['seconds']:.2f} s",
        "",
        "accuracy R[i, j]: row = after task i, column = test set of task j",
    ]
    hold = r["holdout_accuracy"] is not None
    head = f"{'':>{w + 6}}" + "".join(f" {n:>{w}}" for n in names)
    lines.append(head + (f"   held-out {r['holdout']}" if hold else ""))
    rows = [("before", r["baseline_accuracy"], None)]
    for i, n in enumerate(names):
        h = r["holdout_accuracy"][i] if hold else None
        rows.append((f"after {n}", r["accuracy_matrix"][i], h))
    for label, vals, h in rows:
        line = f"{label:<{w + 6}}" + "".join(f" {fmt(v):>{w}}" for v in vals)
        lines.append(line + (f"   {fmt(h)}" if h is not None else ""))
    mem = r["memory"]
    lines += [
        "",
        f"{'avg_accuracy':<22}{fmt(r['avg_accuracy'])}",
        f"{'bwt':<22}{fmt(r['bwt'], signed=True)}",
        f"{'fwt':<22}{fmt(r['fwt'], signed=True)}",
        f"{'forgetting':<22}{fmt(r['forgetting'])}",
        f"{'prequential_accuracy':<22}{fmt(r['prequential_accuracy'])}",
        f"{'learn_us':<22}p50 {_fmt_us(r['learn_us']['p50'])}  p99 {_fmt_us(r['learn_us']['p99'])}",
        f"{'predict_us':<22}p50 {_fmt_us(r['predict_us']['p50'])}  "
        f"p99 {_fmt_us(r['predict_us']['p99'])}",
        f"{'state_bytes':<22}{r['state_bytes']:,} of {mem.get('budget_bytes', 0):,} "
        f"(buffer {mem.get('buffer_len', 0):,}/{mem.get('buffer_capacity', 0):,} samples)",
    ]
    return "\n".join(lines)


def _fmt_num(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _fmt_us(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}"
