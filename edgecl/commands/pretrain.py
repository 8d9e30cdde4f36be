"""``edgecl pretrain``: torch pre-training and task-based strategies (host side)."""

from __future__ import annotations

import argparse

from edgecl.commands._common import (
    UsageError,
)

# -- pretrain ----------------------------------------------------------------

_PRETRAIN_EPILOG = """\
examples:
  edgecl pretrain --model imu-cnn --test-subjects 6 7 --epochs 20 --out imu.safetensors
      the default bundle's extractor: the embedded smartwatch IMU data, 100-row
      windows hop 50, subjects 6 and 7 held out; prints the held-out accuracy
  edgecl pretrain --tasks ../shared/data/mnist.npz ../shared/data/fashion_mnist.npz \\
      --strategy ewc --json ewc.json
      MNIST then Fashion-MNIST, one shared 10-way head (domain-IL), EWC at λ=1e5,
      task-1 BatchNorm statistics kept (--bn-policy auto)
  edgecl pretrain --data ../shared/data/mnist.npz --split-classes 2 --strategy replay \\
      --scenario class-il --epochs 1
  edgecl pretrain --exclude-classes TRAP ROW --test-subjects 6 7 --out no-trap-row.safetensors
      pre-train without two classes (names or ids; labels keep their ids), for
      on-device class-incremental learning of them later (`edgecl export` fits
      the initial head without them too)
  torchrun --nproc-per-node 2 -m edgecl pretrain --data D.npz --out m.safetensors
      data-parallel (DDP; NCCL on GPUs, gloo on CPUs)

Strategies: naive, joint (upper bound), ewc, online-ewc, si, mas, lwf, replay,
agem, gpm, importance-lr, kfac-ewc, feature-distill, dgr;
packnet, xdg, multihead and pnn need the task id at test time (task-IL only;
other scenarios exit 2 with the reason). pnn grows a column per task, which no
checkpoint can hold: it refuses --out.
Fisher (--fisher): squared gradient of each batch's mean loss, averaged over
--fisher-batches batches; "empirical" uses the observed labels, "true" labels
sampled from the model. --bn-policy freeze keeps the task-1 BatchNorm
statistics (BatchNorm in eval mode from task 2 on); "train" lets them drift;
"auto" (default) freezes them for ewc, online-ewc, si and mas, which protect
weights but not BatchNorm statistics (MNIST after Fashion-MNIST with EWC: ~0.97
frozen, ~0.74 drifting), and for packnet and xdg, whose old tasks' units must
not drift, and for agem, gpm and importance-lr; it trains them otherwise. The choice
is printed on stderr and recorded in the JSON and the checkpoint.
"""

_PRETRAIN_MODELS = ("mlp", "cnn", "imu-cnn")  # = edgecl.host.models.ARCHS
_FEATURE_DISTANCES = ("l2", "cosine")  # = edgecl.host.strategies.feature_distill.DISTANCES
_PRETRAIN_STRATEGIES = (
    "naive", "joint", "ewc", "online-ewc", "si", "mas", "lwf", "replay",
    "packnet", "xdg", "multihead", "agem", "gpm", "importance-lr",
    "kfac-ewc", "feature-distill", "dgr", "pnn",
)  # fmt: skip


def add_pretrain(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
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
    d.add_argument(
        "--exclude-classes",
        nargs="+",
        metavar="C",
        help="drop these classes (names or ids) from training and test data; ids are kept",
    )
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
        choices=["auto", "train", "freeze"],
        default="auto",
        help="freeze: keep task-1 BatchNorm statistics on later tasks; auto (default): "
        "freeze for ewc, online-ewc, si, mas, kfac-ewc, packnet, xdg, agem, gpm, "
        "importance-lr, else train",
    )
    s.add_argument("--ewc-lambda", type=float, metavar="F", help="EWC λ (default 1e5)")
    s.add_argument(
        "--fisher", choices=["empirical", "true"], default="empirical", help="default empirical"
    )
    s.add_argument(
        "--fisher-batches", type=int, metavar="N", help="batches per Fisher / MAS importance (300)"
    )
    s.add_argument(
        "--fisher-decay",
        type=float,
        metavar="F",
        help="online-ewc, kfac-ewc: γ in F ← γ·F + F_task (default 1.0: no decay)",
    )
    s.add_argument("--si-c", type=float, metavar="F", help="SI strength c (default 1.0)")
    s.add_argument("--mas-lambda", type=float, metavar="F", help="MAS λ (default 1.0)")
    s.add_argument("--lwf-alpha", type=float, metavar="F", help="LwF distillation weight (1.0)")
    s.add_argument(
        "--temperature",
        "--lwf-temperature",
        dest="temperature",
        type=float,
        metavar="F",
        help="lwf, dgr: softmax temperature of the soft targets (2.0)",
    )
    s.add_argument("--buffer-size", type=int, metavar="N", help="replay samples (default 1000)")
    s.add_argument(
        "--replay-batch", type=int, metavar="N", help="replay, dgr: replayed per batch (= batch)"
    )
    s.add_argument("--prune-ratio", type=float, metavar="F", help="packnet: pruned share (0.5)")
    s.add_argument("--retrain-steps", type=int, metavar="N", help="packnet: retrain batches (50)")
    s.add_argument("--xdg-gating", type=float, metavar="F", help="xdg: share of units gated (0.8)")
    s.add_argument("--memory-size", type=int, metavar="N", help="agem: samples per task (100)")
    s.add_argument("--memory-batch", type=int, metavar="N", help="agem: reference batch (256)")
    s.add_argument("--gpm-threshold", type=float, metavar="F", help="gpm: energy kept (0.97)")
    s.add_argument("--gpm-samples", type=int, metavar="N", help="gpm: samples per basis (300)")
    s.add_argument(
        "--importance-strength", type=float, metavar="F", help="importance-lr: s in 1/(1+sF) (1e7)"
    )
    s.add_argument("--distill-lambda", type=float, metavar="F", help="feature-distill weight (1)")
    s.add_argument(
        "--feature-distance",
        choices=_FEATURE_DISTANCES,
        help="feature-distill: squared L2 or 1 − cosine (default l2)",
    )
    s.add_argument("--vae-epochs", type=int, metavar="N", help="dgr: VAE passes per task (10)")
    s.add_argument("--vae-latent", type=int, metavar="N", help="dgr: VAE latent size (32)")
    s.add_argument("--vae-hidden", type=int, metavar="N", help="dgr: VAE hidden width (256)")
    s.add_argument("--vae-lr", type=float, metavar="F", help="dgr: VAE Adam step size (1e-3)")
    s.add_argument(
        "--replay-weight", type=float, metavar="F", help="dgr: replay term weight (tasks done)"
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="OUT", help="write the result as JSON ('-' = stdout only)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``edgecl pretrain``: lazily imports the torch side (edgecl.host.pretrain)."""
    if args.split_classes is not None and args.tasks:
        raise UsageError("--split-classes cuts one --data file; it does not combine with --tasks")
    if args.exclude_classes and args.tasks:
        raise UsageError(
            "--exclude-classes drops classes of one --data file; it does not combine with --tasks"
        )
    if args.strategy == "pnn" and args.out:
        raise UsageError(
            "--strategy pnn writes no checkpoint: its grown model (a column per task with "
            "lateral connections) is no architecture `edgecl export` can rebuild; drop --out"
        )
    try:
        from edgecl.host.data import ClassSelectionError
        from edgecl.host.pretrain import run
        from edgecl.host.strategies import UnsupportedScenario
    except ImportError as exc:
        raise ImportError(
            f"edgecl pretrain needs torch ({exc.name or exc} missing): pip install 'edgecl[host]'"
        ) from None
    if args.data is None and not args.tasks:
        from edgecl.eval.datasets import DEFAULT_DATA

        args.data = str(DEFAULT_DATA)
    try:
        return run(args)
    except (ClassSelectionError, UnsupportedScenario) as exc:  # usage errors, not failures
        raise UsageError(str(exc)) from None
