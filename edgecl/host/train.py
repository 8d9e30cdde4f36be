"""The one training loop every host run goes through: plain pre-training and task sequences.

:func:`train_tasks` trains a model on tasks in order with a strategy
(:mod:`edgecl.host.strategies`) and tests it on every task after each one,
filling the accuracy matrix ``R[i, j]`` (DESIGN §8); the metrics come from
:mod:`edgecl.eval.metrics`, the same code as ``edgecl eval``. Plain
pre-training is the one-task case with the naive strategy. Read it top to
bottom: the strategy's hooks are the only places where strategies differ.

Settings (:class:`TrainConfig`) worth knowing:

* ``scenario`` — task-IL masks the logits to each sample's task classes, in
  training and testing (multi-head with one shared output layer); domain-IL
  and class-IL use the whole head.
* ``bn_policy`` (DESIGN §9) — ``"train"``: BatchNorm layers train normally on
  every task (their running statistics drift to the newest task, which no
  weight penalty protects); ``"freeze"``: from the second task on, BatchNorm
  layers stay in evaluation mode, so the task-1 running statistics are kept
  and used (their affine weights still train and are protected like any other
  weight). With EWC on MNIST → Fashion-MNIST this is the difference between
  ~0.74 and ~0.97 MNIST accuracy after task 2. ``"auto"`` (the default):
  ``"freeze"`` for the strategies that only protect weights (ewc, online-ewc,
  si, mas: ``Strategy.keeps_bn_statistics``), ``"train"`` for the others,
  whose old-task data (replay, joint) or outputs (lwf) reach the statistics
  anyway, or which protect nothing (naive); see :func:`resolve_bn_policy`.
* the optimiser is Adam (or SGD), created afresh for each task.
* ``device`` — CUDA when available unless forced; on CUDA the forward pass
  runs under autocast (bfloat16 where supported, else float16 with a gradient
  scaler). Under ``torchrun`` the steps are data-parallel (:mod:`edgecl.host.ddp`).

>>> import numpy as np
>>> from edgecl.host.data import Task
>>> from edgecl.host.models import build_model
>>> from edgecl.host.strategies import make_strategy
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(64, 4)).astype(np.float32); y = (x[:, 0] > 0).astype(np.int64)
>>> task = Task("t", x, y, x, y, (0, 1))
>>> model = build_model("mlp", (4,), 2, embed_dim=8, width=8)
>>> cfg = TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu", progress=False)
>>> res = train_tasks(model, [task], make_strategy("naive"), cfg)
>>> res.accuracy_matrix.shape, bool(res.accuracy_matrix[0, 0] > 0.8)
((1, 1), True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edgecl.errors import ConfigError
from edgecl.eval import metrics
from edgecl.host import ddp
from edgecl.host.data import SCENARIOS, Task, n_outputs
from edgecl.host.strategies.base import Strategy, TaskView, masked

__all__ = [
    "BN_POLICIES",
    "TaskResult",
    "TrainConfig",
    "evaluate",
    "resolve_bn_policy",
    "resolve_device",
    "train_tasks",
]

BN_POLICIES = ("auto", "train", "freeze")
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (validated at construction)."""

    epochs: int = 4  # passes over each task's training data
    batch_size: int = 100  # global batch (split across processes under torchrun)
    lr: float = 1e-3
    optimizer: str = "adam"  # "adam" | "sgd"; a fresh one per task
    scenario: str = "domain-il"  # task-il masks logits to the task's classes
    bn_policy: str = "auto"  # "freeze": BatchNorm in eval mode from task 2 on (DESIGN §9)
    seed: int = 0  # weights, batch order, sampled Fisher labels
    device: str | None = None  # None: cuda when available, else cpu
    amp: bool | None = None  # None: on for CUDA, off on CPU
    eval_batch_size: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} = {v!r}: must be an integer >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr = {self.lr}: must be a positive number")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("scenario", SCENARIOS),
            ("bn_policy", BN_POLICIES),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} = {getattr(self, name)!r}: must be one of {', '.join(allowed)}"
                )
        if self.device is not None and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ConfigError(f"device = {self.device!r}: must be cpu, cuda or cuda:N")


@dataclass(frozen=True, eq=False)
class TaskResult:
    """What :func:`train_tasks` measured."""

    task_names: tuple[str, ...]
    accuracy_matrix: np.ndarray  # R[i, j]: task j's test accuracy after training task i
    baseline: np.ndarray  # b[j]: task j's test accuracy of the untrained model
    learn_us: np.ndarray  # µs per training sample, one value per step
    predict_us: np.ndarray  # µs per test sample, one value per test batch
    state_bytes: int  # model weights and buffers + the strategy's learned tensors
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The DESIGN §6 keys (NaN → None) plus ``tasks``, ``baseline_accuracy`` and ``info``."""
        R = self.accuracy_matrix
        return {
            "tasks": list(self.task_names),
            "accuracy_matrix": [[_num(v) for v in row] for row in R],
            "baseline_accuracy": [_num(v) for v in self.baseline],
            "avg_accuracy": _num(metrics.avg_accuracy(R)),
            "bwt": _num(metrics.bwt(R)),
            "fwt": _num(metrics.fwt(R, self.baseline)),
            "forgetting": _num(metrics.forgetting(R)),
            "learn_us": _pcts(self.learn_us),
            "predict_us": _pcts(self.predict_us),
            "state_bytes": int(self.state_bytes),
            "seconds": round(self.seconds, 3),
            **self.info,
        }


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _pcts(v: np.ndarray) -> dict[str, float | None]:
    return {k: _num(x) for k, x in metrics.percentiles(v).items()}


def resolve_device(name: str | None) -> torch.device:
    """``name``, or CUDA when available and CPU otherwise; an unusable CUDA request fails.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r}: CUDA is not available here (use --device cpu)")
    return dev


def resolve_bn_policy(policy: str, strategy: Strategy) -> str:
    """The BatchNorm policy that runs: ``policy``, or for ``"auto"`` the strategy's choice.

    >>> from edgecl.host.strategies import make_strategy
    >>> [resolve_bn_policy("auto", make_strategy(name)) for name in ("ewc", "si", "replay")]
    ['freeze', 'freeze', 'train']
    >>> resolve_bn_policy("train", make_strategy("ewc"))
    'train'
    """
    if policy not in BN_POLICIES:
        raise ConfigError(f"bn_policy = {policy!r}: must be one of {', '.join(BN_POLICIES)}")
    if policy != "auto":
        return policy
    return "freeze" if strategy.keeps_bn_statistics else "train"


def set_bn_eval(model: nn.Module) -> None:
    """Put every BatchNorm layer in eval mode (running statistics used, not updated)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    device: torch.device,
    *,
    classes: Sequence[int] | None = None,
    batch_size: int = 1000,
    timings: list[float] | None = None,
) -> float:
    """Accuracy of ``model`` (eval mode) on ``(x, y)``; ``classes`` restricts the prediction.

    ``timings`` (optional) receives µs per sample for each batch.
    """
    was_training = model.training
    model.eval()
    correct = 0
    cols = None if classes is None else torch.tensor(sorted(classes), device=device)
    try:
        for i in range(0, len(y), batch_size):
            t0 = time.perf_counter()
            xb = torch.from_numpy(x[i : i + batch_size]).to(device)
            logits = model(xb).float()
            if cols is not None:
                pred = cols[logits.index_select(1, cols).argmax(dim=1)]
            else:
                pred = logits.argmax(dim=1)
            hits = (pred.cpu() == torch.from_numpy(y[i : i + batch_size])).sum().item()
            correct += int(hits)
            if timings is not None:
                timings.append((time.perf_counter() - t0) * 1e6 / len(xb))
    finally:
        model.train(was_training)
    return correct / max(1, len(y))


def _batches(
    parts: Sequence[tuple[np.ndarray, np.ndarray, int]],
    batch_size: int,
    rng: np.random.Generator,
    device: torch.device,
    info: ddp.DistInfo,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One shuffled pass over the concatenated ``(x, y, task id)`` parts, this process's share.

    Every process draws the same permutation (same seed), so the global batches
    agree; a share of fewer than 2 samples (only possible in the last batch) is
    skipped on every process alike, since BatchNorm cannot train on one sample.
    """
    sizes = [len(y) for _, y, _ in parts]
    starts = np.cumsum([0, *sizes])
    order = rng.permutation(int(starts[-1]))
    for b in range(0, len(order), batch_size):
        glob = order[b : b + batch_size]
        if len(glob) < 2 * info.world_size:
            continue
        idx = np.sort(glob[ddp.shard(len(glob), info)])
        which = np.searchsorted(starts, idx, side="right") - 1
        xs, ys, ts = [], [], []
        for p in np.unique(which):
            local = idx[which == p] - starts[p]
            x, y, t = parts[p]
            xs.append(x[local])
            ys.append(y[local])
            ts.append(np.full(len(local), t, dtype=np.int64))
        yield (
            torch.from_numpy(np.concatenate(xs)).to(device, non_blocking=True),
            torch.from_numpy(np.concatenate(ys)).to(device, non_blocking=True),
            torch.from_numpy(np.concatenate(ts)).to(device, non_blocking=True),
        )


def train_tasks(
    model: nn.Module,
    tasks: Sequence[Task],
    strategy: Strategy,
    cfg: TrainConfig,
) -> TaskResult:
    """Train ``model`` on ``tasks`` in order with ``strategy``; test on every task after each.

    The model is moved to the training device and left there, in eval mode.
    """
    device = resolve_device(cfg.device)
    bn_policy = resolve_bn_policy(cfg.bn_policy, strategy)
    info = ddp.init(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model.to(device)
    net = ddp.wrap(model, info, device)
    n_out = n_outputs(tasks)
    mask = None
    if cfg.scenario == "task-il":
        mask = torch.zeros(len(tasks), n_out, dtype=torch.bool, device=device)
        for t, task in enumerate(tasks):
            mask[t, list(task.classes)] = True
    amp = device.type == "cuda" if cfg.amp is None else cfg.amp
    amp_dtype = (
        torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)

    def test_row(timings: list[float] | None = None) -> np.ndarray:
        return np.array(
            [
                evaluate(
                    strategy.eval_model(model, j),
                    task.x_test,
                    task.y_test,
                    device,
                    classes=task.classes if mask is not None else None,
                    batch_size=cfg.eval_batch_size,
                    timings=timings,
                )
                for j, task in enumerate(tasks)
            ]
        )

    T = len(tasks)
    baseline = test_row()
    R = np.zeros((T, T))
    learn_us: list[float] = []
    predict_us: list[float] = []
    start = time.perf_counter()
    for t, task in enumerate(tasks):
        parts = [(tasks[i].x_train, tasks[i].y_train, i) for i in strategy.train_on(t)]
        view = TaskView(
            index=t,
            classes=tuple(task.classes),
            mask=mask,
            batches=lambda p=[(task.x_train, task.y_train, t)]: _batches(
                p, cfg.batch_size, rng, device, info
            ),
        )
        opt = _optimizer(cfg, model)
        strategy.before_task(model, view)
        n_steps = cfg.epochs * math.ceil(sum(len(p[1]) for p in parts) / cfg.batch_size)
        bar = tqdm(
            total=n_steps,
            desc=f"task {t + 1}/{T} {task.name}"[:40],
            disable=not (cfg.progress and info.is_main),
            leave=False,
            unit="step",
        )
        for _ in range(cfg.epochs):
            for x, y, tid in _batches(parts, cfg.batch_size, rng, device, info):
                t0 = time.perf_counter()
                net.train()
                if t > 0 and bn_policy == "freeze":
                    set_bn_eval(net)
                x, y, tid = strategy.augment(x, y, tid)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    logits = net(x)
                loss = nn.functional.cross_entropy(masked(logits.float(), tid, mask), y)
                extra = strategy.penalty(model, x, logits)
                if extra is not None:
                    loss = loss + extra
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)  # strategies read true gradients in before/after_step
                strategy.before_step(model)
                scaler.step(opt)
                scaler.update()
                strategy.after_step(model)
                learn_us.append((time.perf_counter() - t0) * 1e6 / len(y))
                if not bar.disable:  # .item() waits for the GPU: only when shown
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                    bar.update()
        bar.close()
        model.train()
        strategy.after_task(model, view)
        R[t] = test_row(predict_us)
    seconds = time.perf_counter() - start
    model.eval()
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    return TaskResult(
        task_names=tuple(task.name for task in tasks),
        accuracy_matrix=R,
        baseline=baseline,
        learn_us=np.asarray(learn_us),
        predict_us=np.asarray(predict_us),
        state_bytes=weights + strategy.nbytes(),
        seconds=seconds,
        info={
            "strategy": strategy.name,
            "scenario": cfg.scenario,
            "bn_policy": bn_policy,  # what ran; "auto" resolved
            "bn_policy_requested": cfg.bn_policy,
            "device": str(device),
            "world_size": info.world_size,
            "params": sum(p.numel() for p in model.parameters()),
            "buffer_bytes": strategy.nbytes(),
            **strategy.report(),
        },
    )


def _optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9)
    return torch.optim.Adam(params, lr=cfg.lr)
