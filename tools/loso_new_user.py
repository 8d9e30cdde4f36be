"""Leave-one-subject-out new-user evaluation: seven bundles, each blind to one user.

For every subject ``s`` of the embedded smartwatch data this tool pre-trains the
shipped recipe (``tools/build_bundle.py``'s ``edgecl pretrain`` call) with ``s``
held out, exports the bundle, and runs ``edgecl eval --scenario new-user
--test-subjects s`` on it: calibrate on the user's first recording of each
exercise, test on their other recordings, learning off. So every figure is on a
user that neither the extractor nor the head has seen, and the seven users give
the spread. Optionally (``--unseen``) the shipped bundle is also evaluated on a
file of users no part of edgecl has seen (``tools/watch_extra.py``).

Checkpoints and bundles are cached under ``--work`` (delete it to rebuild).
``--sweep`` then refits each bundle's head with other settings — prior weight
(``standardize_prior_n``), label weight, no standardisation, NCM — on the same
per-subject splits, to show how much the choice matters.

    python tools/loso_new_user.py --json tools/figures/loso-new-user.json \\
        --unseen build/watch_unseen.npz [--sweep]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "edgecl" / "data" / "watch_imu.npz"
KEYS = ("frozen", "standardised", "adapted", "majority", "user_only")


def pretrain_argv(subject: int, out: Path, epochs: int) -> list[str]:
    """The shipped bundle's pre-training call with ``subject`` held out instead of 6, 7."""
    return [
        "pretrain", "--data", str(DATA), "--model", "imu-cnn",
        "--test-subjects", str(subject), "--seed", "0", "--epochs", str(epochs),
        "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip


def new_user(bundle: Path, data: Path, subjects: list[int], out: Path) -> dict:
    from edgecl.cli import main

    argv = ["eval", "--scenario", "new-user", "--bundle", str(bundle), "--data", str(data),
            "--test-subjects", *map(str, subjects), "--no-progress",
            "--json", str(out)]  # fmt: skip
    if main(argv) != 0:
        raise SystemExit(f"edgecl {' '.join(argv)} failed")
    return json.loads(out.read_text())


def table(users: dict[str, dict], title: str) -> list[str]:
    lines = [title, f"{'user':<8}" + "".join(f"{k:>14}" for k in KEYS) + f"{'gain':>9}"]
    for uid, u in users.items():
        gain = u["adapted"] - u["frozen"]
        lines.append(f"{uid:<8}" + "".join(f"{u[k]:>14.3f}" for k in KEYS) + f"{gain:>+9.3f}")
    mean = {k: float(np.mean([u[k] for u in users.values()])) for k in KEYS}
    gains = [u["adapted"] - u["frozen"] for u in users.values()]
    lines.append(f"{'mean':<8}" + "".join(f"{mean[k]:>14.3f}" for k in KEYS)
                 + f"{np.mean(gains):>+9.3f}")  # fmt: skip
    sd = np.std(gains, ddof=1)
    lines.append(f"gain over users: sd {sd:.3f}, min {min(gains):+.3f}, max {max(gains):+.3f}")
    return lines


def sweep(work: Path, subjects: list[int]) -> list[str]:
    """Mean held-out accuracy over the LOSO users for a grid of head settings."""
    import copy

    from edgecl import LearnerConfig, StreamingLearner
    from edgecl.eval.adapt import new_user_split
    from edgecl.eval.datasets import load_dataset
    from edgecl.runtime.bundle import Bundle

    grid = [(h, pn, lw) for h in ("slda", "ncm") for pn in (None, 0.0, 30.0, 300.0, 1000.0)
            for lw in (None, 0.25, 1.0, 4.0)]  # fmt: skip
    acc: dict[tuple, list[float]] = {g: [] for g in grid}
    for s in subjects:
        b = Bundle.load(work / f"bundle-s{s}")
        ext, shape = b.extractor(), b.input_shape
        d = load_dataset(
            DATA, embed=lambda X, e=ext, sh=shape: e.embed_many(X.reshape(len(X), *sh))
        )
        X, y = d.x.astype(np.float64), d.y
        train = d.subject != s
        calib, test = new_user_split(d.subject, d.recording, y, 1)[s]
        for head, pn, lw in grid:
            cfg = LearnerConfig(dim=X.shape[1], max_classes=32, head=head, budget_bytes=1 << 24,
                                standardize=pn is not None, standardize_prior_n=pn or 0.0,
                                label_weight=lw or 1.0)  # fmt: skip
            lr = StreamingLearner(cfg)
            groups = d.subject[train] if pn is not None else None
            lr.learn_many(X[train], y[train], w=1.0, groups=groups)  # pre-training: weight 1
            lr = copy.deepcopy(lr)
            lr.observe_many(X[calib])
            if lw is not None:
                lr.learn_many(X[calib], y[calib])
            acc[(head, pn, lw)].append(float(np.mean(lr.predict_many(X[test]) == y[test])))
    lines = ["sweep (mean held-out accuracy over the LOSO users; labels: weight of the "
             "calibration labels, - = not learned):",
             f"{'head':<6}{'prior':>8}{'labels':>8}{'mean':>8}{'min user':>10}"]  # fmt: skip
    for (head, pn, lw), v in acc.items():
        prior = "off" if pn is None else f"{pn:g}"
        lines.append(f"{head:<6}{prior:>8}{'-' if lw is None else f'{lw:g}':>8}"
                     f"{np.mean(v):>8.3f}{min(v):>10.3f}")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / "build" / "loso")
    p.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--unseen", type=Path, help="also: the shipped bundle on this users' file")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--sweep", action="store_true", help="also refit heads over a settings grid")
    args = p.parse_args(argv)
    import torch

    from edgecl.cli import main as cli

    torch.set_num_threads(1)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    users: dict[str, dict] = {}
    for s in args.subjects:
        ckpt, bundle = args.work / f"s{s}.safetensors", args.work / f"bundle-s{s}"
        if not ckpt.is_file() and cli(pretrain_argv(s, ckpt, args.epochs)) != 0:
            return 1
        if not (bundle / "manifest.json").is_file():
            if cli(["export", "--checkpoint", str(ckpt), "--out", str(bundle), "--force"]) != 0:
                return 1
        res = new_user(bundle, DATA, [s], args.work / f"new-user-s{s}.json")
        users[str(s)] = res["users"][str(s)]
    report = {"loso": users, "seconds": round(time.perf_counter() - t0, 1)}
    lines = table(users, "leave-one-subject-out (each bundle blind to its test user):")
    if args.unseen is not None:
        with np.load(args.unseen, allow_pickle=False) as d:
            ids = sorted(int(s) for s in np.unique(d["subject"]))
        res = new_user(ROOT / "edgecl" / "bundles" / "default", args.unseen, ids,
                       args.work / "new-user-unseen.json")  # fmt: skip
        report["unseen"] = res["users"]
        lines += ["", *table(res["users"], f"shipped bundle on unseen users {ids}:")]
    if args.sweep:
        report["sweep"] = sweep(args.work, args.subjects)
        lines += ["", *report["sweep"]]
    print("\n".join(lines))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
