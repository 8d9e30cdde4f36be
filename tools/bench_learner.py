"""Per-sample latency of StreamingLearner.predict_one / learn_one, single thread.

A synthetic class-incremental stream (10 Gaussian classes arriving one block
after another, float32 features like the extractor's) is run prequentially:
predict_one, then learn_one, each call timed alone with perf_counter_ns after a
warm-up. The replay buffer is sized to hold ``--slots`` samples at each dim.

SLDA's predict_one refreshes the cached precision (a dim×dim inverse) every
``slda_refresh_every`` samples; that amortised cost is inside its p99 and mean.
If torch is installed, the same per-sample learn update written the plain torch
way is timed too (CPU, one thread), and the ratio torch/edgecl of learn p50 given.

    python tools/bench_learner.py --n 5000 --json bench.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable

# isort: off
from benchkit import config_for, gaussian_stream, machine, summary_us  # sets BLAS threads first
import numpy as np

# isort: on
from edgecl.learner import LearnerConfig, StreamingLearner

try:
    import torch

    torch.set_num_threads(1)
except ImportError:
    torch = None

N_CLASSES = 10  # classes in the stream
MAX_CLASSES = 16  # head rows preallocated (headroom for labels not yet seen)
CASES = {
    "ncm": {"head": "ncm"},
    "slda": {"head": "slda"},
    "softmax": {"head": "softmax", "replay_k": 8},
    "softmax+ewc": {"head": "softmax", "replay_k": 8, "ewc_lambda": 10.0},
}


def make_config(case: str, dim: int, slots: int, seed: int) -> LearnerConfig:
    """Config whose budget leaves room for exactly ``slots`` buffered samples."""
    return config_for(dim, MAX_CLASSES, slots, seed, **CASES[case])


def make_stream(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 samples of N_CLASSES Gaussians, labels in class order, in equal blocks."""
    return gaussian_stream(n, dim, N_CLASSES, seed)


stats = summary_us


def bench_edgecl(cfg: LearnerConfig, X: np.ndarray, Y: np.ndarray, warmup: int) -> dict:
    lr = StreamingLearner(cfg)
    clock = time.perf_counter_ns
    t_pred = np.zeros(len(Y), np.int64)
    t_learn = np.zeros(len(Y), np.int64)
    for i, (x, y) in enumerate(zip(list(X), Y.tolist(), strict=True)):
        t0 = clock()
        lr.predict_one(x)
        t1 = clock()
        lr.learn_one(x, y)
        t2 = clock()
        t_pred[i], t_learn[i] = t1 - t0, t2 - t1
    mem = lr.memory_report()
    assert mem["buffer_capacity"] > 0 and mem["state_bytes"] <= mem["budget_bytes"]
    return {
        "learn_us": stats(t_learn[warmup:]),
        "predict_us": stats(t_pred[warmup:]),
        "state_bytes": mem["state_bytes"],
        "buffer_capacity": mem["buffer_capacity"],
        "ewc_consolidations": lr.fisher.consolidations if lr.fisher is not None else None,
    }


def torch_update(cfg: LearnerConfig, capacity: int, dtype: torch.dtype) -> Callable[..., None]:
    """The per-sample learn update of ``cfg.head`` as a torch user would write it."""
    d, c = cfg.dim, cfg.max_classes
    if cfg.head == "ncm":  # running mean of one class row
        mu, cnt = torch.zeros(c, d, dtype=dtype), [0] * c

        def ncm(x, y: int) -> None:
            cnt[y] += 1
            mu[y].add_(x - mu[y], alpha=1.0 / cnt[y])

        return ncm
    if cfg.head == "slda":  # Hayes & Kanan's naive rank-one update of the full covariance
        mu, sigma = torch.zeros(c, d, dtype=dtype), torch.zeros(d, d, dtype=dtype)
        cnt, total = [0] * c, [0]

        def slda(x, y: int) -> None:
            n, big_n = cnt[y], total[0]
            delta = x - mu[y]
            sigma.mul_(big_n / (big_n + 1.0))
            sigma.addr_(delta, delta, alpha=n / ((n + 1.0) * (big_n + 1.0)))
            mu[y].add_(delta, alpha=1.0 / (n + 1.0))
            cnt[y], total[0] = n + 1, big_n + 1

        return slda
    lin = torch.nn.Linear(d, c, dtype=dtype)
    opt = torch.optim.SGD(lin.parameters(), lr=cfg.lr)
    seen = torch.zeros(c, dtype=torch.bool)
    buf_x = torch.zeros(capacity, d, dtype=torch.float16)  # same storage type as edgecl's
    buf_y = torch.zeros(capacity, dtype=torch.long)
    fill = [0, 0]  # stored, seen
    params = list(lin.parameters())
    fisher = [torch.zeros_like(p) for p in params]
    anchor = [p.detach().clone() for p in params]  # anchored from the start: penalty always on
    rng = random.Random(cfg.seed)

    def softmax(x, y: int) -> None:
        seen[y] = True
        xb, yb = x[None, :], torch.tensor([y])
        if fill[0]:
            idx = torch.randperm(fill[0])[: cfg.replay_k]
            xb, yb = torch.cat([xb, buf_x[idx].to(dtype)]), torch.cat([yb, buf_y[idx]])
        loss = torch.nn.functional.cross_entropy(lin(xb).masked_fill(~seen, float("-inf")), yb)
        if cfg.ewc_lambda:
            pen = sum(
                (f * (p - a) ** 2).sum() for p, f, a in zip(params, fisher, anchor, strict=True)
            )
            loss = loss + 0.5 * cfg.ewc_lambda * pen
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cfg.ewc_lambda:  # EWC++ running Fisher, from the batch gradient
            for p, f in zip(params, fisher, strict=True):
                f.mul_(cfg.fisher_decay).addcmul_(p.grad, p.grad, value=1.0 - cfg.fisher_decay)
        fill[1] += 1  # reservoir add (Algorithm R)
        slot = fill[0] if fill[0] < capacity else rng.randrange(fill[1])
        if slot < capacity:
            buf_x[slot], buf_y[slot] = x, y
            fill[0] = min(fill[0] + 1, capacity)

    return softmax


def bench_torch(
    cfg: LearnerConfig, capacity: int, X: np.ndarray, Y: np.ndarray, warmup: int, dtype: torch.dtype
) -> dict:
    update = torch_update(cfg, capacity, dtype)
    rows, labels = list(torch.from_numpy(X).to(dtype)), Y.tolist()
    clock = time.perf_counter_ns
    t = np.zeros(len(labels), np.int64)
    for i, (x, y) in enumerate(zip(rows, labels, strict=True)):
        t0 = clock()
        update(x, y)
        t[i] = clock() - t0
    return stats(t[warmup:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 784])
    ap.add_argument("--heads", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--n", type=int, default=5000, help="timed samples per case")
    ap.add_argument("--warmup", type=int, default=500, help="untimed samples first")
    ap.add_argument("--slots", type=int, default=1000, help="replay buffer capacity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch column")
    ap.add_argument("--json", metavar="OUT", help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    use_torch = torch is not None and not args.no_torch
    tdtype = getattr(torch, args.torch_dtype) if use_torch else None

    rows = []
    for dim in args.dims:
        X, Y = make_stream(args.warmup + args.n, dim, args.seed)
        for case in args.heads:
            cfg = make_config(case, dim, args.slots, args.seed)
            row = {"head": case, "dim": dim, **bench_edgecl(cfg, X, Y, args.warmup)}
            if use_torch:
                row["torch_learn_us"] = bench_torch(cfg, args.slots, X, Y, args.warmup, tdtype)
            rows.append(row)
            print(f"  done {case} dim={dim}", file=sys.stderr, flush=True)

    info = machine()
    print(
        f"machine: {info['cpu']}; python {info['python']}; numpy {info['numpy']}; "
        f"torch {info['torch']}; threads=1"
    )
    print(
        f"stream: {N_CLASSES} Gaussian classes in class order, float32, max_classes={MAX_CLASSES}, "
        f"n={args.n} timed after warmup={args.warmup}, buffer={args.slots} slots, seed={args.seed}"
    )
    print(
        "\n| head | dim | learn p50 | learn p99 | learn mean | predict p50 | predict p99 "
        f"| predict mean | state bytes | torch learn p50 ({args.torch_dtype}) | torch learn mean "
        "| torch/edgecl p50 | torch/edgecl mean |"
    )
    print("|" + "---|" * 13)
    for r in rows:
        lu, pu, tu = r["learn_us"], r["predict_us"], r.get("torch_learn_us")
        if tu is not None:
            tcells = (
                f"{tu['p50']:.1f} | {tu['mean']:.1f} | {tu['p50'] / lu['p50']:.2f}× "
                f"| {tu['mean'] / lu['mean']:.2f}×"
            )
        else:
            tcells = ("torch not installed" if torch is None else "skipped") + " | – | – | –"
        print(
            f"| {r['head']} | {r['dim']} | {lu['p50']:.1f} | {lu['p99']:.1f} | {lu['mean']:.1f} "
            f"| {pu['p50']:.1f} | {pu['p99']:.1f} | {pu['mean']:.1f} | {r['state_bytes']:,} "
            f"| {tcells} |"
        )
    ewc = ", ".join(
        f"dim {r['dim']}: {r['ewc_consolidations']}" for r in rows if r["head"] == "softmax+ewc"
    )
    print(
        "\nAll times µs per call. slda predict includes the amortised precision refresh "
        "(a dim×dim inverse every slda_refresh_every=32 samples); slda learn the 32-row batched "
        "covariance update. edgecl learn includes input validation and the replay-buffer add for "
        "every head; torch ncm/slda time the bare update, torch softmax+ewc has its penalty on "
        f"from the start. EWC consolidations in the edgecl run: {ewc or 'n/a'}."
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "settings": vars(args), "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
