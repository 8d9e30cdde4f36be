"""The ``edgecl`` command line: plain argparse, one function per subcommand.

Each subcommand is a pair: ``_add_<name>(subparsers, common)`` declares its
flags and ``cmd_<name>(args) -> int`` runs it; :data:`_COMMANDS` lists the
adders, so ``run``, ``export``, ``pretrain``, ``bench`` and ``demo`` arrive as
one new pair each. Exit codes: 0 ok, 1 failed (one ``edgecl: error: ...`` line
on stderr; the traceback too with ``--debug``), 2 usage.

>>> main(["--version"])  # doctest: +ELLIPSIS
edgecl ...
0
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

# Default learner budget: roomy for IMU features, and grown to fit the head plus
# this many replay slots when the data is wider (e.g. SLDA on 784 raw pixels).
DEFAULT_BUDGET_BYTES = 8_000_000
DEFAULT_BUFFER_ITEMS = 1000


class UsageError(Exception):
    """A flag combination the parser cannot express; exits 2 like argparse errors."""


# -- shared helpers ----------------------------------------------------------


def _parse_value(text: str) -> Any:
    """``true``/``false`` → bool, ``none`` → None, then int, float, else the string.

    >>> [_parse_value(v) for v in ["true", "None", "3", "1e-3", "float32"]]
    [True, None, 3, 0.001, 'float32']
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _head_options(pairs: Sequence[str] | None, known: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--head-option {pair!r}: expected KEY=VALUE")
        if key not in known:
            raise UsageError(
                f"--head-option {key}: not a LearnerConfig field; known: {', '.join(sorted(known))}"
            )
        out[key] = _parse_value(value)
    return out


def _write_json(data: dict[str, Any], dest: str) -> None:
    text = json.dumps(data, indent=2)
    if dest == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n", encoding="utf-8")


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


def _add_eval(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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


# -- export ------------------------------------------------------------------

_EXPORT_EPILOG = """\
examples:
  edgecl export --checkpoint imu.safetensors --out my-bundle
      ONNX model + manifest + an SLDA head fitted on the checkpoint's pre-training data
  edgecl export --checkpoint imu.safetensors --out my-bundle-int8 --quantize int8 --json -
  edgecl export --checkpoint mnist.safetensors --out mnist-bundle --data ../shared/data/mnist.npz

The bundle (model.onnx, manifest.json, head.safetensors) is what `edgecl run`
and `edgecl bench` load with --bundle; every file is sha256-checked on load.
With --sign-key the manifest is signed (manifest.sig); devices configured with
the public key (EDGECL_BUNDLE_PUBKEY or the profile's bundle_public_key) load
only bundles signed by it. Keys: python tools/bundle_keys.py keygen --out KEYS/name
"""


def _add_export(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="export a trained checkpoint to a device bundle (needs edgecl[host])",
        description="Export a checkpoint's extractor to ONNX, check onnxruntime against torch,\n"
        "fit an initial streaming head on the pre-training embeddings and write a\n"
        "verified bundle directory.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="from `edgecl pretrain`")
    p.add_argument("--out", required=True, metavar="B", help="bundle directory to write")
    p.add_argument("--quantize", choices=["int8"], help="ship a dynamically int8-quantised model")
    p.add_argument(
        "--data",
        metavar="D.npz",
        help="pre-training data for the head (default: the checkpoint's provenance.data)",
    )
    p.add_argument(
        "--head",
        choices=["slda", "ncm", "softmax", "none"],
        default="slda",
        help="initial learner fitted on the pre-training embeddings (default: slda)",
    )
    p.add_argument("--max-classes", type=int, metavar="N", help="device learner classes "
                   "(default: max(32, classes))")  # fmt: skip
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    p.add_argument("--seed", type=int, default=0, help="seeds the head and parity inputs")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--sign-key", metavar="KEY", help="Ed25519 private key (PEM) to sign the "
                   "manifest with (manifest.sig; needs edgecl[sign])")  # fmt: skip
    p.add_argument("--json", metavar="OUT", help="write the export report as JSON ('-' = stdout)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``edgecl export``: checkpoint → bundle directory; prints a short summary."""
    try:
        from edgecl.host.export import export_bundle
    except ImportError as exc:
        raise ImportError(
            f"edgecl export needs torch and onnx ({exc.name or exc} missing): "
            "pip install 'edgecl[host]'"
        ) from None
    report = export_bundle(
        args.checkpoint,
        args.out,
        data=args.data,
        quantize=args.quantize,
        head=None if args.head == "none" else args.head,
        max_classes=args.max_classes,
        opset=args.opset,
        seed=args.seed,
        overwrite=args.force,
        sign_key=args.sign_key,
    )
    if args.json:
        _write_json(report.to_json(), args.json)
    if args.json != "-":
        print(report.summary())
    return 0


# -- run ---------------------------------------------------------------------

_RUN_EPILOG = """\
examples:
  edgecl run --source /dev/ttyUSB0 --state /var/lib/edgecl
      the shipped IMU bundle on a serial sensor; checkpoints resume after a restart
  edgecl run --source socket://127.0.0.1:7000 --out predictions.ndjson --stats-every 5
  edgecl run --features 64 --source - --max-classes 10 < embeddings.ndjson
      no bundle: each {"x": [...]} already is a 64-d embedding

Wire protocol (one JSON object per line): {"x": [..]} a raw row or feature
vector, {"x": [..], "y": 3} labelled, {"label": 3, "seq": 1042} a delayed label
for prediction seq, {"cmd": "stats"|"checkpoint"} with --control. Out, one line
per window: {"seq": 1042, "pred": 2, "p": 0.91, "us": 180}, and {"stats": {...}}
lines. Bad input is counted per reason in the stats, never fatal. SIGTERM/SIGINT:
final checkpoint and exit 0; SIGHUP: a stats line.
"""


def _add_run(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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
        stats_every_s=args.stats_every,
        baudrate=args.baudrate,
        serial_timeout_s=args.serial_timeout,
        reconnect_max_s=args.reconnect_max,
    )
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
    )
    if state is None:
        print("edgecl run: no --state: learning is not checkpointed", file=sys.stderr)
    return daemon.run()


# -- pretrain ----------------------------------------------------------------

_PRETRAIN_EPILOG = """\
examples:
  edgecl pretrain --model imu-cnn --test-subjects 6 7 --epochs 20 --out imu.safetensors
      the default bundle's extractor: the embedded smartwatch IMU data, 100-row
      windows hop 50, subjects 6 and 7 held out; prints the held-out accuracy
  edgecl pretrain --tasks ../shared/data/mnist.npz ../shared/data/fashion_mnist.npz \\
      --strategy ewc --bn-policy freeze --json ewc.json
      MNIST then Fashion-MNIST, one shared 10-way head (domain-IL), EWC at λ=1e5
  edgecl pretrain --data ../shared/data/mnist.npz --split-classes 2 --strategy replay \\
      --scenario class-il --epochs 1
  torchrun --nproc-per-node 2 -m edgecl.cli pretrain --data D.npz --out m.safetensors
      data-parallel (DDP; NCCL on GPUs, gloo on CPUs)

Strategies: naive, joint (upper bound), ewc, online-ewc, si, mas, lwf, replay.
Fisher (--fisher): squared gradient of each batch's mean loss, averaged over
--fisher-batches batches; "empirical" uses the observed labels, "true" labels
sampled from the model. --bn-policy freeze keeps the task-1 BatchNorm
statistics (BatchNorm in eval mode from task 2 on); "train" lets them drift.
"""

_PRETRAIN_MODELS = ("mlp", "cnn", "imu-cnn")  # = edgecl.host.models.ARCHS
_PRETRAIN_STRATEGIES = ("naive", "joint", "ewc", "online-ewc", "si", "mas", "lwf", "replay")


def _add_pretrain(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "pretrain",
        parents=[common],
        help="train an extractor or a continual-learning task sequence (needs edgecl[host])",
        description="Train a torch model on an .npz dataset and save a checkpoint for\n"
        "`edgecl export`, or train a task sequence with a continual-learning strategy\n"
        "and report the accuracy matrix, ACC, BWT, FWT and forgetting.",
        epilog=_PRETRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = p.add_argument_group("data")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="D.npz", help="dataset (default: embedded watch_imu.npz)")
    src.add_argument("--tasks", nargs="+", metavar="T.npz", help="one task per file, in order")
    d.add_argument("--split-classes", type=int, metavar="K", help="cut --data into K-class tasks")
    d.add_argument("--window", type=int, metavar="ROWS", help="IMU window (default: 2 s of rows)")
    d.add_argument("--hop", type=int, metavar="ROWS", help="IMU window step (default: window/2)")
    d.add_argument(
        "--test-subjects",
        type=int,
        nargs="*",
        metavar="ID",
        help="IMU subjects held out (default: last quarter, e.g. 6 7; no ids: 20%% of recordings)",
    )
    d.add_argument("--limit", type=int, metavar="N", help="at most N training samples per file")
    m = p.add_argument_group("model and training")
    m.add_argument(
        "--model", choices=_PRETRAIN_MODELS, help="default: imu-cnn for IMU data, mlp for images"
    )
    m.add_argument("--embed-dim", type=int, metavar="N", help="embedding width (mlp 100, else 64)")
    m.add_argument("--width", type=int, metavar="N", help="mlp first hidden layer / conv channels")
    m.add_argument("--no-batchnorm", action="store_true", help="build the model without BatchNorm")
    m.add_argument("--out", metavar="CKPT", help="checkpoint to write (.safetensors)")
    m.add_argument("--epochs", type=int, default=4, metavar="N", help="per task (default 4)")
    m.add_argument("--batch-size", type=int, default=100, metavar="N", help="default 100")
    m.add_argument("--lr", type=float, default=1e-3, metavar="F", help="default 1e-3")
    m.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="default adam")
    m.add_argument("--seed", type=int, default=0, help="weights, batch order, sampling")
    m.add_argument("--device", metavar="cpu|cuda", help="default: cuda when available")
    m.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    s = p.add_argument_group("continual learning")
    s.add_argument("--strategy", choices=_PRETRAIN_STRATEGIES, help="default naive")
    s.add_argument(
        "--scenario",
        choices=["task-il", "domain-il", "class-il"],
        help="default: domain-il for --tasks, class-il for --split-classes",
    )
    s.add_argument(
        "--bn-policy",
        choices=["train", "freeze"],
        default="train",
        help="freeze: keep task-1 BatchNorm statistics on later tasks (default train)",
    )
    s.add_argument("--ewc-lambda", type=float, metavar="F", help="EWC λ (default 1e5)")
    s.add_argument(
        "--fisher", choices=["empirical", "true"], default="empirical", help="default empirical"
    )
    s.add_argument(
        "--fisher-batches", type=int, metavar="N", help="batches per Fisher / MAS importance (300)"
    )
    s.add_argument("--fisher-decay", type=float, metavar="F", help="online-ewc γ (default 1.0)")
    s.add_argument("--si-c", type=float, metavar="F", help="SI strength c (default 1.0)")
    s.add_argument("--mas-lambda", type=float, metavar="F", help="MAS λ (default 1.0)")
    s.add_argument("--lwf-alpha", type=float, metavar="F", help="LwF distillation weight (1.0)")
    s.add_argument("--lwf-temperature", type=float, metavar="F", help="LwF temperature (2.0)")
    s.add_argument("--buffer-size", type=int, metavar="N", help="replay samples (default 1000)")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="OUT", help="write the result as JSON ('-' = stdout only)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``edgecl pretrain``: lazily imports the torch side (edgecl.host.pretrain)."""
    if args.split_classes is not None and args.tasks:
        raise UsageError("--split-classes cuts one --data file; it does not combine with --tasks")
    try:
        from edgecl.host.pretrain import run
    except ImportError as exc:
        raise ImportError(
            f"edgecl pretrain needs torch ({exc.name or exc} missing): pip install 'edgecl[host]'"
        ) from None
    if args.data is None and not args.tasks:
        from edgecl.eval.datasets import DEFAULT_DATA

        args.data = str(DEFAULT_DATA)
    return run(args)


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


def _add_bench(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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


# -- demo --------------------------------------------------------------------

_DEMO_EPILOG = """\
examples:
  edgecl demo                      about a minute: subjects 6 and 7 at 1000 rows/s
  edgecl demo --seconds 10         a quick look
  edgecl demo --rate 50 --seconds 600 --label-delay 5 --unlabelled 0.3
      real time, labels five windows late, 30 % never labelled
"""


def _add_demo(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="simulated sensor → edgecl run → live accuracy on users the bundle never saw",
        description="Replay two smartwatch users the shipped bundle was not pre-trained on\n"
        "over a pseudo-terminal into `edgecl run`, show live prequential accuracy, then\n"
        "compare the adapting learner with the frozen pre-trained head.",
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=60.0, help="stop after (default 60)")
    p.add_argument("--rate", type=float, default=1000.0, help="rows/s (default 1000; 0 = max)")
    p.add_argument("--subjects", type=int, nargs="+", default=[6, 7], metavar="ID")
    p.add_argument("--bundle", metavar="B", help="sensor bundle (default: the shipped one)")
    p.add_argument("--data", metavar="D.npz", help="row-stream data (default: embedded IMU)")
    p.add_argument("--label-delay", type=int, default=2, metavar="W", help="in windows")
    p.add_argument("--unlabelled", type=float, default=0.0, metavar="F", help="never labelled")
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
        unlabelled=args.unlabelled,
        plot=plot,
        out=sys.stderr if args.json == "-" else sys.stdout,
    )
    if args.json:
        _write_json(result, args.json)
    return 0


# -- entry point -------------------------------------------------------------

# One adder per subcommand; each sets ``func`` to its cmd_* function.
_COMMANDS: list[Callable[[argparse._SubParsersAction, argparse.ArgumentParser], None]] = [
    _add_eval,
    _add_export,
    _add_run,
    _add_demo,
    _add_pretrain,
    _add_bench,
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
