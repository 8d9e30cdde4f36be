"""OnnxExtractor: numerics against a numpy reference, fixed shapes, inputs, providers.

The models are built in the test with ``onnx.helper`` (a linear layer + ReLU), so
the expected embedding is plain numpy.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edgecl.errors import BundleError, InputError
from edgecl.runtime.extractor import OnnxExtractor, select_providers, session_options
from edgecl.runtime.profile import DeviceProfile

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

SHAPE = (5, 3)
DIM = 4


def linear_relu(w: np.ndarray, shape=SHAPE, dim=DIM, *, two_inputs=False) -> bytes:
    """ONNX bytes of ``relu(flatten(x) @ w)``, input ``(batch, *shape)``."""
    n = int(np.prod(shape))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *shape])
    e = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["lin"]),
        helper.make_node("Relu", ["lin"], ["embedding"]),
    ]
    inputs = [x]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("x2", TensorProto.FLOAT, ["batch", 1]))
    init = [numpy_helper.from_array(w.reshape(n, dim).astype(np.float32), "w")]
    graph = helper.make_graph(nodes, "tiny", inputs, [e], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def weights():
    return np.random.default_rng(0).normal(size=(int(np.prod(SHAPE)), DIM)).astype(np.float32)


def reference(w: np.ndarray, X: np.ndarray) -> np.ndarray:
    flat = np.asarray(X, np.float32).reshape(len(X), -1)
    return np.maximum(flat @ w, 0.0)


def test_embed_matches_numpy_and_returns_float32_1d(weights):
    ex = OnnxExtractor(linear_relu(weights))
    assert ex.input_shape == SHAPE and ex.dim == DIM and ex.input_name == "x"
    x = np.random.default_rng(1).normal(size=SHAPE)
    e = ex.embed(x)
    assert e.shape == (DIM,) and e.dtype == np.float32
    np.testing.assert_allclose(e, reference(weights, x[None])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7])
def test_embed_many_equals_the_embed_loop_for_any_n(weights, n):
    ex = OnnxExtractor(linear_relu(weights), batch=2)
    X = np.random.default_rng(n).normal(size=(n, *SHAPE)).astype(np.float32)
    E = ex.embed_many(X)
    assert E.shape == (n, DIM) and E.dtype == np.float32
    if n:
        np.testing.assert_allclose(E, np.stack([ex.embed(x) for x in X]), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(E, reference(weights, X), rtol=1e-5, atol=1e-6)


def test_inputs_are_not_mutated_and_results_are_not_aliased(weights):
    ex = OnnxExtractor(linear_relu(weights), normalisation={"mean": [1.0], "std": [2.0]})
    x = np.ones(SHAPE, np.float32)
    before = x.copy()
    e1 = ex.embed(x)
    e2 = ex.embed(x * 3)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(e1, e2)


@pytest.mark.parametrize(
    "norm",
    [
        {"mean": [0.5], "std": [2.0]},
        {"mean": [0.1, -0.2, 0.3], "std": [1.0, 2.0, 4.0], "axis": -1},
        {"mean": [1, 2, 3, 4, 5], "std": [1, 1, 2, 2, 3], "axis": 0, "in_graph": False},
    ],
)
def test_numpy_side_normalisation_matches_the_formula(weights, norm):
    ex = OnnxExtractor(linear_relu(weights), normalisation=norm)
    X = np.random.default_rng(2).normal(size=(3, *SHAPE)).astype(np.float32)
    axis = norm.get("axis", -1) % len(SHAPE)
    shape = [1, 1]
    if len(norm["mean"]) > 1:
        shape[axis] = SHAPE[axis]
    mean = np.asarray(norm["mean"], np.float32).reshape(shape)
    std = np.asarray(norm["std"], np.float32).reshape(shape)
    want = reference(weights, (X - mean) / std)
    np.testing.assert_allclose(ex.embed_many(X), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ex.embed(X[0]), want[0], rtol=1e-5, atol=1e-5)


def test_normalisation_folded_into_the_graph_is_not_applied_twice(weights):
    x = np.random.default_rng(3).normal(size=SHAPE)
    plain = OnnxExtractor(linear_relu(weights)).embed(x)
    folded = OnnxExtractor(
        linear_relu(weights), normalisation={"mean": [9.0], "std": [9.0], "in_graph": True}
    ).embed(x)
    np.testing.assert_array_equal(plain, folded)


@pytest.mark.parametrize(
    ("norm", "message"),
    [
        ({"mean": [0.0, 1.0], "std": [1.0, 1.0]}, "1 or 3 finite values"),
        ({"mean": [0.0], "std": [0.0]}, "std must be > 0"),
        ({"mean": [0.0], "std": [1.0], "axis": 5}, "axis 5"),
        ({"std": [1.0]}, "malformed"),
    ],
)
def test_bad_normalisation_is_a_bundle_error(weights, norm, message):
    with pytest.raises(BundleError, match=message):
        OnnxExtractor(linear_relu(weights), normalisation=norm)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 5)), np.zeros(15), np.zeros((1, 5, 3)), [["a"] * 3] * 5],
    ids=["transposed", "flat", "batched", "strings"],
)
def test_embed_rejects_a_wrong_input(weights, bad):
    ex = OnnxExtractor(linear_relu(weights))
    with pytest.raises(InputError):
        ex.embed(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e300])
def test_embed_rejects_non_finite_values_even_after_float32_conversion(weights, value):
    ex = OnnxExtractor(linear_relu(weights))
    x = np.zeros(SHAPE)
    x[2, 1] = value
    with pytest.raises(InputError, match="NaN or inf"):
        ex.embed(x)
    X = np.zeros((4, *SHAPE))
    X[3, 0, 0] = value
    with pytest.raises(InputError, match=r"X\[3\]"):
        ex.embed_many(X)
    # The extractor still works afterwards.
    assert ex.embed(np.zeros(SHAPE)).shape == (DIM,)


def test_shape_and_dim_are_checked_against_the_model(weights):
    model = linear_relu(weights)
    with pytest.raises(BundleError, match="does not match"):
        OnnxExtractor(model, input_shape=(3, 5))
    with pytest.raises(BundleError, match="the manifest says 8"):
        OnnxExtractor(model, dim=8)
    with pytest.raises(BundleError, match="one input"):
        OnnxExtractor(linear_relu(weights, two_inputs=True))


def test_unloadable_model_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="onnxruntime cannot load"):
        OnnxExtractor(b"not an onnx model")
    f = tmp_path / "m.onnx"
    f.write_bytes(b"\x08\x07garbage")
    with pytest.raises(BundleError, match=str(f)):
        OnnxExtractor(f)


def test_loads_from_a_path_too(weights, tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(linear_relu(weights))
    assert OnnxExtractor(f).dim == DIM


def test_session_options_follow_the_profile():
    p = DeviceProfile(
        name="t", intra_op_threads=3, inter_op_threads=2, allow_spinning=False, arena=True
    )
    so = session_options(p)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 2
    assert so.enable_cpu_mem_arena is True
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(DeviceProfile(name="s", allow_spinning=True, arena=False))
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.enable_cpu_mem_arena is False


def test_missing_gpu_provider_falls_back_to_cpu_and_says_so(weights, caplog):
    p = DeviceProfile(name="gpu-box", providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.extractor"):
        ex = OnnxExtractor(linear_relu(weights), profile=p)
    assert ex.providers == ["CPUExecutionProvider"]
    assert ex.missing_providers == ["CUDAExecutionProvider"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "CUDAExecutionProvider" in warnings[0].getMessage()
    assert "falling back to CPUExecutionProvider" in warnings[0].getMessage()
    assert ex.embed(np.zeros(SHAPE)).shape == (DIM,)


def test_cpu_only_profile_logs_nothing(weights, caplog):
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.extractor"):
        OnnxExtractor(linear_relu(weights))
    assert not caplog.records


def test_provider_order_and_tensorrt_options(tmp_path):
    cache = tmp_path / "trt" / "engines"
    p = DeviceProfile(
        name="jetson",
        arch="aarch64",
        providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
        engine_cache_dir=str(cache),
    )
    have = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    chosen, missing = select_providers(p, have, input_name="x", input_shape=(100, 6), batch=64)
    assert missing == []
    assert [n for n, _ in chosen] == have
    trt = chosen[0][1]
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(cache) and cache.is_dir()
    assert trt["trt_profile_min_shapes"] == "x:1x100x6"
    assert trt["trt_profile_max_shapes"] == "x:64x100x6"
    assert chosen[1][1]["arena_extend_strategy"] == "kSameAsRequested"
    # Only CUDA missing: TensorRT stays, CUDA is reported, CPU closes the list.
    chosen, missing = select_providers(p, ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    assert [n for n, _ in chosen] == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert missing == ["CUDAExecutionProvider"]


def test_cpu_is_appended_when_a_profile_leaves_it_out():
    p = DeviceProfile(name="x", providers=("CUDAExecutionProvider",))
    chosen, missing = select_providers(p, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [n for n, _ in chosen] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert missing == []


def test_warmup_runs(weights):
    ex = OnnxExtractor(linear_relu(weights))
    ex.warmup(2)
    assert "CPUExecutionProvider" in repr(ex)


def test_gpu_provider_that_fails_to_start_falls_back_to_cpu(weights, monkeypatch, caplog):
    """A listed-but-broken GPU stack (driver, libraries) must not stop the device."""
    import edgecl.runtime.extractor as mod

    real = mod.ort.InferenceSession

    def session(src, sess_options=None, providers=None, provider_options=None):
        if providers != ["CPUExecutionProvider"]:
            raise RuntimeError("libcudnn.so.8: cannot open shared object file")
        return real(src, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(mod.ort, "InferenceSession", session)
    monkeypatch.setattr(
        mod.ort,
        "get_available_providers",
        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    p = DeviceProfile(name="gpu", providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.extractor"):
        ex = OnnxExtractor(linear_relu(weights), profile=p)
    assert ex.providers == ["CPUExecutionProvider"]
    assert ex.missing_providers == ["CUDAExecutionProvider"]
    assert "libcudnn" in caplog.text and "falling back to CPUExecutionProvider" in caplog.text
    assert ex.embed(np.zeros(SHAPE)).shape == (DIM,)


def test_unwritable_engine_cache_only_disables_caching(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    p = DeviceProfile(
        name="j",
        providers=("TensorrtExecutionProvider", "CPUExecutionProvider"),
        engine_cache_dir=str(blocker / "cache"),
    )
    with caplog.at_level(logging.WARNING, logger="edgecl.runtime.extractor"):
        chosen, _ = select_providers(p, ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    assert "trt_engine_cache_enable" not in chosen[0][1]
    assert "engines will not persist" in caplog.text
