#!/usr/bin/env python3
"""How learn_one / predict_one time and state bytes grow with dim, classes, buffer size and M.

One axis at a time moves from a base point (dim 128, 10 classes, 1000 replay
slots), for every head: a synthetic class-incremental Gaussian stream
(``benchkit.gaussian_stream``) runs test-then-train on one thread, ``--warmup``
untimed samples first, then ``--n`` timed ones. The learner's budget holds the
head, the Fisher (softmax+replay+ewc) and exactly ``slots`` buffer slots for
the softmax heads; NCM and SLDA own no buffer (they never replay), so the
slots axis leaves their memory and time flat.

The ``m`` axis puts a random-feature stage (``rff``,
:mod:`edgecl.runtime.random_features`, γ by the median heuristic on the first
samples) of ``M`` features between the base-dim stream and the head, so the
learner's dim is ``M``; the stage's own time per sample (``stage_us``, the
numpy definition in float64 — the device runs it inside the ONNX graph) is
reported beside. Accuracy is not measured here (``edgecl eval
--random-features M`` measures it).

Expected per-sample costs (d = dim, C = classes, k = replay_k):

* ncm — learn O(d): one row update. predict O(C·d).
* slda — learn O(d²) amortised: the rank-one covariance updates are batched,
  ``slda_batch`` rows per GEMM, so p50 is O(d) and the mean carries the d².
  predict O(C·d) plus the precision refresh, O(d³) every
  ``slda_refresh_every`` updates, amortised into the mean.
* softmax+replay — learn O((k+1)·C·d). softmax+replay+ewc adds O(C·d) for
  the Fisher and the proximal EWC step.
* the buffer — O(1) per add and O(k) per replay draw, whatever its size; it
  only costs memory, O(slots·d).
* the m axis — the head's costs above with d = M, plus the stage's O(dim·M).

The fitted slope of log(time) against log(axis) over the upper half of each
axis is printed as the empirical exponent.

    python tools/bench_scaling.py --json scaling.json --plot tools/figures/scaling.png
"""

from __future__ import annotations

# isort: off
import benchkit  # sets BLAS threads before numpy loads
import numpy as np

# isort: on
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edgecl import StreamingLearner

__all__ = ["AXES", "HEADS", "main", "measure"]

HEADS: dict[str, dict[str, Any]] = {
    "ncm": {"head": "ncm"},
    "slda": {"head": "slda"},
    "softmax+replay": {"head": "softmax", "replay_k": 8},
    "softmax+replay+ewc": {"head": "softmax", "replay_k": 8, "ewc_lambda": 1.0},
}
BASE = {"dim": 128, "classes": 10, "slots": 1000}
AXES: dict[str, list[int]] = {
    "dim": [32, 64, 128, 256, 512, 1024],
    "classes": [10, 30, 100, 300, 1000],
    "slots": [100, 1000, 10_000, 100_000],
    "m": [256, 512, 1024, 2048, 4096],
}


def measure(
    head: str,
    dim: int,
    classes: int,
    slots: int,
    n: int,
    warmup: int,
    seed: int = 0,
    repeats: int = 1,
    m: int | None = None,
) -> dict[str, Any]:
    """Time ``n`` prequential predict_one + learn_one calls of one configuration.

    With ``repeats`` > 1 the pass runs again on a fresh learner and, for learn
    and predict separately, the pass with the lowest p50 is kept (the one least
    disturbed by other processes). With ``m`` the stream goes through an ``rff``
    stage of ``m`` features first (the learner's dim is ``m``) and the stage's
    time per sample is reported as ``stage_us``.
    """
    X, Y = benchkit.gaussian_stream(warmup + n, dim, classes, seed)
    stage_us = None
    if m is not None:
        X, stage_us = _stage(X, m, warmup, seed)
    cfg = benchkit.config_for(X.shape[1], classes, slots, seed, **HEADS[head])
    rows, labels = list(X), Y.tolist()
    clock = time.perf_counter_ns
    learn, predict = [], []
    for _ in range(repeats):
        lr = StreamingLearner(cfg)
        t_learn = np.zeros(len(labels), np.int64)
        t_pred = np.zeros(len(labels), np.int64)
        for i, (x, y) in enumerate(zip(rows, labels, strict=True)):
            t0 = clock()
            lr.predict_one(x)
            t1 = clock()
            lr.learn_one(x, y)
            t2 = clock()
            t_pred[i], t_learn[i] = t1 - t0, t2 - t1
        learn.append(benchkit.summary_us(t_learn[warmup:]))
        predict.append(benchkit.summary_us(t_pred[warmup:]))
    mem = lr.memory_report()
    out = {
        "head": head,
        "dim": dim,
        "classes": classes,
        "slots": slots,
        "learn_us": min(learn, key=lambda s: s["p50"]),
        "predict_us": min(predict, key=lambda s: s["p50"]),
        "state_bytes": int(mem["state_bytes"]),
        "buffer_capacity": int(mem["buffer_capacity"]),
    }
    if m is not None:
        out |= {"m": m, "stage_us": stage_us}
    return out


def _stage(X: np.ndarray, m: int, warmup: int, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """``X`` through an rff stage of ``m`` features, and the stage's µs per sample."""
    from edgecl.runtime.random_features import make_stage

    first = X[: max(2, warmup)]
    rf, _ = make_stage("rff", m, X.shape[1], seed=seed, samples=lambda: first)
    t = np.zeros(len(X), np.int64)
    out = np.empty((len(X), m), np.float32)
    clock = time.perf_counter_ns
    for i, x in enumerate(X):
        t0 = clock()
        out[i] = rf.transform(x[None])[0]
        t[i] = clock() - t0
    return out, benchkit.summary_us(t[warmup:])


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x over the upper half of the points.

    >>> round(slope([1, 2, 4, 8], [3, 12, 48, 192]), 6)
    2.0
    """
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    pts = pts[(len(pts) - 1) // 2 :]  # the upper half, where the leading term dominates
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def slopes(rows: list[dict[str, Any]], axes: dict[str, list[int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for axis in axes:
        out[axis] = {}
        for head in HEADS:
            pts = [r for r in rows if r["axis"] == axis and r["head"] == head]
            if len(pts) < 2:
                continue
            xs = [r[axis] for r in pts]
            out[axis][head] = {
                "learn_p50": _r(slope(xs, [r["learn_us"]["p50"] for r in pts])),
                "learn_mean": _r(slope(xs, [r["learn_us"]["mean"] for r in pts])),
                "predict_mean": _r(slope(xs, [r["predict_us"]["mean"] for r in pts])),
                "state_bytes": _r(slope(xs, [r["state_bytes"] for r in pts])),
            }
    return out


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def table(rows: list[dict[str, Any]], axis: str) -> str:
    stage = axis == "m"  # the random-feature stage's own time, beside the head's
    lines = [
        f"| head | {axis} | learn µs p50 / p99 / mean | predict µs p50 / p99 / mean "
        "| state bytes |" + (" stage µs p50 / p99 |" if stage else ""),
        "|---|---|---|---|---|" + ("---|" if stage else ""),
    ]
    for r in (r for r in rows if r["axis"] == axis):
        lu, pu = r["learn_us"], r["predict_us"]
        line = (
            f"| {r['head']} | {r[axis]:,} | {lu['p50']:.1f} / {lu['p99']:.1f} / {lu['mean']:.1f} "
            f"| {pu['p50']:.1f} / {pu['p99']:.1f} / {pu['mean']:.1f} | {r['state_bytes']:,} |"
        )
        if stage:
            line += f" {r['stage_us']['p50']:.1f} / {r['stage_us']['p99']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def plot(report: dict[str, Any], path: str) -> None:
    """Learn and predict µs (p50 solid, mean dashed) and state bytes against each axis, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [a for a in AXES if any(r["axis"] == a for r in report["results"])]
    fig, grid = plt.subplots(3, len(axes), figsize=(4.0 * len(axes), 8.6), squeeze=False)
    names = {
        "dim": "embedding dim",
        "classes": "classes",
        "slots": "buffer slots",
        "m": "random features M",
    }
    for j, axis in enumerate(axes):
        for i, head in enumerate(HEADS):
            pts = [r for r in report["results"] if r["axis"] == axis and r["head"] == head]
            if not pts:
                continue
            xs = [r[axis] for r in pts]
            c = f"C{i}"
            grid[0][j].plot(xs, [r["learn_us"]["p50"] for r in pts], "o-", c=c, ms=3, label=head)
            grid[0][j].plot(xs, [r["learn_us"]["mean"] for r in pts], "--", c=c, lw=0.8)
            grid[1][j].plot(xs, [r["predict_us"]["p50"] for r in pts], "o-", c=c, ms=3)
            grid[1][j].plot(xs, [r["predict_us"]["mean"] for r in pts], "--", c=c, lw=0.8)
            grid[2][j].plot(xs, [r["state_bytes"] for r in pts], "o-", c=c, ms=3, label=head)
        for g in (grid[0][j], grid[1][j], grid[2][j]):
            g.set_xscale("log")
            g.set_yscale("log")
            g.grid(alpha=0.3, linewidth=0.5)
        grid[2][j].set_xlabel(names.get(axis, axis))
        others = ", ".join(f"{k} {v}" for k, v in report["settings"]["base"].items() if k != axis)
        grid[0][j].set_title(f"vs {names.get(axis, axis)} ({others})", fontsize=8)
    grid[0][0].set_ylabel("µs per learn_one (p50 —, mean --)")
    grid[1][0].set_ylabel("µs per predict_one (p50 —, mean --)")
    grid[2][0].set_ylabel("state bytes")
    grid[0][0].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--heads", nargs="+", choices=list(HEADS), default=list(HEADS))
    ap.add_argument("--axes", nargs="+", choices=list(AXES), default=list(AXES))
    ap.add_argument("--dims", type=int, nargs="+", default=AXES["dim"])
    ap.add_argument("--classes", type=int, nargs="+", default=AXES["classes"])
    ap.add_argument("--slots", type=int, nargs="+", default=AXES["slots"])
    ap.add_argument(
        "--ms", type=int, nargs="+", default=AXES["m"], help="random features M (axis m)"
    )
    ap.add_argument("--base-dim", type=int, default=BASE["dim"])
    ap.add_argument("--base-classes", type=int, default=BASE["classes"])
    ap.add_argument("--base-slots", type=int, default=BASE["slots"])
    ap.add_argument("--n", type=int, default=1000, help="timed samples per configuration")
    ap.add_argument("--warmup", type=int, default=200, help="untimed samples first")
    ap.add_argument("--repeats", type=int, default=3, help="passes per configuration (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", help="write every number here")
    ap.add_argument("--plot", metavar="OUT.png", help="time and memory against each axis")
    ap.add_argument("--from-json", metavar="IN.json", help="measure nothing: print and plot this")
    args = ap.parse_args(argv)
    with benchkit.one_thread():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        report = _measure_all(args)
    _print(report)
    if args.json and not args.from_json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.plot:
        plot(report, args.plot)
    return 0


def _measure_all(args: argparse.Namespace) -> dict[str, Any]:
    base = {"dim": args.base_dim, "classes": args.base_classes, "slots": args.base_slots}
    values = {"dim": args.dims, "classes": args.classes, "slots": args.slots, "m": args.ms}
    axes = {a: values[a] for a in args.axes}
    info = benchkit.machine()
    rows: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for axis, vals in axes.items():
        for head in args.heads:
            for v in vals:
                point = {**base, axis: v}
                t0 = time.perf_counter()
                r = measure(
                    head,
                    point["dim"],
                    point["classes"],
                    point["slots"],
                    args.n,
                    args.warmup,
                    seed=args.seed,
                    repeats=args.repeats,
                    m=point.get("m"),
                )
                rows.append({"axis": axis, **r})
                print(f"  {axis}={v} {head}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return {
        "machine": info,
        "settings": {
            "base": base,
            "axes": axes,
            "heads": args.heads,
            "n": args.n,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "seed": args.seed,
        },
        "results": rows,
        "slopes": slopes(rows, axes),
        "seconds": round(time.perf_counter() - t_all, 1),
    }


def _print(report: dict[str, Any]) -> None:
    info, base = report["machine"], report["settings"]["base"]
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['loadavg']}; python "
        f"{info['python']}; numpy {info['numpy']}; 1 thread"
    )
    for axis in report["settings"]["axes"]:
        others = ", ".join(f"{k} {v}" for k, v in base.items() if k != axis)
        print(f"\n### learn_one / predict_one vs {axis} ({others})\n")
        print(table(report["results"], axis))
    print("\nempirical exponents (slope of log time / log bytes over the upper half of each axis)")
    print("\n| axis | head | learn p50 | learn mean | predict mean | state bytes |")
    print("|---|---|---|---|---|---|")
    for axis, per in report["slopes"].items():
        for head, s in per.items():
            cells = " | ".join("–" if v is None else f"{v:.2f}" for v in s.values())
            print(f"| {axis} | {head} | {cells} |")


if __name__ == "__main__":
    sys.exit(main())
