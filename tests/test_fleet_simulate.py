"""Fleet simulation pieces and device sessions, without Flower (numpy + the shipped data)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from helpers import small_watch

from edgecl.fleet.device import open_device
from edgecl.fleet.protocol import FleetServer
from edgecl.fleet.simulate import (
    accuracy_by_user,
    central_reference,
    chunk,
    learn_local,
    load_work,
    prepare_work,
)
from edgecl.fleet.states import bundle_base
from edgecl.runtime.bundle import Bundle
from edgecl.runtime.checkpoint import StateDirBusy, lock_state_dir


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("fleet")
    data = small_watch(d / "two.npz")
    info = prepare_work(Bundle.load(None), data, d / "work.npz")
    assert info["subjects"] == [6, 7] and 0 < info["labelled"] < info["windows"]
    return load_work(d / "work.npz"), d


def test_fleet_in_process_equals_the_central_head(work):
    """The protocol, run without a transport: every wearer's device, one round each of two,
    then the final sync — the merged head equals the central one, predictions identical."""
    w, _ = work
    start = bundle_base(None)
    rounds = 2
    server = FleetServer(copy.deepcopy(start))
    from edgecl.fleet.protocol import FleetDevice

    devices = {s: FleetDevice(copy.deepcopy(start), f"w{s}", start.statistics()) for s in (6, 7)}
    for r in range(rounds):
        ups = []
        for s, dev in devices.items():
            dev.sync(*server.offer(dev.device))
            learn_local(dev.learner, w, chunk(w, s, rounds, r))
            ups.append(dev.upload())
        assert not server.aggregate(ups, 0.0)["refused"]
    central = central_reference(start, w, rounds)
    for dev in devices.values():
        dev.sync(*server.offer(dev.device))
        a, c = dev.learner.statistics(), central.statistics()
        np.testing.assert_array_equal(a.counts, c.counts)
        assert np.abs(a.scatter - c.scatter).max() <= 1e-9 * np.abs(c.scatter).max()
    test = ~w["calib"]
    lr = devices[6].learner
    lr.reset_user()
    np.testing.assert_array_equal(lr.predict_many(w["x"][test]), central.predict_many(w["x"][test]))
    acc = accuracy_by_user(central, w)
    assert set(acc) == {6, 7} and all(0.0 <= v <= 1.0 for v in acc.values())


def test_a_device_state_dir_starts_from_the_bundle_and_is_locked(work):
    w, d = work
    state = d / "dev6"
    node = {"state": str(state), "device": "w6", "work": str(d / "work.npz"), "subject": 6}
    start = bundle_base(None)
    with open_device(node) as dev:
        with pytest.raises(StateDirBusy):  # held by the session: a daemon would be refused
            lock_state_dir_in_child(state)
        m = dev.sync(start.statistics(), 0, 1)
        assert m["adopted"] == 0
        learned = dev.learn_round(1, 1)
        assert learned["learned"] > 0 and 0 <= learned["local_own"] <= 1
        up = dev.upload()
        dev.save()
    assert up.delta.n == learned["learned"]
    with open_device(node) as again:  # reloaded: the pending upload was saved with the head
        assert again.learner.fleet is not None and again.learner.fleet.sent_seq == 1
        assert again.learner.statistics().n == start.statistics().n + up.delta.n
    lock = lock_state_dir(state)  # released after the session
    lock.close()


def lock_state_dir_in_child(state: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom edgecl.runtime.checkpoint import lock_state_dir, StateDirBusy\n"
        "try:\n    lock_state_dir(sys.argv[1])\nexcept StateDirBusy:\n    sys.exit(3)\n"
    )
    if subprocess.run([sys.executable, "-c", code, str(state)], check=False).returncode == 3:
        raise StateDirBusy("held")


def test_a_state_of_another_bundle_is_refused(work, tmp_path):
    _, d = work
    lr = bundle_base(None)
    lr.config = lr.config.replace(tag="bundle:" + "0" * 64)
    lr.save(tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="belongs to"):
        with open_device({"state": str(tmp_path / "other.safetensors")}):
            pass
