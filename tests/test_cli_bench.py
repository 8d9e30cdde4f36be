"""``edgecl bench``: JSON schema, exit codes against profile targets, provider fallback."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edgecl.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--n", "40", "--warmup", "5", "--no-progress"]
TIMING_KEYS = ("embed_us", "predict_us", "learn_us", "e2e_us")


def _profile(tmp_path: Path, **fields) -> str:
    body = {"name": "test", "latency_target_us": 60_000_000, **fields}
    lines = []
    for k, v in body.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / "p.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _run(tmp_path: Path, *flags: str) -> tuple[int, dict]:
    out = tmp_path / "bench.json"
    code = main(["bench", *FAST, "--json", str(out), *flags])
    return code, json.loads(out.read_text())


def test_schema_and_targets_met(tmp_path, capsys):
    code, res = _run(tmp_path, "--profile", _profile(tmp_path))
    assert code == 0
    for key in TIMING_KEYS:
        assert set(res[key]) >= {"p50", "p95", "p99"}
        assert 0 < res[key]["p50"] <= res[key]["p95"] <= res[key]["p99"]
    assert res["e2e_us"]["p50"] >= res["embed_us"]["p50"]
    assert res["providers"] == ["CPUExecutionProvider"]
    assert 0 < res["state_bytes"] <= res["budget_bytes"]
    assert res["rss_mb"] > 0 and res["windows_per_s"] > 0
    assert res["targets_met"] is True
    assert "PASS" in capsys.readouterr().out


def test_missed_latency_target_exits_1(tmp_path, capsys):
    code, res = _run(tmp_path, "--profile", _profile(tmp_path, latency_target_us=1))
    assert code == 1
    assert res["targets_met"] is False and res["targets"]["latency"]["met"] is False
    assert res["targets"]["memory"]["met"] is True
    assert "FAIL  latency" in capsys.readouterr().out


def test_learner_over_the_memory_budget_exits_1(tmp_path):
    code, res = _run(tmp_path, "--profile", _profile(tmp_path, memory_budget_bytes=4096))
    assert code == 1
    assert res["targets"]["memory"] == {
        "metric": "state_bytes",
        "value": res["state_bytes"],
        "target": 4096,
        "met": False,
    }


def test_unavailable_provider_falls_back_to_cpu_and_says_so(tmp_path, caplog):
    prof = _profile(tmp_path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with caplog.at_level(logging.WARNING):
        code, res = _run(tmp_path, "--profile", prof)
    assert code == 0
    assert res["providers"] == ["CPUExecutionProvider"]
    assert res["missing_providers"] == ["CUDAExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "devices").glob("*.toml")))
def test_every_shipped_profile_benches(tmp_path, name):
    out = tmp_path / "b.json"
    code = main(["bench", *FAST, "--profile", str(ROOT / "devices" / name), "--json", str(out)])
    res = json.loads(out.read_text())
    assert code == (0 if res["targets_met"] else 1)
    assert res["profile"] == name.removesuffix(".toml")
    assert res["providers"][-1] == "CPUExecutionProvider"


def test_head_override_and_ort_sweep(tmp_path):
    code, res = _run(tmp_path, "--profile", _profile(tmp_path), "--head", "ncm", "--ort-sweep")
    assert code == 0 and res["head"] == "ncm"
    variants = [row["variant"] for row in res["ort_sweep"]]
    assert variants[0] == "profile" and "2 threads + spinning" in variants
    assert all(row["p50"] > 0 and row["cpu_us"] >= 0 for row in res["ort_sweep"])


@pytest.mark.parametrize("flags", [["--n", "0"], ["--warmup", "-1"]])
def test_bad_counts_are_usage_errors(flags, capsys):
    assert main(["bench", *flags]) == 2
    assert "error" in capsys.readouterr().err


def test_missing_bundle_is_one_readable_line(tmp_path, capsys):
    assert main(["bench", "--bundle", str(tmp_path / "nope"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a bundle directory" in err[0]
