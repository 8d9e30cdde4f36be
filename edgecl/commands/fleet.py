"""``edgecl fleet``: devices share what they learned on Flower — server, client, simulate."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from edgecl.commands._common import UsageError, _write_json

_FLEET_EPILOG = """\
examples:
  edgecl fleet simulate --devices 7 --rounds 1          seven smartwatch wearers, on one machine
  edgecl fleet server --devices 20 --rounds 3 --address 0.0.0.0:9092 \\
      --ssl-ca-certfile ca.pem --ssl-certfile server.pem --ssl-keyfile server.key
  edgecl fleet client --state /var/lib/edgecl --superlink fleet.example:9092 \\
      --root-certificates ca.pem

Each round every device uploads what its NCM/SLDA head learned since the last
merge — class counts, weights, weighted sums and the pooled scatter, never a
window — and the server adds the deltas exactly: every device then holds the
head a single learner fed all their labelled windows would have. Needs the
fleet extra: pip install 'edgecl[fleet]' (Flower 1.42).
"""


def add_fleet(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "fleet",
        parents=[common],
        help="fleet learning on Flower: exact merges of what devices learned",
        description="Devices share their heads' statistics (never their data) over Flower.",
        epilog=_FLEET_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fs = p.add_subparsers(dest="fleet_command", metavar="{simulate,server,client}", required=True)
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--bundle", default="default", metavar="B", help="the fleet's bundle")
    shared.add_argument("--rounds", type=int, default=1, metavar="R", help="rounds (default 1)")
    shared.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per run")
    shared.add_argument("--json", metavar="OUT", help="write the report as JSON ('-' = stdout)")

    sim = fs.add_parser(
        "simulate",
        parents=[common, shared],
        help="N devices through real Flower processes on this machine",
        description="One device per subject of an IMU file: SuperLink and SuperNodes as local "
        "subprocesses; held-out accuracy before and after each merge, beside the bundle's "
        "head, each device's own head and the head trained centrally.",
    )
    sim.add_argument("--data", metavar="D.npz", help="IMU rows (default: embedded watch_imu)")
    sim.add_argument("--devices", type=int, metavar="N", help="first N subjects (default all)")
    sim.add_argument("--out", metavar="DIR", help="keep states, logs and report here")
    sim.set_defaults(func=cmd_fleet_simulate)

    srv = fs.add_parser(
        "server",
        parents=[common, shared],
        help="run a SuperLink and the fleet's rounds (the aggregator)",
        description="Start a Flower SuperLink, wait for --devices SuperNodes, run the rounds, "
        "write the merged head and a report.",
    )
    srv.add_argument("--devices", type=int, required=True, metavar="N", help="devices per round")
    srv.add_argument("--address", default="0.0.0.0:9092", help="SuperLink address (HOST:PORT)")
    srv.add_argument("--out", default="fleet-out", metavar="DIR", help="merged head + report")
    srv.add_argument("--max-rate", type=float, metavar="W", help="windows/s a device can label "
                     "(default: the bundle's window rate; 0: no bound)")  # fmt: skip
    srv.add_argument("--ssl-ca-certfile", metavar="PEM")
    srv.add_argument("--ssl-certfile", metavar="PEM")
    srv.add_argument("--ssl-keyfile", metavar="KEY")
    srv.add_argument("--insecure", action="store_true", help="no TLS (trusted networks only)")
    srv.set_defaults(func=cmd_fleet_server)

    cli = fs.add_parser(
        "client",
        parents=[common],
        help="join a fleet: a Flower SuperNode over this device's state",
        description="Run a Flower SuperNode whose ClientApp syncs and uploads this device's "
        "state each round (a state file, or the state directory of `edgecl run`: a running "
        "daemon holds it, and the round is skipped with a clear reason).",
    )
    cli.add_argument("--state", required=True, metavar="PATH", help="state file or directory")
    cli.add_argument("--superlink", required=True, metavar="HOST:PORT")
    cli.add_argument("--device", metavar="ID", help="this device's id (default: state name)")
    cli.add_argument("--bundle", default="default", metavar="B", help="where a new state starts")
    cli.add_argument("--root-certificates", metavar="PEM", help="CA of the SuperLink's TLS")
    cli.add_argument("--insecure", action="store_true", help="no TLS (trusted networks only)")
    cli.add_argument("--auth-supernode-private-key", metavar="KEY",
                     help="SuperNode authentication key (Flower's node auth)")  # fmt: skip
    cli.set_defaults(func=cmd_fleet_client)


def _flower() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ImportError(
            "edgecl fleet needs Flower: pip install 'edgecl[fleet]' (flwr 1.42)"
        ) from None


def _rate(bundle: Any) -> float | None:
    w = bundle.window
    return None if w is None or not w.rate_hz else float(w.rate_hz) / w.hop


def _tls(args: argparse.Namespace, names: list[str]) -> list[str] | None:
    given = {n: getattr(args, n.replace("-", "_")) for n in names}
    if args.insecure:
        if any(given.values()):
            raise UsageError("--insecure and TLS files exclude each other")
        return None
    missing = [n for n, v in given.items() if not v]
    if missing:
        raise UsageError(f"TLS needs --{' --'.join(missing)} (or --insecure on a trusted network)")
    return [f for n, v in given.items() for f in (f"--{n}", str(v))]


def _run_rounds(procs: Any, config: dict[str, Any], out: Path, timeout: float) -> dict[str, Any]:
    import json

    from edgecl.fleet.launch import write_app

    app = write_app(procs.workdir / "app", config)
    run_id = procs.run(app, config)
    procs.wait(run_id, out / "report.json", timeout)
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


def cmd_fleet_server(args: argparse.Namespace) -> int:
    """``edgecl fleet server``: a SuperLink plus the fleet's rounds."""
    _flower()
    from edgecl.fleet.launch import FlowerProcesses
    from edgecl.runtime.bundle import Bundle

    tls = _tls(args, ["ssl-ca-certfile", "ssl-certfile", "ssl-keyfile"])
    b = Bundle.load(None if args.bundle == "default" else args.bundle)
    rate = _rate(b) if args.max_rate is None else (args.max_rate or None)
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="edgecl-fleet-") as tmp:
        procs = FlowerProcesses(Path(tmp), args.address)
        with procs:
            procs.superlink(tls)
            if tls is not None:
                procs.connection(insecure=False, root_certificates=args.ssl_ca_certfile)
            report = _run_rounds(
                procs,
                {"rounds": args.rounds, "num-nodes": args.devices, "timeout": args.timeout,
                 "bundle": str(b.path), "output": str(out), "max-rate": rate or 0.0},
                out, args.timeout,
            )  # fmt: skip
    _print_server(report, out)
    if args.json:
        _write_json(report, args.json)
    return 0


def _print_server(report: dict[str, Any], out: Path) -> None:
    for r in report["rounds"]:
        if r["final_broadcast"]:
            continue
        kb = sum(r["upload_bytes"].values()) / 1024
        print(f"round {r['round']}: {len(r['accepted'])} accepted, {len(r['refused'])} refused, "
              f"{kb:.1f} KiB uploaded, {r['seconds']:.1f} s")  # fmt: skip
        for dev, why in r["refused"].items():
            print(f"  refused {dev}: {why}")
    print(f"merged head ({report['samples']:,} samples) -> {out / 'merged.safetensors'}")


def cmd_fleet_client(args: argparse.Namespace) -> int:
    """``edgecl fleet client``: a Flower SuperNode for this device (runs until stopped)."""
    _flower()
    import os
    import sys

    from edgecl.fleet.launch import _tool, free_port, toml_value

    tls = _tls(args, ["root-certificates"])
    state = Path(args.state).resolve()
    node = {"state": str(state), "device": args.device or state.name, "bundle": args.bundle}
    argv = [_tool("flower-supernode"), *(tls or ["--insecure"]), "--superlink", args.superlink,
            "--port", str(free_port()),
            "--node-config", " ".join(f"{k}={toml_value(v)}" for k, v in node.items())]  # fmt: skip
    if args.auth_supernode_private_key:
        argv += ["--auth-supernode-private-key", args.auth_supernode_private_key]
    # The SuperNode starts Flower's helpers (flower-superexec, flwr-clientapp) by name.
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    sys.stdout.flush()
    os.execve(argv[0], argv, env)  # becomes the SuperNode: signals reach it directly
    return 1  # not reached


def cmd_fleet_simulate(args: argparse.Namespace) -> int:
    """``edgecl fleet simulate``: N devices, real Flower processes, one machine."""
    _flower()
    from edgecl.fleet.simulate import run_simulation

    if args.rounds < 1:
        raise UsageError("--rounds must be >= 1")
    if args.out:
        report = run_simulation(args, Path(args.out).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="edgecl-fleet-") as tmp:
            report = run_simulation(args, Path(tmp))
    if args.json:
        _write_json(report, args.json)
    if args.json != "-":
        from edgecl.fleet.simulate import format_report

        print(format_report(report))
    return 0
