"""``edgecl export``: a checkpoint (and/or a random-feature stage) to a verified ONNX bundle.

Host side: needs torch and onnx (``edgecl[host]``).
"""

from __future__ import annotations

import argparse
from typing import Any

from edgecl.commands._common import (
    UsageError,
    _write_json,
)

# -- export ------------------------------------------------------------------

_EXPORT_EPILOG = """\
examples:
  edgecl export --checkpoint imu.safetensors --out my-bundle
      ONNX model + manifest + an SLDA head fitted on the checkpoint's pre-training data
  edgecl export --checkpoint imu.safetensors --out my-bundle-int8 --quantize int8 --json -
  edgecl export --checkpoint mnist.safetensors --out mnist-bundle --data ../shared/data/mnist.npz
  edgecl export --checkpoint imu.safetensors --out imu-relu --random-features 1024
      the extractor followed by a random ReLU projection to 1,024 features (RanPAC)
  edgecl export --random-features 2048 --data ../shared/data/mnist.npz --out mnist-rff
      no checkpoint: random Fourier features of the raw pixels (RanDumb), an SLDA
      head fitted on them; gamma by the median heuristic on the first 1,000 images
  edgecl export --random-features 512 --input-shape 100 6 --gamma 0.01 --out rff-only
      the stage alone, no data and no head

Random features (--random-features M): W (and b) are drawn from --seed alone
and stored in the graph as float32 constants; the manifest records
random_features {kind, m, gamma, seed, input_dim}, and the graph is checked
against the numpy definition (edgecl.runtime.random_features) to 1e-5. rff:
sqrt(2/M) cos(Wx + b), W ~ N(0, 2 gamma), approximating exp(-gamma |x - x'|^2);
without --gamma, gamma = 1 / median |x_i - x_j|^2 over all pairs of the first
1,000 training inputs (normalised as the stage sees them). relu: max(0, Wz),
W ~ N(0, 1/d). Default kind: relu after a checkpoint, rff on raw inputs.

With IMU data an slda/ncm head standardises embeddings per user: it is fitted on
embeddings z-scored per pre-training subject, and a device starts from the
average subject's statistics (--no-standardize: plain embeddings). Classes the
checkpoint was pre-trained without (`edgecl pretrain --exclude-classes`) stay
out of the head too, and the manifest lists them (excluded_classes).

The bundle (model.onnx, manifest.json, head.safetensors) is what `edgecl run`
and `edgecl bench` load with --bundle; every file is sha256-checked on load.
With --sign-key the manifest is signed (manifest.sig); devices configured with
the public key (EDGECL_BUNDLE_PUBKEY or the profile's bundle_public_key) load
only bundles signed by it. Keys: python tools/bundle_keys.py keygen --out KEYS/name
"""


def add_export(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export",
        parents=[common],
        help="export a trained checkpoint to a device bundle (needs edgecl[host])",
        description="Export a checkpoint's extractor to ONNX, check onnxruntime against torch,\n"
        "fit an initial streaming head on the pre-training embeddings and write a\n"
        "verified bundle directory.",
        epilog=_EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        metavar="CKPT",
        help="from `edgecl pretrain` (omit for a random-feature stage alone)",
    )
    p.add_argument("--out", required=True, metavar="B", help="bundle directory to write")
    p.add_argument("--quantize", choices=["int8"], help="ship a dynamically int8-quantised model")
    p.add_argument(
        "--data",
        metavar="D.npz",
        help="pre-training data for the head (default: the checkpoint's provenance.data)",
    )
    p.add_argument(
        "--head",
        choices=["slda", "ncm", "softmax", "none"],
        default="slda",
        help="initial learner fitted on the pre-training embeddings (default: slda)",
    )
    p.add_argument(
        "--no-standardize",
        action="store_true",
        help="fit the head on plain embeddings, not per-subject standardised ones",
    )
    p.add_argument("--max-classes", type=int, metavar="N", help="device learner classes "
                   "(default: max(32, classes))")  # fmt: skip
    p.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset (default 17)")
    p.add_argument("--seed", type=int, default=0, help="seeds the head, the parity inputs and "
                   "the random features' W")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--sign-key", metavar="KEY", help="Ed25519 private key (PEM) to sign the "
                   "manifest with (manifest.sig; needs edgecl[sign])")  # fmt: skip
    p.add_argument("--json", metavar="OUT", help="write the export report as JSON ('-' = stdout)")
    r = p.add_argument_group("random features")
    r.add_argument("--random-features", type=int, metavar="M", help="append a random-feature "
                   "stage of M features (alone, without --checkpoint)")  # fmt: skip
    r.add_argument("--kind", choices=["rff", "relu"], help="rff (random Fourier features) "
                   "or relu (random ReLU projection); default relu after a checkpoint, "
                   "else rff")  # fmt: skip
    r.add_argument("--gamma", type=float, metavar="G", help="rff kernel width (default: the "
                   "median heuristic on the first 1,000 training inputs)")  # fmt: skip
    r.add_argument("--input-shape", type=int, nargs="+", metavar="D", help="stage alone: one "
                   "input's shape (default: the --data inputs' shape)")  # fmt: skip
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """``edgecl export``: checkpoint → bundle directory; prints a short summary."""
    try:
        from edgecl.host.export import export_bundle
    except ImportError as exc:
        raise ImportError(
            f"edgecl export needs torch and onnx ({exc.name or exc} missing): "
            "pip install 'edgecl[host]'"
        ) from None
    stage_flags = {"--kind": args.kind, "--gamma": args.gamma, "--input-shape": args.input_shape}
    if args.random_features is None:
        given = [k for k, v in stage_flags.items() if v is not None]
        if given:
            raise UsageError(f"{given[0]} applies with --random-features M")
        if args.checkpoint is None:
            raise UsageError("--checkpoint is required (or --random-features M for a stage alone)")
    if args.checkpoint is None:
        if args.quantize:
            raise UsageError("--quantize: a stage alone is not quantised (its W stays exact)")
        from edgecl.host.stage_bundle import export_stage_bundle

        report = export_stage_bundle(
            args.out,
            m=args.random_features,
            kind=args.kind or "rff",
            input_shape=args.input_shape,
            **_shared_options(args),
        )
        return _report(report, args)
    if args.input_shape is not None:
        raise UsageError("--input-shape is for a stage alone; a checkpoint has its own shape")
    report = export_bundle(
        args.checkpoint,
        args.out,
        quantize=args.quantize,
        random_features=args.random_features,
        kind=args.kind or "relu",
        **_shared_options(args),
    )
    return _report(report, args)


def _shared_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options a checkpoint export and a stage-alone export take alike."""
    return {
        "data": args.data,
        "head": None if args.head == "none" else args.head,
        "max_classes": args.max_classes,
        "opset": args.opset,
        "seed": args.seed,
        "overwrite": args.force,
        "sign_key": args.sign_key,
        "standardize": not args.no_standardize,
        "gamma": args.gamma,
    }


def _report(report: Any, args: argparse.Namespace) -> int:
    if args.json:
        _write_json(report.to_json(), args.json)
    if args.json != "-":
        print(report.summary())
    return 0
