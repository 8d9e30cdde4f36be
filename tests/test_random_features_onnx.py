"""Random-feature stages as ONNX: parity with numpy, bundles (signed too), export CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from host_helpers import write_imu_npz  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from edgecl.cli import main  # noqa: E402
from edgecl.errors import BundleError, ConfigError  # noqa: E402
from edgecl.host.checkpoint import save_checkpoint  # noqa: E402
from edgecl.host.export import export_bundle  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.onnx_export import Normalised, onnx_bytes  # noqa: E402
from edgecl.host.random_features import STAGE_TOLERANCE, append_stage, stage_model  # noqa: E402
from edgecl.host.stage_bundle import export_stage_bundle  # noqa: E402
from edgecl.runtime.bundle import Bundle  # noqa: E402
from edgecl.runtime.extractor import OnnxExtractor  # noqa: E402
from edgecl.runtime.random_features import RandomFeatures, median_gamma  # noqa: E402


@pytest.fixture(autouse=True)
def _no_key_from_the_environment(monkeypatch):
    monkeypatch.delenv("EDGECL_BUNDLE_PUBKEY", raising=False)


@pytest.fixture(scope="module")
def image_npz(tmp_path_factory):
    """uint8 'images' 4 × 5 of 4 classes, like MNIST in miniature."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 255, size=(4, 4, 5))

    def draw(n):
        y = rng.integers(0, 4, n)
        x = np.clip(centres[y] + rng.normal(scale=40, size=(n, 4, 5)), 0, 255)
        return x.astype(np.uint8), y.astype(np.int64)

    (x, y), (xt, yt) = draw(200), draw(80)
    path = tmp_path_factory.mktemp("data") / "tiny_images.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


# -- the graph equals its numpy definition --------------------------------------------------


@pytest.mark.parametrize("kind,gamma", [("rff", 0.02), ("relu", None)])
@pytest.mark.parametrize("shape", [(30,), (5, 6)])
def test_onnx_stage_equals_the_numpy_definition(kind, gamma, shape):
    rf = RandomFeatures(kind, input_dim=30, m=96, gamma=gamma, seed=3)
    ex = OnnxExtractor(stage_model(rf, shape))
    x = np.random.default_rng(0).normal(size=(300, *shape)).astype(np.float32) * 3
    ref = rf.transform(x, np.float64)
    got = ex.embed_many(x)
    assert got.shape == (300, 96) and ex.input_shape == shape
    assert np.abs(got - ref).max() <= STAGE_TOLERANCE
    assert np.abs(ex.embed(x[0]) - ref[0]).max() <= STAGE_TOLERANCE


def test_normalisation_is_folded_in_front_of_the_stage():
    rf = RandomFeatures("rff", input_dim=12, m=40, gamma=0.1, seed=0)
    norm = {"mean": [1.0, 2.0, 3.0], "std": [2.0, 4.0, 0.5]}
    ex = OnnxExtractor(stage_model(rf, (4, 3), norm))
    x = np.random.default_rng(1).normal(size=(50, 4, 3)).astype(np.float32) * 3 + 2
    ref = rf.transform((x - np.array(norm["mean"])) / np.array(norm["std"]), np.float64)
    assert np.abs(ex.embed_many(x) - ref).max() <= STAGE_TOLERANCE


def test_the_graph_holds_exactly_the_seeded_weights():
    rf = RandomFeatures("rff", input_dim=10, m=20, gamma=0.3, seed=11)
    proto = onnx.load_from_string(stage_model(rf, (10,)))
    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    # A device regenerates W and b from the manifest entry alone.
    again = RandomFeatures.from_json(json.loads(json.dumps(rf.to_json())))
    assert np.array_equal(consts["random_features/W_t"], again.weights[0].T)
    assert np.array_equal(consts["random_features/b"], again.weights[1])
    other = RandomFeatures("rff", input_dim=10, m=20, gamma=0.3, seed=12)
    assert stage_model(rf, (10,)) == stage_model(again, (10,)) != stage_model(other, (10,))
    onnx.checker.check_model(proto, full_check=True)


def test_stage_appended_to_an_extractor_equals_torch_then_numpy():
    torch.manual_seed(0)
    model = build_model("mlp", (6, 4), 3, embed_dim=8, width=8).eval()
    wrapped = Normalised(model.extractor, [1.0], [2.0]).eval()
    rf = RandomFeatures("relu", input_dim=8, m=64, seed=1)
    ex = OnnxExtractor(append_stage(onnx_bytes(wrapped, (6, 4)), rf))
    x = np.random.default_rng(2).normal(size=(40, 6, 4)).astype(np.float32)
    with torch.no_grad():
        z = wrapped(torch.from_numpy(x)).numpy()
    assert ex.dim == 64
    np.testing.assert_allclose(ex.embed_many(x), rf.transform(z, np.float64), rtol=0, atol=1e-5)
    with pytest.raises(BundleError, match="input_dim 9"):
        append_stage(onnx_bytes(wrapped, (6, 4)), RandomFeatures("relu", 9, 4))


# -- stage-only bundles -----------------------------------------------------------------


def test_stage_bundle_round_trips_with_a_head(image_npz, tmp_path):
    rep = export_stage_bundle(tmp_path / "b", m=48, data=image_npz, seed=2)
    b = Bundle.load(tmp_path / "b")
    m = b.manifest
    assert b.input_shape == (4, 5) and b.embedding_dim == 48 and b.window is None
    assert m["model"]["arch"] == "random-features"
    assert m["normalisation"] == {"mean": [0.0], "std": [255.0], "axis": -1, "in_graph": True}
    with np.load(image_npz) as d:
        x, xt, yt = d["x_train"], d["x_test"].astype(np.float32), d["y_test"]
    gamma = m["random_features"]["gamma"]
    assert gamma == pytest.approx(median_gamma(x.reshape(len(x), -1) / 255.0), rel=1e-6)
    assert m["random_features"] == {
        "kind": "rff", "m": 48, "gamma": gamma, "seed": 2, "input_dim": 20,
    }  # fmt: skip
    assert m["parity"]["max_abs_diff"] <= 1e-5 and m["parity"]["n"] == 256
    assert rep.stage["gamma_source"] == "median heuristic on the first 200 training samples"
    assert f"gamma {gamma:.6g}" in rep.summary()
    # The device path: raw pixels in, the numpy stage of pixels / 255 out, and the head.
    rf = RandomFeatures.from_json(m["random_features"])
    np.testing.assert_allclose(
        b.extractor().embed_many(xt), rf.transform(xt / 255.0), rtol=0, atol=1e-5
    )
    learner = b.initial_learner()
    assert learner.config.dim == 48 and learner.n_learned == 200
    acc = np.mean(learner.predict_many(b.extractor().embed_many(xt)) == yt)
    assert acc == pytest.approx(m["accuracy"]["heldout"]) and acc > 0.8


def test_stage_bundle_without_data_has_no_head(tmp_path):
    rep = export_stage_bundle(tmp_path / "b", m=16, kind="relu", input_shape=(3, 2))
    b = Bundle.load(tmp_path / "b")
    assert b.head_path is None and b.normalisation is None and b.class_names == ()
    assert b.manifest["random_features"]["gamma"] is None and rep.head_bytes == 0
    with pytest.raises(ConfigError, match="pass --gamma"):
        export_stage_bundle(tmp_path / "c", m=16, input_shape=(3, 2))


def test_stage_bundle_of_imu_windows_keeps_the_window(tmp_path):
    data = write_imu_npz(tmp_path / "imu.npz")
    export_stage_bundle(tmp_path / "b", m=32, data=data, head="ncm", window=40, hop=20)
    b = Bundle.load(tmp_path / "b")
    assert b.window.length == 40 and b.window.hop == 20 and b.input_shape == (40, 3)
    assert len(b.normalisation["mean"]) == 3 and b.manifest["head"]["standardize"] is True
    assert b.initial_learner().config.dim == 32


def test_signed_stage_bundle_loads_only_with_its_key(image_npz, tmp_path):
    pytest.importorskip("cryptography")
    from edgecl.runtime.signing import SIGNATURE, write_keypair

    key, pub = write_keypair(tmp_path / "keys" / "a")
    _, other = write_keypair(tmp_path / "keys" / "b")
    rep = export_stage_bundle(tmp_path / "b", m=16, data=image_npz, sign_key=key)
    assert (tmp_path / "b" / SIGNATURE).is_file() and rep.signed_by is not None
    assert Bundle.load(tmp_path / "b", public_key=pub).signed_by == rep.signed_by
    with pytest.raises(BundleError):
        Bundle.load(tmp_path / "b", public_key=other)
    # Changing the stage (here its seed) in the manifest breaks the signature.
    mpath = tmp_path / "b" / "manifest.json"
    m = json.loads(mpath.read_text())
    m["random_features"]["seed"] = 1
    mpath.write_text(json.dumps(m))
    with pytest.raises(BundleError):
        Bundle.load(tmp_path / "b", public_key=pub)


def test_export_is_deterministic(image_npz, tmp_path):
    for name in ("a", "b"):
        export_stage_bundle(tmp_path / name, m=16, data=image_npz)
    for f in ("model.onnx", "manifest.json", "head.safetensors"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


# -- a trained extractor followed by the stage ----------------------------------------------


@pytest.fixture(scope="module")
def image_checkpoint(image_npz, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("mlp", (4, 5), 4, embed_dim=8, width=8).eval()
    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(path, model, {"normalisation": {"mean": [0.0], "std": [255.0]}})
    return path


@pytest.mark.parametrize("kind", ["relu", "rff"])
def test_checkpoint_export_with_a_stage(image_checkpoint, image_npz, tmp_path, kind):
    rep = export_bundle(
        image_checkpoint, tmp_path / "b", data=image_npz, random_features=40, kind=kind
    )
    b = Bundle.load(tmp_path / "b")
    m = b.manifest
    assert b.embedding_dim == 40 and m["model"]["output"]["shape"] == ["batch", 40]
    assert m["random_features"]["kind"] == kind and m["random_features"]["input_dim"] == 8
    assert m["parity"]["stage"]["max_abs_diff"] <= 1e-5 and m["parity"]["stage"]["n"] >= 256
    assert m["parity"]["max_abs_diff"] <= 1e-4
    assert (m["random_features"]["gamma"] is None) == (kind == "relu")
    assert b.initial_learner().config.dim == 40 and rep.stage["kind"] == kind
    # The bundle = torch's extractor, then the numpy stage.
    from edgecl.host.checkpoint import load_checkpoint

    model, _ = load_checkpoint(image_checkpoint)
    x = np.random.default_rng(0).uniform(0, 255, size=(20, 4, 5)).astype(np.float32)
    with torch.no_grad():
        z = model.extractor(torch.from_numpy(x / 255.0)).numpy()
    rf = RandomFeatures.from_json(m["random_features"])
    np.testing.assert_allclose(b.extractor().embed_many(x), rf.transform(z), rtol=0, atol=1e-4)


def test_checkpoint_export_refuses_int8_with_a_stage(image_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="--quantize with --random-features"):
        export_bundle(image_checkpoint, tmp_path / "b", random_features=8, quantize="int8")


# -- CLI -------------------------------------------------------------------------------------


def test_cli_export_stage_alone(image_npz, tmp_path, capsys):
    out = tmp_path / "b"
    argv = ["export", "--random-features", "24", "--data", str(image_npz), "--out", str(out)]
    assert main([*argv, "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["embedding_dim"] == 24 and report["random_features"]["kind"] == "rff"
    assert report["random_features"]["parity"]["max_abs_diff"] <= 1e-5
    rc = main(["export", "--random-features", "8", "--kind", "relu", "--input-shape", "20",
               "--out", str(tmp_path / "c")])  # fmt: skip
    assert rc == 0 and "random features: relu 20 → 8" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--out", "b"], "--checkpoint is required"),
        (["--out", "b", "--kind", "rff", "--checkpoint", "c"], "--kind applies with"),
        (["--out", "b", "--random-features", "8", "--quantize", "int8"], "--quantize"),
    ],
)
def test_cli_export_usage_errors(argv, message, capsys):
    assert main(["export", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_export_stage_needs_a_shape_or_data(tmp_path, capsys):
    assert main(["export", "--random-features", "8", "--out", str(tmp_path / "b")]) == 1
    assert "--input-shape" in capsys.readouterr().err
