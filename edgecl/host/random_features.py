"""Random-feature stages as ONNX: the graph and its parity with the numpy definition.

The stage's definition lives in :mod:`edgecl.runtime.random_features` (numpy);
this module writes the same computation as ONNX nodes, with ``W`` (as ``Wᵀ``,
``(d, M)``) and ``b`` as float32 constants of the graph:

* ``rff``  — ``Flatten → MatMul Wᵀ → Add b → Cos → Mul √(2/M)``
* ``relu`` — ``Flatten → MatMul Wᵀ → Relu``

Two ways to ship it:

* :func:`append_stage` appends the nodes to a trained extractor's graph (the
  extractor's ``embedding`` feeds the stage, whose output becomes the new
  ``embedding``); ``edgecl export --checkpoint C --random-features M``.
* :func:`stage_model` is the stage alone on raw inputs, with the data's
  normalisation folded in front (``x / 255`` for ``uint8`` images); a bundle of
  it, with a head fitted on data, is :mod:`edgecl.host.stage_bundle`
  (``edgecl export --random-features M --input-shape 28 28 [--data D.npz]``).

:func:`stage_parity` runs a graph in onnxruntime (the device's
:class:`~edgecl.runtime.extractor.OnnxExtractor`) against the numpy
definition; an export fails above :data:`STAGE_TOLERANCE` (1e-5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgecl.errors import BundleError, ConfigError
from edgecl.host.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME
from edgecl.runtime.extractor import OnnxExtractor
from edgecl.runtime.random_features import GAMMA_SAMPLES, RandomFeatures, make_stage

__all__ = [
    "STAGE_TOLERANCE",
    "append_stage",
    "check_parity",
    "random_like",
    "stage_model",
    "stage_parity",
    "stage_report",
    "with_stage",
]

STAGE_TOLERANCE = 1e-5
PARITY_N = 256  # inputs in each parity check
_PREFIX = "random_features/"


# -- graph ---------------------------------------------------------------------------


def _const(name: str, a: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(a, dtype=np.float32), name)


def _stage_nodes(rf: RandomFeatures, inp: str, out: str) -> tuple[list, list]:
    """Nodes and constants computing ``rf`` from the 2-D tensor ``inp`` into ``out``."""
    p = _PREFIX
    w, b = rf.weights
    inits = [_const(p + "W_t", w.T)]
    if rf.kind == "relu":
        nodes = [
            helper.make_node("MatMul", [inp, p + "W_t"], [p + "Wx"], name=p + "matmul"),
            helper.make_node("Relu", [p + "Wx"], [out], name=p + "relu"),
        ]
        return nodes, inits
    assert b is not None
    inits += [_const(p + "b", b), _const(p + "scale", np.array(rf.scale))]
    nodes = [
        helper.make_node("MatMul", [inp, p + "W_t"], [p + "Wx"], name=p + "matmul"),
        helper.make_node("Add", [p + "Wx", p + "b"], [p + "arg"], name=p + "add"),
        helper.make_node("Cos", [p + "arg"], [p + "cos"], name=p + "cos"),
        helper.make_node("Mul", [p + "cos", p + "scale"], [out], name=p + "scale"),
    ]
    return nodes, inits


def _output(m: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", m])


def _finish(proto: onnx.ModelProto) -> bytes:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise BundleError(f"random-feature ONNX model fails onnx.checker: {exc}") from None
    return proto.SerializeToString(deterministic=True)


def stage_model(
    rf: RandomFeatures,
    in_shape: Sequence[int],
    normalisation: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> bytes:
    """ONNX bytes of the stage alone: input ``x`` ``(batch, *in_shape)`` → ``(batch, M)``.

    With ``normalisation`` (``mean``/``std``, one value or one per last-axis
    entry) the graph first computes ``(x - mean) / std``, so the device feeds raw
    values, as for an exported extractor.
    """
    if not 13 <= opset <= 21:
        raise ConfigError(f"opset = {opset}: must be in [13, 21]")
    shape = [int(d) for d in in_shape]
    if math.prod(shape) != rf.input_dim:
        raise ConfigError(
            f"input shape {shape} has {math.prod(shape)} values; the stage takes {rf.input_dim}"
        )
    p = _PREFIX
    nodes, inits = [], []
    src = INPUT_NAME
    if normalisation is not None:
        inits += [
            _const(p + "mean", np.asarray(normalisation["mean"])),
            _const(p + "std", np.asarray(normalisation["std"])),
        ]
        nodes += [
            helper.make_node("Sub", [src, p + "mean"], [p + "centred"], name=p + "sub"),
            helper.make_node("Div", [p + "centred", p + "std"], [p + "normed"], name=p + "div"),
        ]
        src = p + "normed"
    nodes.append(helper.make_node("Flatten", [src], [p + "flat"], name=p + "flatten", axis=1))
    more, consts = _stage_nodes(rf, p + "flat", OUTPUT_NAME)
    graph = helper.make_graph(
        nodes + more,
        "edgecl_random_features",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", *shape])],
        [_output(rf.m)],
        initializer=inits + consts,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="edgecl",
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    proto.doc_string = f"edgecl random features ({rf.kind}, M = {rf.m})"
    return _finish(proto)


def append_stage(model: bytes, rf: RandomFeatures) -> bytes:
    """``model`` (an extractor, output ``embedding`` of length ``rf.input_dim``) + the stage."""
    proto = onnx.load_from_string(model)
    g = proto.graph
    outs = [o for o in g.output if o.name == OUTPUT_NAME]
    if len(g.output) != 1 or not outs:
        raise BundleError(f"the extractor must have the one output {OUTPUT_NAME!r}")
    dims = outs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value != rf.input_dim:
        raise BundleError(
            f"the extractor's output {[d.dim_param or d.dim_value for d in dims]} does not "
            f"feed a stage of input_dim {rf.input_dim}"
        )
    names = {i.name for i in g.initializer} | {n for node in g.node for n in node.output}
    if any(n.startswith(_PREFIX) for n in names):
        raise BundleError(f"the extractor already has names starting with {_PREFIX!r}")
    z = _PREFIX + "z"
    for node in g.node:
        node.output[:] = [z if n == OUTPUT_NAME else n for n in node.output]
        node.input[:] = [z if n == OUTPUT_NAME else n for n in node.input]
    for vi in g.value_info:
        if vi.name == OUTPUT_NAME:
            vi.name = z
    nodes, inits = _stage_nodes(rf, z, OUTPUT_NAME)
    g.node.extend(nodes)
    g.initializer.extend(inits)
    del g.output[:]
    g.output.append(_output(rf.m))
    proto.doc_string = f"{proto.doc_string} + random features ({rf.kind}, M = {rf.m})".strip()
    return _finish(proto)


def with_stage(
    model: bytes,
    probe: np.ndarray,
    reference: np.ndarray,
    train_x: np.ndarray | None,
    *,
    m: int,
    kind: str = "relu",
    gamma: float | None = None,
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
    tolerance: float = 1e-4,
) -> tuple[bytes, RandomFeatures, dict[str, Any], float]:
    """Append a random-feature stage to the extractor ``model``; check it twice.

    ``probe`` are raw inputs of the extractor and ``reference`` its outputs by
    torch; ``train_x`` the training inputs in the order seen (γ's median
    heuristic uses the embeddings of the first ones). First the stage alone in
    onnxruntime against its numpy definition, on the probe's embeddings plus
    random ones (:data:`STAGE_TOLERANCE`); then the whole graph against torch's
    extractor followed by the numpy stage (``tolerance``, the extractor's own).
    Returns the model, the stage, the report's stage entry (:func:`stage_report`)
    and the whole graph's parity.
    """
    ex = OnnxExtractor(model)
    dim = ex.dim
    samples = None if train_x is None else (lambda: ex.embed_many(train_x[:GAMMA_SAMPLES]))
    rf, source = make_stage(kind, m, dim, gamma=gamma, seed=seed, samples=samples)
    z = ex.embed_many(probe)
    rng = np.random.default_rng(seed + 1)
    z = np.concatenate([z, random_like(rng, z, (dim,), max(0, PARITY_N - len(z)))])
    stage_diff = stage_parity(stage_model(rf, (dim,), None, opset), z, rf.transform(z, np.float64))
    check_parity(stage_diff, STAGE_TOLERANCE, len(z), "the numpy random features")
    full = append_stage(model, rf)
    diff = stage_parity(full, probe, rf.transform(reference, np.float64))
    check_parity(diff, tolerance, len(probe), "torch + the numpy random features")
    return full, rf, stage_report(rf, source, stage_diff, len(z)), diff


def stage_parity(model: bytes, inputs: np.ndarray, reference: np.ndarray) -> float:
    """Max |onnxruntime − reference| on ``inputs``, batched and one at a time."""
    ex = OnnxExtractor(model, batch=64)
    got = ex.embed_many(np.ascontiguousarray(inputs, np.float32))
    diff = float(np.abs(got - reference).max())
    one = np.stack([ex.embed(x) for x in inputs[:16]])
    return max(diff, float(np.abs(one - reference[: len(one)]).max()))


def check_parity(diff: float, tolerance: float, n: int, what: str) -> None:
    """Raise :class:`BundleError` when ``diff`` exceeds ``tolerance`` (NaN fails too)."""
    if not diff <= tolerance:
        raise BundleError(
            f"parity check failed: onnxruntime and {what} differ by up to {diff:.3g} "
            f"(limit {tolerance:g}) over {n} inputs"
        )


def random_like(rng: np.random.Generator, x: np.ndarray | None, shape: Sequence[int], n: int):
    """``n`` random inputs of ``shape`` with the mean and spread of ``x`` (normal without)."""
    r = rng.standard_normal((n, *shape))
    if x is not None and len(x):
        r = r * float(x.std()) + float(x.mean())
    return r.astype(np.float32)


def stage_report(rf: RandomFeatures, source: str, diff: float, n: int) -> dict[str, Any]:
    """The export report's (and the manifest's provenance) account of a stage."""
    return {
        **rf.to_json(),
        "gamma_source": source,
        "weight_bytes": rf.nbytes,
        "parity": {"max_abs_diff": diff, "n": n, "tolerance": STAGE_TOLERANCE},
    }
