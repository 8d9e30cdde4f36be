"""Wire protocol: every message shape, every reject reason, and property tests.

Properties (hypothesis): random bytes never raise; any split of a stream gives
the same messages; reject counters add up to the faults in a stream; an
over-long line is one reject and is never buffered past the cap.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecl.errors import ConfigError
from edgecl.runtime.framing import MAGIC, encode_frame
from edgecl.runtime.protocol import (
    REJECT_REASONS,
    Command,
    Label,
    Parser,
    ProtocolConfig,
    Reject,
    Sample,
    format_label,
    format_prediction,
    format_sample,
    format_stats,
)


def norm(items):
    """Comparable form of parser output (Sample holds an array)."""
    out = []
    for m in items:
        if isinstance(m, Sample):
            out.append(("S", tuple(m.x.tolist()), m.y))
        elif isinstance(m, Reject):
            out.append(("R", m.reason))
        elif isinstance(m, Label):
            out.append(("L", m.label, m.seq))
        else:
            out.append(("C", m.cmd))
    return out


def parse(data: bytes, **cfg) -> list:
    p = Parser(ProtocolConfig(**cfg))
    return norm(p.feed(data) + p.flush())


# -- examples ----------------------------------------------------------------


def test_every_message_shape():
    data = (
        b'{"x": [1, 2.5]}\n'
        b'{"x": [1, 2], "y": 3}\n'
        b'{"x": [1, 2], "y": null, "t": 17}\n'  # null label = unlabelled; extra keys ignored
        b'{"label": 2, "seq": 1042}\n'
        b'{"cmd": "stats"}\r\n'  # CRLF accepted
        b"\n  \n"  # blank lines skipped
        b'{"cmd": "checkpoint"}'  # no newline: parsed at flush
    )
    assert parse(data, dim=2, max_classes=4, control=True) == [
        ("S", (1.0, 2.5), None),
        ("S", (1.0, 2.0), 3),
        ("S", (1.0, 2.0), None),
        ("L", 2, 1042),
        ("C", "stats"),
        ("C", "checkpoint"),
    ]


@pytest.mark.parametrize(
    "line,reason",
    [
        (b"\xff\xfe{}", "bad_utf8"),
        (b'{"x": [1, 2]', "bad_json"),
        (b"[" * 100_000 + b"]" * 100_000, "too_long"),
        (b"[" * 5000 + b"]" * 5000, "bad_json"),  # too deep for json: RecursionError
        (b"[1, 2]", "bad_type"),
        (b'{"y": 1}', "bad_type"),
        (b'{"x": "1,2"}', "bad_type"),
        (b'{"x": [1, "2"]}', "bad_type"),
        (b'{"x": [[1], [2]]}', "bad_type"),
        (b'{"x": [1, null]}', "bad_type"),
        (b'{"x": [1, 2, 3]}', "bad_dim"),
        (b'{"x": []}', "bad_dim"),
        (b'{"x": [NaN, 1]}', "non_finite"),
        (b'{"x": [Infinity, 1]}', "non_finite"),
        (b'{"x": [1e39, 1]}', "non_finite"),  # finite in float64, inf in float32
        (b'{"x": [1, 2], "y": 4}', "bad_label"),
        (b'{"x": [1, 2], "y": -1}', "bad_label"),
        (b'{"x": [1, 2], "y": 1.0}', "bad_label"),
        (b'{"x": [1, 2], "y": true}', "bad_label"),
        (b'{"label": 9, "seq": 1}', "bad_label"),
        (b'{"label": 1}', "bad_seq"),
        (b'{"label": 1, "seq": -3}', "bad_seq"),
        (b'{"label": 1, "seq": "7"}', "bad_seq"),
        (b'{"cmd": "stats"}', "control_disabled"),
    ],
)
def test_each_reject_reason(line, reason):
    assert reason in REJECT_REASONS
    assert parse(line + b"\n" + b'{"x": [0, 0]}\n', dim=2, max_classes=4, max_line=65536) == [
        ("R", reason),
        ("S", (0.0, 0.0), None),  # and the stream goes on
    ]


def test_unknown_command_when_control_is_on():
    assert parse(b'{"cmd": "reboot"}\n', control=True) == [("R", "bad_cmd")]


def test_csv():
    data = b"# a comment\n1,2\n1,2,3\n1,x\n1,nan\n1,2,9\n1\n"
    assert parse(data, format="csv", dim=2, max_classes=4) == [
        ("S", (1.0, 2.0), None),
        ("S", (1.0, 2.0), 3),
        ("R", "bad_type"),
        ("R", "non_finite"),
        ("R", "bad_label"),
        ("R", "bad_dim"),
    ]


def test_framed_roundtrip_noise_and_checksum():
    good = encode_frame(b'{"x": [1, 2]}')
    bad = bytearray(encode_frame(b'{"x": [3, 4]}'))
    bad[-6] ^= 0x01  # flip a payload bit
    huge = MAGIC + (10**6).to_bytes(4, "little")
    data = b"noise" + good + bytes(bad) + good + huge + b"more noise" + good
    assert parse(data, format="framed", dim=2) == [
        ("R", "bad_frame"),
        ("S", (1.0, 2.0), None),
        ("R", "crc"),
        ("S", (1.0, 2.0), None),
        ("R", "too_long"),
        ("S", (1.0, 2.0), None),
    ]


def test_framed_truncated_at_end():
    assert parse(encode_frame(b'{"x": [1]}')[:-2], format="framed") == [("R", "truncated")]


def test_reset_reports_a_partial_line_once():
    p = Parser()
    assert p.feed(b'{"x": [1') == []
    assert [r.reason for r in p.reset()] == ["truncated"]
    assert p.reset() == []
    assert norm(p.feed(b'{"x": [2]}\n')) == [("S", (2.0,), None)]


def test_config_is_validated():
    with pytest.raises(ConfigError, match="format"):
        ProtocolConfig(format="xml")
    with pytest.raises(ConfigError, match="max_line"):
        ProtocolConfig(max_line=0)
    with pytest.raises(ConfigError, match="dim"):
        ProtocolConfig(dim=0)


def test_formatters_are_parseable_json():
    assert json.loads(format_prediction(3, 1, 0.12345, 99.6)) == {
        "seq": 3,
        "pred": 1,
        "p": 0.1235,
        "us": 100,
    }
    assert json.loads(format_stats({"p99_us": float("nan"), "rejects": {"crc": 1}})) == {
        "stats": {"p99_us": None, "rejects": {"crc": 1}}
    }
    x = np.array([0.1, -2.5e-7, 3e20, 7.0])
    line = format_sample(x, 2)
    assert norm(Parser().feed(line)) == [("S", tuple(x.tolist()), 2)]
    assert norm(Parser().feed(format_label(5, 9))) == [("L", 5, 9)]


# -- properties --------------------------------------------------------------

CAP = 64
VALID = [b'{"x": [1, 2]}', b'{"x": [0.5, -1], "y": 1}', b'{"label": 1, "seq": 3}']
# (line, expected reason) for every fault the stream strategy injects
FAULTS = [
    (b"\xff\x80garbage", "bad_utf8"),
    (b'{"x": [1, ', "bad_json"),
    (b'{"x": [1, NaN]}', "non_finite"),
    (b'{"x": [1, 2, 3]}', "bad_dim"),
    (b'{"x": [1, 2], "y": 7}', "bad_label"),
    (b"{" + b"x" * (CAP + 10) + b"}", "too_long"),
    (b"\xff" * (5 * CAP), "too_long"),
    (b'{"cmd": "stats"}', "control_disabled"),
]
lines = st.one_of(
    st.sampled_from(VALID).map(lambda b: (b, None)),
    st.sampled_from(FAULTS),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=200, deadline=None)
@given(st.lists(lines, max_size=30), st.lists(st.integers(0, 10_000), max_size=20))
def test_reject_counters_add_up_and_splits_do_not_matter(stream, cuts):
    data = b"".join(line + b"\n" for line, _ in stream)
    cfg = ProtocolConfig(dim=2, max_classes=3, max_line=CAP)
    whole = Parser(cfg)
    expected = norm(whole.feed(data) + whole.flush())
    p = Parser(cfg)
    got = []
    for chunk in _split(data, cuts):
        got += norm(p.feed(chunk))
        assert p.buffered <= CAP + 1  # an over-long line is never held in full
    got += norm(p.flush())
    assert got == expected
    rejects = Counter(m[1] for m in got if m[0] == "R")
    assert rejects == Counter(reason for _, reason in stream if reason is not None)
    assert len(got) == len(stream)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from(["ndjson", "csv", "framed"]))
def test_random_bytes_never_raise(data, fmt):
    p = Parser(ProtocolConfig(format=fmt, dim=3, max_classes=5, max_line=CAP, control=True))
    out = p.feed(data) + p.flush()
    for m in out:
        assert isinstance(m, (Sample, Label, Command, Reject))
        if isinstance(m, Reject):
            assert m.reason in REJECT_REASONS
        if isinstance(m, Sample):
            assert m.x.shape == (3,) and np.isfinite(m.x).all()
            assert m.y is None or 0 <= m.y < 5


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(VALID), st.binary(max_size=40)), max_size=15),
    st.lists(st.integers(0, 10_000), max_size=10),
)
def test_framed_splits_do_not_matter(parts, cuts):
    data = b"".join(encode_frame(p) if i % 2 == 0 else p for i, p in enumerate(parts))
    cfg = ProtocolConfig(format="framed", dim=2, max_line=CAP)
    whole = Parser(cfg)
    expected = norm(whole.feed(data) + whole.flush())
    p = Parser(cfg)
    got = []
    for chunk in _split(data, cuts):
        got += norm(p.feed(chunk))
        assert p.buffered <= CAP + 10 + len(chunk)
    got += norm(p.flush())
    assert got == expected
    if not any(MAGIC[:1] in noise for noise in parts[1::2]):
        # Noise that cannot imitate a frame start loses no frame.
        sent = norm(Parser(ProtocolConfig(dim=2)).feed(b"\n".join(parts[::2]) + b"\n"))
        assert [m for m in got if m[0] != "R"] == [m for m in sent if m[0] != "R"]


@settings(max_examples=100, deadline=None)
@given(st.integers(CAP + 1, 10 * CAP), st.integers(1, 50))
def test_oversized_line_is_one_reject_whatever_the_chunking(length, chunk):
    data = b"a" * length + b"\n" + VALID[0] + b"\n"
    p = Parser(ProtocolConfig(max_line=CAP))
    got = []
    for i in range(0, len(data), chunk):
        got += norm(p.feed(data[i : i + chunk]))
        assert p.buffered <= CAP + 1
    assert got == [("R", "too_long"), ("S", (1.0, 2.0), None)]
