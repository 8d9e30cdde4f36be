"""systemd readiness and watchdog notifications (``sd_notify``), in stdlib only.

The protocol (``man sd_notify``): send a datagram such as ``READY=1`` to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the
Linux abstract namespace). With ``WatchdogSec=`` set, systemd passes
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``) and expects ``WATCHDOG=1`` at least
that often; we ping every half of it. Without ``$NOTIFY_SOCKET`` every call is
a no-op, so the daemon runs the same outside systemd.

>>> n = Notifier(env={})
>>> n.enabled, n.notify("READY=1"), n.watchdog_interval
(False, False, None)
>>> Notifier(env={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000"}).watchdog_interval
2.0
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """Sends ``sd_notify`` datagrams when running under systemd ``Type=notify``.

    Parameters
    ----------
    env : mapping, optional
        Where to read ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` (default ``os.environ``).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` names a socket."""
        return self.address is not None

    def notify(self, message: str) -> bool:
        """Send ``message`` (e.g. ``"READY=1\\nSTATUS=running"``); True if it was sent."""
        if self.address is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            try:
                s.sendto(message.encode(), self.address)
            except OSError:
                return False  # systemd gone or socket missing: nothing to tell
        return True

    def ping(self, now: float | None = None) -> bool:
        """Send ``WATCHDOG=1`` if half the watchdog period has passed since the last one."""
        if self.watchdog_interval is None or self.address is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_ping < self.watchdog_interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")
