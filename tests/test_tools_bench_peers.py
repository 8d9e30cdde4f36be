"""tools/bench_peers.py on tiny streams: JSON schema, reference equalities, missing peers."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file
from helpers import import_tool

from edgecl import LearnerConfig, StreamingLearner
from edgecl.eval.datasets import load_dataset
from edgecl.eval.runner import run_stream
from edgecl.eval.streams import build_stream

bench = import_tool("bench_peers")
peers = import_tool("peer_learners")


def _finite_positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _tiny(tmp_path: Path, *extra: str) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "peers.json"
    argv = ["--suites", "imu", "--scenarios", "class-il", "--imu-limit", "8"]
    argv += ["--test-limit", "15", "--warmup", "2", "--repeats", "2", "--json", str(out)]
    assert bench.main([*argv, *extra]) == 0
    return json.loads(out.read_text())


def _check_row(r: dict) -> None:
    assert 0.0 <= r["avg_accuracy"] <= 1.0
    assert 0.0 <= r["prequential_accuracy"] <= 1.0
    assert np.asarray(r["accuracy_matrix"]).shape == (4, 4)
    for key in ("learn_us", "predict_us"):
        assert set(r[key]) == {"p50", "p99", "mean", "max"}
        assert all(_finite_positive(v) for v in r[key].values()), r
        assert r[key]["p50"] <= r[key]["p99"] <= r[key]["max"]
    assert _finite_positive(r["memory_bytes"])
    assert r["memory_measure"] in {"state", "tensors", "traced"}
    assert r["repeats"] == 2


def test_edgecl_rows_schema_and_plot(tmp_path: Path) -> None:
    rep = _tiny(tmp_path, "--learners", "edgecl")
    assert set(rep) >= {"machine", "settings", "avalanche", "streams"}
    (s,) = rep["streams"]
    assert s["name"] == "imu/class-il" and s["n_train"] == 32 and s["dim"] == 72
    assert s["embeddings"] == "features" and s["test_per_task"] == [15, 15, 15, 15]
    assert [r["learner"] for r in s["results"]] == [f"edgecl {h}" for h in peers.EDGECL_ROWS]
    for r in s["results"]:
        _check_row(r)
        assert r["memory_measure"] == "state"
        assert 0.0 <= r["holdout_accuracy"] <= 1.0
        # tracemalloc sees every preallocated numpy array of the learner, and little else.
        assert r["traced_bytes"]["retained"] >= r["memory_bytes"]
        assert r["traced_bytes"]["samples"] == 32


def test_from_json_merges_reports_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    a = _tiny(tmp_path / "a", "--learners", "edgecl ncm", "--no-trace")
    b = _tiny(tmp_path / "b", "--learners", "edgecl slda", "--no-trace")
    png, merged = tmp_path / "figs" / "peers.png", tmp_path / "merged.json"
    paths = [str(tmp_path / d / "peers.json") for d in ("a", "b")]
    assert bench.main(["--from-json", *paths, "--json", str(merged), "--plot", str(png)]) == 0
    m = json.loads(merged.read_text())
    assert m["streams"] == a["streams"] + b["streams"]
    assert png.stat().st_size > 1000


def test_bundle_embeddings(tmp_path: Path) -> None:
    bundle = pytest.importorskip("edgecl.runtime.bundle")
    if not (bundle.default_bundle_path() / "manifest.json").is_file():
        pytest.skip("the default bundle is not built")
    rep = _tiny(tmp_path, "--embeddings", "bundle", "--learners", "edgecl ncm", "--no-trace")
    (s,) = rep["streams"]
    assert s["name"] == "imu-bundle/class-il" and s["embeddings"] == "bundle"
    assert s["dim"] == bundle.Bundle.load().embedding_dim
    _check_row(s["results"][0])


def test_edgecl_rows_match_edgecl_eval() -> None:
    """The benchmark's loop is the same measurement as ``edgecl eval`` (run_stream)."""
    stream = build_stream(load_dataset(), "domain-il", limit=10)
    tests = bench.task_test_sets(stream, None, 0)
    spec = next(s for s in peers.learner_specs() if s.name == "edgecl slda")
    row = bench.run_learner(spec, stream, tests, warmup=0, trace=False)
    ref = run_stream(stream, LearnerConfig(dim=stream.dim, max_classes=7, head="slda"))
    assert row["avg_accuracy"] == pytest.approx(ref.avg_accuracy, abs=1e-12)
    assert row["prequential_accuracy"] == pytest.approx(ref.prequential_accuracy, abs=1e-12)
    assert np.allclose(row["accuracy_matrix"], ref.accuracy_matrix, atol=1e-6)
    assert row["holdout_accuracy"] == pytest.approx(ref.holdout_accuracy[-1], abs=1e-12)


def test_torch_and_avalanche_rows(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    learners = ["torch", "avalanche", "edgecl softmax+replay+ewc"]
    rep = _tiny(tmp_path, "--no-trace", "--learners", *learners)
    (s,) = rep["streams"]
    names = [r["learner"] for r in s["results"]]
    assert "torch softmax+replay+ewc" in names and "avalanche-slda (transcribed)" in names
    for r in s["results"]:
        _check_row(r)
    assert s["targets"]["torch"]["target"] == 20.0
    assert _finite_positive(s["targets"]["torch"]["speedup_p50"])
    assert rep["avalanche"]  # the reason it is (not) importable is always reported


def test_torch_softmax_is_edgecl_softmax_in_torch() -> None:
    """Without replay and EWC the torch learner and edgecl's head take the same SGD steps."""
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    Y = rng.integers(0, 3, 60)
    t = peers.TorchSoftmax(5, 4, 0, replay_k=0, ewc_lambda=0.0)
    e = StreamingLearner(
        LearnerConfig(dim=5, max_classes=4, head="softmax", replay_k=0, buffer_capacity=0)
    )
    for x, y in zip(X, Y.tolist(), strict=True):
        t.learn_one(t.prepare(x), y)
        e.learn_one(x, y)
    theta = np.hstack([t.lin.weight.detach().numpy(), t.lin.bias.detach().numpy()[:, None]])
    assert np.allclose(theta, e.head.theta_, atol=1e-5)
    assert (t.predict_many(X) == e.predict_many(X)).all()


def test_avalanche_slda_learns_separable_classes() -> None:
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    means = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    Y = rng.integers(0, 3, 200)
    X = (means[Y] + rng.normal(size=(200, 3))).astype(np.float32)
    m = peers.AvalancheSLDA(3, 3)
    assert m.predict_one(m.prepare(X[0])) == -1
    for x, y in zip(X, Y.tolist(), strict=True):
        m.learn_one(m.prepare(x), y)
    assert (m.predict_many(X) == Y).mean() > 0.95
    assert m.cK.tolist() == np.bincount(Y, minlength=3).tolist()


def test_river_and_sklearn_rows(tmp_path: Path) -> None:
    pytest.importorskip("river")
    pytest.importorskip("sklearn")
    learners = ["SoftmaxRegression", "GaussianNB", "Perceptron", "edgecl slda"]
    rep = _tiny(tmp_path, "--learners", *learners)
    (s,) = rep["streams"]
    fams = {r["family"] for r in s["results"]}
    assert fams == {"edgecl", "river", "sklearn"} and len(s["results"]) == 4
    for r in s["results"]:
        _check_row(r)
        if r["family"] in {"river", "sklearn"}:
            assert r["memory_measure"] == "traced"
    assert {t["peer"] for t in s["targets"]["river"]} == {
        r["learner"] for r in s["results"] if r["family"] == "river"
    }


def test_missing_peers_are_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in ("river", "sklearn") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    rep = _tiny(tmp_path, "--no-trace", "--learners", "river", "sklearn", "edgecl ncm")
    (s,) = rep["streams"]
    assert [r["learner"] for r in s["results"]] == ["edgecl ncm"]
    reasons = {k["learner"]: k["reason"] for k in s["skipped"]}
    assert len(reasons) == 6
    assert set(reasons.values()) == {"not installed: pip install 'edgecl[peers]'"}
    assert "not installed: pip install 'edgecl[peers]'" in capsys.readouterr().out


def test_slow_peers_skipped_above_their_dim(tmp_path: Path) -> None:
    pytest.importorskip("river")
    pytest.importorskip("torch")
    data = shared_file("mnist.npz").parent
    out = tmp_path / "mnist.json"
    argv = ["--suites", "mnist", "--data", str(data), "--limit", "4", "--test-limit", "10"]
    argv += ["--learners", "KNN", "avalanche", "edgecl ncm", "--warmup", "0", "--repeats", "1"]
    assert bench.main([*argv, "--no-trace", "--json", str(out)]) == 0
    (s,) = json.loads(out.read_text())["streams"]
    assert s["name"] == "mnist/class-il" and s["dim"] == 784 and s["n_train"] == 20
    assert [r["learner"] for r in s["results"]] == ["edgecl ncm"]
    assert s["results"][0]["memory_measure"] == "state"  # --no-trace: own accounting only
    assert s["results"][0]["traced_bytes"] is None
    skipped = {k["learner"]: k["reason"] for k in s["skipped"]}
    assert set(skipped) == {"river KNN (k=5, window 1000)", "avalanche-slda (transcribed)"}
    assert all("dim 784 > 256" in r and "--force-slow" in r for r in skipped.values())


def _shared_draws(e: StreamingLearner, t) -> None:
    """Make the torch learner use the buffer draws edgecl makes (their generators differ):
    edgecl's replayed rows and reservoir slots are recorded and fed to ``t``'s hooks."""
    buf = e.head.buffer
    draws: list[list[int]] = []
    slots: list[int] = []
    choose, slot = buf._choose, buf._slot_reservoir

    def record_choose(k: int) -> np.ndarray:
        idx = choose(k)
        draws.append(idx.tolist())
        return idx

    def record_slot() -> int:
        slots.append(slot())
        return slots[-1]

    buf._choose, buf._slot_reservoir = record_choose, record_slot
    t._choose = lambda k: draws.pop(0)
    t._slot = lambda: slots.pop(0)


def _shifting_stream(n: int = 210, dim: int = 6, seed: int = 0):
    """Three tasks of two new classes each (class-incremental), float32 like the bench."""
    rng = np.random.default_rng(seed)
    centres = 2.0 * rng.normal(size=(6, dim))
    Y = np.concatenate([rng.integers(2 * t, 2 * t + 2, n // 3) for t in range(3)])
    X = (centres[Y] + rng.normal(size=(n, dim))).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("lam", [0.0, 1.0, 100.0], ids=["replay", "ewc", "stiff-ewc"])
def test_torch_softmax_replay_ewc_is_edgecl_in_torch(lam: float, dtype: str) -> None:
    """Given the same replayed rows and reservoir slots, the torch peer takes edgecl's
    steps: same Fisher (new sample only), same proximal EWC step, same consolidations.
    λ = 100 makes ηλF ≈ 8, where a gradient penalty would overshoot the anchors."""
    pytest.importorskip("torch")
    X, Y = _shifting_stream()
    kw = dict(loss_window=10, buffer_capacity=50, weight_decay=1e-3)
    t = peers.TorchSoftmax(6, 6, 0, replay_k=8, ewc_lambda=lam, slots=50, dtype=dtype, **kw)
    e = StreamingLearner(
        LearnerConfig(
            dim=6, max_classes=6, head="softmax", budget_bytes=100_000, ewc_lambda=lam, **kw
        )
    )
    _shared_draws(e, t)
    for x, y in zip(X, Y.tolist(), strict=True):
        assert t.predict_one(t.prepare(x)) == e.predict_one(x)
        e.learn_one(x, y)
        t.learn_one(t.prepare(x), y)
    # float32 rounding over 210 steps measured ≤ 5e-7 on |θ| ≈ 1; float64 agrees to 1 ulp.
    atol = 1e-12 if dtype == "float64" else 5e-6
    assert t.stored == len(e.head.buffer) == 50
    np.testing.assert_allclose(t.theta(), e.head.theta_, rtol=0, atol=atol)
    assert (t.predict_many(X) == e.predict_many(X)).all()
    if lam:
        f = e.head.fisher
        assert t.consolidations == f.consolidations >= 2  # the proximal step was exercised
        for mine, theirs in ((t.fisher, f.fisher_), (t.anchor, f.anchor_)):
            both = np.hstack([mine[0].double().numpy(), mine[1].double().numpy()[:, None]])
            np.testing.assert_allclose(both, theirs, rtol=0, atol=atol)


def test_torch_softmax_replays_k_distinct_rows_as_edgecl_draws_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Given the same uniforms, the peer's Floyd draw picks edgecl's rows: min(k, stored)
    distinct ones (not a permutation of the whole buffer)."""
    torch = pytest.importorskip("torch")
    t = peers.TorchSoftmax(3, 2, 0, replay_k=8, ewc_lambda=0.0)
    buf = StreamingLearner(LearnerConfig(dim=3, max_classes=2, head="softmax")).head.buffer

    class Uniforms:  # stands in for both generators: the next k uniforms are ``u``
        u = np.empty(0)

        def random(self, k: int) -> np.ndarray:
            return self.u[:k]

    draw = Uniforms()
    monkeypatch.setattr(torch, "rand", lambda k, **kw: torch.tensor(draw.random(k)))
    monkeypatch.setattr(buf, "_rng", draw)
    rng = np.random.default_rng(0)
    for stored in (3, 8, 9, 20, 1000):
        t.stored = buf._len = stored
        for _ in range(200):
            draw.u = rng.random(min(8, stored))
            idx = t._choose(8)
            assert idx == buf._choose(8).tolist()
            assert len(set(idx)) == min(8, stored) and all(0 <= i < stored for i in idx)


def test_rff_and_er_rows(tmp_path: Path) -> None:
    """The opt-in rows: SLDA behind a random-feature stage, and torch ER with N slots."""
    pytest.importorskip("torch")
    rep = _tiny(tmp_path, "--no-trace", "--learners", "edgecl slda", "ER-16",
                "--rff-m", "32", "--rff-shrinkage", "1e-3", "--er-slots", "16")  # fmt: skip
    (s,) = rep["streams"]
    names = [r["learner"] for r in s["results"]]
    assert "edgecl slda+rff32" in names, names
    assert any(n.startswith("torch ER-16") for n in names), names
    for r in s["results"]:
        _check_row(r)
