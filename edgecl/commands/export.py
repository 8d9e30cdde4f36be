"""``edgecl export``: a checkpoint to a verified ONNX bundle (host side, needs torch)."""

from __future__ import annotations

import argparse

from edgecl.commands._common import (
    _write_json,
)

# -- export ------------------------------------------------------------------

_EXPORT_EPILOG = """\
examples:
  edgecl export --checkpoint imu.safetensors --out my-bundle
      ONNX model + manifest + an SLDA head fitted on the checkpoint's pre-training data
  edgecl export --checkpoint imu.safetensors --out my-bundle-int8 --quantize int8 --json -
  edgecl export --checkpoint mnist.safetensors --out mnist-bundle --data ../shared/data/mnist.npz

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
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="from `edgecl pretrain`")
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
    p.add_argument("--seed", type=int, default=0, help="seeds the head and parity inputs")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--sign-key", metavar="KEY", help="Ed25519 private key (PEM) to sign the "
                   "manifest with (manifest.sig; needs edgecl[sign])")  # fmt: skip
    p.add_argument("--json", metavar="OUT", help="write the export report as JSON ('-' = stdout)")
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
    report = export_bundle(
        args.checkpoint,
        args.out,
        data=args.data,
        quantize=args.quantize,
        head=None if args.head == "none" else args.head,
        max_classes=args.max_classes,
        opset=args.opset,
        seed=args.seed,
        overwrite=args.force,
        sign_key=args.sign_key,
        standardize=not args.no_standardize,
    )
    if args.json:
        _write_json(report.to_json(), args.json)
    if args.json != "-":
        print(report.summary())
    return 0
