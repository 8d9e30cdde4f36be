"""edgecl export fits an NCM/SLDA head on embeddings standardised per pre-training subject.

References are computed here from torch embeddings and plain numpy, not from the learner.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from host_helpers import write_image_npz, write_imu_npz  # noqa: E402

from edgecl.cli import main  # noqa: E402
from edgecl.host.checkpoint import save_checkpoint  # noqa: E402
from edgecl.host.data import load_training_data  # noqa: E402
from edgecl.host.export import export_bundle  # noqa: E402
from edgecl.host.models import build_model  # noqa: E402
from edgecl.host.onnx_export import Normalised  # noqa: E402
from edgecl.runtime.bundle import Bundle  # noqa: E402
from edgecl.runtime.windowing import windows_by_segment  # noqa: E402

WINDOW, HOP, HELD = 16, 8, 3  # write_imu_npz: subjects 1, 2, 3; subject 3 held out


@pytest.fixture(scope="module")
def imu(tmp_path_factory):
    """The tiny IMU row stream, a random imu-cnn checkpoint for it, and the model."""
    tmp = tmp_path_factory.mktemp("std")
    a = dict(np.load(write_imu_npz(tmp / "rows.npz")))
    # The held-out subject wears the watch differently: its signals are scaled and shifted,
    # the case per-user standardisation is for.
    held = a["subject"] == HELD
    a["x"][held] = a["x"][held] * 2.5 + np.float32([1.0, -3.0, 2.0])
    path = tmp / "imu.npz"
    np.savez(path, **a)
    td = load_training_data(path, window=WINDOW, hop=HOP, test_subjects=[HELD])
    torch.manual_seed(0)
    model = build_model("imu-cnn", td.in_shape, 3, embed_dim=8, width=4).eval()
    meta = {
        "normalisation": td.normalisation,
        "class_names": list(td.class_names),
        "window": td.window,
        "provenance": {"data": [path.name], "test_subjects": [HELD], "seed": 0},
    }
    ckpt = tmp / "m.safetensors"
    save_checkpoint(ckpt, model, meta)
    return path, ckpt, model, td.normalisation


def _windows(path):
    """Raw windows, labels and subjects, cut independently of load_training_data."""
    raw = np.load(path)
    w = windows_by_segment(
        raw["x"], raw["y"], raw["recording"], WINDOW, HOP, subjects=raw["subject"]
    )
    return w.x.astype(np.float32), w.y, w.subject


def _embed(model, norm, x):
    with torch.no_grad():
        net = Normalised(model.extractor, norm["mean"], norm["std"]).eval()
        return net(torch.from_numpy(x)).numpy().astype(np.float64)


def _zscore(E, groups):
    Z = np.empty_like(E)
    for g in np.unique(groups):
        rows = groups == g
        Z[rows] = (E[rows] - E[rows].mean(0)) / np.sqrt(E[rows].var(0) + 1e-6)
    return Z


def test_head_is_fitted_on_per_subject_standardised_embeddings(imu, tmp_path):
    path, ckpt, model, norm = imu
    rep = export_bundle(ckpt, tmp_path / "b", data=path, head="ncm")
    b = Bundle.load(tmp_path / "b")
    learner = b.initial_learner()
    assert learner.config.standardize is True
    assert b.manifest["head"] == {**b.manifest["head"], "kind": "ncm", "standardize": True}
    assert rep.standardize and rep.to_json()["standardize"] is True

    x, y, subject = _windows(path)
    train = subject != HELD
    E, s = _embed(model, norm, x[train]), subject[train]
    # The prior is the average pre-training subject: mean of the per-subject means/variances.
    means = [E[s == g].mean(0) for g in np.unique(s)]
    variances = [E[s == g].var(0) for g in np.unique(s)]
    np.testing.assert_allclose(learner.user.prior_mean_, np.mean(means, 0), atol=1e-4)
    np.testing.assert_allclose(learner.user.prior_var_, np.mean(variances, 0), atol=1e-4)
    # NCM is exact: its class means are those of the per-subject z-scored embeddings.
    Z = _zscore(E, s)
    for c in range(3):
        np.testing.assert_allclose(learner.head.means_[c], Z[y[train] == c].mean(0), atol=1e-3)


def test_heldout_figures_frozen_and_per_subject(imu, tmp_path):
    path, ckpt, _, _ = imu
    rep = export_bundle(ckpt, tmp_path / "b", data=path)  # slda
    b = Bundle.load(tmp_path / "b")
    acc = b.manifest["accuracy"]
    assert acc == json.loads(json.dumps(rep.accuracy))
    assert 0 <= acc["heldout"] <= 1 and 0 <= acc["heldout_standardised"] <= 1
    assert b.manifest["head"]["standardize"] is True

    x, y, subject = _windows(path)
    held = subject == HELD
    E = b.extractor().embed_many(x[held])
    learner = b.initial_learner()
    # heldout: the head as shipped, no user data (the prior statistics).
    frozen = np.mean(learner.predict_many(E) == y[held])
    assert acc["heldout"] == pytest.approx(frozen, abs=1e-12)
    # heldout_standardised: the held-out subject's own statistics, observed without labels.
    user = copy.deepcopy(learner)
    user.observe_many(E)
    assert not np.allclose(user.user.mean(), learner.user.prior_mean_)  # they moved
    own = np.mean(user.predict_many(E) == y[held])
    assert acc["heldout_standardised"] == pytest.approx(own, abs=1e-12)
    assert own != frozen  # this subject's shift changes predictions: the figures differ
    assert "each subject's own statistics" in rep.summary()


def test_no_standardize_flag_fits_plain_embeddings(imu, tmp_path, capsys):
    path, ckpt, _, _ = imu
    out = tmp_path / "b"
    argv = ["export", "--checkpoint", str(ckpt), "--out", str(out), "--data", str(path)]
    assert main([*argv, "--no-standardize", "--json", "-"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["standardize"] is False and report["accuracy"]["heldout_standardised"] is None
    b = Bundle.load(out)
    assert b.manifest["head"]["standardize"] is False
    assert b.initial_learner().config.standardize is False


def test_softmax_head_is_not_standardised(imu, tmp_path):
    path, ckpt, _, _ = imu
    rep = export_bundle(ckpt, tmp_path / "b", data=path, head="softmax")
    assert not rep.standardize and rep.accuracy["heldout_standardised"] is None
    assert Bundle.load(tmp_path / "b").initial_learner().config.standardize is False


def test_images_have_no_subjects_and_are_not_standardised(tmp_path):
    path = write_image_npz(tmp_path / "img.npz", n_classes=3, dim=4)
    td = load_training_data(path)
    torch.manual_seed(0)
    model = build_model("mlp", td.in_shape, 3, embed_dim=4, width=8).eval()
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, model, {"normalisation": td.normalisation})
    rep = export_bundle(ckpt, tmp_path / "b", data=path)
    b = Bundle.load(tmp_path / "b")
    assert b.manifest["head"]["standardize"] is False and not rep.standardize
    assert b.initial_learner().config.standardize is False
    assert rep.accuracy["heldout_standardised"] is None and rep.accuracy["heldout"] is not None


def test_int8_export_measures_the_quantised_head_both_ways(imu, tmp_path):
    path, ckpt, _, _ = imu
    rep = export_bundle(ckpt, tmp_path / "q", data=path, quantize="int8")
    acc, q = rep.accuracy, rep.quantization
    assert acc["heldout"] == q["int8_heldout_accuracy"]
    b = Bundle.load(tmp_path / "q")
    assert b.initial_learner().config.standardize is True
    # Both figures are those of the shipped (int8) model and its head.
    x, y, subject = _windows(path)
    held = subject == HELD
    E = b.extractor().embed_many(x[held])
    user = b.initial_learner()
    assert acc["heldout"] == pytest.approx(np.mean(user.predict_many(E) == y[held]), abs=1e-12)
    user.observe_many(E)
    own = np.mean(user.predict_many(E) == y[held])
    assert acc["heldout_standardised"] == pytest.approx(own, abs=1e-12)
