"""Unplug/replug the daemon's port (pty behind a symlink, TCP reset): it reconnects, loses
nothing it was sent whole, and sleeps while the port is gone (tools/replug.py)."""

from __future__ import annotations

import json
import os

import pytest
from helpers import import_tool

from edgecl.runtime.transport import check_source


def _tool():
    return import_tool("replug")


@pytest.mark.parametrize("link", ["pty", "tcp"])
def test_three_unplugs_reconnect_and_use_almost_no_cpu_while_absent(link, tmp_path, capsys):
    out = tmp_path / "replug.json"
    rc = _tool().main(
        ["--link", link, "--cycles", "3", "--per-cycle", "50", "--absent", "1.0"]
        + ["--json", str(out)]
    )
    res = json.loads(out.read_text())
    assert rc == 0, res
    assert res["exit"] == 0 and res["reconnects"] == 2
    assert res["predictions"] == res["samples_sent"] == 150 and res["rejects"] == {}
    # A busy loop would show ~1.0 (a whole core); a sleeping reconnect loop ~0.
    assert res["cpu_while_absent_max"] < 0.10


def test_cpu_seconds_sees_work_done():
    mod = _tool()
    before = mod.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert mod.cpu_seconds(os.getpid()) > before


def test_a_link_to_a_present_port_outside_dev_is_accepted(tmp_path):
    master, slave = os.openpty()
    try:
        link = tmp_path / "ttyV0"  # what `socat pty,link=/tmp/ttyV0` creates
        link.symlink_to(os.ttyname(slave))
        check_source(str(link))
        link.unlink()
        with pytest.raises(FileNotFoundError):
            check_source(str(link))
    finally:
        os.close(master)
        os.close(slave)
