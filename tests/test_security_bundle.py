"""The untrusted bundle: paths stay inside, sizes are checked before reading, parsing is bounded.

tests/test_runtime_bundle.py covers hashes, malformed keys and the plain
traversal names; these add what an attacker who writes the bundle directory
would try next.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecl.errors import BundleError
from edgecl.runtime.bundle import MANIFEST, Bundle, default_bundle_path, write_bundle
from edgecl.runtime.manifest import MAX_MANIFEST_BYTES, parse_manifest, read_regular
from edgecl.runtime.signing import PUBKEY_ENV


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch):
    monkeypatch.delenv(PUBKEY_ENV, raising=False)


@pytest.fixture
def copy(tmp_path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), dst)
    return dst


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _write(path: Path, m: dict) -> None:
    (path / MANIFEST).write_text(json.dumps(m, indent=2) + "\n")


# -- paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["model", "head"])
@pytest.mark.parametrize(
    "name",
    [
        "..\\model.onnx",
        "model.onnx\x00.txt",
        "./model.onnx",
        "sub/../model.onnx",
        "sub/model.onnx",
        "model.onnx/",
        "/tmp/../model.onnx",
        "//model.onnx",
    ],
)
def test_file_names_with_any_path_part_are_refused_even_when_the_target_exists(copy, key, name):
    # Put a file with the right hash wherever the name could lead, so only the name check
    # stands between the attacker and the load.
    real = copy / _manifest(copy)[key]["file"]
    (copy / "sub").mkdir(exist_ok=True)
    shutil.copy(real, copy / "sub" / real.name)
    m = _manifest(copy)
    m[key]["file"] = name.replace("model.onnx", real.name)
    _write(copy, m)
    with pytest.raises(BundleError, match="plain file name"):
        Bundle.load(copy)


def test_symlink_chain_that_ends_outside_is_refused(copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.move(copy / "model.onnx", outside)
    (copy / "hop.onnx").symlink_to(outside)
    (copy / "model.onnx").symlink_to("hop.onnx")  # inside → inside → outside
    with pytest.raises(BundleError, match="outside the bundle directory"):
        Bundle.load(copy)


def test_manifest_symlinked_from_outside_is_refused(copy, tmp_path):
    outside = tmp_path / "m.json"
    shutil.move(copy / MANIFEST, outside)
    (copy / MANIFEST).symlink_to(outside)
    with pytest.raises(BundleError, match="outside the bundle directory"):
        Bundle.load(copy)


def test_a_bundle_directory_reached_through_a_symlink_is_fine(copy, tmp_path):
    (tmp_path / "link").symlink_to(copy, target_is_directory=True)
    assert Bundle.load(tmp_path / "link").embedding_dim == 64


def test_a_fifo_is_refused_without_blocking(copy, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result: list = []

    def read():
        try:
            read_regular(fifo, max_bytes=10)
        except BundleError as exc:
            result.append(str(exc))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(60)  # a hang guard, not a timing assertion: a blocking open never returns
    assert not t.is_alive() and "not a regular file" in result[0]
    os.unlink(copy / "model.onnx")
    os.mkfifo(copy / "model.onnx")
    with pytest.raises(BundleError, match="not a regular file"):
        Bundle.load(copy)


# -- sizes ---------------------------------------------------------------------------


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_oversized_manifest_is_refused_from_its_size_without_reading_it(copy):
    with open(copy / MANIFEST, "r+b") as f:
        f.truncate(256 * MAX_MANIFEST_BYTES)  # 256 MiB, sparse

    def load():
        with pytest.raises(BundleError, match="more than a manifest may hold"):
            Bundle.load(copy)

    assert _peak(load) < MAX_MANIFEST_BYTES // 4


def test_manifest_just_over_the_cap_is_refused(copy):
    m = _manifest(copy)
    m["provenance"]["padding"] = "x" * MAX_MANIFEST_BYTES
    _write(copy, m)
    with pytest.raises(BundleError, match="more than a manifest may hold"):
        Bundle.load(copy)


def test_model_of_another_size_than_the_manifest_says_is_refused_before_reading(copy):
    with open(copy / "model.onnx", "r+b") as f:
        f.truncate(256 << 20)

    def load():
        with pytest.raises(BundleError, match="the manifest says"):
            Bundle.load(copy)

    assert _peak(load) < 4 << 20


@pytest.mark.parametrize("value", [-1, "12", 1.5, True])
def test_bad_bytes_field_is_refused(copy, value):
    m = _manifest(copy)
    m["model"]["bytes"] = value
    _write(copy, m)
    with pytest.raises(BundleError, match=r"model\.bytes .* is not a file size"):
        Bundle.load(copy)


# -- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=["arrays", "objects"],
)
def test_json_bomb_is_a_bundle_error_not_a_recursion_error(copy, text):
    assert len(text) < MAX_MANIFEST_BYTES
    (copy / MANIFEST).write_bytes(text)
    with pytest.raises(BundleError, match="nested too deeply"):
        Bundle.load(copy)


def test_deep_nesting_inside_a_valid_manifest_is_refused(copy):
    m = _manifest(copy)
    raw = json.dumps(m)[:-1] + ', "deep": ' + "[" * 50_000 + "]" * 50_000 + "}"
    (copy / MANIFEST).write_text(raw)
    with pytest.raises(BundleError, match="nested too deeply"):
        Bundle.load(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ('"embedding_dim": 64', '"embedding_dim": 1e400'),  # inf: not an integer
        ('"embedding_dim": 64', '"embedding_dim": ' + "9" * 5000),  # beyond int digits
        ('"embedding_dim": 64', '"embedding_dim": Infinity'),
    ],
)
def test_extreme_numbers_are_bundle_errors(copy, edit, message):
    raw = json.dumps(_manifest(copy))
    assert edit in raw
    (copy / MANIFEST).write_text(raw.replace(edit, message))
    with pytest.raises(BundleError):
        Bundle.load(copy)


def test_an_integer_too_large_for_a_float_is_a_bundle_error(copy):
    m = _manifest(copy)
    m["normalisation"]["mean"] = [10**400]
    _write(copy, m)
    with pytest.raises(BundleError, match="normalisation.mean must be a non-empty list of finite"):
        Bundle.load(copy)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_value_anywhere_in_the_manifest_loads_or_is_a_bundle_error(copy, data):
    original = _manifest(copy)
    paths = [p for p in _paths(original) if p]
    path = data.draw(st.sampled_from(paths))
    value = data.draw(_json)
    m = json.loads(json.dumps(original))
    node = m
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    raw = json.dumps(m).encode()
    try:
        parse_manifest(raw, copy / MANIFEST)
    except BundleError:
        pass


# -- the ONNX model itself -------------------------------------------------------------


def _linear_model(external: str | None) -> bytes:
    """x (batch, 100, 6) → reshape → @ w (600, 64); w inline (zeros) or in an external file."""
    from onnx import TensorProto, helper

    w = TensorProto()
    w.name, w.data_type = "w", TensorProto.FLOAT
    w.dims.extend([600, 64])
    if external is None:
        w.float_data.extend([0.0] * (600 * 64))
    else:
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", external), ("offset", "0"), ("length", str(600 * 64 * 4))):
            e = w.external_data.add()
            e.key, e.value = k, v
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 600])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 100, 6])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 64])
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
    ]
    g = helper.make_graph(nodes, "g", [x], [y], [w, shape])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_onnx_external_data_cannot_read_files(copy, tmp_path, monkeypatch):
    """A model may name "external data" files for its weights; the device never follows them.

    The session is built from the verified bytes, never from a path, so onnxruntime has
    no directory to resolve them in (and refuses absolute paths outright).
    """
    pytest.importorskip("onnx")
    m = _manifest(copy)
    m["normalisation"]["in_graph"] = True
    # Control: the same graph with its weights inline loads and embeds.
    ok = write_bundle(tmp_path / "ok", m, _linear_model(None), None)
    assert ok.extractor().embed(np.ones((100, 6))).tolist() == [0.0] * 64
    for location in ("secret.bin", "../secret.bin", str(tmp_path / "evil" / "secret.bin")):
        b = write_bundle(tmp_path / "evil", m, _linear_model(location), None, overwrite=True)
        (b.path / "secret.bin").write_bytes(b"S" * (600 * 64 * 4))
        (tmp_path / "secret.bin").write_bytes(b"S" * (600 * 64 * 4))
        monkeypatch.chdir(b.path)  # not even relative to the working directory
        with pytest.raises(BundleError, match="onnxruntime cannot load the model"):
            b.extractor()


def test_external_data_is_refused_without_a_writable_temp_dir(copy, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    import tempfile

    def no_tmp(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_tmp)
    m = _manifest(copy)
    assert write_bundle(tmp_path / "ok", m, _linear_model(None), None).extractor().dim == 64
    b = write_bundle(tmp_path / "evil", m, _linear_model("secret.bin"), None)
    (b.path / "secret.bin").write_bytes(b"S" * (600 * 64 * 4))
    monkeypatch.chdir(b.path)
    with pytest.raises(BundleError, match="onnxruntime cannot load the model"):
        b.extractor()
