"""Transports: files, stdin-like pipes, loop://, pty, socket:// with drops and backoff."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import tty

import pytest

from edgecl.runtime.transport import (
    Backoff,
    FileSource,
    SerialSource,
    open_sink,
    open_source,
)


def _drain(src, until=None, seconds=3.0):
    """Read until ``until(data)`` holds, the source ends, or ``seconds`` pass."""
    got = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = src.read()
        if data is None:
            break
        got += data
        if until is not None and until(got):
            break
    return got


def test_backoff_doubles_to_the_cap():
    b = Backoff(initial=0.1, cap=1.0)
    assert [b.next() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1
    with pytest.raises(ValueError):
        Backoff(initial=2.0, cap=1.0)


def test_file_source_reads_to_eof(tmp_path):
    f = tmp_path / "in.ndjson"
    f.write_bytes(b"a\n" * 50_000)
    with open_source(str(f)) as src:
        assert isinstance(src, FileSource)
        assert _drain(src) == b"a\n" * 50_000
        assert src.read() is None


def test_file_source_follow_sees_appended_data(tmp_path):
    f = tmp_path / "in.ndjson"
    f.write_bytes(b"one\n")
    with open_source(str(f), follow=True, timeout=0.01) as src:
        assert _drain(src, until=lambda d: d.endswith(b"one\n")) == b"one\n"
        assert src.read() == b""  # at EOF but following: not the end
        with open(f, "ab") as w:
            w.write(b"two\n")
        assert _drain(src, until=lambda d: b"two" in d) == b"two\n"


def test_fifo_source(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def writer():
        with open(fifo, "wb") as w:
            w.write(b"x\n" * 1000)

    t = threading.Thread(target=writer)
    t.start()
    with open_source(str(fifo), timeout=0.05) as src:
        assert _drain(src) == b"x\n" * 1000
    t.join()


def test_loop_url_roundtrip():
    src = open_source("loop://", timeout=0.01)
    assert isinstance(src, SerialSource) and src.connects == 1
    src.write(b"ping\n")
    assert _drain(src, until=lambda d: d.endswith(b"\n")) == b"ping\n"
    src.close()


def test_missing_plain_path_is_an_error_but_missing_device_is_retried(caplog):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source("no/such/file.ndjson")
    with caplog.at_level(logging.WARNING, logger="edgecl.run"):
        src = open_source("/dev/edgecl-no-such-tty", timeout=0.01, backoff=Backoff(0.01, 0.02))
        assert _drain(src, seconds=0.2) == b""  # never raises, keeps retrying
        src.close()
    assert src.connects == 0
    assert sum("cannot open" in r.message for r in caplog.records) >= 3


def test_pty_source_survives_the_other_end_closing():
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    src = open_source(path, timeout=0.02, backoff=Backoff(0.01, 0.05))
    os.close(slave)
    time.sleep(0.05)
    os.write(master, b"row 1\nrow 2\n")
    assert _drain(src, until=lambda d: d.count(b"\n") == 2) == b"row 1\nrow 2\n"
    os.close(master)  # the "cable" is pulled: the pty is gone
    assert _drain(src, seconds=0.3) == b""
    assert src.disconnects == 1 and src.port is None
    src.close()


def _server(port=0):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    return srv


def test_socket_source_keeps_data_sent_just_before_a_hangup_and_reconnects(caplog):
    srv = _server()
    port = srv.getsockname()[1]
    src = open_source(f"socket://127.0.0.1:{port}", timeout=0.02, backoff=Backoff(0.02, 0.1))
    conn, _ = srv.accept()
    time.sleep(0.05)  # pyserial drains input right after it connects
    conn.sendall(b"before\n" * 1000)
    conn.close()  # data and hang-up arrive together
    assert _drain(src, until=lambda d: len(d) == 7000) == b"before\n" * 1000
    assert _drain(src, seconds=0.1) == b""
    assert src.disconnects == 1
    # The server is down: connecting is refused, retried with backoff capped at 0.1 s.
    srv.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecl.run"):
        _drain(src, seconds=0.6)
    delays = [
        float(r.message.rsplit(" in ", 1)[1].split()[0])
        for r in caplog.records
        if "cannot open" in r.message
    ]
    assert len(delays) >= 3 and max(delays) <= 0.1 and delays[:3] == [0.02, 0.04, 0.08]
    # Back up on the same port: reconnected, data flows again.
    srv = _server(port)
    got = []

    def serve():
        c, _ = srv.accept()
        time.sleep(0.05)
        c.sendall(b"after\n")
        got.append(c)

    t = threading.Thread(target=serve)
    t.start()
    assert _drain(src, until=lambda d: d == b"after\n", seconds=3) == b"after\n"
    t.join()
    assert src.connects == 2
    got[0].close()
    srv.close()
    src.close()


def test_file_and_socket_sinks(tmp_path):
    out = tmp_path / "sub" / "out.ndjson"
    sink = open_sink(str(out))
    sink.write(b"a\n")
    sink.flush()
    sink.close()
    sink = open_sink(str(out))
    sink.write(b"b\n")  # appends
    sink.close()
    assert out.read_bytes().startswith(b"a\n")
    # A sink port nobody listens on: lines are dropped and counted, never raised.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    sink = open_sink(f"socket://127.0.0.1:{free}")
    for _ in range(3):
        sink.write(b"x\n")
    assert sink.dropped == 3
    sink.close()


def test_a_second_reader_of_the_same_port_is_locked_out(caplog):
    master, slave = os.openpty()
    path = os.ttyname(slave)
    first = open_source(path, timeout=0.01)
    with caplog.at_level(logging.WARNING, logger="edgecl.run"):
        second = open_source(path, timeout=0.01, backoff=Backoff(0.01, 0.02))
    assert first.connects == 1 and second.connects == 0  # two daemons would split the rows
    assert any("lock" in r.message for r in caplog.records)
    for fd in (master, slave):
        os.close(fd)
    first.close()
    second.close()
