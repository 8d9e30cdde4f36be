"""``edgecl export``: a trained checkpoint → a verified, device-ready bundle.

Steps (each checked, each failure one readable error):

1. Load the checkpoint (:func:`edgecl.host.checkpoint.load_checkpoint`, sha256
   verified) and take its extractor, in eval mode.
2. Fold the input normalisation ``(x - mean) / std`` into the graph, so the
   device feeds raw sensor windows and nothing can apply it twice or forget it
   (the manifest records it with ``"in_graph": true``).
3. Export to ONNX (opset 17 by default, dynamic batch axis, TorchScript
   exporter with constant folding — its output is byte-for-byte repeatable)
   and validate it with ``onnx.checker`` (full check, with shape inference).
4. Parity: onnxruntime against torch eager on at least 64 inputs (real
   pre-training inputs when the data is at hand, plus random ones); a max
   absolute difference above ``tolerance`` (1e-4) fails the export.
   With ``random_features`` (``--random-features M``) a random-feature stage
   (``relu`` by default, or ``rff``; :mod:`edgecl.host.random_features`) is
   appended to the graph and checked twice: alone against its numpy definition
   (1e-5), and the whole graph against torch followed by the numpy stage; the
   embedding is then the stage's output and the manifest records
   ``random_features``. A stage alone on raw inputs, with no checkpoint, is
   :func:`~edgecl.host.stage_bundle.export_stage_bundle`.
5. Optional ``int8``: dynamic quantisation by onnxruntime (weights uint8,
   activations quantised per call); the size change, the embedding change and
   the held-out accuracy change of the head are measured and recorded.
6. Initial head (:mod:`edgecl.host.head_fit`): a
   :class:`~edgecl.learner.StreamingLearner` (SLDA by default) fitted with
   ``learn_many`` on the pre-training embeddings computed by the exported
   model itself, so a device starts useful. Classes the
   checkpoint was pre-trained without (``provenance.excluded_classes``) are
   left out here too, so the head has never seen them. With subjects (IMU
   data) and an NCM/SLDA head the learner standardises per user
   (``standardize``, AdaBN-style, see :mod:`edgecl.learner.usernorm`): it is
   fitted on embeddings z-scored per pre-training subject, and the average
   subject's statistics become a new user's prior (``standardize=False``,
   ``--no-standardize``, turns this off). Held-out accuracy is measured twice:
   ``heldout``, the head frozen as shipped (prior statistics, no user data),
   and ``heldout_standardised``, each held-out subject's statistics first
   observed from all of that subject's windows (no labels).
7. Write ``model.onnx``, ``head.safetensors`` and ``manifest.json`` through
   :func:`edgecl.runtime.bundle.write_bundle` (temp dir, fsync, rename) and
   load the result back with the device-side :class:`~edgecl.runtime.bundle.Bundle`.
   With ``sign_key`` (``--sign-key``, an Ed25519 private key in PEM) also
   ``manifest.sig``, the manifest's signature (:mod:`edgecl.runtime.signing`);
   the key is read before any work, so a bad key fails at once.

The manifest carries no timestamps or absolute paths, so exporting the same
checkpoint twice gives identical bundles (``make bundle-check``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgecl.errors import BundleError, ConfigError
from edgecl.host.checkpoint import load_checkpoint, read_checkpoint_meta
from edgecl.host.export_report import TOLERANCE, ExportReport
from edgecl.host.head_fit import HeadData, fit_and_measure, head_config, head_data, head_provenance
from edgecl.host.onnx_export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    Normalised,
    onnx_bytes,
    parity,
    quantize_int8,
)
from edgecl.learner.state import state_bytes
from edgecl.runtime.bundle import FORMAT, FORMAT_VERSION, Bundle, write_bundle
from edgecl.runtime.signing import load_private_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "TOLERANCE",
    "ExportReport",
    "excluded_classes",
    "export_bundle",
    "find_pretraining_data",
]

QUANTIZE = ("int8",)
# Provenance keys that change from run to run without changing the model.
_VOLATILE = {"date", "time", "timestamp", "seconds", "wall_s", "host", "hostname", "path"}


# -- data ------------------------------------------------------------------------


def find_pretraining_data(meta: dict[str, Any]) -> Path | None:
    """The checkpoint's pre-training ``.npz``, when it is found and its sha256 matches.

    ``provenance.data`` holds file names (``edgecl pretrain`` records no machine
    paths); they are looked up as given, then in the package's embedded data.
    Only a single-file pre-training qualifies.
    """
    from edgecl.host.data import DEFAULT_IMU, file_sha256

    prov = meta.get("provenance") or {}
    names, sums = prov.get("data"), prov.get("sha256_data")
    if isinstance(names, str):
        names, sums = [names], [sums] if isinstance(sums, str) else sums
    if not isinstance(names, list) or len(names) != 1:
        return None
    want = sums[0] if isinstance(sums, list) and sums else None
    for cand in (Path(str(names[0])), DEFAULT_IMU.parent / Path(str(names[0])).name):
        if cand.is_file() and (want is None or file_sha256(cand) == want):
            return cand
    return None


def excluded_classes(meta: dict[str, Any], n_classes: int) -> list[int]:
    """The class ids the checkpoint was pre-trained without (``provenance.excluded_classes``).

    >>> excluded_classes({"provenance": {"excluded_classes": [6, 5]}}, 7)
    [5, 6]
    >>> excluded_classes({}, 7)
    []
    """
    raw = (meta.get("provenance") or {}).get("excluded_classes") or []
    ok = isinstance(raw, list) and all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n_classes for c in raw
    )
    if not ok or len(set(raw)) != len(raw):
        raise ConfigError(
            f"checkpoint provenance.excluded_classes = {raw!r}: need distinct class ids "
            f"in [0, {n_classes})"
        )
    return sorted(raw)


# -- export ----------------------------------------------------------------------


def export_bundle(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    quantize: str | None = None,
    head: str | None = "slda",
    max_classes: int | None = None,
    budget_bytes: int | None = None,
    buffer_capacity: int | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = TOLERANCE,
    limit: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    sign_key: str | os.PathLike[str] | None = None,
    standardize: bool = True,
    random_features: int | None = None,
    kind: str = "relu",
    gamma: float | None = None,
) -> ExportReport:
    """Export ``checkpoint`` to a bundle directory ``out``; see the module docstring.

    Parameters
    ----------
    checkpoint : path-like
        A checkpoint written by ``edgecl pretrain`` / :func:`save_checkpoint`.
    out : path-like
        Bundle directory to create (replaced only with ``overwrite``).
    data : path-like, optional
        The pre-training ``.npz``, for the head, the held-out accuracy and the
        parity inputs. Default: the checkpoint's ``provenance.data`` when that
        file exists; without data the bundle has no head and parity uses random
        inputs.
    quantize : {"int8"}, optional
        Ship a dynamically quantised model instead of the float one.
    head : {"slda", "ncm", "softmax"} or None
        Kind of the initial learner; None for no head.
    max_classes : int, optional
        Classes the device learner can hold (default ``max(32, n_classes)``, room
        for new classes learned on the device).
    budget_bytes, buffer_capacity : int
        Learner budget (default 4 MB, or the head's own size if more); the buffer
        is empty for slda/ncm (they do not replay; keeps ``head.safetensors``
        small) and 1000 slots for softmax by default.
    opset : int
        ONNX opset (17 by default).
    tolerance : float
        Largest allowed |torch − onnxruntime| in the parity check.
    limit : int, optional
        Fit the head on at most this many pre-training inputs (tests).
    seed : int
        Seeds the learner and the random parity inputs.
    overwrite : bool
        Replace an existing bundle at ``out``.
    sign_key : path-like, optional
        Ed25519 private key (unencrypted PKCS#8 PEM) to sign the manifest with;
        needs ``cryptography`` (``pip install 'edgecl[sign]'``).
    standardize : bool
        Per-user embedding standardisation for an NCM/SLDA head when the data
        has subjects (IMU): the head is fitted on embeddings z-scored per
        pre-training subject. Ignored for softmax heads and image data.
    random_features : int, optional
        Append a random-feature stage of this many features to the extractor
        (:mod:`edgecl.host.random_features`); the bundle's embedding is then the
        stage's output, and the manifest records ``random_features``.
    kind : {"relu", "rff"}
        The stage: ``relu`` (RanPAC) or ``rff`` (random Fourier features).
    gamma : float, optional
        The ``rff`` kernel width; default: the median heuristic on the first
        pre-training embeddings (needs the data).
    """
    signer = None if sign_key is None else load_private_key(sign_key)
    if quantize is not None and quantize not in QUANTIZE:
        raise ConfigError(f"quantize = {quantize!r}: must be one of {', '.join(QUANTIZE)}")
    if quantize is not None and random_features is not None:
        raise ConfigError(
            "--quantize with --random-features: the stage's W must stay the float32 "
            "values its seed makes (the manifest promises them)"
        )
    torch.manual_seed(seed)
    model, meta = load_checkpoint(checkpoint)
    info = read_checkpoint_meta(checkpoint)
    spec = model.spec
    in_shape = tuple(int(s) for s in spec["in_shape"])
    norm = meta.get("normalisation") or {"mean": [0.0], "std": [1.0]}
    mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    if len(mean) not in (1, in_shape[-1]) or len(std) != len(mean) or min(std) <= 0:
        raise ConfigError(
            f"{checkpoint}: normalisation has {len(mean)} means / {len(std)} stds; need 1 or "
            f"{in_shape[-1]} (the last input axis) each, and std > 0"
        )
    wrapped = Normalised(model.extractor, mean, std).eval()
    float_model = onnx_bytes(wrapped, in_shape, opset)

    n_classes = int(spec["n_classes"])
    class_names = [str(c) for c in meta.get("class_names") or range(n_classes)]
    excluded = excluded_classes(meta, len(class_names))

    # Data: the checkpoint's pre-training file unless told otherwise.
    if data is None:
        data = find_pretraining_data(meta)
    hd = None if data is None else head_data(data, meta, limit, excluded)

    rng = np.random.default_rng(seed)
    rand = rng.standard_normal((64, *in_shape)).astype(np.float32) * np.float32(std) + np.float32(
        mean
    )
    probe = rand if hd is None else np.concatenate([hd.x_test[:64], hd.x_train[:64], rand])
    diff = parity(wrapped, float_model, probe)
    if not diff <= tolerance:
        raise BundleError(
            f"parity check failed: onnxruntime and torch differ by up to {diff:.3g} "
            f"(limit {tolerance:g}) over {len(probe)} inputs"
        )
    rf, stage = None, None
    if random_features is not None:
        from edgecl.host.random_features import with_stage

        float_model, rf, stage, diff = with_stage(
            float_model, probe, _torch(wrapped, probe), None if hd is None else hd.x_train,
            m=random_features, kind=kind, gamma=gamma, seed=seed, opset=opset,
            tolerance=tolerance,
        )  # fmt: skip
    out_dim = model.embed_dim if rf is None else rf.m

    def reference(x: np.ndarray) -> np.ndarray:
        e = _torch(wrapped, x)
        return e if rf is None else rf.transform(e, np.float64)

    shipped = float_model if quantize is None else quantize_int8(float_model)
    accuracy: dict[str, Any] = {"head": head}
    quant: dict[str, Any] | None = None
    head_bytes = None
    standardised = False
    if head is not None and hd is not None:
        cfg = head_config(
            out_dim, head, hd, len(class_names), max_classes, budget_bytes, buffer_capacity,
            standardize, seed,
        )  # fmt: skip
        standardised = cfg.standardize
        learner, measured, _, Ete = fit_and_measure(float_model, hd, cfg)
        accuracy |= measured
        if quantize is not None:
            # The int8 model's own head; its held-out fields are the same rows as above.
            learner_q, measured_q, _, Qte = fit_and_measure(shipped, hd, cfg)
            quant = {
                "float_heldout_accuracy": accuracy["heldout"],
                "int8_heldout_accuracy": measured_q["heldout"],
                "embedding_max_abs_diff": float(np.abs(Qte - Ete).max()),
            }
            accuracy |= measured_q
            learner = learner_q
        head_bytes = state_bytes(learner)
    if quantize is not None:
        quant = {
            **(quant or {}),
            "mode": "int8-dynamic",
            "weights": "uint8",
            "float_bytes": len(float_model),
            "int8_bytes": len(shipped),
            "size_ratio": len(shipped) / len(float_model),
        }

    manifest = _manifest(
        spec, meta, info, in_shape, norm, class_names, opset, diff, len(probe), hd, accuracy,
        quant, head if head_bytes is not None else None, standardised, excluded,
    )  # fmt: skip
    if rf is not None and stage is not None:
        manifest["embedding_dim"] = out_dim
        manifest["model"]["output"]["shape"] = ["batch", out_dim]
        manifest["random_features"] = rf.to_json()
        manifest["parity"]["stage"] = stage["parity"]
        manifest["provenance"]["random_features"] = {"gamma_source": stage["gamma_source"]}
    bundle = write_verified(
        out, manifest, shipped, head_bytes, overwrite=overwrite, signer=signer,
        check=probe[:8], reference=reference if quantize is None else None, tolerance=tolerance,
    )  # fmt: skip
    return ExportReport.written(
        bundle, shipped, head_bytes, diff, len(probe), float_bytes=len(float_model),
        accuracy=accuracy, stage=stage,
        parity_against="torch" if stage is None else "torch + numpy random features",
        quantize=quantize, quantization=quant,
    )  # fmt: skip


def write_verified(
    out: str | os.PathLike[str],
    manifest: dict[str, Any],
    model: bytes,
    head: bytes | None,
    *,
    overwrite: bool,
    signer: Ed25519PrivateKey | None,
    check: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray] | None,
    tolerance: float,
) -> Bundle:
    """Write the bundle, then read it back through the device path and compare.

    The written model's embeddings of ``check`` must match ``reference`` within
    ``tolerance``; ``reference=None`` skips the comparison (a quantised model
    differs from the float one by design).
    """
    bundle = write_bundle(out, manifest, model, head, overwrite=overwrite, sign_key=signer)
    ex = bundle.extractor()
    if reference is not None and float(np.abs(ex.embed_many(check) - reference(check)).max()) > (
        tolerance
    ):
        raise BundleError(f"{bundle.path}: the written bundle does not reproduce the export")
    return bundle


def _torch(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def _manifest(
    spec: dict[str, Any],
    meta: dict[str, Any],
    info: dict[str, Any],
    in_shape: tuple[int, ...],
    norm: dict[str, Any],
    class_names: list[str],
    opset: int,
    diff: float,
    n_probe: int,
    hd: HeadData | None,
    accuracy: dict[str, Any],
    quant: dict[str, Any] | None,
    head: str | None,
    standardize: bool,
    excluded: list[int],
) -> dict[str, Any]:
    from edgecl import __version__

    prov = {k: v for k, v in (meta.get("provenance") or {}).items() if k not in _VOLATILE}
    if isinstance(prov.get("data"), str):
        prov["data"] = Path(prov["data"]).name  # no machine-specific absolute paths
    prov["checkpoint_arrays_sha256"] = info.get("arrays_sha256")
    prov["spec"] = spec
    prov["export"] = {
        "edgecl": __version__,
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "exporter": "torch.onnx.export (TorchScript), constant folding",
    }
    if hd is not None:
        prov["head_data"] = head_provenance(hd)
    m: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {
            "arch": spec["arch"],
            "opset": opset,
            "input": {
                "name": INPUT_NAME,
                "shape": ["batch", *in_shape],
                "dtype": "float32",
            },
            "output": {
                "name": OUTPUT_NAME,
                "shape": ["batch", int(spec["embed_dim"])],
                "dtype": "float32",
            },  # fmt: skip
            "quantization": quant,
        },
        "embedding_dim": int(spec["embed_dim"]),
        "class_names": class_names,
        "excluded_classes": excluded,
        "normalisation": {
            "mean": [float(v) for v in norm["mean"]],
            "std": [float(v) for v in norm["std"]],
            "axis": -1,
            "in_graph": True,
        },
        "window": manifest_window(meta.get("window")),
        "parity": {"max_abs_diff": diff, "n": n_probe, "tolerance": TOLERANCE},
        "accuracy": accuracy,
        "provenance": prov,
    }
    if head is not None:
        m["head"] = {"kind": head, "standardize": standardize}
    return m


def manifest_window(window: dict[str, Any] | None) -> dict[str, Any] | None:
    """The manifest's ``window`` (IMU row layout) from the data's, in plain JSON types.

    >>> manifest_window({"length": 100.0, "hop": 50, "channels": ("ax",), "rate_hz": 50})
    {'length': 100, 'hop': 50, 'channels': ['ax'], 'rate_hz': 50}
    >>> manifest_window(None) is None
    True
    """
    if window is None:
        return None
    return {
        "length": int(window["length"]),
        "hop": int(window["hop"]),
        "channels": [str(c) for c in window["channels"]],
        "rate_hz": window.get("rate_hz"),
    }
