"""Shared pieces of the ``tools/bench_*.py`` scripts: one thread, timings, machine, configs.

Import this module *before* numpy in a benchmark script: BLAS libraries read
their thread count once, when they load, so the environment variables below
only take effect if they are set first. :func:`one_thread` also caps, for the
duration of a block, thread pools that are already loaded (via threadpoolctl
when it is installed) and an imported torch's intra-op pool, so an in-process
caller (a test) gets one thread too and its own settings back afterwards.

>>> ns = np.array([1000, 2000, 3000, 4000, 100_000])
>>> summary_us(ns)["p50"]
3.0
>>> X, Y = gaussian_stream(6, dim=4, n_classes=3, seed=0)
>>> X.shape, X.dtype, Y.tolist()
((6, 4), dtype('float32'), [0, 0, 1, 1, 2, 2])
"""

from __future__ import annotations

import os

# BLAS reads these once, at import: they must be set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import contextlib  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from edgecl.learner import LearnerConfig, ReservoirBuffer, plan_budget  # noqa: E402

__all__ = [
    "config_for",
    "gaussian_stream",
    "machine",
    "one_thread",
    "summary_us",
]

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Cap BLAS/OpenMP pools (threadpoolctl, when installed) and an imported torch to one
    thread for the duration of the block; restore them afterwards (tests call ``main``)."""
    saved_env = {v: os.environ.get(v) for v in _THREAD_VARS}
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    limits = None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        limits = threadpool_limits(limits=1)
    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch is not None and torch_threads is not None:
            torch.set_num_threads(torch_threads)
        if limits is not None:
            limits.restore_original_limits()
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def summary_us(ns: np.ndarray) -> dict[str, float]:
    """p50 / p99 / mean / max, in µs, of per-call wall times given in ns."""
    us = np.asarray(ns, dtype=np.float64) / 1000.0
    if us.size == 0:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan"), "max": float("nan")}
    p50, p99 = np.percentile(us, [50, 99])
    return {"p50": float(p50), "p99": float(p99), "mean": float(us.mean()), "max": float(us.max())}


def gaussian_stream(n: int, dim: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 samples of ``n_classes`` unit Gaussians; labels in equal, ordered blocks."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (n_classes, dim))
    Y = np.minimum(np.arange(n) * n_classes // n, n_classes - 1)
    X = means[Y] + rng.normal(0.0, 1.0, (n, dim))
    return X.astype(np.float32), Y


def config_for(
    dim: int, max_classes: int, slots: int, seed: int = 0, **settings: Any
) -> LearnerConfig:
    """A config whose ``budget_bytes`` fits the head, the Fisher and exactly ``slots`` buffer slots.

    Only the softmax head owns a buffer; for NCM/SLDA ``slots`` is ignored and the
    budget is exactly what the head needs.

    >>> cfg = config_for(8, 4, 10, head="softmax")
    >>> plan_budget(cfg)["buffer_capacity"]
    10
    >>> plan_budget(config_for(8, 4, 10, head="ncm"))["buffer_capacity"]
    0
    """
    cfg = LearnerConfig(dim=dim, max_classes=max_classes, seed=seed, **settings)
    if cfg.head != "softmax":
        head_only = plan_budget(cfg.replace(budget_bytes=1 << 40))["state_bytes"]
        return cfg.replace(budget_bytes=head_only)
    # Plan with one slot: a softmax head with replay refuses a plan with none.
    one = plan_budget(cfg.replace(budget_bytes=1 << 40, buffer_capacity=1))["state_bytes"]
    per_item = ReservoirBuffer.bytes_per_item(dim, cfg.buffer_dtype)
    return cfg.replace(budget_bytes=one + (slots - 1) * per_item, buffer_capacity=None)


def machine() -> dict[str, str]:
    """CPU model, core count, load average and library versions of this run."""
    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "unknown"
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "loadavg": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "threads": "1",
    }
