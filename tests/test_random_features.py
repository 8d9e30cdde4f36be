"""Random-feature stages, numpy side: weights from the seed, the kernel, γ, streams, manifest."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from edgecl import LearnerConfig, StreamingLearner
from edgecl.errors import BundleError, ConfigError
from edgecl.eval import build_stream, load_dataset
from edgecl.eval.random_features import expand_stream, first_seen, validation_grid
from edgecl.runtime.bundle import default_bundle_path
from edgecl.runtime.manifest import check_manifest
from edgecl.runtime.random_features import RandomFeatures, make_stage, median_gamma

# -- weights come from the seed, and only from it -----------------------------------------


@pytest.mark.parametrize("kind,gamma", [("rff", 0.3), ("relu", None)])
def test_same_seed_same_weights_other_seed_other_weights(kind, gamma):
    a = RandomFeatures(kind, input_dim=7, m=32, gamma=gamma, seed=5)
    b = RandomFeatures(kind, input_dim=7, m=32, gamma=gamma, seed=5)
    c = RandomFeatures(kind, input_dim=7, m=32, gamma=gamma, seed=6)
    for wa, wb, wc in zip(a.weights, b.weights, c.weights, strict=True):
        if wa is None:
            continue
        assert wa.dtype == np.float32 and not wa.flags.writeable
        assert np.array_equal(wa, wb)
        assert not np.allclose(wa, wc)
    assert a == b and a != c
    x = np.random.default_rng(0).normal(size=(5, 7))
    assert np.array_equal(a.transform(x), b.transform(x))


def test_weights_are_drawn_as_documented():
    # One default_rng(seed): W as (m, d) standard normals, then b as m uniforms.
    rf = RandomFeatures("rff", input_dim=3, m=4, gamma=0.5, seed=9)
    rng = np.random.default_rng(9)
    w = rng.standard_normal((4, 3)) * math.sqrt(2 * 0.5)
    b = rng.uniform(0, 2 * math.pi, 4)
    assert np.array_equal(rf.weights[0], w.astype(np.float32))
    assert np.array_equal(rf.weights[1], b.astype(np.float32))
    relu = RandomFeatures("relu", input_dim=16, m=4, seed=9)
    w = np.random.default_rng(9).standard_normal((4, 16)) / 4.0
    assert np.array_equal(relu.weights[0], w.astype(np.float32)) and relu.weights[1] is None


@pytest.mark.parametrize("kind,gamma", [("rff", 0.05), ("relu", None)])
def test_float32_transform_is_the_reference_to_float32_round_off(kind, gamma):
    rf = RandomFeatures(kind, input_dim=40, m=300, gamma=gamma, seed=1)
    x = np.random.default_rng(1).uniform(0, 1, size=(7, 40))
    fast = rf.transform32(x)
    assert fast.dtype == np.float32 and fast.shape == (7, 300)
    np.testing.assert_allclose(fast, rf.transform(x, np.float64), rtol=0, atol=2e-5)
    np.testing.assert_allclose(rf.transform32(x[0]), fast[:1], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="inputs of length 39"):
        rf.transform32(x[:, :39])


def test_weight_statistics():
    rf = RandomFeatures("rff", input_dim=50, m=2000, gamma=0.02, seed=0)
    w, b = rf.weights
    assert w.std() == pytest.approx(math.sqrt(2 * 0.02), rel=0.02)
    assert 0 <= b.min() and b.max() < 2 * math.pi and b.mean() == pytest.approx(math.pi, rel=0.05)
    relu = RandomFeatures("relu", input_dim=64, m=2000, seed=0)
    assert relu.weights[0].std() == pytest.approx(1 / 8, rel=0.02)


def test_rff_approximates_the_rbf_kernel():
    gamma = 0.1
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 5))
    rf = RandomFeatures("rff", input_dim=5, m=16384, gamma=gamma, seed=3)
    phi = rf.transform(x, np.float64)
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.testing.assert_allclose(phi @ phi.T, np.exp(-gamma * d2), atol=0.03)


def test_relu_is_max_of_zero_and_wz():
    rf = RandomFeatures("relu", input_dim=4, m=8, seed=2)
    z = np.random.default_rng(0).normal(size=(3, 4))
    want = np.maximum(0, z @ rf.weights[0].astype(np.float64).T)
    np.testing.assert_allclose(rf.transform(z, np.float64), want, rtol=0, atol=1e-12)
    # Inputs are flattened: (n, 2, 2) is (n, 4).
    np.testing.assert_array_equal(rf.transform(z.reshape(3, 2, 2)), rf.transform(z))


@pytest.mark.parametrize(
    "args,message",
    [
        (("tanh", 4, 8, None), "kind"),
        (("rff", 4, 8, None), "gamma"),
        (("rff", 4, 8, 0.0), "gamma"),
        (("rff", 4, 8, float("nan")), "gamma"),
        (("relu", 4, 8, 0.1), "relu takes no gamma"),
        (("relu", 0, 8, None), "input_dim"),
        (("relu", 4, 0, None), "m = 0"),
        (("relu", 4, True, None), "m = True"),
        (("relu", 4, 1 << 20, None), "m = "),
    ],
)
def test_bad_settings_name_the_field(args, message):
    with pytest.raises(ConfigError, match=message):
        RandomFeatures(*args)
    with pytest.raises(ConfigError, match="seed"):
        RandomFeatures("relu", 4, 8, seed=-1)


def test_json_round_trip_and_unknown_keys():
    rf = RandomFeatures("rff", input_dim=3, m=4, gamma=0.25, seed=1)
    d = rf.to_json()
    assert d == {"kind": "rff", "m": 4, "gamma": 0.25, "seed": 1, "input_dim": 3}
    assert RandomFeatures.from_json(json.loads(json.dumps(d))) == rf
    with pytest.raises(ConfigError, match="expected keys"):
        RandomFeatures.from_json({**d, "bias": True})


def test_transform_refuses_the_wrong_length():
    with pytest.raises(ValueError, match="inputs of length 5"):
        RandomFeatures("relu", 4, 8).transform(np.zeros((2, 5)))


# -- gamma: the median heuristic ----------------------------------------------------------


def test_median_gamma_is_one_over_the_median_squared_distance_of_all_first_pairs():
    x = np.random.default_rng(0).normal(size=(40, 6)) * 3 + 10
    d2 = [((x[i] - x[j]) ** 2).sum() for i in range(30) for j in range(i + 1, 30)]
    assert median_gamma(x, n=30) == pytest.approx(1 / np.median(d2), rel=1e-10)
    # Only the first n count: what comes after cannot change it.
    y = np.concatenate([x[:30], np.full((500, 6), 1e6)])
    assert median_gamma(y, n=30) == median_gamma(x, n=30)


def test_median_gamma_refuses_degenerate_samples():
    with pytest.raises(ConfigError, match="median squared distance"):
        median_gamma(np.ones((10, 3)))
    with pytest.raises(ConfigError, match=">= 2 samples"):
        median_gamma(np.ones((1, 3)))
    with pytest.raises(ConfigError, match="NaN"):
        median_gamma(np.array([[0.0], [np.nan]]))


def test_make_stage_says_where_gamma_came_from():
    x = np.random.default_rng(0).normal(size=(20, 3))
    rf, source = make_stage("rff", 8, 3, samples=lambda: x)
    assert rf.gamma == median_gamma(x) and source.startswith("median heuristic on the first 20")
    assert make_stage("rff", 8, 3, gamma=0.5)[1] == "given"
    assert make_stage("relu", 8, 3)[1] == "n/a"
    with pytest.raises(ConfigError, match="pass --gamma"):
        make_stage("rff", 8, 3)
    with pytest.raises(ConfigError, match="applies to --kind rff"):
        make_stage("relu", 8, 3, gamma=0.5)


def test_median_gamma_on_mnist_pixels(shared_data):
    from conftest import shared_file

    with np.load(shared_file("mnist.npz"), allow_pickle=False) as d:
        x = d["x_train"][:1000].reshape(1000, -1) / 255.0
    assert 0.009 < median_gamma(x) < 0.0105  # ≈ 0.0097 (the issue: 0.01-0.02 works)


# -- a streaming learner on the features equals batch LDA ----------------------------------


def _batch_lda_scores(X, y, Xq, shrinkage, k):
    """Class means, pooled within-class covariance / N, shrunk towards I; linear scores."""
    mus = np.stack([X[y == c].mean(axis=0) for c in range(k)])
    D = X - mus[y]
    cov = (1 - shrinkage) * (D.T @ D) / len(X) + shrinkage * np.eye(X.shape[1])
    W = np.linalg.solve(cov, mus.T).T
    return Xq @ W.T - 0.5 * np.sum(W * mus, axis=1)


def test_streaming_slda_on_rff_features_equals_batch_lda():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 10)) * 2
    y = rng.integers(0, 3, 300)
    x = centres[y] + rng.normal(size=(300, 10))
    rf, _ = make_stage("rff", 48, 10, seed=4, samples=lambda: x)
    F = rf.transform(x, np.float64)
    cfg = LearnerConfig(dim=48, max_classes=3, head="slda", budget_bytes=10**6, slda_shrinkage=1e-2)
    learner = StreamingLearner(cfg)
    for f, label in zip(F, y, strict=True):  # one sample at a time, as on the device
        learner.learn_one(f, int(label))
    q = rf.transform(centres[rng.integers(0, 3, 50)] + rng.normal(size=(50, 10)), np.float64)
    ref = _batch_lda_scores(F, y, q, 1e-2, 3)
    np.testing.assert_allclose(learner.head.scores(q), ref, rtol=1e-6, atol=1e-6)
    assert np.array_equal(learner.predict_many(q), np.argmax(ref, axis=1))


# -- eval: the stage applied to a stream ----------------------------------------------------


def test_expand_stream_maps_every_task_and_the_holdout():
    s = build_stream(load_dataset(), "class-il", limit=15)
    wide, rf, source = expand_stream(s, 24, seed=2)
    assert wide.dim == 24 and rf.input_dim == s.dim and len(wide.tasks) == len(s.tasks)
    assert source == f"median heuristic on the first {s.n_train} training samples"
    assert rf.gamma == median_gamma(first_seen(s))
    for old, new in zip(s.tasks, wide.tasks, strict=True):
        np.testing.assert_array_equal(new.x_train, rf.transform(old.x_train))
        np.testing.assert_array_equal(new.x_test, rf.transform(old.x_test))
        np.testing.assert_array_equal(new.y_train, old.y_train)
    np.testing.assert_array_equal(wide.holdout_x, rf.transform(s.holdout_x))
    np.testing.assert_array_equal(wide.schedule, s.schedule)


def test_expand_stream_applies_permutations_first(tmp_path):
    from host_helpers import write_image_npz

    data = load_dataset(write_image_npz(tmp_path / "img.npz", dim=8))
    s = build_stream(data, "domain-il", n_tasks=3, seed=1)
    wide, rf, _ = expand_stream(s, 16, kind="relu")
    assert all(t.permutation is None for t in wide.tasks)
    perm = s.tasks[2].permutation
    assert perm is not None and not np.array_equal(perm, np.arange(8))
    np.testing.assert_array_equal(wide.tasks[2].x_train, rf.transform(s.tasks[2].x_train[:, perm]))
    # The first samples seen are the permuted ones of the arrival order.
    t, i = s.schedule[0]
    np.testing.assert_array_equal(first_seen(s, 1)[0], s.tasks[t].train_sample(i))


def test_embedded_images_are_tested_on_the_test_split(tmp_path):
    from host_helpers import write_image_npz

    data = load_dataset(write_image_npz(tmp_path / "img.npz", dim=6), embed=lambda x: x * 2.0)
    assert not data.is_image and data.x_test is not None
    s = build_stream(data, "class-il", classes_per_task=3)
    y_test = np.concatenate([t.y_test for t in s.tasks])
    np.testing.assert_array_equal(np.sort(y_test), np.sort(data.y_test))
    # z-scored with the first task's training statistics, like the training samples.
    first = data.x[np.isin(data.y, s.tasks[0].classes)].astype(np.float64)
    mean, std = first.mean(axis=0), first.std(axis=0)
    want = (data.x_test[np.isin(data.y_test, s.tasks[0].classes)] - mean) / std
    np.testing.assert_allclose(s.tasks[0].x_test, want, rtol=1e-5, atol=1e-5)


def test_validation_grid_fits_and_scores_the_training_stream_only(tmp_path):
    """(γ, ε) are scored on the last tenth of each task's training samples, by the batch
    LDA a one-pass SLDA equals; the test split is never read (NaN here changes nothing)."""
    import dataclasses

    from host_helpers import write_image_npz

    s = build_stream(load_dataset(write_image_npz(tmp_path / "i.npz", dim=12)), "class-il")
    poisoned = dataclasses.replace(
        s, tasks=tuple(dataclasses.replace(t, x_test=t.x_test * np.nan) for t in s.tasks)
    )
    g = median_gamma(first_seen(s))
    rows = validation_grid(poisoned, 64, [g, 50 * g], [1e-4, 1e-1], holdout=0.25)
    assert [(r["gamma"], r["shrinkage"]) for r in rows] == [
        (g, 1e-4), (g, 1e-1), (50 * g, 1e-4), (50 * g, 1e-1)
    ]  # fmt: skip
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    # The batch fit on the first 3/4 of each task: what a streaming learner would hold.
    fit = [(t.train_set()[0], t.train_set()[1]) for t in s.tasks]
    cut = [len(y) - round(len(y) * 0.25) for _, y in fit]
    rf = RandomFeatures("rff", s.dim, 64, g, 0)
    lr = StreamingLearner(LearnerConfig(dim=64, max_classes=s.n_classes, head="slda",
                                        budget_bytes=10**6, slda_shrinkage=1e-4))  # fmt: skip
    for (x, y), c in zip(fit, cut, strict=True):
        lr.learn_many(rf.transform(x[:c]), y[:c])
    xv = np.concatenate([x[c:] for (x, _), c in zip(fit, cut, strict=True)])
    yv = np.concatenate([y[c:] for (_, y), c in zip(fit, cut, strict=True)])
    streaming = float(np.mean(lr.predict_many(rf.transform(xv)) == yv))
    assert rows[0]["accuracy"] == pytest.approx(streaming, abs=1.5 / len(yv))
    # A kernel 50× too narrow (every pair far apart) scores worse on held-out samples.
    assert rows[0]["accuracy"] > rows[2]["accuracy"]


# -- manifest --------------------------------------------------------------------------------


def _manifest(tmp_path, **extra):
    root = tmp_path / "b"
    shutil.copytree(default_bundle_path(), root)
    m = json.loads((root / "manifest.json").read_text())
    return {**m, **extra}, root / "manifest.json"


def test_check_manifest_accepts_a_stage_or_none(tmp_path):
    m, where = _manifest(tmp_path)
    assert "random_features" not in m  # the shipped bundle: no stage, no key
    check_manifest(m, where)
    check_manifest({**m, "random_features": None}, where)
    dim = m["embedding_dim"]
    rff = {"kind": "rff", "m": dim, "gamma": 0.01, "seed": 0, "input_dim": 600}
    check_manifest({**m, "random_features": rff}, where)
    relu = {**rff, "kind": "relu", "gamma": None, "seed": 7, "input_dim": 64}
    check_manifest({**m, "random_features": relu}, where)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "tanh"},
        {"m": 65},
        {"m": "64"},
        {"gamma": None},
        {"gamma": 0},
        {"gamma": -1.0},
        {"gamma": "0.1"},
        {"seed": -1},
        {"seed": 1.5},
        {"input_dim": 0},
        {"input_dim": True},
        {"extra": 1},
    ],
)
def test_check_manifest_refuses_a_bad_stage(tmp_path, change):
    m, where = _manifest(tmp_path)
    rf = {"kind": "rff", "m": m["embedding_dim"], "gamma": 0.01, "seed": 0, "input_dim": 600}
    with pytest.raises(BundleError, match="random_features"):
        check_manifest({**m, "random_features": {**rf, **change}}, where)


@pytest.mark.parametrize("bad", [[], "rff", 1, {"kind": "relu"}])
def test_check_manifest_refuses_a_stage_that_is_not_an_object(tmp_path, bad):
    m, where = _manifest(tmp_path)
    with pytest.raises(BundleError, match="random_features"):
        check_manifest({**m, "random_features": bad}, where)


def test_relu_stage_in_a_manifest_has_no_gamma(tmp_path):
    m, where = _manifest(tmp_path)
    relu = {"kind": "relu", "m": m["embedding_dim"], "gamma": 0.1, "seed": 0, "input_dim": 8}
    with pytest.raises(BundleError, match="null for relu"):
        check_manifest({**m, "random_features": relu}, where)
