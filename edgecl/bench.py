"""``edgecl bench``: the daemon's per-window work, timed on this machine.

For every window the daemon embeds (onnxruntime), predicts and — when a label
arrives — learns. :func:`run_bench` times each step alone and the three
together (``e2e``: the worst case, every window labelled), after a warm-up,
one call at a time with ``perf_counter_ns``, on real windows of the embedded
smartwatch data when the bundle is a 6-axis sensor model (random inputs of the
model's shape otherwise). It also reports the process's peak RSS, the learner's
``state_bytes`` against the device profile's ``memory_budget_bytes``, the
onnxruntime settings actually in force, and whether the profile's targets are
met (p99 end-to-end ≤ ``latency_target_us``; state within budget).

``ort_sweep`` re-times ``embed`` under the session settings DESIGN §9 warns
about (threads, spinning, memory arena), so their effect on this machine is a
figure rather than folklore.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.eval.metrics import percentiles
from edgecl.learner import LearnerConfig, StreamingLearner
from edgecl.runtime.bundle import Bundle
from edgecl.runtime.profile import DeviceProfile

__all__ = ["format_table", "ort_sweep", "peak_rss_mb", "rss_mb", "run_bench", "window_inputs"]

_QS = (50, 95, 99)


def rss_mb() -> float:
    """Resident set size of this process now, in MB (from ``/proc``; peak RSS elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB (``getrusage``)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return kb / 1e6 if sys.platform == "darwin" else kb * 1024 / 1e6


def _pcts(ns: np.ndarray) -> dict[str, float]:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    pcts = {k: round(v, 1) for k, v in percentiles(us, _QS).items()}
    return pcts | {"mean": round(float(us.mean()), 1)}


def window_inputs(bundle: Bundle, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` model inputs and labels: embedded IMU windows when they fit, else random.

    >>> from edgecl.runtime.bundle import Bundle
    >>> X, y = window_inputs(Bundle.load(), 5)
    >>> X.shape, y.shape
    ((5, 100, 6), (5,))
    """
    rng = np.random.default_rng(seed)
    n_classes = max(2, len(bundle.class_names))
    w = bundle.window
    if w is not None and bundle.input_shape == (w.length, len(w.channels)):
        from edgecl.eval.datasets import DEFAULT_DATA
        from edgecl.runtime.windowing import sliding_windows

        with np.load(DEFAULT_DATA, allow_pickle=False) as d:
            if d["x"].shape[1] == len(w.channels):
                rows, labels = d["x"].astype(np.float32), d["y"]
                wins = sliding_windows(rows, w.length, w.hop)
                idx = rng.choice(len(wins), size=min(n, len(wins)), replace=False)
                idx = np.resize(idx, n)
                y = labels[idx * w.hop + w.length - 1] % n_classes
                return np.ascontiguousarray(wins[idx]), y.astype(np.int64)
    X = rng.standard_normal((n, *bundle.input_shape)).astype(np.float32)
    return X, rng.integers(0, n_classes, n)


def _learner(bundle: Bundle, profile: DeviceProfile, head: str | None) -> StreamingLearner:
    start = bundle.initial_learner()
    if start is not None and (head is None or head == start.config.head):
        return start
    cfg = LearnerConfig(
        dim=bundle.embedding_dim,
        max_classes=max(2, len(bundle.class_names)),
        head=head or "slda",
        budget_bytes=profile.memory_budget_bytes,
    )
    return StreamingLearner(cfg)


def run_bench(
    bundle: Bundle,
    profile: DeviceProfile | None = None,
    *,
    n: int = 2000,
    warmup: int = 200,
    head: str | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Time embed / predict / learn / end-to-end per window; see the module docstring.

    Returns the DESIGN §6 bench keys: ``embed_us``, ``predict_us``, ``learn_us``,
    ``e2e_us`` (each ``{"p50","p95","p99","mean"}``), ``windows_per_s``, ``rss_mb``,
    ``peak_rss_mb``, ``state_bytes``, ``budget_bytes``, ``providers``, ``targets``,
    ``targets_met`` and a description of the setup.
    """
    if n < 1 or warmup < 0:
        raise ValueError(f"n = {n}, warmup = {warmup}: need n >= 1 and warmup >= 0")
    profile = DeviceProfile.default() if profile is None else profile
    ext = bundle.extractor(profile)
    learner = _learner(bundle, profile, head)
    X, Y = window_inputs(bundle, n + warmup, seed)
    t = np.zeros((4, n), dtype=np.int64)
    clock = time.perf_counter_ns
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n + warmup, desc="bench", unit="win", file=sys.stderr)
    for i in range(n + warmup):
        x, y = X[i], int(Y[i])
        t0 = clock()
        e = ext.embed(x)
        t1 = clock()
        learner.predict_one(e)
        t2 = clock()
        learner.observe_one(e)  # the daemon's order: predict, observe every window, learn
        learner.learn_one(e, y)
        t3 = clock()
        if i >= warmup:
            j = i - warmup
            t[0, j], t[1, j], t[2, j], t[3, j] = t1 - t0, t2 - t1, t3 - t2, t3 - t0
        if bar is not None and i % 100 == 99:
            bar.update(100)
    if bar is not None:
        bar.close()
    e2e = _pcts(t[3])
    rep = learner.memory_report()
    budget = profile.memory_budget_bytes
    targets = {
        "latency": {
            "metric": "e2e_us.p99",
            "value": e2e["p99"],
            "target": profile.latency_target_us,
            "met": e2e["p99"] <= profile.latency_target_us,
        },
        "memory": {
            "metric": "state_bytes",
            "value": rep["state_bytes"],
            "target": budget,
            "met": rep["state_bytes"] <= budget,
        },
    }
    return {
        "bundle": str(bundle.path),
        "profile": profile.name,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "n": n,
        "warmup": warmup,
        "inputs": "embedded IMU windows" if bundle.window else "random",
        "head": learner.config.head,
        "embed_us": _pcts(t[0]),
        "predict_us": _pcts(t[1]),
        "learn_us": _pcts(t[2]),
        "e2e_us": e2e,
        "windows_per_s": round(1e6 / e2e["mean"], 1) if e2e["mean"] > 0 else None,
        "rss_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "torch_imported": "torch" in sys.modules,
        "state_bytes": rep["state_bytes"],
        "budget_bytes": budget,
        "providers": ext.providers,
        "missing_providers": list(ext.missing_providers),
        "onnxruntime": {
            "intra_op_threads": profile.intra_op_threads,
            "inter_op_threads": profile.inter_op_threads,
            "allow_spinning": profile.allow_spinning,
            "arena": profile.arena,
        },
        "targets": targets,
        "targets_met": all(v["met"] for v in targets.values()),
    }


def ort_sweep(
    bundle: Bundle, profile: DeviceProfile | None = None, *, n: int = 500, seed: int = 0
) -> list[dict[str, Any]]:
    """``embed`` p50/p99 and CPU time per call under alternative session settings.

    CPU time (``process_time``) shows what spinning threads cost even when the
    wall-clock latency looks good.
    """
    base = DeviceProfile.default() if profile is None else profile
    variants = [
        ("profile", {}),
        ("2 threads", {"intra_op_threads": 2}),
        ("2 threads + spinning", {"intra_op_threads": 2, "allow_spinning": True}),
        ("arena on" if not base.arena else "arena off", {"arena": not base.arena}),
    ]
    X, _ = window_inputs(bundle, n, seed)
    out = []
    for name, change in variants:
        prof = dataclasses.replace(base, **change)
        ext = bundle.extractor(prof)
        for x in X[: min(50, n)]:
            ext.embed(x)
        ns = np.empty(n, dtype=np.int64)
        cpu0 = time.process_time()
        for i, x in enumerate(X):
            t0 = time.perf_counter_ns()
            ext.embed(x)
            ns[i] = time.perf_counter_ns() - t0
        cpu = (time.process_time() - cpu0) / n * 1e6
        out.append({"variant": name, **_pcts(ns), "cpu_us": round(cpu, 1)})
        del ext
    return out


def format_table(res: dict[str, Any]) -> str:
    """The human-readable report: timings, memory, settings, targets."""
    lines = [
        f"bundle {res['bundle']}  profile {res['profile']}  head {res['head']}  "
        f"({res['n']} windows after {res['warmup']} warm-up; {res['inputs']})",
        f"providers {', '.join(res['providers'])}  threads {res['onnxruntime']['intra_op_threads']}"
        f"  spinning {res['onnxruntime']['allow_spinning']}  arena {res['onnxruntime']['arena']}",
        "",
        f"{'step':<10}{'p50 µs':>10}{'p95 µs':>10}{'p99 µs':>10}{'mean µs':>10}",
    ]
    for key in ("embed_us", "predict_us", "learn_us", "e2e_us"):
        v = res[key]
        lines.append(
            f"{key[:-3]:<10}{v['p50']:>10.1f}{v['p95']:>10.1f}{v['p99']:>10.1f}{v['mean']:>10.1f}"
        )
    lines += [
        "",
        f"throughput {res['windows_per_s']:,.0f} windows/s   RSS {res['rss_mb']:.1f} MB "
        f"(peak {res['peak_rss_mb']:.1f} MB)   state {res['state_bytes']:,} B",
        "",
    ]
    for name, t in res["targets"].items():
        mark = "PASS" if t["met"] else "FAIL"
        lines.append(f"{mark}  {name:<8} {t['metric']} = {t['value']:,} (target ≤ {t['target']:,})")
    for row in res.get("ort_sweep", []):
        if row is res["ort_sweep"][0]:
            lines += ["", f"{'embed under':<24}{'p50 µs':>10}{'p99 µs':>10}{'cpu µs':>10}"]
        lines.append(
            f"{row['variant']:<24}{row['p50']:>10.1f}{row['p99']:>10.1f}{row['cpu_us']:>10.1f}"
        )
    return "\n".join(lines)
