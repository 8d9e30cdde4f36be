"""Per-sample latency of every extractor: onnxruntime (edgecl's device path) vs torch eager.

For each architecture (mlp and cnn on 28×28 images, imu-cnn on 100×6 IMU
windows) the same randomly initialised extractor, with its input
normalisation, is timed one sample at a time:

* ``torch`` — eager ``module(x)`` under ``torch.inference_mode()``, 1 thread;
* ``ort`` — :meth:`edgecl.runtime.extractor.OnnxExtractor.embed` with the
  default (x86-cpu) profile: 1 intra-op thread, no spinning, no arena, the
  input copied into the preallocated float32 buffer and checked for NaN/inf;
* ``ort-int8`` — the same on the dynamically int8-quantised model.

Rounds alternate between the three in short blocks, so a noisy neighbour hits
them alike. Also reported: the export parity (max |torch − ORT| over 256
inputs) and the model sizes. Latencies are in µs (p50/p99); ``ratio`` is torch
p50 / ORT p50.

Usage::

    python tools/bench_extractors.py [--samples 3000] [--json OUT]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.onnx_export import Normalised, onnx_bytes, parity, quantize_int8  # noqa: E402
from edgecl.runtime.extractor import OnnxExtractor  # noqa: E402

CASES = {
    "mlp": ((28, 28), {"mean": [0.0], "std": [255.0]}, 10),
    "cnn": ((28, 28), {"mean": [0.0], "std": [255.0]}, 10),
    "imu-cnn": ((100, 6), {"mean": [0.0] * 6, "std": [1.0] * 6}, 7),
}
BLOCK = 100  # samples per block before switching to the next runtime


def _pcts(ns: list[int]) -> dict[str, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e3
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
    }


def bench_one(arch: str, samples: int, seed: int = 0) -> dict:
    shape, norm, n_classes = CASES[arch]
    torch.manual_seed(seed)
    model = build_model(arch, shape, n_classes).eval()
    module = Normalised(model.extractor, norm["mean"], norm["std"]).eval()
    fbytes = onnx_bytes(module, shape)
    qbytes = quantize_int8(fbytes)
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((256, *shape)) * np.float32(norm["std"])).astype(np.float32)
    diff = parity(module, fbytes, X)
    ex, exq = OnnxExtractor(fbytes), OnnxExtractor(qbytes)
    xs = X[:BLOCK]
    xt = [torch.from_numpy(x[None]) for x in xs]
    runners = {
        "torch": lambda i: module(xt[i]),
        "ort": lambda i: ex.embed(xs[i]),
        "ort-int8": lambda i: exq.embed(xs[i]),
    }
    times: dict[str, list[int]] = {k: [] for k in runners}
    with torch.inference_mode():
        for fn in runners.values():  # warm-up
            for i in range(BLOCK):
                fn(i)
        for _ in range(max(1, samples // BLOCK)):
            for name, fn in runners.items():
                t = times[name]
                for i in range(BLOCK):
                    t0 = time.perf_counter_ns()
                    fn(i)
                    t.append(time.perf_counter_ns() - t0)
    res = {name: _pcts(t) for name, t in times.items()}
    return {
        "arch": arch,
        "input": list(shape),
        "params": sum(p.numel() for p in model.extractor.parameters()),
        "onnx_bytes": len(fbytes),
        "int8_bytes": len(qbytes),
        "parity_max_abs_diff": diff,
        "us": res,
        "ratio_torch_over_ort": round(res["torch"]["p50"] / res["ort"]["p50"], 2),
        "ratio_torch_over_ort_p99": round(res["torch"]["p99"] / res["ort"]["p99"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=3000, help="timed samples per runtime")
    p.add_argument("--arch", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [bench_one(a, args.samples) for a in args.arch]
    env = {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "threads": 1,
        "samples": args.samples,
    }
    print(
        f"per-sample latency, µs (p50 / p99), 1 thread, {args.samples} samples each; "
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, {env['machine']}"
    )
    head = f"{'extractor':<9} {'params':>7} {'torch eager':>15} {'onnxruntime':>15} "
    head += f"{'ort int8':>15} {'torch/ort p50':>13} {'parity':>9} {'onnx KiB':>9} {'int8 KiB':>9}"
    print(head)
    for r in rows:
        u = r["us"]
        cell = {k: f"{v['p50']:.1f} / {v['p99']:.1f}" for k, v in u.items()}
        print(
            f"{r['arch']:<9} {r['params']:>7,} {cell['torch']:>15} {cell['ort']:>15} "
            f"{cell['ort-int8']:>15} {r['ratio_torch_over_ort']:>12.2f}x "
            f"{r['parity_max_abs_diff']:>9.1e} {r['onnx_bytes'] / 1024:>9.1f} "
            f"{r['int8_bytes'] / 1024:>9.1f}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"env": env, "results": rows}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
