"""A bundle whose model is a random-feature stage alone, on raw inputs (no trained extractor).

RanDumb (Prabhu et al., NeurIPS 2024) in edgecl's terms: random Fourier
features of the raw input (:mod:`edgecl.runtime.random_features`) are the
frozen extractor, and a streaming LDA head learns on them. The graph is
:func:`edgecl.host.random_features.stage_model`, with the data's normalisation
folded in front so the device feeds raw values as for any bundle (``uint8``
images: ``x / 255``, so the stage sees pixels in [0, 1]; IMU windows:
per-channel z-scores). ``edgecl export --random-features M [--input-shape D1
...] [--data D.npz]``.

Steps: read the data (when given) as ``edgecl pretrain`` would; choose γ (given,
or the median heuristic on the first 1,000 normalised training inputs in file
order); build the graph and check it against the numpy definition on 256
inputs (data and random ones, ≤ 1e-5); fit the head through onnxruntime on the
training split and measure the held-out accuracy; write and sign the bundle
(:func:`edgecl.runtime.bundle.write_bundle`) and read it back through the
device path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edgecl.errors import ConfigError
from edgecl.host.data import load_training_data
from edgecl.host.export import ExportReport, manifest_window, write_verified
from edgecl.host.head_fit import HeadData, fit_and_measure, head_config, head_provenance
from edgecl.host.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME
from edgecl.host.random_features import (
    PARITY_N,
    STAGE_TOLERANCE,
    check_parity,
    random_like,
    stage_model,
    stage_parity,
    stage_report,
)
from edgecl.learner.state import state_bytes
from edgecl.runtime.bundle import FORMAT, FORMAT_VERSION
from edgecl.runtime.random_features import GAMMA_SAMPLES, RandomFeatures, make_stage
from edgecl.runtime.signing import load_private_key

__all__ = ["export_stage_bundle"]


def export_stage_bundle(
    out: str | os.PathLike[str],
    *,
    m: int,
    kind: str = "rff",
    gamma: float | None = None,
    input_shape: Sequence[int] | None = None,
    data: str | os.PathLike[str] | None = None,
    head: str | None = "slda",
    max_classes: int | None = None,
    budget_bytes: int | None = None,
    opset: int = DEFAULT_OPSET,
    limit: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    sign_key: str | os.PathLike[str] | None = None,
    standardize: bool = True,
    window: int | None = None,
    hop: int | None = None,
) -> ExportReport:
    """A bundle whose model is the random-feature stage alone; see the module docstring.

    ``input_shape`` may be left out with ``data`` (taken from the data; given,
    it must hold as many values). With ``data`` the inputs are normalised as
    ``edgecl pretrain`` would (``x / 255`` for ``uint8`` images, per-channel
    z-scores for IMU windows) inside the graph, γ defaults to the median
    heuristic on the first training inputs (file order), and a head is fitted
    on the stage's output of the training split, through onnxruntime (held-out
    accuracy on the test split, or the held-out subjects for IMU data).
    ``limit``, ``seed``, ``head``, ``max_classes``, ``budget_bytes``,
    ``standardize``, ``overwrite`` and ``sign_key`` are as for
    :func:`~edgecl.host.export.export_bundle`; ``seed`` also seeds ``W``.
    ``window`` and ``hop`` cut IMU rows (default 2 s, half of that).
    """
    signer = None if sign_key is None else load_private_key(sign_key)
    hd, norm, spec, names, samples = None, None, None, [], None
    if data is not None:
        td = load_training_data(data, window=window, hop=hop, limit=limit, seed=seed)
        shape = tuple(int(d) for d in (input_shape or td.in_shape))
        if math.prod(shape) != math.prod(td.in_shape):
            raise ConfigError(
                f"--input-shape {list(shape)} holds {math.prod(shape)} values; the inputs of "
                f"{data} have shape {list(td.in_shape)}"
            )
        norm = {k: [float(v) for v in td.normalisation[k]] for k in ("mean", "std")}
        if shape != tuple(td.in_shape) and len(norm["mean"]) > 1:
            raise ConfigError(
                f"--input-shape {list(shape)}: a per-channel normalisation needs the data's "
                f"own shape {list(td.in_shape)}"
            )
        hd = HeadData.from_training(td, shape)
        spec = td.window if shape == tuple(td.in_shape) else None
        names = [str(c) for c in td.class_names]
        x_first = td.x_train[:GAMMA_SAMPLES]  # normalised: what the stage sees
        samples = lambda: x_first  # noqa: E731
    elif input_shape is None:
        raise ConfigError("a stage-only bundle needs --input-shape D1 [D2 ...] or --data")
    else:
        shape = tuple(int(d) for d in input_shape)
    if not shape or min(shape) < 1:
        raise ConfigError(f"--input-shape {list(shape)}: sizes must be >= 1")
    rf, source = make_stage(kind, m, math.prod(shape), gamma=gamma, seed=seed, samples=samples)
    model = stage_model(rf, shape, norm, opset)

    def reference(x: np.ndarray) -> np.ndarray:
        if norm is not None:
            x = (x - np.float32(norm["mean"])) / np.float32(norm["std"])
        return rf.transform(x, np.float64)

    # Parity: data inputs plus random ones, onnxruntime against the numpy definition.
    rng = np.random.default_rng(seed)
    parts = [] if hd is None else [hd.x_test[: PARITY_N // 3], hd.x_train[: PARITY_N // 3]]
    n_rand = PARITY_N - sum(len(p) for p in parts)
    parts.append(random_like(rng, None if hd is None else hd.x_train, shape, n_rand))
    probe = np.concatenate(parts).astype(np.float32)
    diff = stage_parity(model, probe, reference(probe))
    check_parity(diff, STAGE_TOLERANCE, len(probe), "the numpy random features")

    accuracy: dict[str, Any] = {"head": head}
    head_bytes, standardised = None, False
    if head is not None and hd is not None:
        cfg = head_config(
            rf.m, head, hd, len(names), max_classes, budget_bytes, None, standardize, seed
        )
        standardised = cfg.standardize
        learner, measured, _, _ = fit_and_measure(model, hd, cfg)
        accuracy |= measured
        head_bytes = state_bytes(learner)
    manifest = _stage_manifest(rf, source, shape, norm, spec, names, opset, diff, len(probe))
    manifest["accuracy"] = accuracy
    if hd is not None:
        manifest["provenance"]["head_data"] = head_provenance(hd)
    if head_bytes is not None:
        manifest["head"] = {"kind": head, "standardize": standardised}
    bundle = write_verified(
        out, manifest, model, head_bytes, overwrite=overwrite, signer=signer,
        check=probe[:8], reference=reference, tolerance=STAGE_TOLERANCE,
    )  # fmt: skip
    return ExportReport.written(
        bundle, model, head_bytes, diff, len(probe), float_bytes=len(model), accuracy=accuracy,
        stage=stage_report(rf, source, diff, len(probe)), parity_against="numpy",
        parity_tolerance=STAGE_TOLERANCE,
    )  # fmt: skip


def _stage_manifest(
    rf: RandomFeatures,
    source: str,
    shape: tuple[int, ...],
    norm: dict[str, list[float]] | None,
    window: dict[str, Any] | None,
    names: list[str],
    opset: int,
    diff: float,
    n: int,
) -> dict[str, Any]:
    from edgecl import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {
            "arch": "random-features",
            "opset": opset,
            "input": {"name": INPUT_NAME, "shape": ["batch", *shape], "dtype": "float32"},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", rf.m], "dtype": "float32"},
            "quantization": None,
        },
        "embedding_dim": rf.m,
        "class_names": names,
        "excluded_classes": [],
        "normalisation": None if norm is None else {**norm, "axis": -1, "in_graph": True},
        "window": manifest_window(window),
        "parity": {"max_abs_diff": diff, "n": n, "tolerance": STAGE_TOLERANCE},
        "random_features": rf.to_json(),
        "provenance": {
            "random_features": {"gamma_source": source},
            "export": {
                "edgecl": __version__,
                "onnx": onnx.__version__,
                "onnxruntime": ort.__version__,
                "exporter": "onnx.helper (edgecl.host.random_features)",
            },
        },
    }
