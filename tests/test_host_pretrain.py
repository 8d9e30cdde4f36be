"""`edgecl pretrain` end to end, in-process: exit codes, JSON keys, checkpoint contents."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

from helpers import RESULT_KEYS
from host_helpers import write_image_npz, write_imu_npz  # noqa: E402

from edgecl.cli import main  # noqa: E402
from edgecl.host.checkpoint import load_checkpoint  # noqa: E402

FAST = ["--threads", "1", "--no-progress", "--device", "cpu"]


def test_pretrain_one_dataset_writes_a_checkpoint_and_json(tmp_path, capsys):
    data = write_image_npz(tmp_path / "img.npz")
    ckpt, out = tmp_path / "m.safetensors", tmp_path / "r.json"
    argv = ["pretrain", "--data", str(data), "--out", str(ckpt), "--json", str(out)]
    rc = main([*argv, "--epochs", "3", "--batch-size", "16", "--lr", "0.01", *FAST])
    assert rc == 0
    assert "held-out accuracy" in capsys.readouterr().out
    r = json.loads(out.read_text())
    assert RESULT_KEYS <= set(r) and r["accuracy"] == r["accuracy_matrix"][0][0]
    assert r["accuracy"] > 0.8 and r["checkpoint"] == str(ckpt) and r["model"]["arch"] == "mlp"
    model, meta = load_checkpoint(ckpt)
    assert model.spec == r["model"]
    norm = meta["normalisation"]  # float inputs: the scalar mean and std of the training set
    assert len(norm["mean"]) == len(norm["std"]) == 1 and norm["std"][0] > 0
    assert meta["class_names"] == [str(i) for i in range(6)] and meta["window"] is None
    prov = meta["provenance"]
    assert prov["data"] == ["img.npz"] and len(prov["sha256_data"][0]) == 64
    assert (
        prov["epochs"] == 3
        and prov["seed"] == 0
        and prov["accuracy"] == pytest.approx(r["accuracy"])
    )


def test_pretrain_imu_rows_uses_imu_cnn_and_stores_the_window(tmp_path, capsys):
    data = write_imu_npz(tmp_path / "imu.npz")
    ckpt = tmp_path / "imu.safetensors"
    argv = ["pretrain", "--data", str(data), "--out", str(ckpt), "--window", "16", "--hop", "8"]
    assert main([*argv, "--test-subjects", "3", "--epochs", "1", "--embed-dim", "8", *FAST]) == 0
    model, meta = load_checkpoint(ckpt)
    assert model.spec["arch"] == "imu-cnn" and model.spec["in_shape"] == [16, 3]
    assert model.spec["embed_dim"] == 8
    assert meta["window"] == {"length": 16, "hop": 8, "channels": ["a", "b", "c"], "rate_hz": 50}
    assert len(meta["normalisation"]["mean"]) == 3 and meta["provenance"]["test_subjects"] == [3]
    assert meta["class_names"] == ["slow", "mid", "fast"]
    assert "subjects 3" in capsys.readouterr().out


@pytest.mark.parametrize("scenario", ["class-il", "task-il", "domain-il"])
def test_split_classes_sequence_reports_design_keys(tmp_path, capsys, scenario):
    data = write_image_npz(tmp_path / "img.npz")
    argv = ["pretrain", "--data", str(data), "--split-classes", "2", "--strategy", "ewc"]
    argv += ["--scenario", scenario, "--epochs", "1", "--batch-size", "16", "--json", "-"]
    assert main([*argv, "--fisher-batches", "3", "--ewc-lambda", "10", *FAST]) == 0
    r = json.loads(capsys.readouterr().out)
    assert RESULT_KEYS <= set(r)
    assert len(r["accuracy_matrix"]) == 3 and r["strategy"] == "ewc" and r["scenario"] == scenario
    assert set(r["learn_us"]) == {"p50", "p99"} and r["state_bytes"] > 0


def test_task_files_sequence_prints_the_matrix_and_saves(tmp_path, capsys):
    a = write_image_npz(tmp_path / "a.npz", n_classes=3)
    b = write_image_npz(tmp_path / "b.npz", n_classes=3, seed=4)
    ckpt = tmp_path / "seq.safetensors"
    argv = ["pretrain", "--tasks", str(a), str(b), "--strategy", "replay", "--epochs", "1"]
    assert main([*argv, "--buffer-size", "20", "--out", str(ckpt), *FAST]) == 0
    out = capsys.readouterr().out
    assert "accuracy R[i, j]" in out and "avg_accuracy" in out and "bwt" in out
    _, meta = load_checkpoint(ckpt)
    assert meta["provenance"]["strategy"] == "replay"
    assert meta["provenance"]["scenario"] == "domain-il"


@pytest.mark.parametrize(
    "strategy, flag, policy, why",
    [
        ("ewc", [], "freeze", "--bn-policy auto: ewc protects weights"),
        ("si", [], "freeze", "--bn-policy auto: si protects weights"),
        ("replay", [], "train", "--bn-policy auto: replay;"),
        ("ewc", ["--bn-policy", "train"], "train", "(--bn-policy train)"),
    ],
)
def test_bn_policy_is_printed_and_recorded(tmp_path, capsys, strategy, flag, policy, why):
    a = write_image_npz(tmp_path / "a.npz", n_classes=3)
    b = write_image_npz(tmp_path / "b.npz", n_classes=3, seed=4)
    ckpt, out = tmp_path / "seq.safetensors", tmp_path / "r.json"
    argv = ["pretrain", "--tasks", str(a), str(b), "--strategy", strategy, *flag]
    argv += ["--epochs", "1", "--fisher-batches", "2", "--buffer-size", "20"]
    assert main([*argv, "--out", str(ckpt), "--json", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "BatchNorm" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"edgecl pretrain: BatchNorm {policy}, ")
    assert why in lines[0]
    requested = flag[1] if flag else "auto"
    r = json.loads(out.read_text())
    assert (r["bn_policy"], r["bn_policy_requested"]) == (policy, requested)
    assert load_checkpoint(ckpt)[1]["provenance"]["bn_policy"] == policy


def test_bn_policy_note_says_when_the_model_has_no_batchnorm(tmp_path, capsys):
    data = write_image_npz(tmp_path / "img.npz")
    argv = ["pretrain", "--data", str(data), "--split-classes", "3", "--strategy", "ewc"]
    argv += ["--no-batchnorm", "--epochs", "1", "--fisher-batches", "2", "--json", "-"]
    assert main([*argv, *FAST]) == 0
    captured = capsys.readouterr()
    assert "no BatchNorm layers (--bn-policy has no effect)" in captured.err
    assert json.loads(captured.out)["bn_policy"] == "freeze"  # resolved all the same


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (["--strategy", "ewc", "--out", "x.safetensors"], 1, "task sequence"),
        ([], 1, "--out"),
        (["--tasks", "a.npz", "--split-classes", "2"], 2, "split-classes"),
        (["--strategy", "gem"], 2, "invalid choice"),
    ],
)
def test_usage_errors(tmp_path, capsys, extra, code, message):
    data = write_image_npz(tmp_path / "img.npz")
    argv = ["pretrain"] + (["--data", str(data)] if "--tasks" not in extra else []) + extra
    assert main([*argv, *FAST]) == code
    assert message in capsys.readouterr().err


def test_pretrain_without_torch_prints_the_install_hint(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("blocked: " + name, name=name)
        sys.meta_path.insert(0, Block())
        from edgecl.cli import main
        assert main(["pretrain", "--help"]) == 0
        rc = main(["pretrain", "--data", "x.npz", "--out", "y.safetensors"])
        assert "torch" not in sys.modules
        sys.exit(rc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "pip install 'edgecl[host]'" in out.stderr


def test_cli_choices_match_the_host_registries():
    from edgecl.commands import pretrain as cli
    from edgecl.host.models import ARCHS
    from edgecl.host.strategies import STRATEGIES

    assert cli._PRETRAIN_MODELS == ARCHS
    assert sorted(cli._PRETRAIN_STRATEGIES) == sorted(STRATEGIES)


def test_task_il_only_strategies_refuse_other_scenarios_with_exit_2(tmp_path, capsys):
    from edgecl.cli import main

    data = write_image_npz(tmp_path / "d.npz")
    for name in ("packnet", "xdg", "multihead"):
        argv = ["pretrain", "--data", str(data), "--split-classes", "2", "--scenario",
                "class-il", "--strategy", name, "--epochs", "1", "--no-progress"]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--strategy {name} runs in task-il only" in err[0], err
    argv = ["pretrain", "--data", str(data), "--split-classes", "2", "--scenario", "task-il",
            "--strategy", "packnet", "--epochs", "1", "--retrain-steps", "2", "--no-progress",
            "--json", str(tmp_path / "r.json")]  # fmt: skip
    assert main(argv) == 0
    import json

    res = json.loads((tmp_path / "r.json").read_text())
    assert res["params"] > 0 and res["buffer_bytes"] > 0 and "packnet_free_fraction" in res
