"""`edgecl pretrain --exclude-classes`: data without some classes, a checkpoint and a bundle
that record it, and a head that has never seen those classes (class-incremental bundles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from helpers import import_tool  # noqa: E402
from host_helpers import write_image_npz, write_imu_npz  # noqa: E402

from edgecl.cli import main  # noqa: E402
from edgecl.errors import BundleError, ConfigError  # noqa: E402
from edgecl.host.checkpoint import load_checkpoint  # noqa: E402
from edgecl.host.data import (  # noqa: E402
    ClassSelectionError,
    load_training_data,
    resolve_classes,
    split_classes,
)
from edgecl.host.export import export_bundle  # noqa: E402
from edgecl.runtime.bundle import Bundle, default_bundle_path  # noqa: E402
from edgecl.runtime.manifest import check_manifest  # noqa: E402
from edgecl.runtime.windowing import windows_by_segment  # noqa: E402

WATCH = Path(__file__).resolve().parents[1] / "edgecl" / "data" / "watch_imu.npz"
WATCH_NAMES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
FAST = ["--threads", "1", "--no-progress", "--device", "cpu"]


# -- data ---------------------------------------------------------------------------


def test_resolve_classes_takes_names_and_ids():
    assert resolve_classes(["TRAP", "ROW"], WATCH_NAMES) == (5, 6)
    assert resolve_classes([6, "5", "TRAP"], WATCH_NAMES) == (5, 6)  # ids, as text too; deduped
    assert resolve_classes([], WATCH_NAMES) == ()
    # A name wins over an id: in a dataset whose classes are named by numbers, "1" is that name.
    assert resolve_classes(["1"], ("2", "1", "0")) == (1,)


@pytest.mark.parametrize("bad", [["TRAPS"], ["trap"], [7], ["-1"], [True]])
def test_unknown_classes_are_refused_naming_the_valid_ones(bad):
    with pytest.raises(ClassSelectionError, match=r"is not a class of .*0 PEN, 1 ABD.*6 ROW"):
        resolve_classes(bad, WATCH_NAMES)


def test_excluding_every_class_is_refused():
    with pytest.raises(ClassSelectionError, match="every class"):
        resolve_classes(list(WATCH_NAMES), WATCH_NAMES)
    assert issubclass(ClassSelectionError, ConfigError)


def test_imu_rows_drop_excluded_classes_from_both_splits(tmp_path):
    path = write_imu_npz(tmp_path / "imu.npz")  # classes slow, mid, fast; subjects 1..3
    full = load_training_data(path, window=16, hop=8, test_subjects=[3])
    d = load_training_data(path, window=16, hop=8, test_subjects=[3], exclude_classes=["fast"])
    assert d.excluded_classes == (2,) and d.kept_classes == (0, 1)
    assert d.class_names == full.class_names and d.n_classes == 3  # ids are not renumbered
    assert set(d.y_train) == {0, 1} and set(d.y_test) == {0, 1}
    assert d.test_subjects == [3] and set(d.subject_test) == {3}
    # Exactly the windows of the other classes, normalised with their own statistics.
    raw = np.load(path)
    w = windows_by_segment(raw["x"], raw["y"], raw["recording"], 16, 8, subjects=raw["subject"])
    train = w.x[(w.subject != 3) & (w.y != 2)]
    assert len(d.y_train) == len(train) < len(full.y_train)
    assert len(d.y_test) == int(((w.subject == 3) & (w.y != 2)).sum())
    np.testing.assert_allclose(d.normalisation["mean"], train.reshape(-1, 3).mean(0), rtol=1e-5)
    assert d.subject_train.shape == d.y_train.shape and 3 not in set(d.subject_train)


def test_imu_windows_layout_drops_excluded_classes(tmp_path):
    rows = np.load(write_imu_npz(tmp_path / "rows.npz"))
    w = windows_by_segment(rows["x"], rows["y"], rows["recording"], 16, 8, subjects=rows["subject"])
    path = tmp_path / "windows.npz"
    np.savez(path, x_raw=w.x, y=w.y, subject=w.subject, recording=w.group, classes=rows["classes"])
    d = load_training_data(path, test_subjects=[3], exclude_classes=[0, "mid"])
    assert d.excluded_classes == (0, 1)
    assert set(d.y_train) == set(d.y_test) == {2}
    assert np.array_equal(d.subject_test, w.subject[(w.subject == 3) & (w.y == 2)])


def test_images_drop_excluded_classes_and_keep_label_ids(tmp_path):
    path = write_image_npz(tmp_path / "img.npz")  # 6 classes, named "0".."5"
    d = load_training_data(path, exclude_classes=["1", 4], limit=50)
    assert d.excluded_classes == (1, 4) and d.n_classes == 6 and len(d.y_train) == 50
    assert not np.isin(d.y_train, [1, 4]).any() and not np.isin(d.y_test, [1, 4]).any()
    assert set(d.y_test) == {0, 2, 3, 5}
    assert d.subject_train is None and d.subject_test is None
    x = np.load(path)["x_train"]
    kept = x[~np.isin(np.load(path)["y_train"], [1, 4])]
    assert d.normalisation["mean"][0] == pytest.approx(float(kept.mean(dtype=np.float64)))


def test_split_classes_skips_excluded_classes(tmp_path):
    d = load_training_data(write_image_npz(tmp_path / "img.npz"), exclude_classes=[1])
    cil = split_classes(d, 2, "class-il")
    assert [t.classes for t in cil] == [(0, 2), (3, 4), (5,)]
    assert set(cil[0].y_train) == {0, 2} and set(cil[0].y_test) == {0, 2}
    dom = split_classes(d, 2, "domain-il")  # labels become positions in the task
    assert [t.classes for t in dom] == [(0, 1), (0, 1), (0,)]
    np.testing.assert_array_equal(dom[0].y_train, (d.y_train[np.isin(d.y_train, [0, 2])] > 0))
    with pytest.raises(ConfigError, match=r"\[1, 4\] for 5 classes \(1 excluded\)"):
        split_classes(d, 5, "class-il")


# -- pretrain CLI → checkpoint → export → bundle -------------------------------------


@pytest.fixture(scope="module")
def no_trap_row(tmp_path_factory):
    """A small watch_imu.npz model pre-trained without TRAP and ROW, and its bundle."""
    tmp = tmp_path_factory.mktemp("exclude")
    ckpt = tmp / "no-trap-row.safetensors"
    argv = ["pretrain", "--data", str(WATCH), "--test-subjects", "6", "7", "--limit", "300"]
    argv += ["--epochs", "1", "--embed-dim", "8", "--width", "4", "--out", str(ckpt)]
    argv += ["--exclude-classes", "TRAP", "ROW", "--json", str(tmp / "r.json"), *FAST]
    assert main(argv) == 0
    report = json.loads((tmp / "r.json").read_text())
    rep = export_bundle(ckpt, tmp / "bundle")
    return ckpt, report, rep


def test_pretrain_records_the_exclusion(no_trap_row):
    ckpt, report, _ = no_trap_row
    assert report["excluded_classes"] == [5, 6]
    model, meta = load_checkpoint(ckpt)
    assert meta["provenance"]["excluded_classes"] == [5, 6]
    # The classifier keeps one output per class of the dataset: ids stay the dataset's.
    assert model.spec["n_classes"] == 7 and meta["class_names"] == list(WATCH_NAMES)


def test_pretrain_without_exclusion_records_an_empty_list(tmp_path):
    ckpt = tmp_path / "m.safetensors"
    data = write_image_npz(tmp_path / "img.npz")
    assert main(["pretrain", "--data", str(data), "--epochs", "1", "--out", str(ckpt), *FAST]) == 0
    assert load_checkpoint(ckpt)[1]["provenance"]["excluded_classes"] == []


def test_exported_head_has_never_seen_the_excluded_classes(no_trap_row):
    _, _, rep = no_trap_row
    b = Bundle.load(rep.path)
    learner = b.initial_learner()
    seen = learner.head.seen_mask
    assert seen[:5].all() and not seen[5:].any()
    assert b.excluded_classes == (5, 6)
    assert b.manifest["excluded_classes"] == [5, 6]
    assert b.manifest["provenance"]["excluded_classes"] == [5, 6]
    assert rep.to_json()["excluded_classes"] == [5, 6]
    assert "excluded from pre-training and the head: TRAP (5), ROW (6)" in rep.summary()
    # The head was fitted on the same kept-class data as pre-training (provenance.limit too).
    assert learner.n_learned == rep.accuracy["train_n"] == 300


def test_export_without_exclusion_writes_an_empty_list(tmp_path):
    from edgecl.host.checkpoint import save_checkpoint
    from edgecl.host.models import build_model

    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model("mlp", (4,), 3, embed_dim=4, width=4).eval(), {})
    export_bundle(path, tmp_path / "b")
    b = Bundle.load(tmp_path / "b")
    assert b.manifest["excluded_classes"] == [] and b.excluded_classes == ()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--exclude-classes", "TRAPS"], "'TRAPS' is not a class of watch_imu.npz"),
        (["--exclude-classes", "9"], "0 PEN, 1 ABD, 2 FEL, 3 IR, 4 ER, 5 TRAP, 6 ROW"),
        (["--exclude-classes", *WATCH_NAMES], "excludes every class"),
    ],
)
def test_bad_exclusions_are_usage_errors(tmp_path, capsys, extra, message):
    argv = ["pretrain", "--data", str(WATCH), "--out", str(tmp_path / "m.safetensors"), *extra]
    assert main([*argv, "--limit", "50", "--epochs", "1", *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgecl pretrain: error: exclude_classes: ") and message in err
    assert err.count("\n") == 1 and not (tmp_path / "m.safetensors").exists()


def test_exclusion_does_not_combine_with_task_files(tmp_path, capsys):
    a = write_image_npz(tmp_path / "a.npz", n_classes=3)
    argv = ["pretrain", "--tasks", str(a), str(a), "--exclude-classes", "1", *FAST]
    assert main(argv) == 2
    assert "--exclude-classes" in capsys.readouterr().err


def test_split_classes_sequence_without_a_class_keeps_the_full_head(tmp_path):
    data = write_image_npz(tmp_path / "img.npz")  # 6 classes; the last one excluded
    ckpt = tmp_path / "seq.safetensors"
    argv = ["pretrain", "--data", str(data), "--split-classes", "2", "--exclude-classes", "5"]
    argv += ["--epochs", "1", "--batch-size", "16", "--out", str(ckpt), "--json", "-", *FAST]
    assert main(argv) == 0
    model, meta = load_checkpoint(ckpt)
    assert model.spec["n_classes"] == 6 and meta["provenance"]["excluded_classes"] == [5]
    assert meta["provenance"]["tasks"] == ["0-1", "2-3", "4"]


# -- manifest -----------------------------------------------------------------------


def _manifest(tmp_path, **extra):
    """The shipped bundle's manifest, in a copy of the bundle, with ``extra`` keys."""
    import shutil

    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    m = json.loads((root / "manifest.json").read_text())
    m.pop("excluded_classes", None)
    return {**m, **extra}, root / "manifest.json"


def test_check_manifest_accepts_bundles_with_and_without_the_key(tmp_path):
    m, where = _manifest(tmp_path)
    check_manifest(m, where)  # older bundles have no excluded_classes
    check_manifest({**m, "excluded_classes": []}, where)
    check_manifest({**m, "excluded_classes": [5, 6]}, where)


@pytest.mark.parametrize(
    "bad", [[7], [-1], [5, 5], ["TRAP"], [True], [5.0], 5, None, {"5": 1}, [[5]]]
)
def test_check_manifest_refuses_bad_exclusions(tmp_path, bad):
    m, where = _manifest(tmp_path, excluded_classes=bad)
    with pytest.raises(BundleError, match="excluded_classes"):
        check_manifest(m, where)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_check_manifest_refuses_a_non_bool_head_standardize(tmp_path, bad):
    m, where = _manifest(tmp_path)
    m["head"] = {**m["head"], "standardize": bad}
    with pytest.raises(BundleError, match="head.standardize"):
        check_manifest(m, where)
    m["head"]["standardize"] = True
    check_manifest(m, where)


# -- tools/build_bundle.py -----------------------------------------------------------


def test_build_bundle_passes_the_exclusion_to_pretrain(monkeypatch, tmp_path):
    import torch

    import edgecl.cli

    tool = import_tool("build_bundle")
    calls = []

    def fake_main(argv):
        calls.append(argv)
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / "f").write_bytes(b"x")
        return 0

    monkeypatch.setattr(edgecl.cli, "main", fake_main)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda *a, **k: None)
    ckpt = tmp_path / "c.safetensors"
    assert tool.main(["--out", str(tmp_path / "out"), "--checkpoint", str(ckpt)]) == 0
    assert calls[0] == [*tool.PRETRAIN, "--out", str(ckpt)]  # `make bundle`: the same recipe
    argv = ["--out", str(tmp_path / "out"), "--checkpoint", str(ckpt)]
    assert tool.main([*argv, "--exclude-classes", "TRAP", "ROW"]) == 0
    assert calls[2] == [*tool.PRETRAIN, "--exclude-classes", "TRAP", "ROW", "--out", str(ckpt)]
    assert calls[3][0] == "export" and "--exclude-classes" not in calls[3]
