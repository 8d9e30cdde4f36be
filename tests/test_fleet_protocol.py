"""The fleet round protocol without a transport: exact rounds, refusals, lost broadcasts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl import LearnerConfig, StreamingLearner
from edgecl.fleet.protocol import FleetDevice, FleetError, FleetServer, Upload

DIM, C = 5, 4
TAG = "bundle:" + "ab" * 32


def _cfg(**kw) -> LearnerConfig:
    return LearnerConfig(dim=DIM, max_classes=C, head="slda", budget_bytes=200_000, tag=TAG, **kw)


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    return rng.normal(size=(n, DIM)) + 2.0 * np.eye(C, DIM)[y], y


def _pretrained() -> StreamingLearner:
    lr = StreamingLearner(_cfg())
    X, y = _data(100, 60)
    lr.learn_many(X, y)
    return lr


def _fleet(n: int) -> tuple[FleetServer, list[FleetDevice], StreamingLearner]:
    h0 = _pretrained()
    union = _pretrained()
    server = FleetServer(h0)
    devices = [FleetDevice(_pretrained(), f"dev{k}", h0.statistics()) for k in range(n)]
    return server, devices, union


def _round(server: FleetServer, devices: list[FleetDevice], now: float = 0.0) -> dict:
    ups = []
    for d in devices:
        d.sync(*server.offer(d.device))
        ups.append(d.upload())
    return server.aggregate(ups, now)


def _same(a: StreamingLearner, b: StreamingLearner) -> None:
    sa, sb = a.statistics(), b.statistics()
    np.testing.assert_array_equal(sa.counts, sb.counts)
    assert np.abs(sa.means - sb.means).max() <= 1e-9 * np.abs(sb.means).max()
    assert np.abs(sa.scatter - sb.scatter).max() <= 1e-9 * np.abs(sb.scatter).max()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 1000), rounds=st.integers(1, 3), n=st.integers(1, 4))
def test_rounds_give_every_device_the_union_of_all_labels(seed, rounds, n):
    server, devices, union = _fleet(n)
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        for k, d in enumerate(devices):
            X, y = _data(seed * 100 + r * 10 + k, int(rng.integers(0, 30)))
            if len(y):
                d.learner.learn_many(X, y)
                union.learn_many(X, y)
        report = _round(server, devices)
        assert report["accepted"] == [d.device for d in devices] and not report["refused"]
    for d in devices:  # the broadcast after the last round
        d.sync(*server.offer(d.device))
        _same(d.learner, union)


def test_labels_learned_between_upload_and_broadcast_are_kept():
    server, (dev,), union = _fleet(1)
    X, y = _data(1, 40)
    dev.learner.learn_many(X[:20], y[:20])
    _round(server, [dev])
    dev.learner.learn_many(X[20:], y[20:])  # after the upload, before the broadcast
    union.learn_many(X, y)
    dev.sync(*server.offer(dev.device))
    _same(dev.learner, union)
    _round(server, [dev])  # the late labels go up next round, once
    dev.sync(*server.offer(dev.device))
    _same(dev.learner, union)
    assert server.global_.n == union.statistics().n


def test_a_lost_broadcast_neither_loses_nor_double_counts():
    server, (a, b), union = _fleet(2)
    Xa, ya = _data(2, 30)
    a.learner.learn_many(Xa, ya)
    union.learn_many(Xa, ya)
    _round(server, [a, b])
    # a never hears the result, learns more, then joins the next round
    Xa2, ya2 = _data(3, 10)
    a.learner.learn_many(Xa2, ya2)
    union.learn_many(Xa2, ya2)
    _round(server, [a, b])
    for d in (a, b):
        d.sync(*server.offer(d.device))
        _same(d.learner, union)


def test_repeated_or_stale_upload_is_refused_and_global_unchanged():
    server, (a,), _ = _fleet(1)
    X, y = _data(4, 20)
    a.learner.learn_many(X, y)
    a.sync(*server.offer(a.device))
    up = a.upload()
    assert server.aggregate([up], 0.0)["accepted"] == ["dev0"]
    n = server.global_.n
    report = server.aggregate([up], 0.0)  # the same message again
    assert "stale or repeated" in report["refused"]["dev0"]
    assert server.global_.n == n
    twice = server.aggregate([a.upload(), a.upload()], 0.0)
    assert "stale" in twice["refused"]["dev0"]


def test_other_bundle_and_forged_counts_are_refused():
    server, (a,), _ = _fleet(1)
    a.sync(*server.offer(a.device))
    up = a.upload()
    other = Upload(up.device, up.seq, up.base, "bundle:" + "cd" * 32, up.config, up.delta)
    assert "belongs to" in server.aggregate([other], 0.0)["refused"]["dev0"]
    arrays = {k: v.copy() for k, v in up.delta.arrays().items()}
    arrays["counts"][0] += 5  # counts that no longer match the weights
    with pytest.raises(Exception, match="add up"):
        Upload.from_parts(up.meta(), arrays)


def test_a_delta_beyond_the_window_rate_is_refused():
    server, (a,), _ = _fleet(1)
    server.max_rate = 1.0  # one window per second
    X, y = _data(5, 200)
    a.learner.learn_many(X, y)
    a.sync(*server.offer(a.device))
    report = server.aggregate([a.upload()], now=60.0)  # 200 windows in 60 s
    assert "windows/s" in report["refused"]["dev0"]
    a.sync(*server.offer(a.device))
    report = server.aggregate([a.upload()], now=300.0)  # 200 in 300 s: fine
    assert report["accepted"] == ["dev0"]


def test_upload_round_trips_through_its_parts():
    server, (a,), _ = _fleet(1)
    X, y = _data(6, 25)
    a.learner.learn_many(X, y)
    a.sync(*server.offer(a.device))
    up = a.upload()
    back = Upload.from_parts(up.meta(), up.delta.arrays())
    assert back.digest == up.digest
    with pytest.raises(FleetError, match="without"):
        Upload.from_parts({"device": "x"}, up.delta.arrays())


def test_bookkeeping_is_saved_with_the_state_and_survives_a_restart(tmp_path):
    server, (a, b), union = _fleet(2)
    X, y = _data(7, 30)
    a.learner.learn_many(X, y)
    union.learn_many(X, y)
    _round(server, [a, b])  # a's delta is counted, then a "crashes" before the broadcast
    a.learner.save(tmp_path / "a.safetensors")
    back = StreamingLearner.load(tmp_path / "a.safetensors")
    assert back.fleet is not None and back.fleet.sent_seq == 1 and back.fleet.device == "dev0"
    assert back.memory_report()["fleet_bytes"] == back.fleet.nbytes > 0
    a2 = FleetDevice(back, "dev0")
    a2.sync(*server.offer("dev0"))
    _same(a2.learner, union)
    assert not a2.sync(*server.offer("dev0"))  # the same merge again: nothing to do


def test_joining_a_fleet_must_fit_the_budget():
    lr = StreamingLearner(
        _cfg().replace(budget_bytes=StreamingLearner(_cfg()).memory_report()["state_bytes"])
    )
    with pytest.raises(ValueError, match="join a fleet"):
        lr.join_fleet("dev")
