"""The fleet protocol on Flower's Message API: a ``ServerApp`` and a ``ClientApp``.

Needs the ``[fleet]`` extra (``flwr`` 1.42). Flower carries the messages (gRPC,
TLS and SuperNode authentication as Flower configures them); :mod:`protocol`
decides what they mean. One round is one ``query.round`` message per SuperNode:

* server → device: ``global`` (ArrayRecord: the merged statistics), ``round``
  (ConfigRecord: round number, whether to upload, and the upload number the
  server last counted from every device, as JSON);
* device → server: ``upload`` (ArrayRecord: the delta) and ``meta``
  (ConfigRecord: device id, upload number, base digest, bundle tag, config
  digest), plus ``metrics`` (MetricRecord) in a simulation.

After the last round a final message with ``upload = false`` lets every device
adopt the result. The ServerApp writes the merged head as a learner state file
and a JSON report (per round: accepted, refused with reasons, bytes, seconds).

Node config of a device (``flower-supernode --node-config``): ``state`` (its
learner state file or ``edgecl run`` state directory), ``device`` (its id),
``bundle`` (where a new state starts from); in a simulation also ``work`` (the
embedded windows) and ``subject``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from edgecl.fleet.device import open_device
from edgecl.fleet.protocol import FleetServer, Upload
from edgecl.learner.merge import HeadStats

__all__ = ["client_app", "server_app"]

_POLL_S = 0.05


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def _arrays(rec: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in rec.items()}


# -- the device --------------------------------------------------------------------------

client_app = ClientApp()


@client_app.query("round")
def device_round(msg: Message, context: Context) -> Message:
    """Sync with the merged head, (simulation: learn this round's windows), upload."""
    cfg = msg.content["round"]
    node = {k: v for k, v in context.node_config.items()}
    counted = json.loads(str(cfg["counted"]))
    global_stats = HeadStats.from_arrays(_arrays(msg.content["global"]), "merged head")
    with open_device(node) as dev:
        content: dict[str, Any] = {}
        metrics = dev.sync(global_stats, int(counted.get(dev.device, 0)), int(cfg["round"]))
        if bool(cfg["upload"]):
            metrics.update(dev.learn_round(int(cfg["round"]), int(cfg["rounds"])))
            up = dev.upload()
            content["upload"] = _record(up.delta.arrays())
            content["meta"] = ConfigRecord(up.meta())
        dev.save()
    content["metrics"] = MetricRecord(metrics)
    content["info"] = ConfigRecord({"device": dev.device})
    return Message(RecordDict(content), reply_to=msg)


# -- the server --------------------------------------------------------------------------

server_app = ServerApp()


def _wait_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        ids = sorted(grid.get_node_ids())
        if len(ids) >= n:
            return ids
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids)} of {n} devices connected within {timeout:.0f} s")
        time.sleep(0.2)


def _exchange(grid: Grid, msgs: list[Message], timeout: float) -> list[Message]:
    pending = set(grid.push_messages(msgs))
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        got = list(grid.pull_messages(pending))
        out.extend(got)
        pending -= {m.metadata.reply_to_message_id for m in got}
        if pending:
            time.sleep(_POLL_S)
    return out


def _round_messages(server: FleetServer, nodes: list[int], r: int, rounds: int, upload: bool):
    content = RecordDict(
        {
            "global": _record(server.global_.arrays()),
            "round": ConfigRecord(
                {
                    "round": r,
                    "rounds": rounds,
                    "upload": upload,
                    "counted": json.dumps(server.counted),
                }  # fmt: skip
            ),
        }
    )
    return [
        Message(content, dst_node_id=n, message_type="query.round", group_id=str(r)) for n in nodes
    ]


@server_app.main()
def fleet_server(grid: Grid, context: Context) -> None:
    """Run ``rounds`` rounds over ``num-nodes`` devices; write the merged head and a report."""
    from edgecl.fleet.states import bundle_base, load_learner

    cfg = context.run_config
    bundle = str(cfg.get("bundle", "default"))
    start = str(cfg.get("start", ""))
    learner = load_learner(start) if start else bundle_base(None if bundle == "default" else bundle)
    rate = float(cfg.get("max-rate", 0.0)) or None
    server = FleetServer(learner, max_rate=rate)
    clock_step = float(cfg.get("round-seconds", 0.0))
    server.started = 0.0 if clock_step else time.monotonic()
    rounds, n, timeout = int(cfg["rounds"]), int(cfg["num-nodes"]), float(cfg["timeout"])
    report: dict[str, Any] = {"rounds": [], "bundle": bundle, "devices": n}
    t0 = time.monotonic()
    nodes = _wait_nodes(grid, n, timeout)
    for r in range(1, rounds + 2):
        last = r == rounds + 1
        t = time.monotonic()
        replies = _exchange(grid, _round_messages(server, nodes, r, rounds, not last), timeout)
        errors = [
            f"node {m.metadata.src_node_id}: {m.error.reason}" for m in replies if m.has_error()
        ]
        good = [m for m in replies if not m.has_error()]
        uploads, sizes = [], {}
        for m in good if not last else []:
            up = Upload.from_parts(dict(m.content["meta"]), _arrays(m.content["upload"]))
            uploads.append(up)
            sizes[up.device] = int(up.delta.nbytes)
        now = r * clock_step if clock_step else time.monotonic()
        result = server.aggregate(uploads, now) if not last else {}
        metrics = {str(m.content["info"]["device"]): dict(m.content["metrics"]) for m in good}
        report["rounds"].append(
            {
                "round": r,
                "final_broadcast": last,
                "replies": len(good),
                "errors": errors,
                "missing": len(nodes) - len(replies),
                "upload_bytes": sizes,
                **result,
                "metrics": metrics,
                "seconds": time.monotonic() - t,
            }  # fmt: skip
        )
    report["seconds"] = time.monotonic() - t0
    report["samples"] = server.global_.n
    out = Path(str(cfg["output"]))
    out.mkdir(parents=True, exist_ok=True)
    learner.apply_statistics(server.global_)
    learner.save(out / "merged.safetensors")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
