"""What a fleet simulation learns and measures (transport-free; Flower runs it in :mod:`apps`).

Devices are the subjects of a row-layout IMU file (one wearer per device). Every
window is embedded once by the bundle's extractor and written to a work file
that each simulated device reads. The evaluation issue's new-user split
(:func:`edgecl.eval.adapt.new_user_split`, one recording per class) decides what
is labelled and what is held out: a device labels its wearer's calibration
recordings — in ``rounds`` consecutive chunks, one per round — and never sees a
test recording.

Accuracy is measured on held-out recordings only, learning off, as the head
would serve each wearer: reset the user statistics, observe that wearer's
calibration windows (unlabelled), predict the wearer's test windows. Per device
it is reported on its own wearer and on the wearers it never saw (the mean over
the other devices' users), for its local head (before a merge) and the merged
head (after), beside the bundle's head out of the box (frozen) and the head
trained centrally on every device's labelled windows in one process.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgecl.errors import ConfigError
from edgecl.learner import StreamingLearner

__all__ = [
    "accuracy_by_user",
    "central_reference",
    "format_report",
    "load_work",
    "prepare_work",
    "run_simulation",
]


def prepare_work(
    bundle: Any, data: str | os.PathLike[str] | None, out: Path, devices: int | None = None
) -> dict[str, Any]:
    """Embed ``data`` with ``bundle`` and write ``out`` (.npz): windows, labels, subjects,
    the calibration mask and the subjects that become devices (the first ``devices``)."""
    from edgecl.eval.adapt import load_embedded, new_user_split

    ds = load_embedded(bundle, data)
    if ds.subject is None or ds.recording is None:
        raise ConfigError(f"{ds.name}: a fleet simulation needs IMU rows with subject ids")
    subjects = sorted(set(ds.subject.tolist()))
    if devices is not None:
        if not 1 <= devices <= len(subjects):
            raise ConfigError(f"--devices {devices}: {ds.name} has {len(subjects)} subjects")
        subjects = subjects[:devices]
    calib = np.zeros(len(ds.y), dtype=bool)
    for s, (c, _t) in new_user_split(ds.subject, ds.recording, ds.y, 1).items():
        if s in subjects:
            calib[c] = True
    keep = np.isin(ds.subject, subjects)
    np.savez(
        out,
        x=ds.x[keep].astype(np.float32),
        y=ds.y[keep],
        subject=ds.subject[keep],
        calib=calib[keep],
        subjects=np.array(subjects),
    )
    return {"name": ds.name, "subjects": subjects, "windows": int(keep.sum()),
            "labelled": int(calib.sum())}  # fmt: skip


def load_work(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The arrays :func:`prepare_work` wrote (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def chunk(work: dict[str, np.ndarray], subject: int, rounds: int, r: int) -> np.ndarray:
    """Indices of the windows ``subject``'s device labels in round ``r`` (of ``rounds``)."""
    idx = np.flatnonzero((work["subject"] == subject) & work["calib"])
    return np.array_split(idx, rounds)[r]


def accuracy_by_user(learner: StreamingLearner, work: dict[str, np.ndarray]) -> dict[int, float]:
    """Held-out accuracy per wearer, served as a new user (see the module docstring)."""
    out = {}
    for s in work["subjects"].tolist():
        mine = work["subject"] == s
        test = mine & ~work["calib"]
        if not test.any():
            continue
        lr = copy.deepcopy(learner)
        lr.reset_user()
        lr.observe_many(work["x"][mine & work["calib"]])
        pred = lr.predict_many(work["x"][test])
        out[int(s)] = float(np.mean(pred == work["y"][test]))
    return out


def own_and_others(acc: dict[int, float], subject: int) -> dict[str, float]:
    """A device's view of :func:`accuracy_by_user`: its wearer, and the mean of the rest."""
    others = [v for s, v in acc.items() if s != subject]
    return {"own": acc.get(subject, float("nan")),
            "others": float(np.mean(others)) if others else float("nan")}  # fmt: skip


def central_reference(
    start: StreamingLearner, work: dict[str, np.ndarray], rounds: int
) -> StreamingLearner:
    """The bundle head trained in one process on every device's labelled windows, wearer
    by wearer (each standardised by its own running statistics, as on its device)."""
    lr = copy.deepcopy(start)
    for s in work["subjects"].tolist():
        lr.reset_user()
        for r in range(rounds):
            idx = chunk(work, s, rounds, r)
            if idx.size:
                learn_local(lr, work, idx)
    lr.reset_user()
    return lr


def learn_local(lr: StreamingLearner, work: dict[str, np.ndarray], idx: np.ndarray) -> None:
    """What a device does with labelled windows: observe them, then learn them."""
    lr.observe_many(work["x"][idx])
    lr.learn_many(work["x"][idx], work["y"][idx])


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-300))


def run_simulation(args: Any, workdir: Path) -> dict[str, Any]:
    """``edgecl fleet simulate``: prepare, baselines, the Flower run, the comparison."""
    import json
    import time

    from edgecl.fleet.launch import FlowerProcesses, write_app
    from edgecl.fleet.states import bundle_base
    from edgecl.runtime.bundle import Bundle

    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    b = Bundle.load(None if args.bundle == "default" else args.bundle)
    work_path = workdir / "work.npz"
    info = prepare_work(b, args.data, work_path, args.devices)
    work = load_work(work_path)
    subjects, rounds = info["subjects"], int(args.rounds)
    start = bundle_base(b)
    central = central_reference(start, work, rounds)
    baselines: dict[str, dict[int, float]] = {
        "frozen": accuracy_by_user(start, work),
        "central": accuracy_by_user(central, work),
    }
    own_only = {}
    for s in subjects:
        lr = copy.deepcopy(start)
        for r in range(rounds):
            learn_local(lr, work, chunk(work, s, rounds, r))
        own_only[s] = accuracy_by_user(lr, work)
    w = b.window
    rate = float(w.rate_hz) / w.hop if w is not None and w.rate_hz else None
    # The server's clock in a simulation: each round covers 1/rounds of the longest
    # wearer's recorded time (the windows a device labels are a subset of those).
    longest = max(int((work["subject"] == s).sum()) for s in subjects)
    round_s = longest / rounds / rate if rate else 0.0
    out = workdir / "result"
    config = {"rounds": rounds, "num-nodes": len(subjects), "timeout": float(args.timeout),
              "bundle": str(b.path), "output": str(out), "max-rate": rate or 0.0,
              "round-seconds": round_s}  # fmt: skip
    t_flower = time.monotonic()
    with FlowerProcesses(workdir / "flower") as procs:
        procs.superlink(None)
        for s in subjects:
            procs.supernode(
                f"wearer-{s}",
                {"state": str(workdir / "devices" / f"wearer-{s}"), "device": f"wearer-{s}",
                 "bundle": str(b.path), "work": str(work_path), "subject": int(s)},
            )  # fmt: skip
        app = write_app(procs.workdir / "app", config)
        run_id = procs.run(app, config)
        procs.wait(run_id, out / "report.json", float(args.timeout))
    fl = json.loads((out / "report.json").read_text(encoding="utf-8"))
    merged = StreamingLearner.load(out / "merged.safetensors")
    m, c = merged.statistics(), central.statistics()
    test = ~work["calib"]
    final = fl["rounds"][-1]["metrics"]
    devices = []
    for s in subjects:
        got = final.get(f"wearer-{s}", {})
        devices.append({
            "wearer": int(s),
            "frozen": own_and_others(baselines["frozen"], s),
            "own_head": own_and_others(own_only[s], s),
            "fleet": {"own": got.get("merged_own"), "others": got.get("merged_others")},
            "central": own_and_others(baselines["central"], s),
        })  # fmt: skip
    uploads = [r["upload_bytes"] for r in fl["rounds"] if not r["final_broadcast"]]
    return {
        "data": info,
        "bundle": str(b.path),
        "rounds": rounds,
        "devices": devices,
        "per_round": [
            {
                k: r.get(k)
                for k in ("round", "accepted", "refused", "seconds", "upload_bytes", "metrics")
            }
            for r in fl["rounds"]
        ],  # fmt: skip
        "upload_bytes_per_device_round": max((max(u.values()) for u in uploads if u), default=0),
        "exactness": {
            "means_rel": _rel_diff(m.means, c.means),
            "scatter_rel": _rel_diff(m.scatter, c.scatter) if c.scatter is not None else 0.0,
            "same_predictions": bool(
                np.array_equal(
                    merged.predict_many(work["x"][test]), central.predict_many(work["x"][test])
                )
            ),
            "windows_compared": int(test.sum()),
        },  # fmt: skip
        "server_clock_s_per_round": round_s,
        "seconds": {
            "flower": fl["seconds"],
            "total": time.monotonic() - t0,
            "flower_with_startup": time.monotonic() - t_flower,
        },  # fmt: skip
    }


def _pct(v: Any) -> str:
    return "  -  " if v is None or v != v else f"{100 * v:5.1f}"


def format_report(r: dict[str, Any]) -> str:
    """The simulation's table: held-out accuracy per wearer (own / users never seen)."""
    lines = [
        f"fleet of {len(r['devices'])} devices, {r['rounds']} round(s), bundle {r['bundle']}",
        "held-out recordings, % correct: own wearer / wearers the device never saw",
        f"{'wearer':>7} {'frozen':>13} {'own head':>13} {'fleet':>13} {'central':>13}",
    ]
    for d in r["devices"]:
        cells = [f"{_pct(d[k]['own'])} /{_pct(d[k]['others'])}" for k in
                 ("frozen", "own_head", "fleet", "central")]  # fmt: skip
        lines.append(f"{d['wearer']:>7} " + " ".join(f"{c:>13}" for c in cells))
    ex = r["exactness"]
    lines.append(
        f"merged vs central: means {ex['means_rel']:.1e}, scatter {ex['scatter_rel']:.1e} "
        f"relative; identical predictions on {ex['windows_compared']:,} windows: "
        f"{ex['same_predictions']}"
    )
    kb = r["upload_bytes_per_device_round"] / 1024
    lines.append(
        f"upload per device per round: {kb:.1f} KiB; Flower run {r['seconds']['flower']:.1f} s "
        f"({r['seconds']['total']:.1f} s in all)"
    )
    return "\n".join(lines)
