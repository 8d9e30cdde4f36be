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
  edgecl eval --scenario new-user --bundle default --test-subjects 6 7 --json out.json
      calibrate the shipped bundle on each held-out user's first recording per class,
      test on the user's other recordings with learning off
  edgecl eval --scenario new-class --bundle B --reference-bundle R --shots 1 5 20
      teach B the classes it was pre-trained without; R (pre-trained on all) beside it
  edgecl eval --scenario new-class --bundle default --new-classes 5 6
      treat TRAP and ROW as new (--new-classes overrides the manifest, even for
      classes the head already knows)
  edgecl eval --data ../shared/data/mnist.npz --scenario class-il --random-features 1024 \
      --limit 2000
      random Fourier features of the raw pixels, then SLDA (RanDumb); gamma by the
      median heuristic on the first 1,000 training samples of the stream

Scenarios: class-il (classes split into tasks, predict over all), task-il (same
tasks, predict within the task's classes), domain-il (pixel permutations for
images, subjects for IMU), task-free (class-il with blurred task boundaries).
Every prequential accuracy is printed beside its baselines: majority (most
frequent label so far), repeat_last (previous label) and frozen (the learner
before the stream). new-user and new-class need --bundle and IMU data with
subjects and recordings; they measure adaptation on held-out recordings.

--random-features M maps the features the learner would see (raw pixels in
[0, 1], z-scored IMU features or z-scored bundle embeddings) through the numpy
stage of edgecl.runtime.random_features, seeded by --seed, before the stream:
rff = sqrt(2/M) cos(Wx + b), W ~ N(0, 2 gamma) (default without --bundle);
relu = max(0, Wz), W ~ N(0, 1/d) (default with --bundle). Without --gamma,
gamma = 1 / median |x_i - x_j|^2 over all pairs of the first 1,000 training
samples in arrival order. learn_us / predict_us time the learner only.
"""


def add_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from edgecl.eval.adapt import ADAPT_SCENARIOS
    from edgecl.eval.new_class import DEFAULT_SHOTS
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
    p.add_argument(
        "--scenario",
        choices=SCENARIOS + ADAPT_SCENARIOS,
        default="class-il",
        help="default: class-il",
    )
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
        f"{DEFAULT_BUFFER_ITEMS} softmax buffer slots if more)",
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
        help="IMU: subjects held out of training (default: last quarter; no ids: none); "
        "new-user/new-class: the users to adapt to (default: the bundle's held-out subjects "
        "if the file has them, else every subject in the file)",
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
    a = p.add_argument_group("adaptation (new-user, new-class)")
    a.add_argument(
        "--calibration",
        type=int,
        default=1,
        metavar="K",
        help="new-user: calibration recordings per class (default 1)",
    )
    a.add_argument(
        "--shots",
        type=int,
        nargs="+",
        default=list(DEFAULT_SHOTS),
        metavar="K",
        help="new-class: windows per new class to learn from "
        f"(default {' '.join(map(str, DEFAULT_SHOTS))})",
    )
    a.add_argument(
        "--reference-bundle",
        metavar="R",
        help="new-class: a bundle pre-trained on every class, scored beside",
    )
    a.add_argument(
        "--new-classes",
        nargs="+",
        metavar="C",
        help="new-class: class names or ids to treat as new (default: the bundle's "
        "manifest excluded_classes; overrides it, even for classes the head knows)",
    )
    r = p.add_argument_group("random features")
    r.add_argument(
        "--random-features",
        type=int,
        metavar="M",
        help="map the features through a random-feature stage of M features first",
    )
    r.add_argument(
        "--kind",
        choices=["rff", "relu"],
        help="rff (random Fourier features) or relu (random ReLU projection); "
        "default relu with --bundle, else rff",
    )
    r.add_argument(
        "--gamma",
        type=float,
        metavar="G",
        help="rff kernel width (default: the median heuristic on the first 1,000 training samples)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="OUT", help="write the result as JSON ('-' = stdout only)")
    o.add_argument("--plot", metavar="OUT.png", help="write accuracy plots (needs matplotlib)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)


def _learner_config(args: argparse.Namespace, dim: int, n_classes: int) -> Any:
    from edgecl.learner import LearnerConfig, plan_budget

    known = {f.name for f in dataclasses.fields(LearnerConfig)} - {"dim"}
    # LearnerConfig needs max_classes >= 2, even for single-class data.
    from edgecl.learner.slda_woodbury import large_dim_options

    fields: dict[str, Any] = {"max_classes": max(2, n_classes), "head": args.head}
    fields["seed"] = args.seed
    # Wide SLDA (random features): Woodbury updates in float32 unless --head-option says else.
    fields.update(large_dim_options(args.head, dim))
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
        # Size the probe's buffer explicitly so the plan measures head + Fisher + slots;
        # only the softmax head owns a buffer.
        slots = fields.get("buffer_capacity")
        if slots is None and fields["head"] == "softmax":
            slots = DEFAULT_BUFFER_ITEMS
        probe = LearnerConfig(
            dim=dim, **{**fields, "budget_bytes": 1 << 40, "buffer_capacity": slots}
        )
        fields["budget_bytes"] = max(DEFAULT_BUDGET_BYTES, plan_budget(probe)["state_bytes"])
    return LearnerConfig(dim=dim, **fields)


def cmd_eval(args: argparse.Namespace) -> int:
    """``edgecl eval``: build the stream, run it, print/write the results."""
    from edgecl.eval.adapt import ADAPT_SCENARIOS

    if args.random_features is None and (args.kind is not None or args.gamma is not None):
        raise UsageError(f"--{'kind' if args.kind else 'gamma'} applies with --random-features M")
    if args.scenario in ADAPT_SCENARIOS:
        if args.random_features is not None:
            raise UsageError(
                f"--random-features applies to the stream scenarios, not {args.scenario}"
            )
        return _cmd_adapt(args)
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
    stage = None
    if args.random_features is not None:
        from edgecl.eval.random_features import expand_stream

        kind = args.kind or ("relu" if args.bundle else "rff")
        stream, rf, source = expand_stream(
            stream, args.random_features, kind=kind, gamma=args.gamma, seed=args.seed
        )
        stage = {**rf.to_json(), "gamma_source": source}
    cfg = _learner_config(args, stream.dim, data.n_classes)
    result = run_stream(stream, cfg, progress=not args.no_progress)
    report = result.to_json()
    if stage is not None:
        report["random_features"] = stage
    if args.json:
        _write_json(report, args.json)
    if args.json != "-":
        print(_eval_summary(result, stage))
    if args.plot:
        from edgecl.eval.plots import plot_result

        plot_result(result, args.plot)
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    """``edgecl eval --scenario new-user|new-class``: adapt a bundle's learner, test held out."""
    scenario = args.scenario
    if args.bundle is None:
        raise UsageError(f"--scenario {scenario} needs --bundle B ('default' = the shipped one)")
    if args.plot:
        raise UsageError(f"--plot draws the stream scenarios, not {scenario}")
    if scenario != "new-class" and (args.reference_bundle or args.new_classes):
        raise UsageError("--reference-bundle and --new-classes apply to --scenario new-class")
    if args.calibration < 1:
        raise UsageError(f"--calibration {args.calibration}: must be >= 1 recording per class")
    if min(args.shots) < 1:
        raise UsageError(f"--shots {min(args.shots)}: each must be >= 1 window")
    from edgecl.errors import BundleError
    from edgecl.eval.adapt import format_new_user, load_embedded, run_new_user, test_subjects_for
    from edgecl.runtime.bundle import Bundle

    def open_bundle(name: str) -> tuple[Any, Any]:
        b = Bundle.load(None if name == "default" else name)
        learner = b.initial_learner()
        if learner is None:
            raise BundleError(f"{b.path}: no initial learner (head.safetensors) to adapt")
        return b, learner

    bundle, initial = open_bundle(args.bundle)
    window = args.window or (bundle.window.length if bundle.window else None)
    hop = args.hop or (bundle.window.hop if bundle.window else None)
    data = load_embedded(bundle, args.data, window=window, hop=hop)
    subjects = test_subjects_for(data, args.test_subjects, bundle)
    progress = not args.no_progress
    # Skipped users are listed in the printed summary; stderr only when there is none.
    note = None if args.json == "-" else (lambda line: None)
    if scenario == "new-user":
        report = run_new_user(
            data,
            initial,
            subjects=subjects,
            calibration=args.calibration,
            bundle=args.bundle,
            progress=progress,
            note=note,
        )
        text = format_new_user(report)
    else:
        from edgecl.eval.new_class import (
            excluded_classes,
            format_new_class,
            resolve_classes,
            run_new_class,
        )

        if args.new_classes:
            new = resolve_classes(args.new_classes, data.class_names)
        else:
            new = excluded_classes(bundle)
        if not new:
            raise UsageError(
                f"bundle {args.bundle} records no excluded_classes; name them with --new-classes"
            )
        reference = None
        if args.reference_bundle:
            ref_bundle, ref_learner = open_bundle(args.reference_bundle)
            if ref_bundle.input_shape != bundle.input_shape:
                raise BundleError(
                    f"the reference bundle takes inputs {ref_bundle.input_shape}, the bundle "
                    f"{bundle.input_shape}: both must window the data alike"
                )
            ref_data = load_embedded(ref_bundle, args.data, window=window, hop=hop)
            reference = (ref_data, ref_learner)
        report = run_new_class(
            data,
            initial,
            new_classes=new,
            subjects=subjects,
            shots=args.shots,
            reference=reference,
            bundle=args.bundle,
            reference_bundle=args.reference_bundle,
            progress=progress,
            note=note,
        )
        text = format_new_class(report)
    if args.json:
        _write_json(report, args.json)
    if args.json != "-":
        print(text)
    return 0


# What each prequential baseline predicts, for the summary.
_BASELINE_HELP = {
    "majority": "the most frequent label so far",
    "repeat_last": "the previous sample's label",
    "frozen": "the learner as it was before the stream",
}


def _eval_summary(result: Any, stage: dict[str, Any] | None = None) -> str:
    """A readable table: accuracy matrix, held-out accuracy, metrics, time and memory."""
    r = result.to_json()
    names = [n if len(n) <= 12 else n[:11] + "…" for n in r["tasks"]]
    w = max(7, *(len(n) for n in names))
    fmt = _fmt_num
    lines = [
        f"edgecl eval: {r['scenario']} on {r['dataset']} — {r['head']} head, "
        f"{len(names)} tasks, {r['n_train']:,} training samples, {r['seconds']:.2f} s",
    ]
    if stage is not None:
        gamma = "" if stage["gamma"] is None else (
            f", gamma {stage['gamma']:.6g} ({stage['gamma_source']})"
        )  # fmt: skip
        lines.append(
            f"random features: {stage['kind']} {stage['input_dim']} → {stage['m']}, "
            f"seed {stage['seed']}{gamma}"
        )
    lines += [
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
        *(
            f"  {k:<20}{fmt(v)}   baseline: {_BASELINE_HELP.get(k, k)}"
            for k, v in r["baselines"].items()
        ),
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
