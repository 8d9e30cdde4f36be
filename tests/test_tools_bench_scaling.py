"""tools/bench_scaling.py (and tools/benchkit.py) on a tiny grid: JSON schema, budgets, slopes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import import_tool

from edgecl.learner import ReservoirBuffer, plan_budget

scaling = import_tool("bench_scaling")
benchkit = import_tool("benchkit")

TINY = ["--dims", "8", "16", "32", "--classes", "2", "5", "--slots", "10", "40", "--n", "30"]
TINY += ["--warmup", "5", "--base-dim", "16", "--base-classes", "3", "--base-slots", "20"]
TINY += ["--ms", "8", "24"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("scaling") / "scaling.json"
    assert scaling.main([*TINY, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_json_schema_and_finite_numbers(report: dict) -> None:
    assert set(report) == {"machine", "settings", "results", "slopes", "seconds"}
    assert report["settings"]["base"] == {"dim": 16, "classes": 3, "slots": 20}
    rows = report["results"]
    assert len(rows) == (3 + 2 + 2 + 2) * len(scaling.HEADS)
    for r in rows:
        assert r["axis"] in scaling.AXES and r["head"] in scaling.HEADS
        for key in ("learn_us", "predict_us"):
            vals = r[key].values()
            assert all(math.isfinite(v) and v > 0 for v in vals), r
        assert r["state_bytes"] > 0
    assert set(report["slopes"]) == set(scaling.AXES)
    for per_head in report["slopes"].values():
        assert set(per_head) == set(scaling.HEADS)
        for s in per_head.values():
            assert all(v is None or math.isfinite(v) for v in s.values())


def test_axes_move_one_setting_from_the_base(report: dict) -> None:
    for r in report["results"]:
        for axis, base in report["settings"]["base"].items():
            if axis != r["axis"]:
                assert r[axis] == base


def test_state_bytes_are_the_planned_budget(report: dict) -> None:
    """Every configuration is budgeted to exactly its head, Fisher and ``slots`` slots
    (softmax); NCM and SLDA own no buffer, whatever ``slots`` says."""
    for r in report["results"]:
        dim = r.get("m", r["dim"])  # axis m: the learner sees the stage's M features
        cfg = benchkit.config_for(dim, r["classes"], r["slots"], **scaling.HEADS[r["head"]])
        plan = plan_budget(cfg)
        replays = cfg.head == "softmax"
        assert plan["buffer_capacity"] == (r["slots"] if replays else 0) == r["buffer_capacity"]
        assert r["state_bytes"] == plan["state_bytes"] == cfg.budget_bytes
    # Memory grows with every axis a head allocates for (buffer slots only for softmax).
    for axis in scaling.AXES:
        for head, settings in scaling.HEADS.items():
            sb = [
                r["state_bytes"]
                for r in report["results"]
                if (r["axis"], r["head"]) == (axis, head)
            ]
            if axis == "slots" and settings["head"] != "softmax":
                assert len(set(sb)) == 1, (axis, head, sb)
            else:
                assert sb == sorted(sb) and sb[0] < sb[-1], (axis, head, sb)


def test_m_axis_puts_a_stage_before_the_head(report: dict) -> None:
    rows = [r for r in report["results"] if r["axis"] == "m"]
    assert sorted({r["m"] for r in rows}) == [8, 24] and all(r["dim"] == 16 for r in rows)
    assert all(0 < r["stage_us"]["p50"] <= r["stage_us"]["p99"] for r in rows)
    assert all("m" not in r for r in report["results"] if r["axis"] != "m")
    slda = {r["m"]: r["state_bytes"] for r in rows if r["head"] == "slda"}
    plain = {r["dim"]: r["state_bytes"] for r in report["results"] if r["axis"] == "dim"
             and r["head"] == "slda"}  # fmt: skip
    assert slda[8] == plain[8]  # the stage costs the learner nothing but its width
    assert "stage µs" in scaling.table(report["results"], "m")


def test_state_bytes_exponents(report: dict) -> None:
    """SLDA's d×d matrices make its memory grow faster in dim than the O(d) heads'."""
    dim = report["slopes"]["dim"]
    assert dim["slda"]["state_bytes"] > dim["ncm"]["state_bytes"]
    # Each buffer slot of a replaying head costs exactly one float16 vector and an int32 label.
    for head, settings in scaling.HEADS.items():
        if settings["head"] != "softmax":
            continue
        b = {
            r["slots"]: r["state_bytes"]
            for r in report["results"]
            if (r["axis"], r["head"]) == ("slots", head)
        }
        assert b[40] - b[10] == 30 * ReservoirBuffer.bytes_per_item(16, "float16") == 30 * 36


def test_slope_recovers_a_power_law() -> None:
    xs = [32, 64, 128, 256, 512, 1024]
    assert scaling.slope(xs, [3 * x**2 for x in xs]) == pytest.approx(2.0)
    assert scaling.slope(xs, [5.0 * x for x in xs]) == pytest.approx(1.0)
    assert scaling.slope([1], [1]) is None


def test_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "figs" / "scaling.png"
    argv = ["--axes", "dim", "--dims", "8", "16", "--heads", "ncm", "slda", "--n", "10"]
    assert scaling.main([*argv, "--warmup", "2", "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_config_for_sizes_the_buffer_exactly() -> None:
    for settings in scaling.HEADS.values():
        for slots in (1, 7, 100):
            cfg = benchkit.config_for(12, 4, slots, **settings)
            want = slots if settings["head"] == "softmax" else 0
            assert plan_budget(cfg)["buffer_capacity"] == want


def test_gaussian_stream_blocks_and_determinism() -> None:
    X, Y = benchkit.gaussian_stream(100, 6, 4, seed=3)
    X2, _ = benchkit.gaussian_stream(100, 6, 4, seed=3)
    assert X.dtype == np.float32 and X.shape == (100, 6) and (X == X2).all()
    assert np.bincount(Y).tolist() == [25, 25, 25, 25] and (np.diff(Y) >= 0).all()


def test_one_thread_restores_the_environment() -> None:
    before = os.environ.get("OMP_NUM_THREADS")
    with benchkit.one_thread():
        assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ.get("OMP_NUM_THREADS") == before


@pytest.mark.parametrize("name", ["benchkit", "bench_scaling", "peers_report"])
def test_tool_docstring_examples(name: str) -> None:
    """tools/ is outside --doctest-modules' reach: run the examples here."""
    import doctest

    result = doctest.testmod(import_tool(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- accuracy against M (--rff-data) -------------------------------------------------


@pytest.fixture(scope="module")
def rff_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A miniature split image stream (4 classes of 4×5 'images', 2 tasks) at M = 8 (lazy
    SLDA) and 512 (the width from which eval's head uses Woodbury updates)."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 255, size=(4, 4, 5))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 4, n)
        x = np.clip(centres[y] + rng.normal(scale=40, size=(n, 4, 5)), 0, 255)
        return x.astype(np.uint8), y.astype(np.int64)

    (x, y), (xt, yt) = draw(300), draw(80)
    tmp = tmp_path_factory.mktemp("rff")
    np.savez(tmp / "tiny.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    out = tmp / "rff.json"
    argv = ["--rff-data", str(tmp / "tiny.npz"), "--rff-ms", "8", "512", "--rff-cap", "100000"]
    argv += ["--rff-select", "--rff-gamma-mults", "0.5", "1", "--rff-shrinkages", "1e-4", "1e-2"]
    assert scaling.main([*argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_rff_curve_schema_accuracy_and_budget(rff_report: dict) -> None:
    from edgecl.learner.slda_woodbury import WoodburySLDAHead

    assert rff_report["settings"]["rff"] and rff_report["settings"]["ms"] == [8, 512]
    rows = rff_report["results"]
    assert [r["m"] for r in rows] == [8, 512]
    assert [r["slda"]["slda_update"] for r in rows] == ["lazy", "woodbury"]
    assert rows[1]["exact_inversions"] >= 1 and rows[1]["drift"] < 1e-3
    for r in rows:
        assert 0.5 < r["avg_accuracy"] <= 1.0 and 0.0 < r["prequential_accuracy"] <= 1.0
        assert r["gamma_source"] == "given"  # chosen by --rff-select
        for key in ("learn_us", "learn_cpu_us", "predict_us", "stage_us"):
            assert all(math.isfinite(v) and v >= 0 for v in r[key].values()), (key, r[key])
        # The head edgecl eval makes at this width: state = exactly its planned bytes.
        cfg = benchkit.config_for(r["m"], 4, 0, head="slda", **r["slda"])
        assert r["state_bytes"] == plan_budget(cfg)["state_bytes"]
        if r["slda"]["slda_update"] == "woodbury":
            assert r["state_bytes"] == WoodburySLDAHead.nbytes_for(cfg)
        assert r["fits_cap"] == (r["state_bytes"] <= 100_000)
    assert rows[0]["state_bytes"] < rows[1]["state_bytes"]
    # --rff-select: (γ, ε) chosen per M on the training stream's held-out tail, then used.
    for r in rows:
        grid = r["validation"]
        assert len(grid) == 4 and sum(bool(v.get("chosen")) for v in grid) == 1
        best = next(v for v in grid if v.get("chosen"))
        assert best["accuracy"] == max(v["accuracy"] for v in grid)
        assert (r["gamma"], r["shrinkage"]) == (best["gamma"], best["shrinkage"])
        assert {round(v["gamma_mult"], 9) for v in grid} == {0.5, 1.0}
    assert [r["fits_cap"] for r in rows] == [True, False]


def test_rff_plot_is_written(rff_report: dict, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    src = tmp_path / "in.json"
    src.write_text(json.dumps(rff_report))
    png = tmp_path / "rff.png"
    assert scaling.main(["--from-json", str(src), "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000
