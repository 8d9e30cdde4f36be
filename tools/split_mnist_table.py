"""Split-MNIST, three scenarios × every strategy: mean ± std accuracy over seeds.

MNIST's ten digits cut into five tasks of two (0/1, 2/3, ..., 8/9), learned in
order, in the three scenarios of van de Ven & Tolias (2019, "Three scenarios
for continual learning"): task-IL (the task is known: logits masked to its two
digits), domain-IL (one two-way head: "first or second digit of the task?")
and class-IL (one ten-way head). Reported: the average test accuracy over the
five tasks after the last one (ACC, DESIGN §8) and the backward transfer (BWT).

Protocol (small, for a CPU): an MLP 784-100-100 (ReLU, no BatchNorm) with a
linear head, Adam lr 1e-3, batch 128, ``--epochs`` passes per task over each
task's ~12,000 training images (all of them unless ``--limit``). Strategy
settings per scenario are in :data:`SETTINGS` (chosen with ``--validate``,
which scores on 10 % of each task's training data instead of the test set).

    nice -n 10 .venv/bin/python tools/split_mnist_table.py --seeds 3 --json split_mnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edgecl.host.data import SCENARIOS, load_training_data, n_outputs, split_classes
from edgecl.host.models import build_model
from edgecl.host.strategies import STRATEGIES, make_strategy
from edgecl.host.train import TrainConfig, train_tasks

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ORDER = ["naive", "joint", "ewc", "online-ewc", "si", "mas", "lwf", "replay"]
COMMON = {"fisher_batches": 100, "buffer_size": 1000, "alpha": 1.0, "temperature": 2.0}
# Regularisation strengths per scenario (batch-mean Fisher/importance scale, see ewc.py),
# each the best of a 10x grid on the validation split (--validate), seed 0, 2 epochs:
# EWC λ in 1e3..1e7, SI c in 0.1..1e5, MAS λ in 0.1..1e3; online EWC reuses EWC's λ.
# LwF (α=1, T=2) and replay (1000 samples) are not tuned.
SETTINGS: dict[str, dict[str, dict[str, float]]] = {
    "task-il": {"ewc": {"ewc_lambda": 1e5}, "online-ewc": {"ewc_lambda": 1e5},
                "si": {"si_c": 10.0}, "mas": {"mas_lambda": 1.0}},
    "domain-il": {"ewc": {"ewc_lambda": 1e6}, "online-ewc": {"ewc_lambda": 1e6},
                  "si": {"si_c": 1e4}, "mas": {"mas_lambda": 100.0}},
    "class-il": {"ewc": {"ewc_lambda": 1e6}, "online-ewc": {"ewc_lambda": 1e6},
                 "si": {"si_c": 10.0}, "mas": {"mas_lambda": 1.0}},
}  # fmt: skip


def _validation_tasks(tasks, seed: int = 0):
    """Each task's training data split 90/10; the 10 % replaces the test set."""
    out = []
    rng = np.random.default_rng(seed)
    for t in tasks:
        order = rng.permutation(len(t.y_train))
        cut = len(order) // 10
        va, tr = order[:cut], order[cut:]
        out.append(
            replace(
                t,
                x_train=t.x_train[tr],
                y_train=t.y_train[tr],
                x_test=t.x_train[va],
                y_test=t.y_train[va],
            )
        )
    return out


def run_one(data, strategy: str, scenario: str, seed: int, args, overrides=None) -> dict:
    tasks = split_classes(data, 2, scenario)
    if args.validate:
        tasks = _validation_tasks(tasks)
    torch.manual_seed(seed)
    model = build_model("mlp", data.in_shape, n_outputs(tasks), 100, width=100, batchnorm=False)
    opts = {**COMMON, **SETTINGS[scenario].get(strategy, {}), **(overrides or {})}
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=128,
        lr=1e-3,
        scenario=scenario,
        seed=seed,
        device="cpu",
        progress=False,
    )
    res = train_tasks(model, tasks, make_strategy(strategy, seed=seed, **opts), cfg)
    return {**res.to_json(), "options": opts}


def _cell(runs: list[dict], key: str, signed: bool) -> str:
    v = np.array([r[key] for r in runs], dtype=float)
    mean = f"{v.mean():+.4f}" if signed else f"{v.mean():.4f}"
    return mean + (f" ± {v.std():.4f}" if len(v) > 1 else "")


def render(results: dict, scenarios: list[str], n_seeds: int, footer: str) -> str:
    """Markdown: an ACC table and a BWT table, strategies × scenarios."""
    lines = []
    for key, title, signed in (("avg_accuracy", "ACC", False), ("bwt", "BWT", True)):
        lines += [f"**{title}** (mean ± std over {n_seeds} seed(s))", ""]
        lines.append("| strategy | " + " | ".join(scenarios) + " |")
        lines.append("|---|" + "---|" * len(scenarios))
        for strategy, per in results.items():
            row = [_cell(per[s], key, signed) for s in scenarios]
            lines.append(f"| {strategy} | " + " | ".join(row) + " |")
        lines.append("")
    lines.append(footer)
    return "\n".join(lines)


def _parse_set(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        out[k.replace("-", "_")] = float(v)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA / "mnist.npz")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    p.add_argument("--epochs", type=int, default=2, help="passes per task (default 2)")
    p.add_argument("--limit", type=int, help="training images in all (seeded subset)")
    p.add_argument("--strategies", nargs="+", default=ORDER, choices=sorted(STRATEGIES))
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override an option")
    p.add_argument("--validate", action="store_true", help="score on 10%% of the training data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="OUT")
    p.add_argument("--from-json", metavar="IN", help="print the tables of an earlier --json run")
    args = p.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        res = saved["results"]
        scenarios = list(next(iter(res.values())))
        n_seeds = len(next(iter(next(iter(res.values())).values())))
        print(render(res, scenarios, n_seeds, saved.get("footer", "")))
        return 0
    torch.set_num_threads(args.threads)
    data = load_training_data(args.data, limit=args.limit, seed=0)
    overrides = _parse_set(args.set)

    t0 = time.perf_counter()
    results: dict[str, dict[str, list[dict]]] = {}
    for strategy in args.strategies:
        for scenario in args.scenarios:
            runs = []
            for seed in range(args.seeds):
                r = run_one(data, strategy, scenario, seed, args, overrides)
                runs.append(r)
                print(
                    f"{strategy:10s} {scenario:9s} seed {seed}: ACC {r['avg_accuracy']:.4f} "
                    f"BWT {r['bwt']:+.4f} ({r['seconds']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            results.setdefault(strategy, {})[scenario] = runs

    where = "validation split (10 % of training data)" if args.validate else "test set"
    footer = (
        f"split-MNIST 5×2, MLP 784-100-100 no BN, Adam 1e-3, batch 128, {args.epochs} epoch(s) "
        f"per task, {len(data.y_train):,} training images, scored on the {where}; "
        f"{time.perf_counter() - t0:.0f} s in all."
    )
    print(render(results, args.scenarios, args.seeds, footer))
    if args.json:
        out = {
            "results": results,
            "footer": footer,
            "settings": {k: str(v) for k, v in vars(args).items()},
            "common": COMMON,
            "per_scenario": SETTINGS,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
