"""New-user and new-class scenarios: the split, the figures, and the CLI end to end."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, StreamingLearner
from edgecl.cli import main
from edgecl.errors import ConfigError
from edgecl.eval.adapt import load_embedded, new_user_split, recordings_in_order
from edgecl.eval.datasets import DEFAULT_DATA
from edgecl.eval.new_class import resolve_classes
from edgecl.runtime.bundle import Bundle, write_bundle

USER_KEYS = {
    "frozen",
    "standardised",
    "adapted",
    "majority",
    "user_only",
    "calibration_windows",
    "test_windows",
}
NEW_USER_KEYS = {
    "scenario",
    "calibration",
    "users",
    "frozen",
    "standardised",
    "adapted",
    "gain",
    "gain_standardised",
    "spread",
    "baselines",
    "bundle",
    "dataset",
    "seconds",
}


def eval_json(capsys, tmp_path, *argv: str) -> tuple[dict, str]:
    dest = tmp_path / "r.json"
    rc = main(["eval", *argv, "--no-progress", "--json", str(dest)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(dest.read_text()), out


# -- the split ---------------------------------------------------------------------


def test_split_example():
    # Subject 1: class 0 in recordings 7, 3, 5 (in that order), class 1 in 9 and 2.
    subject = np.array([1, 1, 1, 1, 1, 1, 1, 2, 2])
    recording = np.array([7, 7, 3, 9, 5, 2, 2, 4, 4])
    y = np.array([0, 0, 0, 1, 0, 1, 1, 0, 0])
    split = new_user_split(subject, recording, y, 1)
    assert [a.tolist() for a in split[1]] == [[0, 1, 3], [2, 4, 5, 6]]
    assert [a.tolist() for a in split[2]] == [[7, 8], []]  # one recording: calibration only
    split = new_user_split(subject, recording, y, 2)
    assert [a.tolist() for a in split[1]] == [[0, 1, 2, 3, 5, 6], [4]]
    with pytest.raises(ConfigError, match="calibration"):
        new_user_split(subject, recording, y, 0)


@st.composite
def layouts(draw):
    """Random recordings (subject, class, length, a stray label or not), shuffled, laid
    out as windows; recording ids are distinct arbitrary integers."""
    n_rec = draw(st.integers(1, 14))
    ids = draw(st.lists(st.integers(0, 500), min_size=n_rec, max_size=n_rec, unique=True))
    subject, recording, y = [], [], []
    for rid in ids:
        s = draw(st.integers(1, 3))
        c = draw(st.integers(0, 3))
        n = draw(st.integers(1, 4))
        labels = [c] * n
        if n >= 3 and draw(st.booleans()):
            labels[draw(st.integers(0, n - 1))] = draw(st.integers(0, 3))  # a minority label
        subject += [s] * n
        recording += [rid] * n
        y += labels
    k = draw(st.integers(1, 3))
    return np.array(subject), np.array(recording), np.array(y), k


def majority_class(labels) -> int:
    counts = Counter(labels)
    top = max(counts.values())
    return min(c for c, n in counts.items() if n == top)


@settings(max_examples=300, deadline=None)
@given(layouts())
def test_split_properties(layout):
    subject, recording, y, k = layout
    split = new_user_split(subject, recording, y, k)
    assert sorted(split) == sorted(set(subject.tolist()))
    for s, (calib, test) in split.items():
        mine = np.flatnonzero(subject == s)
        # A partition of the subject's windows, in ascending order.
        assert sorted(calib.tolist() + test.tolist()) == mine.tolist()
        assert np.all(np.diff(calib) > 0) and np.all(np.diff(test) > 0)
        # No test window shares a recording with calibration.
        assert not set(recording[calib].tolist()) & set(recording[test].tolist())
        # Per class (a recording's majority label): the first min(K, n) recordings calibrate.
        order = list(dict.fromkeys(recording[mine].tolist()))
        by_class: dict[int, list[int]] = {}
        for r in order:
            by_class.setdefault(majority_class(y[recording == r].tolist()), []).append(r)
        calib_recs = set(recording[calib].tolist())
        for recs in by_class.values():
            assert [r for r in recs if r in calib_recs] == recs[: min(k, len(recs))]
        assert calib_recs == {r for recs in by_class.values() for r in recs[:k]}


def test_recordings_in_order_takes_the_majority_label():
    assert recordings_in_order(np.array([5, 5, 5, 1, 1]), np.array([2, 0, 2, 1, 0])) == [
        (5, 2),
        (1, 0),  # tie 0/1: the smaller label
    ]


# -- new-user end to end -----------------------------------------------------------


def test_new_user_on_the_default_bundle(capsys, tmp_path):
    r, out = eval_json(
        capsys,
        tmp_path,
        "--scenario",
        "new-user",
        "--bundle",
        "default",
        "--test-subjects",
        "6",
        "7",
    )
    assert NEW_USER_KEYS <= set(r)
    assert r["scenario"] == "new-user" and r["calibration"] == 1 and r["dataset"] == "watch_imu"
    assert sorted(r["users"]) == ["6", "7"]
    for u in r["users"].values():
        assert USER_KEYS <= set(u)
        assert u["calibration_windows"] > 0 and u["test_windows"] > 0
        assert all(0.0 <= u[k] <= 1.0 for k in ("frozen", "standardised", "adapted", "user_only"))
    for k in ("frozen", "adapted", "standardised"):
        assert r[k] == pytest.approx(np.mean([u[k] for u in r["users"].values()]), abs=1e-6)
    assert r["gain"] == pytest.approx(r["adapted"] - r["frozen"], abs=1e-6)
    gains = [u["adapted"] - u["frozen"] for u in r["users"].values()]
    assert r["spread"]["gain_min"] == pytest.approx(min(gains), abs=1e-6)
    assert r["spread"]["gain_max"] == pytest.approx(max(gains), abs=1e-6)
    assert r["spread"]["gain_sd"] == pytest.approx(np.std(gains, ddof=1), abs=1e-5)
    assert set(r["baselines"]) == {"majority", "user_only"}
    # The pre-trained head is far above what the user's first recordings alone give a
    # majority vote; the summary table names every user and the mean.
    assert r["frozen"] > 0.8 > 0.3 > r["baselines"]["majority"]
    assert "new-user" in out and "\n6 " in out and "\n7 " in out and "mean" in out

    # Every class of these users has two recordings: calibrating on two leaves nothing.
    argv = ["--scenario", "new-user", "--bundle", "default", "--calibration", "2"]
    assert main(["eval", *argv, "--no-progress"]) == 1
    assert "no test subject has a recording left" in capsys.readouterr().err


@pytest.fixture(scope="module")
def watch_rows():
    with np.load(DEFAULT_DATA, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def subset_npz(path, rows: dict, keep: np.ndarray, relabel: dict[int, int] | None = None):
    out = {k: (v[keep] if v.ndim and v.shape[0] == keep.size else v) for k, v in rows.items()}
    if relabel:
        out["subject"] = np.array([relabel.get(int(s), int(s)) for s in out["subject"]])
    np.savez(path, **out)
    return path


def test_new_user_on_a_file_holding_one_subject(capsys, tmp_path, watch_rows):
    # Subject 7 alone, renamed 42: not among the bundle's held-out subjects, so the
    # default is every subject in the file.
    p = subset_npz(tmp_path / "one.npz", watch_rows, watch_rows["subject"] == 7, {7: 42})
    r, out = eval_json(capsys, tmp_path, "--scenario", "new-user", "--bundle", "default",
                       "--data", str(p))  # fmt: skip
    assert list(r["users"]) == ["42"] and r["dataset"] == "one"
    assert r["spread"]["gain_sd"] is None  # one user: no spread
    assert r["gain"] == pytest.approx(r["adapted"] - r["frozen"], abs=1e-6)
    # Naming the only subject is valid too, and gives the same figures.
    r2, _ = eval_json(capsys, tmp_path, "--scenario", "new-user", "--bundle", "default",
                      "--data", str(p), "--test-subjects", "42")  # fmt: skip
    assert r2["users"] == r["users"]


def test_new_user_skips_a_subject_with_nothing_to_test(capsys, tmp_path, watch_rows):
    # Subject 8: only the first recording of each of subject 6's classes → all calibration.
    s, rec, y = watch_rows["subject"], watch_rows["recording"], watch_rows["y"]
    firsts = {c: next(r for r in dict.fromkeys(rec[s == 6].tolist()) if y[rec == r][0] == c)
              for c in range(7)}  # fmt: skip
    keep = (s == 7) | np.isin(rec, list(firsts.values()))
    p = subset_npz(tmp_path / "two.npz", watch_rows, keep, {6: 8})
    r, out = eval_json(capsys, tmp_path, "--scenario", "new-user", "--bundle", "default",
                       "--data", str(p), "--test-subjects", "7", "8")  # fmt: skip
    assert list(r["users"]) == ["7"] and "8" in r["skipped"]
    assert "subject 8 skipped" in out
    # Nothing at all to test: one readable error, exit 1.
    only8 = subset_npz(tmp_path / "only8.npz", watch_rows, np.isin(rec, list(firsts.values())))
    assert main(["eval", "--scenario", "new-user", "--bundle", "default", "--data", str(only8),
                 "--no-progress"]) == 1  # fmt: skip
    assert "no test subject" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,msg",
    [
        (["--scenario", "new-user"], "needs --bundle"),
        (["--scenario", "new-class", "--new-classes", "5"], "needs --bundle"),
        (["--scenario", "new-user", "--bundle", "default", "--calibration", "0"], "--calibration"),
        (["--scenario", "new-user", "--bundle", "default", "--new-classes", "5"], "new-class"),
        (["--scenario", "new-class", "--bundle", "default", "--shots", "0"], "--shots"),
        (["--scenario", "new-class", "--bundle", "default"], "--new-classes"),
    ],
)
def test_adaptation_usage_errors_exit_2(capsys, argv, msg):
    assert main(["eval", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_unknown_test_subject_exits_1(capsys):
    argv = ["eval", "--scenario", "new-user", "--bundle", "default", "--test-subjects", "99"]
    assert main([*argv, "--no-progress"]) == 1
    assert "99" in capsys.readouterr().err


# -- new-class ---------------------------------------------------------------------


def test_resolve_classes():
    names = ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    assert resolve_classes(["ROW", "5", "TRAP"], names) == (5, 6)
    with pytest.raises(ConfigError, match="SQUAT"):
        resolve_classes(["SQUAT"], names)
    with pytest.raises(ConfigError, match="7"):
        resolve_classes(["7"], names)


def test_new_class_override_on_the_default_bundle(capsys, tmp_path):
    # The default bundle knows every class: --new-classes makes 5 and 6 "new" anyway.
    r, out = eval_json(
        capsys, tmp_path, "--scenario", "new-class", "--bundle", "default",
        "--reference-bundle", "default", "--new-classes", "TRAP", "6", "--shots", "1", "5",
    )  # fmt: skip
    assert r["scenario"] == "new-class" and r["new_classes"] == [5, 6]
    assert r["new_class_names"] == ["TRAP", "ROW"]
    assert sorted(r["shots"]) == ["1", "5"]
    for s in [*r["shots"].values(), r["reference"], r["frozen"]]:
        assert {"old", "new", "overall", "users"} <= set(s)
        assert sorted(s["users"]) == ["6", "7"]
    # Same bundle both ways: the reference is exactly the frozen head.
    assert r["reference"]["users"] == r["frozen"]["users"]
    assert r["shots"]["5"]["users"]["6"]["shot_windows"] == 10
    assert "after 5 shot(s)" in out and "reference" in out


@pytest.fixture(scope="module")
def bundle_without_5_6(tmp_path_factory):
    """The default extractor with a head fitted on subjects 1-5 without TRAP and ROW."""
    default = Bundle.load()
    data = load_embedded(default)
    keep = (data.subject <= 5) & ~np.isin(data.y, [5, 6])
    cfg = default.initial_learner().config
    learner = StreamingLearner(LearnerConfig(**{**cfg.to_dict(), "seed": 1}))
    learner.learn_many(data.x[keep], data.y[keep])
    d = tmp_path_factory.mktemp("b")
    learner.save(d / "head.safetensors")
    manifest = {**default.manifest, "excluded_classes": [5, 6]}
    return write_bundle(
        d / "bundle",
        manifest,
        default.model_path.read_bytes(),
        (d / "head.safetensors").read_bytes(),
    )


def test_new_class_with_a_bundle_pretrained_without_two_classes(
    capsys, tmp_path, bundle_without_5_6
):
    r, out = eval_json(
        capsys, tmp_path, "--scenario", "new-class", "--bundle", str(bundle_without_5_6.path),
        "--reference-bundle", "default", "--shots", "1", "5", "20",
    )  # fmt: skip
    assert r["new_classes"] == [5, 6]  # from the manifest
    assert r["frozen"]["new"] == 0.0  # never seen: 0 by construction
    assert r["frozen"]["old"] > 0.7
    new = [r["shots"][k]["new"] for k in ("1", "5", "20")]
    assert new[0] > 0.0 and new[2] >= new[0] - 0.05
    assert r["reference"]["new"] > 0.8
    for k in ("1", "5", "20"):
        assert r["shots"][k]["sd"].keys() == {"old", "new", "overall"}
    assert "frozen (bundle)" in out and "after 20 shot(s)" in out
