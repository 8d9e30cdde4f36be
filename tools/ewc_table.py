"""Reproduce the EWC result table: MNIST then Fashion-MNIST, one shared 10-way head.

Protocol (the reference experiment): the MLP 784-100-100-10 with BatchNorm1d
after each hidden Linear (``edgecl.host.models`` "mlp"), Adam lr 1e-3, batch
100, 4 epochs per task, pixels / 255, EWC penalty λ/2·ΣF(θ−θ*)² with λ = 1e5 and
F the squared gradient of the batch-mean loss averaged over 300 batches
(DESIGN §9). EWC runs with both BatchNorm policies (``train``: statistics drift
to task 2; ``freeze``: task-1 statistics kept); fine-tuning ("without EWC")
runs with both as well. Prints a markdown table beside the reference figures.

    nice -n 10 .venv/bin/python tools/ewc_table.py --seeds 3 --json ewc_table.json

``--permuted N`` runs the other EWC comparison instead: permuted MNIST, N tasks
(task 1 the plain images, then a fixed random pixel permutation per task, all
drawn from seed 0), domain-IL with one shared 10-way head, for the diagonal
Fisher (ewc, online-ewc) against the Kronecker-factored one (kfac-ewc, Ritter
et al. 2018) at the same λ and Fisher scale; reports ACC and BWT per strategy::

    nice -n 10 .venv/bin/python tools/ewc_table.py --permuted 10 --seeds 3 --epochs 1 \
        --limit 10000 --json tools/figures/permuted_mnist_ewc.json \
        --md tools/figures/permuted_mnist_ewc.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from edgecl.host.data import Task, load_training_data, tasks_from_files
from edgecl.host.models import build_model
from edgecl.host.strategies import EWC, Naive, make_strategy
from edgecl.host.train import TrainConfig, evaluate, train_tasks

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# (MNIST after task 1, MNIST after task 2, Fashion-MNIST after task 2)
REFERENCE = {"ewc": (0.9772, 0.9717, 0.8312), "naive": (0.9762, 0.1769, 0.8672)}
TOLERANCE = 0.015


class _KeepTask1BN:
    """Diagnostic mixin: remember the BatchNorm statistics the model had after task 1."""

    bn_after_task1: dict[str, torch.Tensor] = {}

    def after_task(self, model, task):
        super().after_task(model, task)
        if task.index == 0:
            self.bn_after_task1 = {
                k: v.clone() for k, v in model.state_dict().items() if "running_" in k
            }


class _EWC(_KeepTask1BN, EWC):
    pass


class _Naive(_KeepTask1BN, Naive):
    pass


def run_one(tasks, strategy: str, bn: str, seed: int, args) -> tuple[float, ...]:
    """(MNIST after 1, MNIST after 2, Fashion after 2, seconds, MNIST after 2 with task-1 BN)."""
    torch.manual_seed(seed)
    model = build_model("mlp", tasks[0].x_train.shape[1:], 10)
    if strategy == "ewc":
        strat = _EWC(args.ewc_lambda, args.fisher, args.fisher_batches, seed)
    else:
        strat = _Naive()
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=100,
        lr=1e-3,
        scenario="domain-il",
        bn_policy=bn,
        seed=seed,
        device="cpu",
        progress=False,
    )
    res = train_tasks(model, tasks, strat, cfg)
    R = res.accuracy_matrix
    # Diagnostic (DESIGN §9): put the task-1 BatchNorm statistics back, test MNIST again.
    model.load_state_dict({**model.state_dict(), **strat.bn_after_task1})
    restored = evaluate(model, tasks[0].x_test, tasks[0].y_test, torch.device("cpu"))
    return float(R[0, 0]), float(R[1, 0]), float(R[1, 1]), res.seconds, restored


def _cell(values: list[float], ref: float) -> str:
    m = float(np.mean(values))
    sd = f" ± {np.std(values):.4f}" if len(values) > 1 else ""
    mark = "" if abs(m - ref) <= TOLERANCE else " ✗"
    return f"{m:.4f}{sd} ({m - ref:+.4f}){mark}"


PERMUTED_STRATEGIES = ("ewc", "online-ewc", "kfac-ewc")


def permuted_tasks(data_dir: Path, n_tasks: int, limit: int | None, test_limit: int) -> list[Task]:
    """Permuted MNIST: task 1 the images as they are, then one fixed pixel permutation each."""
    mnist = load_training_data(data_dir / "mnist.npz", limit=limit, seed=0)
    xtr = mnist.x_train.reshape(len(mnist.x_train), -1)
    xte = mnist.x_test[:test_limit].reshape(-1, xtr.shape[1])
    yte = mnist.y_test[:test_limit]
    rng = np.random.default_rng(0)  # the same permutations for every seed and strategy
    tasks = []
    for t in range(n_tasks):
        perm = np.arange(xtr.shape[1]) if t == 0 else rng.permutation(xtr.shape[1])
        tasks.append(
            Task(f"perm{t + 1}", xtr[:, perm], mnist.y_train, xte[:, perm], yte, tuple(range(10)))
        )
    return tasks


def permuted_main(args) -> int:
    """ACC and BWT of the EWC family on permuted MNIST (module docstring)."""
    tasks = permuted_tasks(args.data_dir, args.permuted, args.limit, args.test_limit)
    results: dict[str, list[dict]] = {}
    t0 = time.perf_counter()
    for name in args.strategies:
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = build_model("mlp", (784,), 10, 100, width=100, batchnorm=False)
            strategy = make_strategy(
                name, ewc_lambda=args.ewc_lambda, fisher=args.fisher,
                fisher_batches=args.fisher_batches, seed=seed,
            )  # fmt: skip
            cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, scenario="domain-il",
                              seed=seed, device="cpu", progress=False)  # fmt: skip
            r = train_tasks(model, tasks, strategy, cfg).to_json()
            results.setdefault(name, []).append(r)
            print(
                f"{name:10s} seed {seed}: ACC {r['avg_accuracy']:.4f} BWT {r['bwt']:+.4f} "
                f"({r['seconds']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    protocol = (
        f"permuted MNIST, {args.permuted} tasks (task 1 unpermuted), domain-IL, MLP 784-100-100 "
        f"no BN, Adam 1e-3, batch 128, {args.epochs} epoch(s)/task over "
        f"{len(tasks[0].y_train):,} training images per task, tested on {len(tasks[0].y_test):,} "
        f"per task; λ = {args.ewc_lambda:g}, {args.fisher} Fisher over {args.fisher_batches} "
        f"batches, γ = 1; seeds 0..{args.seeds - 1}; one CPU thread; "
        f"{time.perf_counter() - t0:.0f} s in all"
    )
    lines = [
        f"**Permuted MNIST** (mean ± std over {args.seeds} seed(s))",
        "",
        "| strategy | ACC | BWT | buffer bytes | seconds per run |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        acc = np.array([r["avg_accuracy"] for r in runs])
        bwt = np.array([r["bwt"] for r in runs])
        secs = np.mean([r["seconds"] for r in runs])
        lines.append(
            f"| {name} | {acc.mean():.4f} ± {acc.std():.4f} | {bwt.mean():+.4f} ± {bwt.std():.4f} "
            f"| {runs[0]['buffer_bytes']:,} | {secs:.0f} |"
        )
    lines += ["", protocol + "."]
    text = "\n".join(lines)
    print(text)
    if args.md:
        Path(args.md).write_text(text + "\n", encoding="utf-8")
    if args.json:
        out = {"protocol": protocol, "results": results,
               "settings": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DATA)
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--ewc-lambda", type=float, default=1e5)
    p.add_argument("--fisher", choices=["empirical", "true"], default="empirical")
    p.add_argument("--fisher-batches", type=int, default=300)
    p.add_argument("--limit", type=int, help="training samples per task (quick checks)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--runs",
        nargs="+",
        default=["ewc:train", "ewc:freeze", "naive:train", "naive:freeze"],
        help="strategy:bn-policy pairs (default: all four)",
    )
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--permuted", type=int, metavar="N", help="permuted MNIST, N tasks instead")
    p.add_argument(
        "--strategies", nargs="+", default=list(PERMUTED_STRATEGIES), help="with --permuted"
    )
    p.add_argument("--test-limit", type=int, default=2000, help="with --permuted: per task")
    p.add_argument("--md", metavar="OUT", help="with --permuted: write the markdown table")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.permuted:
        return permuted_main(args)

    datas = [
        load_training_data(args.data_dir / f, limit=args.limit, seed=0)
        for f in ("mnist.npz", "fashion_mnist.npz")
    ]
    tasks = tasks_from_files(datas, "domain-il")
    results = {}
    t0 = time.perf_counter()
    for run in args.runs:
        strategy, bn = run.split(":")
        rows = []
        for seed in range(args.seeds):
            r = run_one(tasks, strategy, bn, seed, args)
            rows.append(r)
            print(
                f"{strategy:5s} bn={bn:6s} seed {seed}: MNIST {r[0]:.4f} → {r[1]:.4f}, "
                f"Fashion {r[2]:.4f}  ({r[3]:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        results[run] = rows

    head = (
        "| run | BatchNorm | MNIST after task 1 | MNIST after task 2 | Fashion-MNIST after task 2 |"
    )
    head += " MNIST after task 2, task-1 BN statistics put back |"
    lines = [head, "|---|---|---|---|---|---|"]
    for strategy, ref in REFERENCE.items():
        name = "with EWC" if strategy == "ewc" else "without EWC"
        refs = " | ".join(f"{v:.4f}" for v in ref)
        lines.append(f"| {name} — reference | — | {refs} | — |")
        for run, rows in results.items():
            if run.split(":")[0] != strategy:
                continue
            cols = np.array(rows)
            cells = [_cell(list(cols[:, k]), ref[k]) for k in range(3)]
            cells.append(_cell(list(cols[:, 4]), ref[1]))
            lines.append(f"| {name} — edgecl | {run.split(':')[1]} | " + " | ".join(cells) + " |")
    n = args.seeds
    lines.append("")
    lines.append(
        f"edgecl: mean ± std over {n} seed{'s' if n > 1 else ''} (0..{n - 1}), "
        f"(difference to the reference), ✗ = more than {TOLERANCE * 100:.1f} pt away. "
        f"λ = {args.ewc_lambda:g}, {args.fisher} Fisher over {args.fisher_batches} batches, "
        f"{args.epochs} epochs/task, {time.perf_counter() - t0:.0f} s in all."
    )
    print("\n".join(lines))
    if args.json:
        out = {
            "reference": REFERENCE,
            "runs": {k: [list(r) for r in v] for k, v in results.items()},
            "columns": [
                "mnist_after_1",
                "mnist_after_2",
                "fashion_after_2",
                "seconds",
                "mnist_after_2_task1_bn",
            ],
            "settings": {k: v for k, v in vars(args).items() if k != "data_dir"},
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
