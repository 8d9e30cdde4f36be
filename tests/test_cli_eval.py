"""`edgecl eval` in-process: exit codes, JSON, summary, plot and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import EVAL_KEYS

from edgecl.cli import main
from edgecl.commands._common import _parse_value


def run_json(capsys, *argv: str) -> dict:
    rc = main(["eval", *argv, "--json", "-", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def check_ranges(out: dict, n_tasks: int) -> None:
    assert EVAL_KEYS <= set(out)
    R = np.array(out["accuracy_matrix"], dtype=float)
    assert R.shape == (n_tasks, n_tasks) and np.all((R >= 0) & (R <= 1))
    assert 0 <= out["avg_accuracy"] <= 1 and 0 <= out["prequential_accuracy"] <= 1
    assert -1 <= out["bwt"] <= 1 and -1 <= out["fwt"] <= 1 and -1 <= out["forgetting"] <= 1
    for key in ("learn_us", "predict_us"):
        assert set(out[key]) == {"p50", "p99"} and 0 < out[key]["p50"] <= out[key]["p99"]
    assert 0 < out["state_bytes"] <= out["memory"]["budget_bytes"]
    assert out["seconds"] >= 0


@pytest.mark.parametrize(
    "scenario,n_tasks,head",
    [
        ("class-il", 4, "slda"),
        ("domain-il", 5, "ncm"),
        ("task-il", 4, "softmax"),
        ("task-free", 4, "slda"),
    ],
)
def test_eval_scenarios_on_embedded_imu(capsys, scenario, n_tasks, head):
    out = run_json(capsys, "--scenario", scenario, "--head", head, "--limit", "15")
    check_ranges(out, n_tasks)
    assert out["scenario"] == scenario and out["head"] == head and out["dataset"] == "watch_imu"
    assert out["n_train"] == 15 * n_tasks
    assert out["holdout"] == "subjects 6, 7" and len(out["holdout_accuracy"]) == n_tasks
    assert out["config"]["dim"] == 72 and out["config"]["max_classes"] == 7


def test_summary_table_and_json_file(capsys, tmp_path):
    dest = tmp_path / "r.json"
    rc = main(["eval", "--limit", "10", "--json", str(dest), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "accuracy R[i, j]" in out and "avg_accuracy" in out and "after PEN+ABD" in out
    assert "held-out subjects 6, 7" in out
    assert EVAL_KEYS <= set(json.loads(dest.read_text()))


def test_learner_flags_and_head_options(capsys):
    out = run_json(
        capsys,
        "--head", "softmax", "--limit", "10", "--budget-bytes", "300000", "--replay-k", "4",
        "--lr", "0.01", "--ewc-lambda", "5", "--head-option", "buffer_dtype=float32",
        "--head-option", "consolidate_on_plateau=false", "--seed", "3",
    )  # fmt: skip
    cfg = out["config"]
    assert cfg["budget_bytes"] == 300_000 and out["memory"]["budget_bytes"] == 300_000
    assert (cfg["replay_k"], cfg["lr"], cfg["ewc_lambda"]) == (4, 0.01, 5.0)
    assert cfg["buffer_dtype"] == "float32" and cfg["consolidate_on_plateau"] is False
    assert cfg["seed"] == 3


def test_stream_flags(capsys):
    out = run_json(capsys, "--classes-per-task", "3", "--limit", "5", "--test-subjects", "1", "2")
    assert (
        out["tasks"] == ["PEN+ABD+FEL", "IR+ER+TRAP", "ROW"] and out["holdout"] == "subjects 1, 2"
    )
    out = run_json(capsys, "--tasks", "2", "--limit", "5", "--test-subjects")
    assert len(out["tasks"]) == 2 and out["holdout"] is None and out["holdout_accuracy"] is None
    out = run_json(
        capsys, "--scenario", "domain-il", "--tasks", "2", "--window", "50", "--hop", "50"
    )
    assert out["tasks"] == ["subject 1", "subject 2"]


def test_tiny_image_dataset(capsys, tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "tiny.npz"
    y = np.arange(120) % 4
    # Class c lights up pixel block c: learnable, so accuracies are well above chance.
    x = (rng.random((120, 6, 6)) * 60).astype(np.uint8)
    for c in range(4):
        x[y == c, c, :] = 255
    np.savez(p, x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    out = run_json(capsys, "--data", str(p), "--scenario", "class-il", "--head", "ncm")
    check_ranges(out, 2)
    assert out["dataset"] == "tiny" and out["tasks"] == ["0+1", "2+3"]
    assert out["avg_accuracy"] > 0.9 and out["holdout"] is None
    out = run_json(capsys, "--data", str(p), "--scenario", "domain-il", "--tasks", "3")
    assert out["tasks"] == ["perm0", "perm1", "perm2"] and out["config"]["dim"] == 36


def test_default_budget_grows_for_wide_data(capsys, tmp_path):
    p = tmp_path / "wide.npz"
    x = np.zeros((20, 40, 40), dtype=np.uint8)
    x[::2] = 200
    y = np.arange(20) % 2
    np.savez(p, x_train=x, y_train=y, x_test=x, y_test=y)
    out = run_json(capsys, "--data", str(p), "--head", "slda")
    # SLDA on 1600 pixels needs more than the 8 MB default; the default grows instead.
    assert out["memory"]["budget_bytes"] > 8_000_000
    assert out["memory"]["buffer_capacity"] == 0  # SLDA keeps statistics only, no buffer
    out = run_json(capsys, "--data", str(p), "--head", "softmax")
    # The softmax head replays: the default makes room for its buffer slots too.
    assert out["memory"]["buffer_capacity"] >= 1000


def test_random_features_on_imu_features(capsys):
    out = run_json(capsys, "--random-features", "32", "--limit", "10", "--seed", "3")
    check_ranges(out, 4)
    rf = out["random_features"]
    assert out["config"]["dim"] == 32
    assert {k: rf[k] for k in ("kind", "m", "seed", "input_dim")} == {
        "kind": "rff", "m": 32, "seed": 3, "input_dim": 72,
    }  # fmt: skip
    assert rf["gamma"] > 0 and rf["gamma_source"] == (
        "median heuristic on the first 40 training samples"
    )
    rc = main(
        ["eval", "--random-features", "16", "--gamma", "0.5", "--limit", "5", "--no-progress"]
    )
    text = capsys.readouterr().out
    assert rc == 0 and "random features: rff 72 → 16, seed 0, gamma 0.5 (given)" in text


def test_random_features_on_pixels_and_embeddings(capsys, tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "tiny.npz"
    y = np.arange(120) % 4
    x = (rng.random((120, 6, 6)) * 60).astype(np.uint8)
    for c in range(4):
        x[y == c, c, :] = 255
    np.savez(p, x_train=x[:80], y_train=y[:80], x_test=x[80:], y_test=y[80:])
    out = run_json(capsys, "--data", str(p), "--random-features", "64", "--head", "slda")
    assert out["random_features"]["input_dim"] == 36 and out["avg_accuracy"] > 0.9
    # With a bundle the default stage is the random ReLU projection of its embedding.
    out = run_json(capsys, "--bundle", "default", "--random-features", "24", "--limit", "5")
    assert out["random_features"]["kind"] == "relu" and out["random_features"]["gamma"] is None
    assert out["random_features"]["input_dim"] == 64 and out["config"]["dim"] == 24


@pytest.mark.parametrize(
    "argv,code,message",
    [
        (["--kind", "rff"], 2, "--kind applies with --random-features"),
        (["--gamma", "0.1"], 2, "--gamma applies with --random-features"),
        (["--scenario", "new-user", "--random-features", "8"], 2, "not new-user"),
        (["--random-features", "8", "--kind", "relu", "--gamma", "1"], 1, "to --kind rff"),
        (["--random-features", "0"], 1, "m = 0"),
    ],
)
def test_random_features_errors(capsys, argv, code, message):
    rc = main(["eval", *argv, "--limit", "5", "--no-progress"])
    assert rc == code and message in capsys.readouterr().err


def test_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "r.png"
    rc = main(
        ["eval", "--scenario", "domain-il", "--limit", "10", "--plot", str(png), "--no-progress"]
    )
    capsys.readouterr()
    assert rc == 0 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--scenario", "joint"],
        ["eval", "--tasks", "2", "--classes-per-task", "2"],
        ["eval", "--limit", "many"],
        ["eval", "--head-option", "nonsense=1"],
        ["eval", "--head-option", "no-equals-sign"],
        ["eval", "--head-option", "lr=0.1", "--lr", "0.2"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    assert main(argv) == 2
    _, err = capsys.readouterr()
    assert "error" in err


def test_missing_bundle_exits_1(capsys, tmp_path):
    assert main(["eval", "--bundle", str(tmp_path / "b"), "--no-progress"]) == 1
    assert "not a bundle directory" in capsys.readouterr().err


def test_eval_on_the_default_bundle_embeddings(capsys, tmp_path):
    out = tmp_path / "r.json"
    argv = ["eval", "--bundle", "default", "--scenario", "domain-il", "--no-progress"]
    assert main([*argv, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    capsys.readouterr()
    # The bundle was pre-trained on subjects 1-5: its embeddings separate the exercises
    # far better than chance (1/7) on the held-out subjects too.
    assert r["avg_accuracy"] > 0.5


def test_missing_file_exits_1_with_one_line(capsys, tmp_path):
    rc = main(["eval", "--data", str(tmp_path / "missing.npz"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.startswith("edgecl: error: ") and "missing.npz" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_option_value_exits_1_and_debug_shows_traceback(capsys):
    argv = ["eval", "--test-subjects", "42", "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "42" in err
    assert main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_help_and_version(capsys):
    assert main(["eval", "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out and "--scenario" in out and "--head-option" in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("edgecl ")


def test_parse_value():
    assert _parse_value("False") is False and _parse_value("7") == 7
    assert _parse_value("0.5") == 0.5 and _parse_value("reservoir") == "reservoir"
