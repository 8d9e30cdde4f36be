"""Byte sources and sinks by URL: serial ports and pyserial URLs, stdin/stdout, files.

``open_source(url)`` gives a :class:`Source` whose ``read()`` returns the bytes
that arrived (``b""`` after a quiet ``timeout``) or ``None`` once the stream has
ended for good (a file's EOF without ``follow``, stdin closed):

* ``-`` — stdin;
* an existing regular file or FIFO — read to the end (``follow=True``: keep
  waiting for more, like ``tail -f``);
* anything else — ``serial.serial_for_url``: ``/dev/ttyUSB0``, ``/dev/pts/3``,
  ``socket://127.0.0.1:7000``, ``rfc2217://host:port``, ``loop://``.

A serial port that vanishes (cable pulled, server gone) or refuses to open is
retried with capped exponential backoff — ``read()`` keeps returning ``b""``
meanwhile, so the caller's loop still runs its timers and signals. Every drop
bumps ``disconnects`` (the caller discards a partial line); every (re)open
bumps ``connects``.

``open_sink(url)`` gives a :class:`Sink`: ``-`` (stdout), a file path
(appended), or a pyserial URL / character device (reopened like a source;
lines written while it is down are counted in ``dropped``).

>>> src = open_source("loop://", timeout=0.01)
>>> src.write(b"hello\\n")  # loop:// echoes what is written to it
>>> src.read()
b'hello\\n'
>>> src.close()
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import stat
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import serial

__all__ = [
    "Backoff",
    "FileSource",
    "SerialSource",
    "Sink",
    "Source",
    "check_source",
    "open_sink",
    "open_source",
]

log = logging.getLogger("edgecl.run")

READ_SIZE = 65536


class Backoff:
    """Capped exponential backoff: ``initial``, ×``factor`` per failure, at most ``cap`` s.

    >>> b = Backoff(initial=0.1, cap=0.5)
    >>> [b.next() for _ in range(5)]
    [0.1, 0.2, 0.4, 0.5, 0.5]
    >>> b.reset(); b.next()
    0.1
    """

    def __init__(self, initial: float = 0.1, cap: float = 5.0, factor: float = 2.0) -> None:
        if not 0 < initial <= cap or factor < 1:
            raise ValueError(f"backoff needs 0 < initial ({initial}) <= cap ({cap}), factor >= 1")
        self.initial, self.cap, self.factor = initial, cap, factor
        self._next = initial

    def next(self) -> float:
        """The delay before the next attempt (and grow the one after)."""
        d = self._next
        self._next = min(self.cap, round(d * self.factor, 6))
        return d

    def reset(self) -> None:
        """Back to ``initial`` (after a success)."""
        self._next = self.initial


class Source:
    """Base of byte sources: ``read() -> bytes | None``, ``close()``."""

    url = ""
    connects = 0
    disconnects = 0

    def read(self) -> bytes | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - interface
        """Release the underlying port or file."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource(Source):
    """stdin, a regular file or a FIFO, read in chunks; ``None`` at the end."""

    def __init__(self, url: str, timeout: float = 0.1, follow: bool = False) -> None:
        self.url, self.timeout, self.follow = url, timeout, follow
        if url == "-":
            self._f: BinaryIO = sys.stdin.buffer
            self._own = False
        else:
            self._f = open(url, "rb")  # noqa: SIM115 - closed in close()
            self._own = True
        self._fd = self._f.fileno()
        self._selectable = url == "-" or stat.S_ISFIFO(os.fstat(self._fd).st_mode)
        self.connects = 1

    def read(self) -> bytes | None:
        if self._selectable:
            ready, _, _ = select.select([self._fd], [], [], self.timeout)
            if not ready:
                return b""
        data = os.read(self._fd, READ_SIZE)
        if data:
            return data
        if self.follow and self._own:
            time.sleep(self.timeout)  # EOF for now; a writer may append more
            return b""
        return None

    def close(self) -> None:
        if self._own:
            self._f.close()


class SerialSource(Source):
    """A pyserial port or URL, reopened with capped exponential backoff when it fails.

    Parameters
    ----------
    url : str
        Anything ``serial.serial_for_url`` accepts.
    baudrate : int
    timeout : float
        Seconds one ``read()`` waits for data (the caller's loop period when quiet).
    backoff : Backoff, optional
        Reconnect delays (default 0.1 s doubling up to 5 s).
    """

    def __init__(
        self,
        url: str,
        baudrate: int = 115200,
        timeout: float = 0.1,
        backoff: Backoff | None = None,
    ) -> None:
        self.url, self.baudrate, self.timeout = url, baudrate, timeout
        self.backoff = backoff or Backoff()
        self.port: Any = None
        self._fd = -1
        self._socket = False
        self._retry_at = 0.0
        self._failures = 0
        self.connects = 0
        self.disconnects = 0
        self._open()

    def _open(self) -> bool:
        try:
            # exclusive: a second reader on the same port (two daemons) would split the stream.
            port = serial.serial_for_url(
                self.url, baudrate=self.baudrate, timeout=self.timeout, exclusive=True
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._failures += 1
            delay = self.backoff.next()
            self._retry_at = time.monotonic() + delay
            log.warning(
                "%s: cannot open (%s); retry %d in %.3g s",
                self.url,
                " ".join(str(exc).split()),
                self._failures,
                delay,
            )
            return False
        self.port = port
        # Plain device files and socket:// have a real descriptor: read it directly so
        # bytes that arrive together with a hang-up are not lost inside pyserial's loop.
        # Wrappers (spy://, rfc2217://, loop://) go through pyserial's read.
        kind = type(port).__module__
        direct = kind.endswith("serialposix") or kind.endswith("protocol_socket")
        self._fd = port.fileno() if direct else -1
        self._socket = kind.endswith("protocol_socket")
        if self.connects or self._failures:
            log.warning("%s: connected again after %d failed attempts", self.url, self._failures)
        self.connects += 1
        self._failures = 0
        self.backoff.reset()
        return True

    def _lost(self, why: str) -> None:
        log.warning("%s: connection lost (%s); reconnecting", self.url, why)
        self.disconnects += 1
        self._close_port()
        # Retry at once the first time (a server restart is often instant), then back off.
        self._retry_at = time.monotonic()

    def read(self) -> bytes | None:
        if self.port is None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, self.timeout))
                return b""
            if not self._open():
                return b""
        try:
            if self._fd >= 0:
                ready, _, _ = select.select([self._fd], [], [], self.timeout)
                if not ready:
                    return b""
                data = os.read(self._fd, READ_SIZE)
                if not data and (self._socket or self._hung_up()):
                    self._lost("end of stream")
                return data
            n = self.port.in_waiting
            return self.port.read(n if n > 0 else 1)
        except BlockingIOError:
            return b""
        except (serial.SerialException, OSError) as exc:
            self._lost(" ".join(str(exc).split()) or type(exc).__name__)
            return b""

    def _hung_up(self) -> bool:
        # A tty can be "readable" yet read empty while the kernel is still moving bytes
        # into its line discipline (ptys do this); only POLLHUP/POLLERR mean it is gone.
        p = select.poll()
        p.register(self._fd, select.POLLHUP | select.POLLERR)
        return bool(p.poll(0))

    def write(self, data: bytes) -> None:
        """Write to the port (a source may talk back; ``loop://`` echoes)."""
        if self.port is not None:
            self.port.write(data)

    def _close_port(self) -> None:
        if self.port is not None:
            with contextlib.suppress(Exception):
                self.port.close()
        self.port = None
        self._fd = -1

    def close(self) -> None:
        self._close_port()


def _is_file(url: str) -> bool:
    try:
        mode = os.stat(url).st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) or stat.S_ISFIFO(mode)


def _is_device(url: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(url).st_mode)
    except OSError:
        return False


def check_source(url: str) -> None:
    """Raise ``FileNotFoundError`` for a plain path that does not exist (a typo: a
    serial port yet to be plugged in lives under ``/dev`` and is waited for; a
    link elsewhere to a present port, such as socat's ``/tmp/ttyV0``, is fine)."""
    if (
        url != "-"
        and "://" not in url
        and not url.startswith("/dev/")
        and not _is_file(url)
        and not _is_device(url)
    ):
        raise FileNotFoundError(f"source {url!r}: no such file (serial ports live under /dev/)")


def open_source(
    url: str,
    *,
    baudrate: int = 115200,
    timeout: float = 0.1,
    follow: bool = False,
    backoff: Backoff | None = None,
) -> Source:
    """Open ``url`` for reading (see the module docstring for what it may be).

    A path that does not exist and is not under ``/dev`` is an error (a typo,
    not a sensor yet to be plugged in).
    """
    check_source(url)
    if url == "-" or _is_file(url):
        return FileSource(url, timeout=timeout, follow=follow)
    return SerialSource(url, baudrate=baudrate, timeout=timeout, backoff=backoff)


class Sink:
    """Where output lines go: ``write(line)`` then ``flush()``; never raises on a lost port."""

    def __init__(self, url: str, baudrate: int = 115200, timeout: float = 0.1) -> None:
        self.url = url
        self.dropped = 0
        self._port: SerialSource | None = None
        self._f: BinaryIO | None = None
        self._own = url != "-"
        if url == "-":
            self._f = sys.stdout.buffer
        elif "://" in url or url.startswith("/dev/"):
            self._port = SerialSource(url, baudrate=baudrate, timeout=timeout)
        else:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            self._f = open(url, "ab")  # noqa: SIM115 - closed in close()

    def write(self, line: bytes) -> None:
        """Write one line (lines to a port that is down are dropped and counted)."""
        if self._f is not None:
            self._f.write(line)
            return
        port = self._port
        assert port is not None
        if port.port is None and (time.monotonic() < port._retry_at or not port._open()):
            self.dropped += 1
            return
        try:
            port.port.write(line)
        except (serial.SerialException, OSError) as exc:
            self.dropped += 1
            port._lost(str(exc))

    def flush(self) -> None:
        """Push buffered lines out (stdout, files)."""
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None and self._own:
            self._f.close()
        elif self._f is not None:
            with contextlib.suppress(OSError, ValueError):
                self._f.flush()
        if self._port is not None:
            self._port.close()


def open_sink(url: str, *, baudrate: int = 115200, timeout: float = 0.1) -> Sink:
    """Open ``url`` for writing: ``-`` (stdout), a file path, or a pyserial URL."""
    return Sink(url, baudrate=baudrate, timeout=timeout)
