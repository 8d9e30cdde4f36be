#!/usr/bin/env python3
"""The README's accuracy tables: every head on split-MNIST and on the smartwatch IMU.

One pass, one sample at a time, test-then-train, through ``edgecl.eval`` — the
same code as ``edgecl eval``. Each row is one learner configuration:

    ncm, slda              the prototype heads (no replay buffer needed)
    softmax                plain online SGD, no replay (the catastrophic-forgetting baseline)
    softmax+replay         SGD on each sample plus replay_k=8 latent-replay samples
    softmax+replay+ewc     the same, EWC++-regularised (running Fisher, task-free anchors)
    softmax+ewc            EWC++ alone, no replay

The prequential column stands beside its baselines on the same sample order
(majority so far / repeat the previous label / the learner before the stream):
prequential accuracy means nothing on an autocorrelated stream without them.

On MNIST the offline batch LDA on the same pixels (same shrinkage, all 60k
training images at once) is printed beside SLDA: streaming must match it.

Usage::

    python tools/report_eval.py mnist --data ../shared/data   # ~5 min on one core
    python tools/report_eval.py imu                           # embedded data, ~1 min
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from edgecl import LearnerConfig
from edgecl.eval.datasets import load_dataset
from edgecl.eval.runner import run_stream
from edgecl.eval.streams import build_stream

SHRINKAGE = 1e-4

ROWS: dict[str, dict] = {
    "ncm": dict(head="ncm", buffer_capacity=0),
    "slda": dict(head="slda", buffer_capacity=0, slda_shrinkage=SHRINKAGE),
    "softmax": dict(head="softmax", replay_k=0, buffer_capacity=0),
    "softmax+replay": dict(head="softmax", replay_k=8, buffer_capacity=1000),
    "softmax+replay+ewc": dict(head="softmax", replay_k=8, buffer_capacity=1000, ewc_lambda=1.0),
    "softmax+ewc": dict(head="softmax", replay_k=0, buffer_capacity=0, ewc_lambda=1.0),
}


def batch_lda_accuracy(x: np.ndarray, y: np.ndarray, xq: np.ndarray, yq: np.ndarray) -> float:
    """Offline LDA: class means + pooled within-class covariance / N, shrunk like SLDA."""
    k = int(y.max()) + 1
    mus = np.stack([x[y == c].mean(axis=0) for c in range(k)])
    d = x - mus[y]
    cov = d.T @ d / len(x)
    cov = (1 - SHRINKAGE) * cov + SHRINKAGE * np.eye(x.shape[1])
    w = np.linalg.solve(cov, mus.T).T
    b = -0.5 * np.sum(w * mus, axis=1)
    return float((np.argmax(xq @ w.T + b, axis=1) == yq).mean())


def run(name: str, stream, extra: dict, budget: int, seed: int) -> dict:
    kw = {**ROWS[name], **extra}
    cfg = LearnerConfig(
        dim=stream.dim, max_classes=stream.n_classes, budget_bytes=budget, seed=seed, **kw
    )
    res = run_stream(stream, cfg, progress=sys.stderr.isatty())
    out = res.to_json()
    out["row"] = name
    return out


def table(rows: list[dict], holdout: bool) -> str:
    head = "| learner | final avg acc | BWT | forgetting | prequential | "
    head += "baselines maj. / repeat / frozen | "
    head += "held-out subj. | " if holdout else ""
    head += "learn µs p50/p99 | predict µs p50/p99 | state bytes |"
    lines = [head, "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"]
    for r in rows:
        cells = [
            r["row"],
            f"{r['avg_accuracy']:.4f}",
            f"{r['bwt']:+.4f}",
            f"{r['forgetting']:.4f}",
            f"{r['prequential_accuracy']:.4f}",
            " / ".join(_cell(r["baselines"][k]) for k in ("majority", "repeat_last", "frozen")),
        ]
        if holdout:
            cells.append(f"{r['holdout_accuracy'][-1]:.4f}" if r["holdout_accuracy"] else "–")
        cells += [
            f"{r['learn_us']['p50']:.0f} / {r['learn_us']['p99']:.0f}",
            f"{r['predict_us']['p50']:.0f} / {r['predict_us']['p99']:.0f}",
            f"{r['state_bytes']:,}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("suite", choices=["mnist", "imu"])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"), help="shared data dir")
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--ewc-lambda", type=float, default=None, help="override λ of the ewc rows")
    ap.add_argument("--limit", type=int, default=None, help="training samples per task (quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write every result here")
    args = ap.parse_args(argv)

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} | python "
        f"{platform.python_version()} | numpy {np.__version__}",
        flush=True,
    )
    results: dict[str, list[dict]] = {}
    extra = {} if args.ewc_lambda is None else {"ewc_lambda": args.ewc_lambda}
    if args.suite == "mnist":
        path = args.data / "mnist.npz"
        if not path.exists():
            print(f"{path} not found: pass --data DIR holding mnist.npz", file=sys.stderr)
            return 1
        ds = load_dataset(path)
        scenarios = ["class-il"]
        budget = 16_000_000
    else:
        ds = load_dataset()  # the embedded smartwatch data
        scenarios = ["class-il", "domain-il"]
        budget = 2_000_000
    for scenario in scenarios:
        stream = build_stream(ds, scenario, limit=args.limit, seed=args.seed)
        rows = []
        for name in args.rows:
            t0 = time.perf_counter()
            kw = extra if "ewc" in name else {}
            rows.append(run(name, stream, kw, budget, args.seed))
            print(f"  {scenario} {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        results[scenario] = rows
        print(f"\n### {ds.name} {scenario} ({stream.n_train} samples, {len(stream.tasks)} tasks)\n")
        print(table(rows, holdout=stream.holdout_x is not None))
        if args.suite == "mnist" and "slda" in args.rows:
            xs = np.concatenate([t.x_train for t in stream.tasks]).astype(np.float64)
            ys = np.concatenate([t.y_train for t in stream.tasks])
            xq = np.concatenate([t.x_test for t in stream.tasks]).astype(np.float64)
            yq = np.concatenate([t.y_test for t in stream.tasks])
            lda = batch_lda_accuracy(xs, ys, xq, yq)
            slda = next(r for r in rows if r["row"] == "slda")["avg_accuracy"]
            print(
                f"\noffline batch LDA (same pixels, shrinkage {SHRINKAGE}): {lda:.4f}; "
                f"streaming SLDA {slda:.4f} (difference {100 * (slda - lda):+.2f} pt)"
            )
            results["batch_lda"] = [{"accuracy": lda}]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
