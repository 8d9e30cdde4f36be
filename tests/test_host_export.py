"""edgecl export: checkpoint → bundle, parity with torch, quantisation, determinism, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from edgecl.cli import main  # noqa: E402
from edgecl.errors import BundleError, DataError  # noqa: E402
from edgecl.host.checkpoint import save_checkpoint  # noqa: E402
from edgecl.host.data import file_sha256, load_training_data  # noqa: E402
from edgecl.host.export import export_bundle, find_pretraining_data  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.onnx_export import Normalised, onnx_bytes  # noqa: E402
from edgecl.runtime.bundle import Bundle  # noqa: E402

LENGTH, CHANNELS = 16, 3


@pytest.fixture(scope="module")
def imu_npz(tmp_path_factory) -> Path:
    """A small IMU row stream: 3 subjects × 3 classes × 2 recordings of 64 rows."""
    rng = np.random.default_rng(0)
    xs, ys, subj, rec = [], [], [], []
    r = 0
    for s in (1, 2, 3):
        for c in range(3):
            for _ in range(2):
                t = np.arange(64)[:, None]
                sig = np.sin(t * (0.2 + 0.3 * c) + s) * (1 + c) + 0.3 * rng.normal(size=(64, 3))
                xs.append((sig + [5.0, -2.0, 0.5]).astype(np.float32))
                ys += [c] * 64
                subj += [s] * 64
                rec += [r] * 64
                r += 1
    path = tmp_path_factory.mktemp("data") / "tiny_imu.npz"
    np.savez(
        path,
        x=np.concatenate(xs),
        y=np.array(ys, np.int64),
        subject=np.array(subj, np.int64),
        recording=np.array(rec, np.int64),
        channels=np.array(["ax", "ay", "az"]),
        classes=np.array(["A", "B", "C"]),
        rate_hz=np.array(50),
    )
    return path


def make_checkpoint(imu_npz: Path, path: Path, width: int = 4, embed_dim: int = 8) -> Path:
    td = load_training_data(imu_npz, window=LENGTH, hop=8, test_subjects=[3])
    torch.manual_seed(0)
    model = build_model("imu-cnn", td.in_shape, 3, embed_dim=embed_dim, width=width).eval()
    meta = {
        "normalisation": td.normalisation,
        "class_names": list(td.class_names),
        "window": td.window,
        "provenance": {
            "data": [imu_npz.name],
            "sha256_data": [td.sha256],
            "test_subjects": [3],
            "seed": 0,
            "date": "2026-01-01T00:00:00Z",
        },
    }
    save_checkpoint(path, model, meta)
    return path


@pytest.fixture(scope="module")
def checkpoint(imu_npz, tmp_path_factory) -> Path:
    return make_checkpoint(imu_npz, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _reference(checkpoint: Path, x: np.ndarray) -> np.ndarray:
    from edgecl.host.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    n = meta["normalisation"]
    with torch.no_grad():
        return Normalised(model.extractor, n["mean"], n["std"]).eval()(torch.from_numpy(x)).numpy()


def test_export_round_trip_matches_torch(checkpoint, imu_npz, tmp_path):
    rep = export_bundle(checkpoint, tmp_path / "b", data=imu_npz)
    assert rep.parity_max_abs_diff <= 1e-4 and rep.parity_n >= 64
    b = Bundle.load(tmp_path / "b")
    assert b.input_shape == (LENGTH, CHANNELS) and b.embedding_dim == 8
    assert b.class_names == ("A", "B", "C")
    assert b.window.length == LENGTH and b.window.hop == 8 and b.window.rate_hz == 50.0
    # Raw sensor windows in, normalisation inside the graph: equal to torch on raw input.
    x = (np.random.default_rng(5).normal(size=(70, LENGTH, CHANNELS)) * 2 + 3).astype(np.float32)
    ref = _reference(checkpoint, x)
    ex = b.extractor()
    np.testing.assert_allclose(ex.embed_many(x), ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(ex.embed(x[0]), ref[0], atol=1e-4, rtol=0)


def test_manifest_holds_what_the_device_needs(checkpoint, imu_npz, tmp_path):
    export_bundle(checkpoint, tmp_path / "b", data=imu_npz)
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["format"] == "edgecl.bundle" and m["format_version"] == 1
    assert m["model"]["opset"] == 17
    assert m["model"]["input"] == {"name": "x", "shape": ["batch", 16, 3], "dtype": "float32"}
    assert m["model"]["quantization"] is None
    assert m["normalisation"]["in_graph"] is True and len(m["normalisation"]["mean"]) == 3
    assert m["head"]["kind"] == "slda"
    assert m["parity"]["max_abs_diff"] <= 1e-4
    prov = m["provenance"]
    assert "date" not in prov and prov["test_subjects"] == [3]
    assert prov["head_data"]["heldout"] == "subjects 3"
    assert prov["spec"]["arch"] == "imu-cnn" and prov["export"]["torch"] == "2.13.0"
    assert 0.0 <= m["accuracy"]["heldout"] <= 1.0 and m["accuracy"]["heldout_n"] > 0


def test_onnx_model_has_a_dynamic_batch_and_passes_the_checker(checkpoint, imu_npz, tmp_path):
    export_bundle(checkpoint, tmp_path / "b", data=imu_npz)
    proto = onnx.load(tmp_path / "b" / "model.onnx")
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [16, 3]


def test_initial_head_is_fitted_on_the_pretraining_embeddings(checkpoint, imu_npz, tmp_path):
    rep = export_bundle(checkpoint, tmp_path / "b", data=imu_npz)
    b = Bundle.load(tmp_path / "b")
    learner = b.initial_learner()
    td = load_training_data(imu_npz, window=LENGTH, hop=8, test_subjects=[3])
    assert learner.n_learned == len(td.y_train) == rep.accuracy["train_n"]
    assert learner.config.max_classes == 32 and learner.config.buffer_capacity == 0
    # Its held-out accuracy, recomputed on the device path, is what the export reported.
    raw = td.x_test * np.float32(td.normalisation["std"]) + np.float32(td.normalisation["mean"])
    acc = np.mean(learner.predict_many(b.extractor().embed_many(raw)) == td.y_test)
    assert acc == pytest.approx(rep.accuracy["heldout"], abs=1e-9)


def test_export_is_deterministic(checkpoint, imu_npz, tmp_path):
    export_bundle(checkpoint, tmp_path / "a", data=imu_npz)
    export_bundle(checkpoint, tmp_path / "b", data=imu_npz)
    for name in ("model.onnx", "manifest.json", "head.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_int8_quantisation_shrinks_the_model_and_is_recorded(imu_npz, tmp_path):
    # Wide enough that weights, not graph overhead, dominate the file.
    ckpt = make_checkpoint(imu_npz, tmp_path / "wide.safetensors", width=16, embed_dim=32)
    rep = export_bundle(ckpt, tmp_path / "q", data=imu_npz, quantize="int8")
    q = rep.quantization
    assert q["mode"] == "int8-dynamic" and q["int8_bytes"] < q["float_bytes"]
    assert rep.model_bytes == q["int8_bytes"] and q["size_ratio"] < 1
    assert 0 <= q["int8_heldout_accuracy"] <= 1 and 0 <= q["float_heldout_accuracy"] <= 1
    assert q["embedding_max_abs_diff"] > 0  # int8 really changed the numbers
    b = Bundle.load(tmp_path / "q")
    assert (
        b.manifest["model"]["quantization"]["int8_bytes"]
        == (tmp_path / "q" / "model.onnx").stat().st_size
    )
    x = np.zeros((LENGTH, CHANNELS), np.float32)
    assert b.extractor().embed(x).shape == (32,)
    assert "int8:" in rep.summary()


def test_parity_failure_is_loud(checkpoint, tmp_path):
    with pytest.raises(BundleError, match=r"differ by up to .* \(limit -1\) over 64 inputs"):
        export_bundle(checkpoint, tmp_path / "b", head=None, tolerance=-1.0)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("arch", "shape"), [("mlp", (28, 28)), ("cnn", (28, 28)), ("cnn", (3, 12, 12))]
)
def test_every_architecture_exports_with_parity(arch, shape, tmp_path):
    torch.manual_seed(1)
    model = build_model(arch, shape, 4, embed_dim=8, width=4).eval()
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, {"normalisation": {"mean": [0.0], "std": [255.0]}})
    rep = export_bundle(path, tmp_path / "b")
    assert rep.parity_max_abs_diff <= 1e-4
    b = Bundle.load(tmp_path / "b")
    assert b.window is None and b.head_path is None and b.input_shape == shape
    x = np.random.default_rng(0).uniform(0, 255, size=(3, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = model.extractor(torch.from_numpy(x / 255.0)).numpy()
    np.testing.assert_allclose(b.extractor().embed_many(x), ref, atol=1e-4, rtol=0)


def test_softmax_head_gets_a_replay_buffer(checkpoint, imu_npz, tmp_path):
    export_bundle(checkpoint, tmp_path / "b", data=imu_npz, head="softmax")
    learner = Bundle.load(tmp_path / "b").initial_learner()
    assert learner.config.head == "softmax" and learner.config.buffer_capacity == 1000


def test_data_of_another_normalisation_is_refused(checkpoint, imu_npz, tmp_path):
    d = dict(np.load(imu_npz, allow_pickle=False))
    d["x"] = d["x"] * 2
    other = tmp_path / "other.npz"
    np.savez(other, **d)
    with pytest.raises(DataError, match="normalisation differs"):
        export_bundle(checkpoint, tmp_path / "b", data=other)


def test_pretraining_data_is_found_by_name_and_hash(checkpoint, imu_npz, monkeypatch, tmp_path):
    from edgecl.host.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(checkpoint)["meta"]
    monkeypatch.chdir(imu_npz.parent)
    assert find_pretraining_data(meta) == Path(imu_npz.name)
    wrong = {"provenance": {**meta["provenance"], "sha256_data": ["0" * 64]}}
    assert find_pretraining_data(wrong) is None
    assert find_pretraining_data({"provenance": {"data": ["a.npz", "b.npz"]}}) is None
    assert file_sha256(imu_npz) == meta["provenance"]["sha256_data"][0]
    # Without --data, export uses it and fits the head.
    rep = export_bundle(checkpoint, tmp_path / "b")
    assert rep.head_bytes > 0


def test_onnx_bytes_rejects_unsupported_opsets():
    from edgecl.errors import ConfigError

    with pytest.raises(ConfigError, match="opset = 9"):
        onnx_bytes(torch.nn.Linear(2, 2), (2,), opset=9)


# -- CLI ------------------------------------------------------------------------------


def test_cli_export_writes_a_bundle_and_json(checkpoint, imu_npz, tmp_path, capsys):
    out = tmp_path / "b"
    rc = main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--data",
               str(imu_npz), "--json", "-"])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parity"]["max_abs_diff"] <= 1e-4 and report["embedding_dim"] == 8
    assert report["total_bytes"] == sum(p.stat().st_size for p in out.iterdir())
    # A second export to the same place needs --force.
    rc = main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--head", "none"])
    err = capsys.readouterr().err
    assert rc == 1 and "pass --force" in err and err.count("\n") == 1
    rc = main(["export", "--checkpoint", str(checkpoint), "--out", str(out), "--head", "none",
               "--force"])  # fmt: skip
    assert rc == 0 and "parity onnxruntime vs torch" in capsys.readouterr().out
    assert Bundle.load(out).head_path is None


def test_cli_export_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    rc = main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("edgecl: error: ") and err.count("\n") == 1


def test_cli_export_without_torch_prints_the_install_hint(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx"):
                    raise ImportError("blocked: " + name, name=name)
        sys.meta_path.insert(0, Block())
        from edgecl.cli import main
        sys.exit(main(["export", "--checkpoint", "c", "--out", {str(tmp_path / "b")!r}]))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "pip install 'edgecl[host]'" in out.stderr
