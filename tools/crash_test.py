"""Crash test of ``edgecl run``: ``kill -9`` at random moments, and a disk that fills up.

examples:
  python tools/crash_test.py --kills 100                 # make crash-test
  python tools/crash_test.py --kills 5 --every 3 --json crash.json

1. Kill loop. One state directory, one labelled stream of 8-d samples. Each
   round starts the daemon (``--features 8``, checkpoints every ``--every``
   learned labels, nothing time-based) on stdin, feeding the stream from the
   first sample the newest checkpoint has not learned, and ``SIGKILL``\\ s it
   after a random number of predictions (0: during start-up). A small
   ``--every`` means the kill often lands inside a checkpoint write (fsync is
   the slowest step); a ``.tmp`` file left behind proves it did.
   Every start must resume from the newest checkpoint (its log names that
   file; a fresh learner before the first; nothing is called corrupt), and
   after every kill the newest checkpoint's bytes must
   equal a reference learner fed exactly the first ``k`` samples, ``k`` must be
   a multiple of ``--every``, and the samples lost — predictions made minus
   ``k`` — must lie in ``[0, every]``.
2. Disk full. The daemon runs with ``RLIMIT_FSIZE`` below a checkpoint's size
   (``SIGXFSZ`` ignored, so a write fails with ``EFBIG`` as on a full disk): it
   must serve every sample, log the failure, count ``checkpoint_errors``, exit
   0, and leave the previous checkpoint in place and loadable.

Prints a JSON report; exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgecl import LearnerConfig, StreamingLearner
from edgecl.learner.state import state_bytes
from edgecl.runtime.protocol import format_sample

DIM, CLASSES, BUDGET = 8, 4, 60_000


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    rng = np.random.default_rng(seed)
    Y = rng.integers(0, CLASSES, size=n)
    X = (rng.normal(size=(n, DIM)) + 2.0 * np.eye(CLASSES, DIM)[Y]).astype(np.float32)
    return X, Y, [format_sample(x, int(y)) for x, y in zip(X, Y, strict=True)]


def _command(state: Path, every: int, source: str = "-") -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgecl.cli",
        "run",
        "--features",
        str(DIM),
        "--max-classes",
        str(CLASSES),
        "--budget-bytes",
        str(BUDGET),
        "--head",
        "slda",
        "--state",
        str(state),
        "--source",
        source,
        "--stats-every",
        "0",
        "--serial-timeout",
        "0.05",
        "--checkpoint-every",
        str(every),
        "--checkpoint-seconds",
        "0",
        "--log-level",
        "info",
    ]


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, ValueError, OSError):
        pass  # killed mid-write
    with contextlib.suppress(OSError):
        pipe.close()


def _newest(state: Path) -> tuple[Path | None, StreamingLearner | None, bool]:
    """The newest completed checkpoint, its learner, and whether it failed to verify."""
    paths = sorted(state.glob("learner-*.safetensors"))
    if not paths:
        return None, None, False
    try:
        return paths[-1], StreamingLearner.load(paths[-1]), False
    except Exception:  # noqa: BLE001 - any failure to load is a corrupt state
        return paths[-1], None, True


def kill_loop(kills: int, every: int, seed: int, state: Path) -> dict:
    rng = np.random.default_rng(seed)
    max_wait = 4 * every + 20  # predictions before the kill: 0 .. max_wait
    n = kills * max_wait + every + 10
    X, Y, lines = _stream(n, seed)
    ref = StreamingLearner(
        LearnerConfig(dim=DIM, max_classes=CLASSES, head="slda", budget_bytes=BUDGET)
    )
    k = 0  # samples the newest checkpoint has learned
    rounds, failures = [], []
    mid_write = corrupt = 0
    resumed = 0  # starts that got as far as loading their state before the kill
    for r in range(kills):
        start_path = _newest(state)[0]
        proc = subprocess.Popen(
            _command(state, every),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        err_chunks: list[bytes] = []
        err_reader = threading.Thread(
            target=lambda p=proc, out=err_chunks: out.append(p.stderr.read()), daemon=True
        )
        err_reader.start()
        feeder = threading.Thread(target=_feed, args=(proc.stdin, b"".join(lines[k:])), daemon=True)
        feeder.start()
        wait_for = int(rng.integers(0, max_wait + 1))
        if wait_for and rng.random() < 0.5:
            # Right after the prediction for a sample whose label triggers a checkpoint:
            # the kill lands while that checkpoint is being written.
            wait_for = every * max(1, wait_for // every)
        seen = 0
        if wait_for == 0:
            time.sleep(float(rng.uniform(0.0, 0.6)))  # somewhere in start-up
        else:
            while seen < wait_for:
                line = proc.stdout.readline()
                if not line:
                    break
                seen += b'"seq"' in line
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        err_reader.join(5)
        feeder.join(5)
        proc.stdout.close()
        proc.stderr.close()
        err = b"".join(err_chunks).decode(errors="replace")
        processed = seen + rest.count(b'"seq"')
        tmp_left = bool(list(state.glob(".learner-*.tmp")))
        mid_write += tmp_left
        # -- the state the next start must resume from --------------------------------
        path, learner, bad = _newest(state)
        problems = []
        if bad:
            corrupt += 1
            problems.append(f"{path.name} does not verify")
        if "learner:" in err:  # it got as far as loading its state
            resumed += 1
            if start_path is not None and f"from checkpoint {start_path}" not in err:
                problems.append(f"did not resume from {start_path.name}")
            if start_path is None and "from new learner" not in err:
                problems.append("no checkpoint yet, yet it did not start fresh")
        if "corrupt" in err:
            problems.append("a checkpoint was reported corrupt at start")
        k_new = learner.n_learned if learner is not None else 0
        lost = k + processed - k_new
        if k_new % every or not 0 <= lost <= every:
            problems.append(f"k={k_new} (every {every}) lost={lost}")
        if learner is not None and not bad:
            ref.learn_many(X[k:k_new], Y[k:k_new])
            if state_bytes(ref) != path.read_bytes():
                corrupt += 1
                problems.append("checkpoint differs from a learner fed the same prefix")
        rounds.append(
            {
                "killed_after": processed,
                "checkpointed": k_new - k,
                "lost": lost,
                "tmp_left": tmp_left,
            }
        )
        if problems:
            failures.append({"round": r, "problems": problems})
        k = k_new
    # A last clean start must load the newest checkpoint and say so.
    empty = state.parent / "empty.ndjson"
    empty.write_bytes(b"")
    last = subprocess.run(_command(state, every, str(empty)), capture_output=True, timeout=120)
    final_n = json.loads(last.stdout.splitlines()[-1])["stats"]["n_learned"]
    if last.returncode != 0 or final_n != k or b"corrupt" in last.stderr:
        failures.append({"round": "final", "problems": [f"rc {last.returncode}, n={final_n}"]})
    lost = np.array([r["lost"] for r in rounds])
    return {
        "kills": kills,
        "checkpoint_every": every,
        "samples_learned_and_kept": k,
        "killed_mid_checkpoint_write": mid_write,
        "killed_before_first_prediction": sum(r["killed_after"] == 0 for r in rounds),
        "restarts_that_loaded_state": resumed,
        "corrupt_states": corrupt,
        "lost_mean": round(float(lost.mean()), 2),
        "lost_max": int(lost.max()),
        "failures": failures,
    }


def _fsize_limit(limit: int):
    def pre() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return pre


def disk_full(state: Path, every: int, seed: int) -> dict:
    X, Y, lines = _stream(20 * every + 5, seed + 1)
    first = _stream(every, seed + 2)[2]
    src = state.parent / "disk-full.ndjson"
    src.write_bytes(b"".join(first))
    ok = subprocess.run(_command(state, every, str(src)), capture_output=True, timeout=120)
    (old,) = sorted(state.glob("learner-*.safetensors"))
    before = old.read_bytes()
    src.write_bytes(b"".join(lines))
    limit = len(before) // 2  # any checkpoint write now fails half-way
    full = subprocess.run(
        _command(state, every, str(src)),
        capture_output=True,
        timeout=120,
        preexec_fn=_fsize_limit(limit),
    )
    out = [json.loads(s) for s in full.stdout.splitlines()]
    stats = out[-1]["stats"]
    err = full.stderr.decode(errors="replace")
    after = sorted(state.glob("learner-*.safetensors"))
    intact = after == [old] and old.read_bytes() == before
    StreamingLearner.load(old)  # still verifies
    res = {
        "first_run_exit": ok.returncode,
        "full_disk_exit": full.returncode,
        "predictions": sum("seq" in o for o in out),
        "samples": len(lines),
        "checkpoint_errors": stats.get("checkpoint_errors"),
        "error_logged": "checkpoint failed" in err,
        "old_checkpoint_intact": intact,
        "tmp_files_left": len(list(state.glob(".learner-*.tmp"))),
    }
    res["ok"] = bool(
        full.returncode == 0
        and res["predictions"] == len(lines)
        and (res["checkpoint_errors"] or 0) >= 1
        and res["error_logged"]
        and intact
        and res["tmp_files_left"] == 0
    )
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--every", type=int, default=5, help="checkpoint every N learned labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecl-crash-") as tmp:
        kill = kill_loop(args.kills, args.every, args.seed, Path(tmp) / "kill")
        full = disk_full(Path(tmp) / "full", args.every, args.seed)
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "kill_9": kill,
        "disk_full": full,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0 if not kill["failures"] and kill["corrupt_states"] == 0 and full["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
