"""Data-parallel training across processes (``torchrun``) with DistributedDataParallel.

Launch any host training command under ``torchrun``; it sets ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK``, and :func:`init` joins the process group — NCCL
when the process has a CUDA device, gloo on the CPU (so two CPU processes can
test it here)::

    torchrun --nproc-per-node 2 -m edgecl pretrain --data D.npz --model imu-cnn --out m.safetensors

Every process draws the same seeded permutation of the data, cuts the same
global batches, and trains on its contiguous share of each one
(:func:`shard`); DDP averages the gradients, so with equal shares a step
equals one single-process step on the whole global batch (the tests check
it). Notes: BatchNorm statistics are per process unless the model is
converted to ``SyncBatchNorm`` (done on CUDA, where it is supported); a final,
smaller global batch splits unevenly and each process's mean gets equal
weight; statistics a strategy gathers after a task (Fisher, importances) are
estimated on each process's share and averaged (:func:`all_average`).
Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function here is a
no-op and training is single-process.

>>> info = init()  # not under torchrun
>>> info.world_size, info.rank, info.is_main
(1, 0, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "all_average", "cleanup", "init", "shard", "wrap"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (``world_size == 1``: not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init(device: torch.device | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if there is one (idempotent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device is not None and device.type == "cuda"
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend)
    return DistInfo(world, rank, local, backend)


def cleanup() -> None:
    """Leave the process group (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``model`` itself, or wrapped in DistributedDataParallel when distributed."""
    if not info.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def shard(n: int, info: DistInfo) -> slice:
    """This process's contiguous share of a global batch of ``n`` samples.

    >>> [shard(10, DistInfo(world_size=3, rank=r)) for r in range(3)]
    [slice(0, 4, None), slice(4, 7, None), slice(7, 10, None)]
    """
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return slice(start, start + base + (1 if info.rank < extra else 0))


def all_average(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Element-wise mean of each tensor over the processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensors
    world = dist.get_world_size()
    out = {}
    for name, t in tensors.items():
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[name] = t / world
    return out
