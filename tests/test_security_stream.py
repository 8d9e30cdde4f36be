"""The untrusted stream: bounded memory per message, control commands off by default.

A sender controls every byte the daemon reads. These tests feed 100 MB messages
the way the transport delivers them (``READ_SIZE`` chunks) and check that the
parser never holds more than one line's cap, that the flood costs one reject,
and that the next message still parses.
"""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest

from edgecl.cli import build_parser
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.framing import MAGIC, encode_frame
from edgecl.runtime.launch import build_daemon, config_from_profile
from edgecl.runtime.profile import DeviceProfile
from edgecl.runtime.protocol import Parser, ProtocolConfig, Reject, Sample, format_sample
from edgecl.runtime.transport import READ_SIZE, Source

FLOOD = 100 * 1024 * 1024  # 100 MiB in one "line"
CAP = 4096


def _flood(parser: Parser, head: bytes, filler: bytes) -> tuple[list, int, int]:
    """Feed ``head`` then FLOOD bytes of ``filler`` chunks; return items, max buffered, peak."""
    chunk = filler * (READ_SIZE // len(filler))
    items = list(parser.feed(head))
    most = parser.buffered
    tracemalloc.start()
    try:
        sent = 0
        while sent < FLOOD:
            items += parser.feed(chunk)
            most = max(most, parser.buffered)
            sent += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return items, most, peak


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_100_mb_line_is_one_reject_and_never_buffered(fmt):
    p = Parser(ProtocolConfig(format=fmt, dim=2, max_line=CAP))
    head = b'{"x": [' if fmt == "ndjson" else b"1.0,"
    items, most, peak = _flood(p, head, b"1.0, ")
    assert most <= CAP + 1
    # Copies of one chunk at a time at most: nothing grows with the flood's length.
    assert peak < 4 * READ_SIZE + 4 * CAP
    assert [type(i).__name__ for i in items] == ["Reject"]
    assert items[0].reason == "too_long"
    end = p.feed(b"\n" + (format_sample([1, 2]) if fmt == "ndjson" else b"1,2\n"))
    assert len(end) == 1 and isinstance(end[0], Sample) and end[0].x.tolist() == [1.0, 2.0]
    assert p.buffered == 0


def test_a_frame_claiming_100_mb_is_refused_from_its_header():
    p = Parser(ProtocolConfig(format="framed", dim=2, max_line=CAP))
    head = MAGIC + struct.pack("<I", FLOOD) + b"{"
    items, most, peak = _flood(p, head, b"a")
    assert most <= CAP + 10  # at most one frame: magic, length, payload, crc
    assert peak < 4 * READ_SIZE + 4 * CAP
    reasons = [i.reason for i in items if isinstance(i, Reject)]
    assert reasons[0] == "too_long" and set(reasons) <= {"too_long", "bad_frame"}
    assert len(reasons) <= 2  # the header, then the junk counted once
    end = p.feed(encode_frame(b'{"x": [1, 2]}'))
    assert len(end) == 1 and isinstance(end[0], Sample)


class _FloodSource(Source):
    """A sensor that sends a 100 MB line, then one valid labelled row, then ends."""

    url = "flood://"
    connects = 1

    def __init__(self, tail: bytes, check) -> None:
        self.chunk = b"9" * READ_SIZE
        self.left = FLOOD
        self.tail, self.check = tail, check

    def read(self) -> bytes | None:
        self.check()
        if self.left > 0:
            self.left -= len(self.chunk)
            return b'{"x": [' + self.chunk if self.left == FLOOD - len(self.chunk) else self.chunk
        if self.tail:
            tail, self.tail = b"\n" + self.tail, b""
            return tail
        return None

    def close(self) -> None:
        pass


def test_the_daemon_survives_a_100_mb_line_with_bounded_buffering(tmp_path):
    cfg = DaemonConfig(source="flood://", out=str(tmp_path / "out"), stats_every_s=0, max_line=CAP)
    held = []
    d = None

    def check():
        held.append(d.parser.buffered)

    src = _FloodSource(format_sample([1.0, 2.0, 3.0], 1), check)
    d = build_daemon(cfg, features=3, learner_options={"max_classes": 2, "budget_bytes": 60_000},
                     source=src)  # fmt: skip
    assert d.run(install_signals=False) == 0
    assert len(held) > FLOOD // READ_SIZE and max(held) <= CAP + 1
    snap = d.snapshot()
    assert snap["rejects"] == {"too_long": 1}
    assert snap["samples"] == 1 and snap["learned"] == 1


# -- control commands --------------------------------------------------------------


def test_control_commands_are_off_at_every_layer_by_default():
    assert ProtocolConfig().control is False
    assert DaemonConfig(source="-").control is False
    assert config_from_profile(DeviceProfile.default(), source="-").control is False
    args = build_parser().parse_args(["run", "--source", "-"])
    assert args.control is False


def test_a_checkpoint_command_is_a_counted_reject_unless_enabled(tmp_path):
    rng = np.random.default_rng(0)
    rows = b"".join(format_sample(rng.normal(size=3), int(i % 2)) for i in range(4))
    src = tmp_path / "in.ndjson"
    src.write_bytes(rows + b'{"cmd": "checkpoint"}\n' + rows + b'{"cmd": "stats"}\n')
    state = tmp_path / "state"
    opts = {"max_classes": 2, "budget_bytes": 60_000}
    base = {"source": str(src), "state_dir": str(state), "stats_every_s": 0}

    d = build_daemon(DaemonConfig(out=str(tmp_path / "off"), **base), features=3,
                     learner_options=opts)  # fmt: skip
    d.run(install_signals=False)
    snap = d.snapshot()
    assert snap["rejects"] == {"control_disabled": 2} and d.stats.commands == 0
    assert snap["checkpoints"] == 1  # only the final one at exit, none on command
    out = (tmp_path / "off").read_text().splitlines()
    assert sum('"stats"' in line for line in out) == 1  # the one at exit, none on command

    for p in state.iterdir():
        p.unlink()
    d = build_daemon(DaemonConfig(out=str(tmp_path / "on"), control=True, **base), features=3,
                     learner_options=opts)  # fmt: skip
    d.run(install_signals=False)
    snap = d.snapshot()
    assert snap["rejects"] == {} and d.stats.commands == 2
    assert snap["checkpoints"] == 2  # on command, and at exit
