"""Serving a :class:`~edgecl.sim.sensor.SensorSimulator` stream like a live sensor.

* :func:`serve_pty` — a pseudo-terminal; the daemon opens its slave path
  (``/dev/pts/N``) as it would a USB-serial port;
* :func:`serve_tcp` — a TCP server, optionally dropped and reopened (the port
  vanishes, connecting is refused) to exercise reconnects;
* :func:`serve_stream` — stdout or any binary file.

All are paced at ``rate`` rows per second (0: as fast as the reader takes them;
a full pty or socket is not writable, so the reader sets the pace).
``tools/sensor_sim.py`` is the command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import struct
import termios
import time
import tty
from collections.abc import Callable, Iterator
from typing import BinaryIO

from edgecl.sim.sensor import SensorSimulator

__all__ = ["serve_pty", "serve_stream", "serve_tcp"]


class _Pacer:
    """Sleeps so that row ``i`` goes out no earlier than ``i / rate`` seconds after start."""

    def __init__(self, rate: float) -> None:
        self.rate, self.t0, self.n = rate, time.monotonic(), 0

    def wait(self) -> None:
        self.n += 1
        if self.rate > 0:
            delay = self.t0 + self.n / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def behind(self) -> bool:
        """True when the next row is already due (so it can join the current write)."""
        return self.rate <= 0 or time.monotonic() >= self.t0 + (self.n + 1) / self.rate


def _batches(sim: SensorSimulator, pacer: _Pacer, stop: Callable[[], bool]) -> Iterator[bytes]:
    """Row bytes grouped into one write while the pacer is behind (few syscalls at speed)."""
    end = sim.rows.shape[0]
    while sim.position < end and not stop():
        chunk = [sim.next_row()]
        pacer.wait()
        while sim.position < end and pacer.behind() and len(chunk) < 256:
            chunk.append(sim.next_row())
            pacer.n += 1
        yield b"".join(chunk)
    yield sim.finish()


def serve_stream(
    sim: SensorSimulator, out: BinaryIO, stop: Callable[[], bool] = lambda: False
) -> None:
    """Write the whole stream to a binary file object (e.g. stdout), paced."""
    for data in _batches(sim, _Pacer(sim.config.rate), stop):
        out.write(data)
        out.flush()


def serve_pty(
    sim: SensorSimulator,
    on_path: Callable[[str], None] = print,
    stop: Callable[[], bool] = lambda: False,
    settle_s: float = 0.2,
    linger_s: float = 10.0,
) -> None:
    """Replay over a new pseudo-terminal; ``on_path`` gets its slave path (``/dev/pts/N``).

    Waits for a reader to open the slave (then ``settle_s``, because pyserial
    flushes the input queue when it opens a port), and pauses while nobody has it
    open; each reopening starts a new connection (window numbering from 0).
    At the end it waits up to ``linger_s`` for the reader to take everything
    (closing the master would discard what is still queued).
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    on_path(path)
    os.close(slave)  # no slave open <=> POLLHUP on the master: how a reader is detected
    os.set_blocking(master, False)
    poll = select.poll()
    poll.register(master, select.POLLOUT | select.POLLHUP)
    try:
        waiting, seen_reader = True, False
        pacer = _Pacer(sim.config.rate)
        for data in _batches(sim, pacer, stop):
            view = memoryview(data)
            while view and not stop():
                ev = dict(poll.poll(100)).get(master, 0)
                if ev & select.POLLHUP:
                    waiting = True  # no reader (yet, or any more)
                    continue
                if waiting:
                    time.sleep(settle_s)
                    waiting = False
                    pacer.t0, pacer.n = time.monotonic(), 0
                    if seen_reader:
                        # A new reader numbers windows from 0: so do we, from the next row
                        # (what was generated for the old one is dropped, as a pulled cable would).
                        sim.new_connection()
                        view = view[len(view) :]
                        continue
                    seen_reader = True
                if ev & select.POLLOUT:  # a full pty is not writable: the reader sets the pace
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        view = view[os.write(master, view) :]
        _drain(path, stop, linger_s)
    finally:
        os.close(master)


def _queued(path: str) -> int:
    """Bytes waiting in the pty's input queue (written, not yet read by the other side)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        return struct.unpack("I", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


def _drain(path: str, stop: Callable[[], bool], timeout: float) -> None:
    """Wait until the pty's input queue stays empty (all read), ``stop()`` or ``timeout``.

    The queue count misses bytes the kernel has not yet moved into the line
    buffer, so "empty" must hold for several checks in a row.
    """
    end, zeros = time.monotonic() + timeout, 0
    while time.monotonic() < end and not stop() and zeros < 5:
        zeros = zeros + 1 if _queued(path) == 0 else 0
        time.sleep(0.02)


def serve_tcp(
    sim: SensorSimulator,
    port: int = 0,
    host: str = "127.0.0.1",
    on_port: Callable[[int], None] = print,
    stop: Callable[[], bool] = lambda: False,
    disconnect_every: int = 0,
    down_s: float = 1.0,
    settle_s: float = 0.1,
) -> None:
    """Replay to TCP clients (one at a time) of a server on ``host:port``.

    Every ``disconnect_every`` rows (0: never) the connection *and* the listening
    socket close for ``down_s`` seconds — the port vanishes and connecting is
    refused — then the server comes back. Each accepted client is a new connection.
    """
    srv = _listen(host, port)
    on_port(srv.getsockname()[1])
    port = srv.getsockname()[1]
    pacer = _Pacer(sim.config.rate)
    batches = _batches(sim, pacer, stop)
    try:
        while not stop():
            srv.settimeout(0.1)
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                time.sleep(settle_s)  # pyserial drains input right after connecting
                if sim.position:
                    sim.new_connection()
                pacer.t0, pacer.n = time.monotonic(), 0
                mark = sim.position
                dropped = False
                for data in batches:
                    try:
                        conn.sendall(data)
                    except OSError:
                        break  # the client went away: its unsent rows are lost
                    if disconnect_every and sim.position - mark >= disconnect_every:
                        dropped = True
                        break
                    if stop():
                        break
                else:
                    return  # all data sent
            if dropped:
                srv.close()
                sim.disconnects += 1
                time.sleep(down_s)
                srv = _listen(host, port)
    finally:
        srv.close()


def _listen(host: str, port: int) -> socket.socket:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(1)
    return srv
