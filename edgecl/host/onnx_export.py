"""Torch extractor → ONNX bytes: export, check, quantise, and compare with torch.

* :class:`Normalised` folds ``(x - mean) / std`` into the exported graph, so
  the device feeds raw sensor values.
* :func:`onnx_bytes` — the TorchScript exporter (opset 17 by default, dynamic
  batch axis named ``batch``, constant folding, so BatchNorm disappears into
  the convolutions), validated with ``onnx.checker``; the same weights give
  the same bytes every time.
* :func:`quantize_int8` — onnxruntime dynamic quantisation.
* :func:`parity` — max |torch − onnxruntime| through the device's own
  :class:`~edgecl.runtime.extractor.OnnxExtractor`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from edgecl.errors import BundleError, ConfigError
from edgecl.runtime.extractor import OnnxExtractor

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "Normalised",
    "onnx_bytes",
    "parity",
    "quantize_int8",
]

DEFAULT_OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "embedding"


class Normalised(nn.Module):
    """``extractor((x - mean) / std)``; mean/std broadcast along the last input axis."""

    def __init__(self, extractor: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.extractor = extractor
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor((x - self.mean) / self.std)


def onnx_bytes(module: nn.Module, in_shape: Sequence[int], opset: int = DEFAULT_OPSET) -> bytes:
    """Serialise ``module`` (input ``(batch, *in_shape)`` → ``(batch, dim)``) to ONNX bytes.

    Uses the TorchScript exporter with constant folding (BatchNorm folded into the
    convolutions); the dynamo exporter would need onnxscript, and this one gives the
    same bytes every time for the same weights. The model is checked with
    ``onnx.checker`` (full check) before it is returned.

    >>> m = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    >>> proto = onnx.load_from_string(onnx_bytes(m, (4,)))
    >>> [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    ['batch', 4]
    """
    if not 13 <= opset <= 21:
        raise ConfigError(f"opset = {opset}: must be in [13, 21]")
    module = module.eval()
    dummy = torch.zeros(1, *in_shape, dtype=torch.float32)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx"):
        # The TorchScript exporter announces its deprecation on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module,
            (dummy,),
            buf,
            dynamo=False,
            export_params=True,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = "edgecl extractor"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise BundleError(f"exported ONNX model fails onnx.checker: {exc}") from None
    return proto.SerializeToString(deterministic=True)


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Silence chatty third-party loggers (root included) for the duration."""
    targets = [logging.getLogger(n) for n in loggers] + [logging.getLogger()]
    levels = [t.level for t in targets]
    for t in targets:
        t.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for t, lvl in zip(targets, levels, strict=True):
            t.setLevel(lvl)


def quantize_int8(model: bytes) -> bytes:
    """Dynamic int8 quantisation of ``model`` (onnxruntime.quantization).

    Weights become uint8: onnxruntime's CPU ``ConvInteger`` kernel only takes uint8
    weights, and uint8 gave the smaller embedding error on the imu-cnn here.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="edgecl-q-") as d:
        src, dst = Path(d) / "float.onnx", Path(d) / "int8.onnx"
        src.write_bytes(model)
        with _quiet("onnxruntime", "onnxruntime.quantization"):
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)
        proto = onnx.load(dst)
    proto.doc_string = "edgecl extractor (int8, dynamic quantisation)"
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString(deterministic=True)


def parity(module: nn.Module, model: bytes, inputs: np.ndarray, batch: int = 64) -> float:
    """Max absolute difference between torch eager and onnxruntime on ``inputs``.

    onnxruntime runs the device path: :class:`OnnxExtractor` with the default
    profile, both ``embed`` (batch of one) and ``embed_many``.
    """
    ex = OnnxExtractor(model, batch=batch)
    with torch.no_grad():
        ref = module.eval()(torch.from_numpy(np.ascontiguousarray(inputs, np.float32))).numpy()
    got = ex.embed_many(inputs)
    one = np.stack([ex.embed(x) for x in inputs[: min(len(inputs), 16)]])
    diff = float(np.abs(got - ref).max())
    return max(diff, float(np.abs(one - ref[: len(one)]).max()))
