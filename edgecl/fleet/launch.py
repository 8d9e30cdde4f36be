"""Start Flower's real processes for a fleet: SuperLink, SuperNodes, and the run.

Flower 1.42 deployment engine, driven through its own command-line tools (public
interface, nothing private imported): ``flower-superlink``, ``flower-supernode``,
``flwr run`` / ``flwr ls``. A run is a Flower App: a directory whose
``pyproject.toml`` names the components; edgecl writes one on the fly
(:func:`write_app`) whose components live in the installed package
(``edgecl.fleet.apps:server_app`` / ``client_app``), so nothing but that file is
shipped to the SuperLink. ``FLWR_HOME`` points at a private directory (Flower's
connection config and app cache), so runs never touch ``~/.flwr``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edgecl.errors import ConfigError, EdgeclError

__all__ = ["FlowerProcesses", "free_port", "toml_value", "write_app"]

CONNECTION = "edgecl"


def free_port() -> int:
    """A TCP port free on localhost now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def toml_value(v: Any) -> str:
    """A TOML literal for a config value (bool, int, float, str).

    >>> [toml_value(v) for v in (True, 3, 0.5, 'a "b"')]
    ['true', '3', '0.5', '"a \\\\"b\\\\""']
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def write_app(directory: Path, config: dict[str, Any]) -> Path:
    """Write the Flower App ``pyproject.toml`` (components + default run config)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        'name = "edgecl-fleet"',
        'version = "1.0.0"',
        'description = "edgecl fleet learning: exact merge of prototype-head statistics"',
        'license = "Apache-2.0"',
        "dependencies = []",
        "",
        "[tool.flwr.app]",
        'publisher = "edgecl"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "edgecl.fleet.apps:server_app"',
        'clientapp = "edgecl.fleet.apps:client_app"',
        "",
        "[tool.flwr.app.config]",
        *(f"{k} = {toml_value(v)}" for k, v in config.items()),
        "",
    ]
    (directory / "pyproject.toml").write_text("\n".join(lines), encoding="utf-8")
    return directory


def _tool(name: str) -> str:
    """A Flower executable: next to this interpreter (a venv), else on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(
            f"{name} not found: install the fleet extra (pip install 'edgecl[fleet]')"
        )
    return found


class FlowerProcesses:
    """Flower processes started by this one, in their own sessions, stopped on exit.

    ``tls``: None for ``--insecure`` (localhost simulation), else a dict of Flower's
    TLS flags and paths (``ssl-ca-certfile``, ``ssl-certfile``, ``ssl-keyfile`` for
    the SuperLink; ``root-certificates`` for SuperNodes).
    """

    def __init__(self, workdir: Path, address: str | None = None) -> None:
        self.workdir = workdir
        self.home = workdir / "flwr-home"
        self.logs = workdir / "logs"
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.address = address or f"127.0.0.1:{free_port()}"
        self.env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        self.env.update(
            FLWR_HOME=str(self.home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.1",  # Flower's default 1 s per step
            PATH=f"{bindir}{os.pathsep}{self.env.get('PATH', '')}",  # flwr-* helpers
        )
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def connection(self, insecure: bool = True, root_certificates: str | None = None) -> None:
        """Write Flower's connection config (``$FLWR_HOME/config.toml``) for ``flwr run``."""
        extra = (
            "insecure = true"
            if insecure
            else f"root-certificates = {toml_value(root_certificates)}"
        )
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f"address = {toml_value(self.address)}\n{extra}\n",
            encoding="utf-8",
        )

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        p = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)  # fmt: skip
        log.close()
        self.procs.append((name, p))
        return p

    def superlink(self, tls: list[str] | None = None) -> None:
        host, port = self.address.rsplit(":", 1)
        self.spawn("superlink", [_tool("flower-superlink"), *(tls or ["--insecure"]),
                                 "--host", host, "--port", port,
                                 "--disable-runtime-dependency-installation"])  # fmt: skip
        self.connection(insecure=tls is None)
        self.wait_ready(https=tls is not None)

    def wait_ready(self, https: bool = False, timeout: float = 60.0) -> None:
        """Until the SuperLink answers its health check (``flwr run`` fails before)."""
        import ssl
        import urllib.request

        host, port = self.address.rsplit(":", 1)
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        url = f"{'https' if https else 'http'}://{host}:{port}/health"
        ctx = ssl._create_unverified_context() if https else None  # localhost liveness only
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            link = self.procs[0][1]
            if link.poll() is not None:
                raise EdgeclError(f"the SuperLink exited ({link.returncode}); see {self.logs}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=1.0, context=ctx) as r:  # noqa: S310
                    if r.status == 200:
                        return
            time.sleep(0.2)
        raise EdgeclError(f"the SuperLink did not come up within {timeout:.0f} s; see {self.logs}")

    def supernode(
        self, name: str, node_config: dict[str, Any], tls: list[str] | None = None
    ) -> None:
        cfg = " ".join(f"{k}={toml_value(v)}" for k, v in node_config.items())
        self.spawn(name, [_tool("flower-supernode"), *(tls or ["--insecure"]),
                          "--superlink", self.address, "--port", str(free_port()),
                          "--node-config", cfg, "--max-retries", "100",
                          "--max-wait-time", "300"])  # fmt: skip

    def run(self, app: Path, run_config: dict[str, Any]) -> int:
        """``flwr run``: submit the app; returns the run id."""
        cfg = " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())
        res = subprocess.run(
            [_tool("flwr"), "run", str(app), CONNECTION, "--format", "json", "--run-config", cfg],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        try:
            return int(json.loads(res.stdout)["run-id"])
        except (ValueError, KeyError, TypeError):
            tail = (res.stdout + res.stderr).strip().splitlines()[-3:]
            raise EdgeclError(f"flwr run failed: {' | '.join(tail)}") from None

    def status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` reports it (e.g. ``finished:completed``)."""
        res = subprocess.run(
            [_tool("flwr"), "ls", CONNECTION, "--run-id", str(run_id), "--format", "json"],
            env=self.env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        try:
            return str(json.loads(res.stdout)["runs"][0]["status"])
        except (ValueError, KeyError, IndexError, TypeError):
            return "unknown"

    def wait(self, run_id: int, done: Path, timeout: float) -> str:
        """Until ``done`` exists (the ServerApp writes it last) or the run ends; returns the
        status. Raises :class:`EdgeclError` on timeout or a dead SuperLink."""
        deadline = time.monotonic() + timeout
        next_ls = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if done.exists():
                return "finished:completed"
            for name, p in self.procs:
                if name == "superlink" and p.poll() is not None:
                    raise EdgeclError(f"the SuperLink exited ({p.returncode}); see {self.logs}")
            if time.monotonic() > next_ls:  # `flwr ls` costs seconds of CPU: rarely
                st = self.status(run_id)
                if st.startswith("finished") and not done.exists():
                    raise EdgeclError(f"the fleet run ended as {st}; logs: {self.logs}")
                next_ls = time.monotonic() + 15.0
            time.sleep(0.2)
        raise EdgeclError(f"the fleet run did not finish within {timeout:.0f} s; logs: {self.logs}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM every process (Flower shuts down cleanly on it), SIGKILL stragglers,
        and the ``flower-superexec`` helpers they spawned."""
        pids = [p.pid for _, p in self.procs]
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in self.procs:
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        deadline = time.monotonic() + timeout
        while _helpers_of(pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _helpers_of(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> FlowerProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _helpers_of(parents: list[int]) -> list[int]:
    """Processes started with ``--parent-pid P`` for one of ``parents`` (Flower's
    detached superexec helpers, which exit on their own shortly after P)."""
    out = []
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    want = {str(p).encode() for p in parents}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for i, a in enumerate(argv[:-1]):
            if a == b"--parent-pid" and argv[i + 1] in want:
                out.append(int(d.name))
    return out
