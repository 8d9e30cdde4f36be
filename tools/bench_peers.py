#!/usr/bin/env python3
"""edgecl against other streaming learners: the same streams, the same embeddings, one run.

Every learner (``tools/peer_learners.py``: edgecl heads, a per-sample torch
softmax with the same replay and EWC++, Avalanche's StreamingLDA update, river
and scikit-learn online classifiers) meets the same stream built by
``edgecl.eval`` — exactly what ``edgecl eval`` uses — one sample at a time,
test-then-train, on one thread:

* ``imu/<scenario>`` — the embedded smartwatch IMU windows as hand-made
  features (``--embeddings features``, default) or as the default bundle's ONNX
  embeddings (``--embeddings bundle``), class-IL and domain-IL;
* ``mnist/class-il``, ``fashion/class-il`` — split-MNIST / split Fashion-MNIST
  raw pixels from ``--data`` (when present), ``--limit`` samples per task.

For each learner: final average accuracy over the tasks (``R[T-1, :]`` on each
task's test set, optionally subsampled by ``--test-limit``, the same subset for
everyone), prequential accuracy, µs per ``learn_one`` and per ``predict_one``
(p50/p99, first ``--warmup`` calls untimed; converting a row to the library's
own input — dict, (1, d) array, tensor — is not timed, edgecl's validation
is), and memory: edgecl's ``state_bytes``; torch: bytes of the tensors it
holds; river / scikit-learn: bytes still allocated (tracemalloc) after a second,
untimed pass over the training stream, learner built inside the trace.

    python tools/bench_peers.py --data ../shared/data --limit 1000 --test-limit 500 \\
        --json peers.json --plot tools/figures/peers.png
"""

from __future__ import annotations

# isort: off
import benchkit  # sets BLAS threads before numpy loads
import numpy as np

# isort: on
import argparse
import contextlib
import gc
import json
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer_learners import LearnerSpec, avalanche_status, learner_specs
from peers_report import merge, plot, print_stream, targets

from edgecl.eval import metrics
from edgecl.eval.datasets import DEFAULT_DATA, Dataset, load_dataset
from edgecl.eval.streams import Stream, build_stream

with contextlib.suppress(ImportError):
    import torch  # noqa: F401  (imported now so that benchkit.one_thread caps its threads)

__all__ = ["main", "run_learner"]

IMU_SCENARIOS = ("class-il", "domain-il")


def bundle_dataset() -> Dataset:
    """The embedded IMU windows embedded by the default bundle's ONNX extractor."""
    from edgecl.runtime.bundle import Bundle
    from edgecl.runtime.windowing import windows_by_segment

    bundle = Bundle.load()
    spec = bundle.window
    if spec is None:
        raise ValueError(f"bundle {bundle.path} has no window spec: not an IMU extractor")
    with np.load(DEFAULT_DATA, allow_pickle=False) as npz:
        a = {k: npz[k] for k in npz.files}
    names = [str(c) for c in a["channels"]]
    cols = [names.index(c) for c in spec.channels]
    w = windows_by_segment(
        a["x"][:, cols], a["y"], a["recording"], spec.length, spec.hop, subjects=a["subject"]
    )
    keep = w.y >= 0
    emb = bundle.extractor().embed_many(w.x[keep].astype(np.float32))
    return Dataset(
        name="watch_imu (bundle embeddings)",
        x=np.asarray(emb, dtype=np.float32),
        y=w.y[keep],
        x_test=None,
        y_test=None,
        subject=w.subject[keep],
        recording=w.group[keep],
        class_names=tuple(str(c) for c in a["classes"]),
        feature_names=tuple(f"e{i}" for i in range(emb.shape[1])),
        is_image=False,
    )


def make_streams(args: argparse.Namespace) -> list[tuple[str, Stream]]:
    streams: list[tuple[str, Stream]] = []
    if "imu" in args.suites:
        bundle = args.embeddings == "bundle"
        ds = bundle_dataset() if bundle else load_dataset()
        prefix = "imu-bundle" if bundle else "imu"
        for sc in args.scenarios:
            stream = build_stream(ds, sc, limit=args.imu_limit, seed=args.seed)
            streams.append((f"{prefix}/{sc}", stream))
    for suite, file in (("mnist", "mnist.npz"), ("fashion", "fashion_mnist.npz")):
        path = args.data / file
        if suite not in args.suites:
            continue
        if path.is_file():
            stream = build_stream(load_dataset(path), "class-il", limit=args.limit, seed=args.seed)
            streams.append((f"{suite}/class-il", stream))
        else:
            print(f"skipping {suite}: {path} not found (pass --data DIR)", file=sys.stderr)
    return streams


def _make(spec: LearnerSpec, stream: Stream, seed: int) -> Any:
    """The spec's learner for ``stream``, primed with the stream's first training samples
    when it wants them (a random-feature stage's γ)."""
    learner = spec.make(stream.dim, stream.n_classes, seed)
    if hasattr(learner, "prime"):
        from edgecl.eval.random_features import first_seen

        learner.prime(first_seen(stream))
    return learner


def task_test_sets(
    stream: Stream, limit: int | None, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each task's test set, subsampled to ``limit`` rows (one seeded subset for all)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in stream.tasks:
        x, y = t.test_set()
        if limit is not None and len(y) > limit:
            idx = np.sort(rng.choice(len(y), limit, replace=False))
            x, y = x[idx], y[idx]
        out.append((np.ascontiguousarray(x), y))
    return out


def traced_bytes(
    spec: LearnerSpec, stream: Stream, seed: int, samples: int | None = None
) -> dict[str, int]:
    """Bytes allocated and still held after learning the first ``samples`` of the stream
    (all by default), and the peak on the way (tracemalloc; the learner is built inside)."""
    tracemalloc.start()  # blocks allocated before this are never counted, freed or not
    try:
        base = tracemalloc.get_traced_memory()[0]
        learner = _make(spec, stream, seed)
        for k, (x, y, _) in enumerate(stream.samples()):
            if samples is not None and k >= samples:
                break
            learner.learn_one(learner.prepare(x), y)
        gc.collect()  # cyclic garbage of the pass is not memory the learner keeps
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del learner
    n = stream.n_train if samples is None else min(samples, stream.n_train)
    return {"retained": cur - base, "peak": peak - base, "samples": n}


@dataclass
class Pass:
    """What one prequential pass measured (accuracy only when it evaluated)."""

    learn_ns: np.ndarray
    predict_ns: np.ndarray
    correct: np.ndarray
    R: np.ndarray | None
    holdout: float | None
    memory: tuple[int, str] | None
    seconds: float


def timed_pass(
    spec: LearnerSpec,
    stream: Stream,
    tests: list[tuple[np.ndarray, np.ndarray]],
    *,
    seed: int = 0,
    evaluate: bool = True,
) -> Pass:
    """A fresh learner, test-then-train over ``stream``; every call timed on its own."""
    t_start = time.perf_counter()
    learner = _make(spec, stream, seed)
    n, ends = stream.n_train, stream.boundaries
    n_tasks = len(stream.tasks)
    R = np.full((n_tasks, n_tasks), np.nan) if evaluate else None
    correct = np.zeros(n, dtype=bool)
    learn_ns = np.zeros(n, dtype=np.int64)
    predict_ns = np.zeros(n, dtype=np.int64)
    clock = time.perf_counter_ns
    row = 0
    for k, (x, y, _) in enumerate(stream.samples()):
        p = learner.prepare(x)
        t0 = clock()
        pred = learner.predict_one(p)
        t1 = clock()
        learner.learn_one(p, y)
        t2 = clock()
        correct[k] = pred == y
        predict_ns[k], learn_ns[k] = t1 - t0, t2 - t1
        while R is not None and row < n_tasks and k + 1 == ends[row]:
            R[row] = [np.mean(learner.predict_many(xq) == yq) for xq, yq in tests]
            row += 1
    holdout = None
    if evaluate and stream.holdout_x is not None:
        holdout = float(np.mean(learner.predict_many(stream.holdout_x) == stream.holdout_y))
    return Pass(
        learn_ns, predict_ns, correct, R, holdout, learner.memory(), time.perf_counter() - t_start
    )


def result_row(
    spec: LearnerSpec, passes: list[Pass], warmup: int, traced: dict[str, int] | None
) -> dict[str, Any]:
    """The table/JSON row of one learner: accuracy of the first pass, the least
    disturbed timings (each of learn/predict from the pass with the lowest p50)."""
    first = passes[0]
    assert first.R is not None
    learn = min((benchkit.summary_us(p.learn_ns[warmup:]) for p in passes), key=_p50)
    predict = min((benchkit.summary_us(p.predict_ns[warmup:]) for p in passes), key=_p50)
    out: dict[str, Any] = {
        "learner": spec.name,
        "family": spec.family,
        "avg_accuracy": metrics.avg_accuracy(first.R),
        "prequential_accuracy": float(first.correct.mean()),
        "bwt": _num(metrics.bwt(first.R)),
        "forgetting": _num(metrics.forgetting(first.R)),
        "holdout_accuracy": first.holdout,
        "accuracy_matrix": first.R.round(6).tolist(),
        "learn_us": learn,
        "predict_us": predict,
        "sample_us_mean": learn["mean"] + predict["mean"],
        "repeats": len(passes),
        "seconds": round(first.seconds, 3),
    }
    if first.memory is not None:
        out["memory_bytes"], out["memory_measure"] = first.memory
    elif traced is not None:
        out["memory_bytes"], out["memory_measure"] = traced["retained"], "traced"
    else:
        out["memory_bytes"], out["memory_measure"] = None, "not measured"
    out["traced_bytes"] = traced
    return out


def _p50(s: dict[str, float]) -> float:
    return s["p50"]


def run_learner(
    spec: LearnerSpec,
    stream: Stream,
    tests: list[tuple[np.ndarray, np.ndarray]],
    *,
    warmup: int = 20,
    seed: int = 0,
    trace: bool = True,
    repeats: int = 1,
) -> dict[str, Any]:
    """``repeats`` prequential passes of ``spec``'s learner over ``stream``; its result row."""
    passes = [timed_pass(spec, stream, tests, seed=seed, evaluate=i == 0) for i in range(repeats)]
    traced = traced_bytes(spec, stream, seed) if trace and spec.family != "torch" else None
    return result_row(spec, passes, warmup, traced)


def _num(v: float) -> float | None:
    return None if v != v else v  # JSON has no NaN


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--suites", nargs="+", choices=["imu", "mnist", "fashion"], default=["imu", "mnist"]
    )
    ap.add_argument("--scenarios", nargs="+", choices=IMU_SCENARIOS, default=list(IMU_SCENARIOS))
    ap.add_argument(
        "--embeddings",
        choices=["features", "bundle"],
        default="features",
        help="IMU input: hand-made window features or the default bundle's embeddings",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=Path("../shared/data"),
        help="holds mnist.npz, fashion_mnist.npz",
    )
    ap.add_argument(
        "--limit", type=int, default=1000, help="MNIST / Fashion training samples per task"
    )
    ap.add_argument("--imu-limit", type=int, default=None, help="IMU training samples per task")
    ap.add_argument("--test-limit", type=int, default=500, help="test samples per task")
    ap.add_argument(
        "--learners",
        nargs="+",
        default=None,
        metavar="SUBSTRING",
        help="only learners whose name contains one of these",
    )
    ap.add_argument(
        "--force-slow",
        action="store_true",
        help="also run learners above their max_dim (Avalanche SLDA, river KNN)",
    )
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc memory pass")
    ap.add_argument(
        "--trace-samples",
        type=int,
        default=2000,
        help="samples learned in the tracemalloc pass (it is slow)",
    )
    ap.add_argument("--rff-m", type=int, help="add edgecl SLDA behind an rff stage of M features")
    ap.add_argument("--rff-shrinkage", type=float, help="its slda_shrinkage (default: config's)")
    ap.add_argument("--er-slots", type=int, help="add torch experience replay with N slots")
    ap.add_argument("--warmup", type=int, default=20, help="untimed first calls")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed passes per learner (least disturbed kept)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", help="write every number here")
    ap.add_argument("--plot", metavar="OUT.png", help="accuracy vs µs/learn scatter")
    ap.add_argument(
        "--from-json",
        nargs="+",
        metavar="IN.json",
        help="run nothing: merge these reports' streams, print, then --json/--plot them",
    )
    args = ap.parse_args(argv)
    with benchkit.one_thread():
        return _run(args)


def _write(report: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.plot and report["streams"]:
        plot(report, args.plot)


def _run(args: argparse.Namespace) -> int:
    if args.from_json:
        report = merge(args.from_json)
        for s in report["streams"]:
            print_stream(s)
        _write(report, args)
        return 0
    info = benchkit.machine()
    aval = avalanche_status()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['loadavg']}; python "
        f"{info['python']}; numpy {info['numpy']}; torch {info['torch']}; 1 thread"
    )
    print(f"avalanche: {aval}")
    specs = learner_specs(args.rff_m, args.rff_shrinkage, args.er_slots)
    if args.learners:
        specs = [s for s in specs if any(k in s.name for k in args.learners)]
    try:
        streams = make_streams(args)
    except (ImportError, FileNotFoundError) as exc:
        print(f"cannot build the streams: {exc}", file=sys.stderr)
        return 1
    report: dict[str, Any] = {
        "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "avalanche": aval,
        "streams": [],
    }
    for name, stream in streams:
        tests = task_test_sets(stream, args.test_limit, args.seed)
        runnable: list[LearnerSpec] = []
        skipped: list[dict[str, str]] = []
        for spec in specs:
            reason = spec.skip
            if (
                reason is None
                and spec.max_dim
                and stream.dim > spec.max_dim
                and not args.force_slow
            ):
                reason = f"dim {stream.dim} > {spec.max_dim}: {spec.note} (--force-slow runs it)"
            if reason is None:
                runnable.append(spec)
            else:
                skipped.append({"learner": spec.name, "reason": reason})
        # Round robin over the learners, so that load from other processes hits all alike.
        passes: dict[str, list[Pass]] = {spec.name: [] for spec in runnable}
        for rep in range(args.repeats):
            for spec in runnable:
                t0 = time.perf_counter()
                passes[spec.name].append(
                    timed_pass(spec, stream, tests, seed=args.seed, evaluate=rep == 0)
                )
                print(
                    f"  {name} {spec.name} pass {rep + 1}: {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                )
        rows = []
        for spec in runnable:
            trace = not args.no_trace and spec.family != "torch"
            traced = traced_bytes(spec, stream, args.seed, args.trace_samples) if trace else None
            rows.append(result_row(spec, passes[spec.name], args.warmup, traced))
        s = {
            "name": name,
            "dataset": stream.dataset,
            "scenario": stream.scenario,
            "embeddings": "pixels" if name.startswith(("mnist", "fashion")) else args.embeddings,
            "n_train": stream.n_train,
            "n_tasks": len(stream.tasks),
            "dim": stream.dim,
            "n_classes": stream.n_classes,
            "test_per_task": [len(y) for _, y in tests],
            "results": rows,
            "skipped": skipped,
            "targets": targets(rows),
        }
        report["streams"].append(s)
        print_stream(s)
    _write(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
