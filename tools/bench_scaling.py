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

**Accuracy against M** (``--rff-data D.npz``, instead of the axes above): the
image data's class-IL stream (split-MNIST: 5 tasks of 2 digits, raw pixels in
[0, 1], one pass, one sample at a time, no stored exemplars) through an ``rff``
stage of each ``--rff-ms`` M (γ by the median heuristic on the first 1,000
training samples seen, or ``--rff-gamma``) into the SLDA head ``edgecl eval``
makes at that width (Woodbury, float32, ``slda_batch`` 64): final average
accuracy, prequential accuracy, µs per ``learn_one`` / ``predict_one`` (wall
and this thread's CPU time, which other processes on a shared machine disturb
less), the stage's own µs (numpy in float32; the device runs it in the ONNX graph), state
bytes against ``--rff-cap`` (64 MB), exact inversions and the final drift.
``--rff-select`` first picks γ (multiples of the median heuristic) and the SLDA
shrinkage ε per M on a validation split of the training stream (the last 10 %
of each task, :func:`edgecl.eval.random_features.validation_grid`); the test
sets are read once, by the final pass::

    python tools/bench_scaling.py --rff-data ../shared/data/mnist.npz \\
        --rff-ms 256 512 1024 2048 3072 --rff-select --json tools/figures/scaling-rff.json \\
        --plot tools/figures/scaling-rff.png
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

__all__ = ["AXES", "HEADS", "main", "measure", "rff_point"]

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
    r = ap.add_argument_group("accuracy against M (replaces the axes)")
    r.add_argument("--rff-data", metavar="D.npz", help="image data: split it class-IL, rff stage")
    r.add_argument("--rff-ms", type=int, nargs="+", default=[256, 512, 1024, 2048, 3072])
    r.add_argument("--rff-gamma", type=float, help="kernel width (default: median heuristic)")
    r.add_argument("--rff-shrinkage", type=float, help="slda_shrinkage (default: the config's)")
    r.add_argument("--rff-limit", type=int, help="training samples per task (default: all)")
    r.add_argument("--rff-cap", type=int, default=64_000_000, help="state budget to report")
    r.add_argument(
        "--rff-select",
        action="store_true",
        help="choose γ and the shrinkage per M on a validation split of the training stream",
    )
    r.add_argument("--rff-gamma-mults", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0])
    r.add_argument("--rff-shrinkages", type=float, nargs="+", default=[1e-4, 1e-5, 1e-6, 1e-7])
    r.add_argument("--rff-holdout", type=float, default=0.1, help="validation share of each task")
    args = ap.parse_args(argv)
    with benchkit.one_thread():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    elif args.rff_data:
        report = _measure_rff(args)
    else:
        report = _measure_all(args)
    if "rff" in report["settings"]:
        _print_rff(report)
        if args.json and not args.from_json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        if args.plot:
            plot_rff(report, args.plot)
        return 0
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


# -- accuracy against M --------------------------------------------------------------


def rff_point(stream: Any, m: int, gamma: float | None, shrinkage: float | None) -> dict:
    """One pass of ``stream`` through an rff stage of ``m`` features into the wide SLDA head
    ``edgecl eval`` makes; accuracy, µs (wall and thread CPU) and state bytes."""
    from edgecl.eval.random_features import expand_stream
    from edgecl.learner.slda_woodbury import large_dim_options

    wide, rf, source = expand_stream(stream, m, kind="rff", gamma=gamma)
    extra = {} if shrinkage is None else {"slda_shrinkage": shrinkage}
    opts = {**large_dim_options("slda", m), **extra}
    cfg = benchkit.config_for(m, stream.n_classes, 0, head="slda", **opts)
    lr = StreamingLearner(cfg)
    n = wide.n_train
    t = np.zeros((4, n), np.int64)  # learn wall, learn cpu, predict wall, predict cpu
    correct = np.zeros(n, bool)
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    for k, (x, y, _) in enumerate(wide.samples()):
        w0, c0 = wall(), cpu()
        pred = lr.predict_one(x)
        w1, c1 = wall(), cpu()
        lr.learn_one(x, y)
        w2, c2 = wall(), cpu()
        t[:, k] = (w2 - w1, c2 - c1, w1 - w0, c1 - c0)
        correct[k] = pred == y
    final = [float(np.mean(lr.predict_many(x) == y)) for x, y in (a.test_set() for a in wide.tasks)]
    raw = stream.tasks[0].train_set()[0][:200]
    t_stage = np.zeros(len(raw), np.int64)
    for i, x in enumerate(raw):
        t0 = wall()
        rf.transform32(x)
        t_stage[i] = wall() - t0
    head = lr.head
    exact = getattr(head, "exact_inversions", None)
    drift = head.drift() if hasattr(head, "drift") else None
    return {
        "m": m,
        "gamma": rf.gamma,
        "gamma_source": source,
        "shrinkage": cfg.slda_shrinkage,
        "slda": {k: getattr(cfg, k) for k in ("slda_update", "slda_dtype", "slda_batch")},
        "avg_accuracy": round(float(np.mean(final)), 12),  # mean_j R[T-1, j]
        "final_accuracy_per_task": final,
        "prequential_accuracy": float(correct.mean()),
        "learn_us": benchkit.summary_us(t[0]),
        "learn_cpu_us": benchkit.summary_us(t[1]),
        "predict_us": benchkit.summary_us(t[2]),
        "predict_cpu_us": benchkit.summary_us(t[3]),
        "stage_us": benchkit.summary_us(t_stage),
        "state_bytes": int(lr.memory_report()["state_bytes"]),
        "exact_inversions": exact,
        "drift": drift,
        "n_train": n,
    }


def _measure_rff(args: argparse.Namespace) -> dict[str, Any]:
    from edgecl.eval.datasets import load_dataset
    from edgecl.eval.streams import build_stream

    info = benchkit.machine()
    stream = build_stream(load_dataset(args.rff_data), "class-il", limit=args.rff_limit)
    rows = []
    t_all = time.perf_counter()
    for m in args.rff_ms:
        t0 = time.perf_counter()
        gamma, shrinkage, grid = args.rff_gamma, args.rff_shrinkage, None
        if args.rff_select:
            gamma, shrinkage, grid = _select(stream, m, args)
        row = rff_point(stream, m, gamma, shrinkage)
        row["fits_cap"] = row["state_bytes"] <= args.rff_cap
        if grid is not None:
            row["validation"] = grid
        rows.append(row)
        print(f"  M={m}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return {
        "machine": {**info, "loadavg_end": benchkit.machine()["loadavg"]},
        "settings": {
            "rff": True,
            "data": str(args.rff_data),
            "dataset": stream.dataset,
            "scenario": "class-il",
            "n_tasks": len(stream.tasks),
            "ms": args.rff_ms,
            "gamma": args.rff_gamma,
            "shrinkage": args.rff_shrinkage,
            "limit": args.rff_limit,
            "cap_bytes": args.rff_cap,
            "select": args.rff_select
            and {
                "gamma_mults": args.rff_gamma_mults,
                "shrinkages": args.rff_shrinkages,
                "holdout": args.rff_holdout,
            },
        },
        "results": rows,
        "seconds": round(time.perf_counter() - t_all, 1),
    }


def _select(stream: Any, m: int, args: argparse.Namespace) -> tuple[float, float, list[dict]]:
    """(γ, ε) with the best validation accuracy (ties: γ nearest the median heuristic, then
    the larger ε); the whole grid for the report."""
    from edgecl.eval.random_features import first_seen, validation_grid
    from edgecl.runtime.random_features import median_gamma

    g0 = median_gamma(first_seen(stream))
    gammas = [g0 * k for k in args.rff_gamma_mults]
    grid = validation_grid(stream, m, gammas, args.rff_shrinkages, holdout=args.rff_holdout)
    for row in grid:
        row["gamma_mult"] = row["gamma"] / g0
    best = min(grid, key=lambda r: (-r["accuracy"], abs(np.log(r["gamma_mult"])), -r["shrinkage"]))
    best["chosen"] = True
    return best["gamma"], best["shrinkage"], grid


def _print_rff(report: dict[str, Any]) -> None:
    info, st = report["machine"], report["settings"]
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['loadavg']} → "
        f"{info.get('loadavg_end', '?')}; numpy {info['numpy']}; 1 thread"
    )
    print(f"\n### {st['dataset']} class-IL ({st['n_tasks']} tasks), rff stage of M features\n")
    print(
        "| M | γ | ε | avg acc | preq. acc | learn µs mean / p99 (cpu: mean / p99) "
        "| predict µs p99 | stage µs p50 | state MB | exact inv. | drift |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in report["results"]:
        lu, lc, pu = r["learn_us"], r["learn_cpu_us"], r["predict_us"]
        cap = "" if r["fits_cap"] else " (over cap)"
        drift = "–" if r["drift"] is None else f"{r['drift']:.1e}"
        print(
            f"| {r['m']:,} | {r['gamma']:.4g} | {r['shrinkage']:.0e} | {r['avg_accuracy']:.4f} "
            f"| {r['prequential_accuracy']:.4f} | {lu['mean']:.0f} / {lu['p99']:.0f} "
            f"({lc['mean']:.0f} / {lc['p99']:.0f}) | {pu['p99']:.0f} | {r['stage_us']['p50']:.0f} "
            f"| {r['state_bytes'] / 1e6:.1f}{cap} | {r['exact_inversions']} | {drift} |"
        )
    for r in (r for r in report["results"] if "validation" in r):
        cells = ", ".join(
            f"γ×{v['gamma_mult']:.2g} ε={v['shrinkage']:.0e}: {v['accuracy']:.4f}"
            + (" ←" if v.get("chosen") else "")
            for v in r["validation"]
        )
        print(f"validation M={r['m']}: {cells}")


def plot_rff(report: dict[str, Any], path: str) -> None:
    """Accuracy, µs per call and state bytes against M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    ms = [r["m"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
    ax[0].plot(ms, [r["avg_accuracy"] for r in rows], "o-", label="final avg accuracy")
    ax[0].plot(ms, [r["prequential_accuracy"] for r in rows], "s--", label="prequential")
    ax[0].set_ylabel("accuracy")
    ax[1].plot(ms, [r["learn_us"]["mean"] for r in rows], "o-", label="learn mean")
    ax[1].plot(ms, [r["learn_cpu_us"]["mean"] for r in rows], "o:", label="learn mean (cpu)")
    ax[1].plot(ms, [r["learn_us"]["p99"] for r in rows], "^-", label="learn p99")
    ax[1].plot(ms, [r["learn_cpu_us"]["p99"] for r in rows], "^:", label="learn p99 (cpu)")
    ax[1].plot(ms, [r["predict_us"]["p99"] for r in rows], "s-", label="predict p99")
    ax[1].axhline(500, c="gray", lw=0.8, ls="--")
    ax[1].axhline(1000, c="gray", lw=0.8, ls=":")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("µs per call (one thread)")
    ax[2].plot(ms, [r["state_bytes"] / 1e6 for r in rows], "o-", label="state")
    ax[2].axhline(report["settings"]["cap_bytes"] / 1e6, c="gray", lw=0.8, ls="--", label="cap")
    ax[2].set_ylabel("state MB")
    st = report["settings"]
    for a in ax:
        a.set_xlabel("random features M")
        a.set_xscale("log", base=2)
        a.grid(alpha=0.3, linewidth=0.5)
        a.legend(fontsize=7)
    wide = [r["m"] for r in rows if r["slda"]["slda_update"] == "woodbury"]
    head = f"Woodbury from M = {min(wide)}" if wide else "lazy"
    ax[0].set_title(f"{st['dataset']} class-IL, rff → SLDA ({head})", fontsize=9)
    ax[1].set_title(f"load {report['machine']['loadavg']}", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
