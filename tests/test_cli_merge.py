"""`edgecl merge`: end to end on states over the shipped bundle (no ../shared needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgecl import StreamingLearner
from edgecl.cli import main
from edgecl.fleet.states import bundle_base
from edgecl.runtime.checkpoint import CheckpointStore


def _windows(seed: int, n: int, dim: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return rng.normal(size=(n, dim)) + np.eye(classes, dim)[y] * 2.0, y


@pytest.fixture(scope="module")
def base() -> StreamingLearner:
    return bundle_base(None)


def test_merge_counts_the_bundle_head_once_and_equals_the_union(tmp_path, base, capsys):
    dim, classes = base.config.dim, int(base.classes_.size)
    union = bundle_base(None)
    paths = []
    for k in range(3):
        dev = bundle_base(None)
        X, y = _windows(k, 40, dim, classes)
        dev.learn_many(X, y)
        union.learn_many(X, y)
        if k == 0:  # a state directory, as `edgecl run --state-dir` leaves it
            CheckpointStore(tmp_path / "dev0").save(dev)
            paths.append(str(tmp_path / "dev0"))
        else:
            dev.save(tmp_path / f"dev{k}.safetensors")
            paths.append(str(tmp_path / f"dev{k}.safetensors"))
    out = tmp_path / "merged.safetensors"
    rc = main(["merge", *paths, "--bundle", "default", "--out", str(out), "--json", "-"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["exact"] and summary["samples"] == union.statistics().n
    merged = StreamingLearner.load(out)
    a, b = merged.statistics(), union.statistics()
    np.testing.assert_array_equal(a.counts, b.counts)
    assert np.abs(a.scatter - b.scatter).max() <= 1e-9 * np.abs(b.scatter).max()
    assert merged.config.tag == union.config.tag
    X, _ = _windows(9, 500, dim, classes)
    np.testing.assert_array_equal(merged.predict_many(X), union.predict_many(X))


def test_merge_without_base_warns_that_the_bundle_head_counts_twice(tmp_path, base, capsys):
    for k in range(2):
        bundle_base(None).save(tmp_path / f"s{k}.safetensors")
    out = tmp_path / "m.safetensors"
    assert main(["merge", str(tmp_path / "s0.safetensors"), str(tmp_path / "s1.safetensors"),
                 "--out", str(out)]) == 0  # fmt: skip
    assert "counted 2 times" in capsys.readouterr().err
    assert StreamingLearner.load(out).statistics().n == 2 * base.statistics().n


def test_merge_refuses_states_of_another_bundle(tmp_path, base, capsys):
    base.save(tmp_path / "a.safetensors")
    other = bundle_base(None)
    other.config = other.config.replace(tag="bundle:" + "0" * 64)
    other.save(tmp_path / "b.safetensors")
    rc = main(["merge", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
               "--out", str(tmp_path / "m.safetensors")])  # fmt: skip
    assert rc == 1
    err = capsys.readouterr().err
    assert "different bundles" in err and err.count("\n") == 1
    assert not (tmp_path / "m.safetensors").exists()


def test_merge_needs_two_states_or_a_base(tmp_path, base, capsys):
    base.save(tmp_path / "a.safetensors")
    assert main(["merge", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "m")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_merge_of_an_empty_state_directory_is_a_clear_error(tmp_path, base, capsys):
    (tmp_path / "empty").mkdir()
    base.save(tmp_path / "a.safetensors")
    rc = main(["merge", str(tmp_path / "empty"), str(tmp_path / "a.safetensors"),
               "--out", str(tmp_path / "m")])  # fmt: skip
    assert rc == 1 and "no valid checkpoint" in capsys.readouterr().err
