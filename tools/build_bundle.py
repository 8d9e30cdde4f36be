"""Rebuild the bundle shipped in ``edgecl/bundles/default``, or check that it rebuilds exactly.

The recipe is two ordinary CLI calls, run in-process through ``edgecl.cli.main``::

    edgecl pretrain --data edgecl/data/watch_imu.npz --model imu-cnn --test-subjects 6 7 \\
        --seed 0 --epochs 20 --device cpu --threads 1 --no-progress --out CKPT
    edgecl export --checkpoint CKPT --out edgecl/bundles/default --force

Bit-for-bit repeatable on one machine: one CPU thread (set before torch is
imported), torch's deterministic algorithms, fixed seeds, the TorchScript ONNX
exporter (same bytes for the same weights), and a manifest without timestamps
or machine paths. Different CPUs may round differently (other SIMD kernels), so
compare rebuilds on the same machine.

Usage::

    python tools/build_bundle.py                   # rebuild edgecl/bundles/default (make bundle)
    python tools/build_bundle.py --check           # rebuild into a temp dir, compare sha256s
    python tools/build_bundle.py --out DIR --checkpoint CKPT
    python tools/build_bundle.py --out build/bundles/no-trap-row --exclude-classes TRAP ROW
        # the class-incremental bundle: pre-trained (and its head fitted) without
        # TRAP and ROW, which a device then learns from a few labels

``--exclude-classes`` adds the same flag to the pretrain step (the export reads
the exclusion from the checkpoint); without it the recipe is the one above.
"""

from __future__ import annotations

import os

# Before torch is imported anywhere: one thread, no nondeterministic parallel reductions.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from edgecl.runtime.bundle import file_sha256  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "edgecl" / "bundles" / "default"
DATA = ROOT / "edgecl" / "data" / "watch_imu.npz"
MAX_BUNDLE_BYTES = 1_000_000

PRETRAIN = [
    "pretrain",
    "--data", str(DATA),
    "--model", "imu-cnn",
    "--test-subjects", "6", "7",
    "--seed", "0",
    "--epochs", "20",
    "--device", "cpu",
    "--threads", "1",
    "--no-progress",
]  # fmt: skip


def build(out: Path, checkpoint: Path, exclude: list[str] | None = None) -> int:
    """Pre-train and export into ``out``; returns the exit code of the first failing step.

    ``exclude``: classes (names or ids) to pre-train without (``--exclude-classes``).
    """
    import torch

    from edgecl.cli import main

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    excluding = ["--exclude-classes", *exclude] if exclude else []
    steps = [
        [*PRETRAIN, *excluding, "--out", str(checkpoint)],
        ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--force"],
    ]
    for argv in steps:
        shown = " ".join(a if a != str(DATA) else "edgecl/data/watch_imu.npz" for a in argv)
        print(f"$ edgecl {shown}", flush=True)
        rc = main(argv)
        if rc != 0:
            return rc
    size = sum(p.stat().st_size for p in out.iterdir())
    if size > MAX_BUNDLE_BYTES:
        print(f"error: bundle is {size:,} bytes, over the {MAX_BUNDLE_BYTES:,} limit")
        return 1
    return 0


def digests(path: Path) -> dict[str, str]:
    """sha256 of every file in a bundle directory, by name."""
    return {p.name: file_sha256(p) for p in sorted(path.iterdir()) if p.is_file()}


def check(reference: Path, exclude: list[str] | None = None) -> int:
    """Rebuild into a temporary directory and compare every file's sha256 with ``reference``."""
    with tempfile.TemporaryDirectory(prefix="edgecl-bundle-") as tmp:
        out = Path(tmp) / "bundle"
        rc = build(out, Path(tmp) / "checkpoint.safetensors", exclude)
        if rc != 0:
            return rc
        want, got = digests(reference), digests(out)
    ok = True
    for name in sorted(set(want) | set(got)):
        same = want.get(name) == got.get(name)
        ok &= same
        print(f"{'same' if same else 'DIFFERENT':>9}  {name}  {got.get(name, '-')[:16]}")
    print("bundle rebuilds bit for bit" if ok else f"bundle differs from {reference}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="bundle directory to write")
    p.add_argument("--checkpoint", type=Path, help="keep the checkpoint here (default: temp)")
    p.add_argument(
        "--check", action="store_true", help="rebuild into a temp dir and compare with --out"
    )
    p.add_argument(
        "--exclude-classes",
        nargs="+",
        metavar="NAME",
        help="pre-train without these classes (names or ids), e.g. TRAP ROW (default: none)",
    )
    args = p.parse_args(argv)
    if args.check:
        return check(args.out, args.exclude_classes)
    if args.checkpoint is not None:
        return build(args.out, args.checkpoint, args.exclude_classes)
    with tempfile.TemporaryDirectory(prefix="edgecl-ckpt-") as tmp:
        return build(args.out, Path(tmp) / "checkpoint.safetensors", args.exclude_classes)


if __name__ == "__main__":
    sys.exit(main())
