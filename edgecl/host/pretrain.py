"""``edgecl pretrain``: train an extractor, or run a continual-learning task sequence.

Three ways in, one loop (:func:`edgecl.host.train.train_tasks`):

* ``--data D.npz --out CKPT`` — pre-train on one dataset, report the held-out
  accuracy, save the checkpoint (safetensors + JSON, :mod:`edgecl.host.checkpoint`)
  with the normalisation, class names, window and provenance that export needs;
* ``--tasks A.npz B.npz ...`` — one task per file (default scenario domain-IL:
  one shared head, e.g. MNIST → Fashion-MNIST);
* ``--data D.npz --split-classes K`` — the dataset's classes cut into tasks of
  K classes (default scenario class-IL, e.g. split-MNIST).

``--exclude-classes C ...`` (with ``--data``) drops those classes from the
training and test data; the head keeps one output per class of the dataset, so
label ids stay the dataset's, and the checkpoint records the ids under
``provenance.excluded_classes`` for ``edgecl export``.

Task sequences print the accuracy matrix, ACC, BWT, FWT, forgetting and time,
and ``--json`` writes the DESIGN §6 keys. Before training a sequence, one line
on stderr says which BatchNorm policy runs (``--bn-policy auto``, the default,
keeps the task-1 statistics for ewc, online-ewc, si and mas; DESIGN §9); the
JSON records it as ``bn_policy`` (what ran) and ``bn_policy_requested``, the
checkpoint's provenance as ``bn_policy``. The CLI flags live in
:mod:`edgecl.cli` (no torch there); :func:`run` receives the parsed namespace.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from edgecl.errors import ConfigError
from edgecl.host import ddp
from edgecl.host.checkpoint import save_checkpoint
from edgecl.host.data import (
    TrainingData,
    load_training_data,
    n_outputs,
    split_classes,
    tasks_from_files,
)
from edgecl.host.models import build_model
from edgecl.host.strategies import check_scenario, make_strategy
from edgecl.host.train import TaskResult, TrainConfig, resolve_bn_policy, train_tasks

__all__ = ["run"]


def _default_arch(data: TrainingData) -> str:
    return "imu-cnn" if data.window is not None else "mlp"


def run(args: argparse.Namespace) -> int:
    """Run ``edgecl pretrain`` with parsed CLI arguments; returns the exit code."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sequence = bool(args.tasks) or args.split_classes is not None
    if not sequence and args.strategy not in (None, "naive"):
        raise ConfigError("--strategy needs a task sequence: --tasks A B ... or --split-classes K")
    if not sequence and not args.out:
        raise ConfigError("--out CKPT is required when pre-training on one dataset")
    exclude = list(getattr(args, "exclude_classes", None) or [])
    if exclude and args.tasks:
        raise ConfigError("--exclude-classes works on one --data file, not on --tasks files")
    load = {
        "window": args.window,
        "hop": args.hop,
        "test_subjects": args.test_subjects,
        "limit": args.limit,
        "seed": args.seed,
        "exclude_classes": exclude,
    }
    paths = args.tasks if args.tasks else [args.data]
    datas = [load_training_data(p, **load) for p in paths]
    first = datas[0]
    if args.split_classes is not None:
        scenario = args.scenario or "class-il"
        tasks = split_classes(first, args.split_classes, scenario)
    elif args.tasks:
        scenario = args.scenario or "domain-il"
        tasks = tasks_from_files(datas, scenario)
    else:
        scenario = "class-il"
        tasks = tasks_from_files(datas, scenario)
    arch = args.model or _default_arch(first)
    n_out = n_outputs(tasks)
    if not (args.split_classes is not None and scenario == "domain-il"):
        # One logit per class of the dataset, excluded ones included: ids stay the dataset's.
        n_out = max(n_out, first.n_classes)
    torch.manual_seed(args.seed)
    model = build_model(
        arch,
        first.in_shape,
        n_out,
        args.embed_dim,
        width=args.width,
        batchnorm=not args.no_batchnorm,
    )
    strategy_name = args.strategy or "naive"
    strategy = make_strategy(
        strategy_name,
        ewc_lambda=args.ewc_lambda,
        fisher=args.fisher,
        fisher_batches=args.fisher_batches,
        fisher_decay=args.fisher_decay,
        si_c=args.si_c,
        mas_lambda=args.mas_lambda,
        alpha=args.lwf_alpha,
        temperature=args.temperature,
        buffer_size=args.buffer_size,
        replay_batch=args.replay_batch,
        prune_ratio=args.prune_ratio,
        retrain_steps=args.retrain_steps,
        retrain_lr=args.lr,
        xdg_gating=args.xdg_gating,
        memory_size=args.memory_size,
        memory_batch=args.memory_batch,
        gpm_threshold=args.gpm_threshold,
        gpm_samples=args.gpm_samples,
        importance_strength=args.importance_strength,
        distill_lambda=args.distill_lambda,
        feature_distance=args.feature_distance,
        vae_epochs=args.vae_epochs,
        vae_latent=args.vae_latent,
        vae_hidden=args.vae_hidden,
        vae_lr=args.vae_lr,
        replay_weight=args.replay_weight,
        seed=args.seed,
    )
    check_scenario(strategy, scenario)
    bn_policy = resolve_bn_policy(args.bn_policy, strategy)
    if len(tasks) > 1 and os.environ.get("RANK", "0") == "0":  # once under torchrun
        print(_bn_note(args.bn_policy, bn_policy, strategy_name, model), file=sys.stderr)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        scenario=scenario,
        bn_policy=args.bn_policy,
        seed=args.seed,
        device=args.device,
        progress=not args.no_progress,
    )
    try:
        result = train_tasks(model, tasks, strategy, cfg)
        if not ddp.init().is_main:
            return 0
        report = result.to_json()
        report["model"] = model.spec
        report["data"] = [d.path for d in datas]
        report["excluded_classes"] = list(first.excluded_classes)
        if not sequence:
            report["accuracy"] = report["accuracy_matrix"][0][0]
            report["n_train"], report["n_test"] = len(first.y_train), len(first.y_test)
        if args.out:
            meta = _meta(args, datas, tasks, scenario, strategy_name, result, n_out)
            save_checkpoint(args.out, model.cpu(), meta)
            report["checkpoint"] = str(args.out)
        if args.json:
            text = json.dumps(report, indent=2)
            if args.json == "-":
                print(text)
            else:
                Path(args.json).write_text(text + "\n", encoding="utf-8")
        if args.json != "-":
            print(_summary(report, first, sequence))
        return 0
    finally:
        ddp.cleanup()


def _bn_note(requested: str, policy: str, strategy: str, model: torch.nn.Module) -> str:
    """The line saying which BatchNorm policy a task sequence trains with, and why."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return "edgecl pretrain: the model has no BatchNorm layers (--bn-policy has no effect)"
    if requested != "auto":
        why = f"--bn-policy {requested}"
    elif policy == "freeze":
        why = (
            f"--bn-policy auto: {strategy} protects weights, not BatchNorm statistics; "
            "--bn-policy train to let them drift"
        )
    else:
        why = f"--bn-policy auto: {strategy}; --bn-policy freeze to keep task-1 statistics"
    kept = "task-1 statistics kept" if policy == "freeze" else "statistics follow each task"
    return f"edgecl pretrain: BatchNorm {policy}, {kept} ({why})"


def _class_names(
    datas: list[TrainingData], tasks, scenario: str, split: bool, n_out: int
) -> list[str]:
    if split and scenario == "domain-il":
        return [f"position {i}" for i in range(n_out)]
    if len(datas) == 1 or scenario == "domain-il":
        return list(datas[0].class_names) + [
            str(i) for i in range(len(datas[0].class_names), n_out)
        ]
    return [f"{d.name}:{c}" for d in datas for c in d.class_names]


def _meta(
    args, datas, tasks, scenario, strategy_name, result: TaskResult, n_out: int
) -> dict[str, Any]:
    first = datas[0]
    acc = result.accuracy_matrix[-1]
    split = args.split_classes is not None
    return {
        "normalisation": first.normalisation,
        "class_names": _class_names(datas, tasks, scenario, split, n_out),
        "window": first.window,
        "provenance": {
            "data": [Path(d.path).name for d in datas],
            "sha256_data": [d.sha256 for d in datas],
            "test_subjects": first.test_subjects,
            "excluded_classes": sorted(first.excluded_classes),
            "tasks": [t.name for t in tasks],
            "scenario": scenario if len(tasks) > 1 else None,
            "strategy": strategy_name,
            "bn_policy": result.info["bn_policy"],  # what ran ("auto" resolved)
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "optimizer": args.optimizer,
            "seed": args.seed,
            "limit": args.limit,
            "device": result.info.get("device"),
            "world_size": result.info.get("world_size"),
            "torch": torch.__version__,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "accuracy": float(acc.mean()),
            "task_accuracy": [float(a) for a in acc],
        },
    }


def _summary(r: dict[str, Any], first: TrainingData, sequence: bool) -> str:
    dev = f"{r['device']}" + (f" ×{r['world_size']}" if r["world_size"] > 1 else "")
    if not sequence:
        held = (
            f"subjects {' '.join(map(str, first.test_subjects))}"
            if first.test_subjects
            else "test split"
        )
        lines = [
            f"edgecl pretrain: {r['model']['arch']} on {first.name}, {r['n_train']:,} training "
            f"samples, {r['seconds']:.1f} s on {dev}",
            f"held-out accuracy ({held}, {r['n_test']:,} samples): {r['accuracy']:.4f}",
        ]
    else:
        names = [n if len(n) <= 14 else n[:13] + "…" for n in r["tasks"]]
        w = max(8, *(len(n) for n in names))
        lines = [
            f"edgecl pretrain: {r['strategy']} / {r['scenario']} (BatchNorm {r['bn_policy']}), "
            f"{r['model']['arch']}, {len(names)} tasks, {r['seconds']:.1f} s on {dev}",
            "",
            "accuracy R[i, j]: row = after task i, column = test set of task j",
            " " * (w + 6) + "".join(f" {n:>{w}}" for n in names),
        ]
        rows = [("before", r["baseline_accuracy"])]
        rows += [(f"after {n}", row) for n, row in zip(names, r["accuracy_matrix"], strict=True)]
        for label, vals in rows:
            lines.append(f"{label:<{w + 6}}" + "".join(f" {_f(v):>{w}}" for v in vals))
        lines += [
            "",
            f"{'avg_accuracy':<14}{_f(r['avg_accuracy'])}",
            f"{'bwt':<14}{_f(r['bwt'], True)}",
            f"{'fwt':<14}{_f(r['fwt'], True)}",
            f"{'forgetting':<14}{_f(r['forgetting'])}",
            f"{'learn_us':<14}p50 {_f(r['learn_us']['p50'], d=1)}  "
            f"p99 {_f(r['learn_us']['p99'], d=1)}  (per training sample)",
            f"{'state_bytes':<14}{r['state_bytes']:,} (model + strategy)",
        ]
    if first.excluded_classes:
        names = ", ".join(f"{first.class_names[c]} ({c})" for c in first.excluded_classes)
        lines.append(f"excluded classes (in neither training nor test data): {names}")
    if r.get("checkpoint"):
        lines.append(f"checkpoint: {r['checkpoint']}")
    return "\n".join(lines)


def _f(v: float | None, signed: bool = False, d: int = 4) -> str:
    if v is None:
        return "—"
    return f"{v:+.{d}f}" if signed else f"{v:.{d}f}"
