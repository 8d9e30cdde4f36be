"""Crash test of ``edgecl run``: ``kill -9`` while it learns, and a disk that fills up.

examples:
  python tools/crash_test.py --kills 20                  # make crash-test: 100
  python tools/crash_test.py --kills 5 --every 3 --json crash.json

1. Kill loop. One state directory, one labelled stream of 8-d samples. Each
   round starts the daemon (``--features 8``, checkpoints every ``--every``
   learned labels, nothing time-based, the label journal on) on stdin, feeding
   the stream from the first sample the resumed state has not learned, waits
   for its first prediction (start-up is over, it is learning) and ``SIGKILL``\\ s
   it a random time later. The test-only hooks ``$EDGECL_TEST_CHECKPOINT_DELAY_S``
   and ``$EDGECL_TEST_JOURNAL_DELAY_S`` slow every checkpoint write (between its
   temp file and the rename) and every journal record (between its two halves),
   so most kills land inside a write. Where each kill landed is read from what
   it left: a checkpoint temp file, or a journal still over the previous
   checkpoint → ``checkpoint_write``; a torn journal tail → ``journal_write``;
   else ``learning`` (``startup``: no prediction yet).
   After every kill the state the next start resumes from (newest checkpoint +
   journal replay, computed by the daemon's own start-up code on a copy of the
   directory) must be byte-identical to a reference learner fed exactly the
   first ``k`` samples, ``k`` may only grow, and the labels lost — predictions
   made minus labels kept — must be 0 or 1 (the label in flight; the journal is
   written with one ``write`` per record, so ``kill -9`` loses no written record,
   whatever the fsync interval). The next start must report that very state.
2. Disk full. The daemon runs with ``RLIMIT_FSIZE`` below a checkpoint's size
   (``SIGXFSZ`` ignored, so a write fails with ``EFBIG`` as on a full disk): it
   must serve every sample, log the failure, count ``checkpoint_errors``, exit
   0, and leave the previous checkpoint in place and loadable.
3. Write amplification of the journal for 64-d embeddings (the shipped bundle's):
   bytes appended per learned label and per observed window, and the bytes the
   kernel sent to the block layer per record when every record is fsynced
   (``/proc/self/io``; one fsync per second at one window per second), and what
   the whole device wrote meanwhile (``/sys/dev/block``: filesystem metadata too).

Prints a JSON report; exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import re
import resource
import shutil
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
from edgecl.runtime.checkpoint import DELAY_ENV as CKPT_DELAY
from edgecl.runtime.daemon import DaemonConfig
from edgecl.runtime.journal import DELAY_ENV as JOURNAL_DELAY
from edgecl.runtime.journal import JOURNAL, LEARN, OBSERVE, Journal, read_journal, record_bytes
from edgecl.runtime.launch import build_daemon
from edgecl.runtime.protocol import format_sample

DIM, CLASSES, BUDGET = 8, 4, 60_000
OPTIONS = {"max_classes": CLASSES, "budget_bytes": BUDGET, "head": "slda"}
PLACES = ("startup", "learning", "checkpoint_write", "journal_write")


def _stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    rng = np.random.default_rng(seed)
    Y = rng.integers(0, CLASSES, size=n)
    X = (rng.normal(size=(n, DIM)) + 2.0 * np.eye(CLASSES, DIM)[Y]).astype(np.float32)
    return X, Y, [format_sample(x, int(y)) for x, y in zip(X, Y, strict=True)]


def _reference() -> StreamingLearner:
    cfg = LearnerConfig(dim=DIM, max_classes=CLASSES, head="slda", budget_bytes=BUDGET)
    return StreamingLearner(cfg.replace(tag=f"features:{DIM}"))


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


def _resume(state: Path, scratch: Path) -> StreamingLearner:
    """The learner the next start resumes to: the daemon's own start-up code, run on a
    copy of the state directory (recovery cuts torn tails and moves files)."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(state, scratch)
    empty = scratch.parent / "empty.ndjson"
    empty.write_bytes(b"")
    cfg = DaemonConfig(source=str(empty), state_dir=str(scratch))
    with contextlib.redirect_stderr(io.StringIO()):  # the "--head ... ignored" note
        d = build_daemon(cfg, features=DIM, learner_options=OPTIONS)
    d.journal.close()
    return d.learner


def _landed(state: Path, predictions: int) -> str:
    """Where the kill landed, from what it left in the state directory."""
    if predictions == 0:
        return "startup"
    if list(state.glob(".learner-*.tmp")) or list(state.glob(f".{JOURNAL}.*.tmp")):
        return "checkpoint_write"
    ckpts = sorted(state.glob("learner-*.safetensors"))
    got = read_journal(state / JOURNAL)
    if ckpts and got.header is not None:
        if got.header["base_sha256"] != hashlib.sha256(ckpts[-1].read_bytes()).hexdigest():
            return "checkpoint_write"  # written, but the journal not yet restarted over it
    return "journal_write" if got.dropped else "learning"


def kill_loop(
    kills: int, every: int, seed: int, state: Path, ckpt_delay: float, journal_delay: float
) -> dict:
    rng = np.random.default_rng(seed)
    # Long enough that no round runs out of input before its kill.
    per_label = journal_delay + ckpt_delay / every + 0.002
    max_after = min(1.0, 40 * per_label)  # seconds from the first prediction to the kill
    n = kills * int(max_after / per_label * 3 + 50) + 100
    X, Y, lines = _stream(n, seed)
    env = {**os.environ, CKPT_DELAY: str(ckpt_delay), JOURNAL_DELAY: str(journal_delay)}
    ref = _reference()
    k = 0  # samples the resumed state has learned
    rounds, failures = [], []
    places = dict.fromkeys(PLACES, 0)
    identical = corrupt = 0
    logging.getLogger("edgecl").setLevel(logging.ERROR)  # the in-process resumes stay quiet
    for r in range(kills):
        proc = subprocess.Popen(
            _command(state, every),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        err_chunks: list[bytes] = []
        err_reader = threading.Thread(
            target=lambda p=proc, out=err_chunks: out.append(p.stderr.read()), daemon=True
        )
        err_reader.start()
        feeder = threading.Thread(target=_feed, args=(proc.stdin, b"".join(lines[k:])), daemon=True)
        feeder.start()
        first = proc.stdout.readline()  # the first prediction: start-up is over
        seen = int(b'"seq"' in first)
        time.sleep(float(rng.uniform(0.0, max_after)))
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        err_reader.join(5)
        feeder.join(5)
        proc.stdout.close()
        proc.stderr.close()
        err = b"".join(err_chunks).decode(errors="replace")
        processed = seen + rest.count(b'"seq"')
        place = _landed(state, processed)
        places[place] += 1
        problems = []
        # -- the state the next start resumes from --------------------------------
        m = re.search(r"learner: StreamingLearner\(.*?learned=(\d+)", err)
        if m is None or int(m.group(1)) != k:
            problems.append(f"started from {m and m.group(1)} learned labels, not {k}")
        if "corrupt" in err:
            corrupt += 1
            problems.append("a checkpoint was reported corrupt at start")
        try:
            resumed = _resume(state, state.parent / "scratch")
        except Exception as exc:  # noqa: BLE001 - any failure to resume is a corrupt state
            corrupt += 1
            problems.append(f"cannot resume: {exc}")
            failures.append({"round": r, "problems": problems})
            break
        k_new = resumed.n_learned
        lost = k + processed - k_new
        if not 0 <= lost <= 1 or k_new < k:
            problems.append(f"k {k} -> {k_new} after {processed} predictions (lost {lost})")
        else:
            ref.learn_many(X[k:k_new], Y[k:k_new])
            if state_bytes(resumed) == state_bytes(ref):
                identical += 1
            else:
                problems.append("resumed state differs from a learner fed the surviving labels")
        rounds.append({"landed": place, "predictions": processed, "kept": k_new - k, "lost": lost})
        if problems:
            failures.append({"round": r, "landed": place, "problems": problems})
            break  # the reference no longer follows the state
        k = k_new
    # A last clean start must resume that state and write it as its final checkpoint.
    empty = state.parent / "empty.ndjson"
    empty.write_bytes(b"")
    last = subprocess.run(_command(state, every, str(empty)), capture_output=True, timeout=120)
    final_n = json.loads(last.stdout.splitlines()[-1])["stats"]["n_learned"]
    newest = sorted(state.glob("learner-*.safetensors"))
    ok = newest and newest[-1].read_bytes() == state_bytes(ref)
    if last.returncode != 0 or final_n != k or b"corrupt" in last.stderr or not ok:
        failures.append({"round": "final", "problems": [f"rc {last.returncode}, n={final_n}"]})
    lost = np.array([r["lost"] for r in rounds] or [0])
    return {
        "kills": kills,
        "checkpoint_every": every,
        "checkpoint_delay_s": ckpt_delay,
        "journal_delay_s": journal_delay,
        "landed": places,
        "samples_learned_and_kept": k,
        "resumes_byte_identical": identical,
        "corrupt_states": corrupt,
        "lost_total": int(lost.sum()),
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
        "journal_errors": stats.get("journal_errors"),
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


def _block_writes() -> int | None:
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("write_bytes"))
    except (OSError, StopIteration, ValueError):
        return None


def _device_writes(directory: Path) -> int | None:
    """Bytes written to the block device holding ``directory`` so far (all writers)."""
    st = os.stat(directory)
    try:
        text = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat").read_text()
        return int(text.split()[6]) * 512
    except (OSError, IndexError, ValueError):
        return None


def amplification(directory: Path, dim: int = 64, n: int = 200) -> dict:
    """Journal bytes per learned label and per observed window for ``dim``-d embeddings,
    and the block-device bytes per record when each record is fsynced on its own."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    j = Journal.start(directory, dim=dim, tag="x", base="initial", base_sha256="0" * 64, fsync_s=0)
    size0, io0, dev0 = j.size, _block_writes(), _device_writes(directory)
    for i in range(n):
        j.observe(x[i])
        j.learn(x[i], i % 7, seq=i)
    per_pair = (j.size - size0) / n
    io1, dev1 = _block_writes(), _device_writes(directory)
    j.close()
    block = None if io0 is None or io1 is None else (io1 - io0) / (2 * n)
    device = None if dev0 is None or dev1 is None else (dev1 - dev0) / (2 * n)
    label, window = record_bytes(LEARN, dim), record_bytes(OBSERVE, dim)
    assert per_pair == label + window
    day = 86_400  # windows per day at one window per second
    return {
        "dim": dim,
        "bytes_per_learned_label": label,
        "bytes_per_observed_window": window,
        "journal_bytes_per_day_1hz_unlabelled": window * day,
        "journal_bytes_per_day_1hz_all_labelled": (label + window) * day,
        # Pages this process sent to the block layer per fsynced record (/proc/self/io).
        "block_bytes_per_fsynced_record": None if block is None else round(block),
        # Everything the device wrote meanwhile (the filesystem's metadata journal too, and
        # any other writer on the machine: an upper estimate).
        "device_bytes_per_fsynced_record": None if device is None else round(device),
        # journal_fsync_s = 1 at one window/s: about one fsync per window.
        "block_bytes_per_day_1hz_fsync_1s": None if block is None else round(block * day),
        "device_bytes_per_day_1hz_fsync_1s": None if device is None else round(device * day),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--every", type=int, default=5, help="checkpoint every N learned labels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--checkpoint-delay", type=float, default=0.02, metavar="S", help="test hook: slow "
        "each checkpoint write by S seconds (0: off)"
    )  # fmt: skip
    p.add_argument(
        "--journal-delay", type=float, default=0.002, metavar="S", help="test hook: slow "
        "each journal record write by S seconds (0: off)"
    )  # fmt: skip
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    # Under the working directory, not /tmp: a tmpfs would hide the block-device writes.
    with tempfile.TemporaryDirectory(prefix=".edgecl-crash-", dir=".") as tmp:
        kill = kill_loop(
            args.kills,
            args.every,
            args.seed,
            Path(tmp) / "kill",
            args.checkpoint_delay,
            args.journal_delay,
        )
        full = disk_full(Path(tmp) / "full", args.every, args.seed)
        amp = amplification(Path(tmp) / "amp")
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "kill_9": kill,
        "disk_full": full,
        "journal_write_amplification": amp,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    ok = not kill["failures"] and kill["corrupt_states"] == 0 and full["ok"]
    return 0 if ok and kill["resumes_byte_identical"] == kill["kills"] else 1


if __name__ == "__main__":
    sys.exit(main())
