"""Long-run fuzzer of the wire protocol and the daemon's message handling, in-process.

examples:
  python tools/fuzz_protocol.py --messages 1000000          # make fuzz
  python tools/fuzz_protocol.py --messages 20000 --json fuzz.json

Two daemons in features mode (``ndjson`` and ``framed``; no I/O: bytes go to
``Parser.feed`` in random-sized chunks, every parsed item to ``Daemon.handle``,
predictions to a null sink) get a seeded stream where each message is either
valid (a sample, labelled or not, denormals included; a delayed label for a
window still remembered) or broken with a known reject reason: random bytes,
invalid UTF-8, truncated or deeply nested JSON, oversized lines and frames,
NaN/inf/beyond-float32 values, wrong dimensions and types, labels out of range,
bad seqs, delayed labels for future, forgotten or already-labelled windows,
CRC-broken frames, noise between frames, control commands while control is
off, and link drops mid-line (``truncated``). Checks:

* nothing raises (``crashes`` must be 0);
* the daemon's per-reason reject counters equal what was injected, exactly,
  and so do its sample and label counters;
* a batch of nothing but rejects leaves the learner's saved state bytes
  unchanged (checked every ``--state-check-every`` blocks);
* memory stays bounded: RSS after warm-up vs at the end, and the parsers
  never buffer more than one line.

Prints a JSON report; exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from edgecl import LearnerConfig, StreamingLearner
from edgecl.learner.state import state_bytes
from edgecl.runtime.daemon import Daemon, DaemonConfig
from edgecl.runtime.framing import MAGIC, encode_frame
from edgecl.runtime.launch import IdentityExtractor
from edgecl.runtime.stats import rss_bytes

DIM, CLASSES, PENDING, MAX_LINE = 8, 5, 64, 4096
OK_SAMPLE, OK_LABEL, SKIP = "ok_sample", "ok_label", "skip"


class NullSink:
    """Counts prediction bytes instead of writing them."""

    dropped = 0

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, line: bytes) -> None:
        self.bytes += len(line)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _num(v: float) -> str:
    return repr(float(v))


def _line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


class Target:
    """One in-process daemon and the fuzzer's model of what it remembers."""

    def __init__(self, fmt: str) -> None:
        cfg = DaemonConfig(
            source="loop://", format=fmt, max_line=MAX_LINE, pending=PENDING, warmup=0
        )
        learner = StreamingLearner(
            LearnerConfig(dim=DIM, max_classes=CLASSES, head="slda", budget_bytes=200_000)
        )
        self.fmt = fmt
        self.daemon = Daemon(cfg, IdentityExtractor(DIM), learner, sink=NullSink())
        self.count = 0  # windows numbered on this connection
        self.used: dict[int, bool] = {}  # remembered seq -> already labelled
        self.labelled = 0  # labelled samples accepted
        self.max_buffered = 0

    def accepted(self, labelled: bool) -> None:
        seq = self.count
        self.count += 1
        self.used[seq] = labelled
        self.used.pop(seq - PENDING, None)
        self.labelled += labelled

    def disconnect(self) -> None:
        self.count = 0
        self.used.clear()

    def wrap(self, payload: bytes) -> bytes:
        return encode_frame(payload) if self.fmt == "framed" else payload + b"\n"


class Generator:
    """Seeded messages, each with the reason the daemon must give it (or an ok)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def vector(self, n: int = DIM) -> list[float]:
        r = self.rng
        x = r.normal(scale=float(10.0 ** r.integers(-3, 4)), size=n)
        if r.random() < 0.1:
            x[r.integers(0, n)] = float(r.choice([5e-324, -2.2e-308, 1e-40, 0.0, -0.0]))
        return [float(v) for v in x]

    def valid(self, t: Target) -> tuple[bytes, str]:
        r = self.rng
        u = r.random()
        if u < 0.15 and t.count:
            lo = max(0, t.count - PENDING)
            for _ in range(4):
                seq = int(r.integers(lo, t.count))
                if not t.used.get(seq, True):
                    t.used[seq] = True
                    return t.wrap(_line({"label": int(r.integers(0, CLASSES)), "seq": seq})), (
                        OK_LABEL
                    )
        x = self.vector()
        labelled = u < 0.6
        obj: dict = {"x": x, "t": float(r.random())} if r.random() < 0.2 else {"x": x}
        if labelled:
            obj["y"] = int(r.integers(0, CLASSES))
        elif r.random() < 0.2:
            obj["y"] = None
        t.accepted(labelled)
        return t.wrap(_line(obj)), OK_SAMPLE

    def bad(self, t: Target) -> tuple[bytes, str]:
        """A broken message and its expected reason (updates nothing in ``t``)."""
        r = self.rng
        kind = int(r.integers(0, 22))
        x = self.vector()
        if kind == 0:  # random bytes, invalid UTF-8 from the first byte
            raw = b"\xff" + r.bytes(int(r.integers(0, 200))).replace(b"\n", b" ")
            return t.wrap(raw.replace(MAGIC, b"  ")), "bad_utf8"
        if kind == 1:  # invalid UTF-8 inside a valid-looking line
            raw = _line({"x": x})
            i = int(r.integers(1, len(raw)))
            bad = [b"\xc3\x28", b"\xa0\xa1", b"\xed\xa0\x80", b"\xf0\x28\x8c\xbc", b"\x80"]
            return t.wrap(raw[:i] + bad[int(r.integers(0, len(bad)))] + raw[i:]), "bad_utf8"
        if kind == 2:  # truncated JSON
            raw = _line({"x": x, "y": 1})
            return t.wrap(raw[: int(r.integers(1, len(raw)))]), "bad_json"
        if kind == 3:  # printable garbage that cannot start a JSON value
            n = int(r.integers(0, 100))
            return t.wrap(b"}" + bytes(r.integers(32, 127, size=n).astype(np.uint8))), "bad_json"
        if kind == 4:  # nested deeper than the JSON parser's recursion limit
            d = int(r.integers(1100, MAX_LINE // 2 - 10))
            return t.wrap(b'{"x":' + b"[" * d + b"]" * d + b"}"), "bad_json"
        if kind == 5:  # oversized line / frame
            n = int(r.integers(MAX_LINE + 1, 3 * MAX_LINE))
            raw = t.wrap(b'{"x":[' + b"1," * (n // 2) + b"1]}")
            if t.fmt == "framed" and r.random() < 0.5:  # a header claiming a huge payload
                raw = MAGIC + int(r.integers(MAX_LINE + 1, 2**32)).to_bytes(4, "little")
            if t.fmt == "framed" and MAGIC in raw[1:]:  # a magic inside would start a frame
                return t.wrap(_line({"x": [float("nan")] * DIM})), "non_finite"
            return raw, "too_long"
        if kind == 6:  # JSON that is not an object
            vals = [b"[1,2,3]", b"3", b'"x"', b"null", b"true", b"[]", b"1e999"]
            return t.wrap(vals[int(r.integers(0, len(vals)))]), "bad_type"
        if kind == 7:  # an object of no known shape
            return t.wrap(_line({"z": x, "ts": 1.0})), "bad_type"
        if kind == 8:  # x of the wrong type
            xs = ["abc", {"a": 1}, 3.0, None, [1, "2", 3, 4, 5, 6, 7, 8], [[1, 2]] * DIM]
            xs += [[True] * DIM, ["a"] * 40, [[1.0]] * 40]
            return t.wrap(_line({"x": xs[int(r.integers(0, len(xs)))]})), "bad_type"
        if kind == 9:  # wrong dimension, short and long
            n = int(r.choice([0, 1, DIM - 1, DIM + 1, 33, 100]))
            return t.wrap(_line({"x": self.vector(n) if n else []})), "bad_dim"
        if kind == 10:  # NaN / inf / beyond float32
            v = [float("nan"), float("inf"), float("-inf"), 3.5e38, -1e300]
            x[int(r.integers(0, DIM))] = v[int(r.integers(0, len(v)))]
            return t.wrap(_line({"x": x})), "non_finite"
        if kind == 11:  # label out of range or not an integer, on a sample
            ys = [-1, CLASSES, 10**30, 1.5, "1", True, [1]]
            return t.wrap(_line({"x": x, "y": ys[int(r.integers(0, len(ys)))]})), "bad_label"
        if kind == 12:  # delayed label with a bad label
            ys = [-3, CLASSES + 7, 2.0, None, False]
            obj = {"label": ys[int(r.integers(0, len(ys)))], "seq": 0}
            return t.wrap(_line(obj)), "bad_label"
        if kind == 13:  # delayed label with a bad seq
            seqs = [-1, "3", 1.0, None, [2], True]
            obj = {"label": 1, "seq": seqs[int(r.integers(0, len(seqs)))]}
            return t.wrap(_line(obj)), "bad_seq"
        if kind == 14:  # delayed label for a window not seen yet
            seq = t.count + int(r.integers(0, 10**9))
            return t.wrap(_line({"label": 1, "seq": seq})), "unknown_seq"
        if kind == 15 and t.count > PENDING:  # ... or forgotten long ago
            seq = int(r.integers(0, t.count - PENDING))
            return t.wrap(_line({"label": 1, "seq": seq})), "unknown_seq"
        if kind == 16:  # a second label for a window
            used = [s for s, u in t.used.items() if u]
            if used:
                seq = used[int(r.integers(0, len(used)))]
                return t.wrap(_line({"label": 0, "seq": seq})), "duplicate_seq"
        if kind == 17:  # control while control is off
            return t.wrap(_line({"cmd": r.choice(["stats", "checkpoint", "reboot"])})), (
                "control_disabled"
            )
        if kind == 18 and t.fmt == "framed":  # a damaged frame
            while True:  # flip a bit in the payload or the CRC (a flipped length: kind 5)
                frame = bytearray(encode_frame(_line({"x": x})))
                i = int(r.integers(6, len(frame)))
                frame[i] ^= 1 << int(r.integers(0, 8))
                if MAGIC not in frame[1:]:
                    return bytes(frame), "crc"
        if kind == 19 and t.fmt == "framed":  # noise between frames
            noise = r.bytes(int(r.integers(1, 64))).replace(MAGIC, b"..")
            return noise, "bad_frame"
        if kind == 20:  # exotic number literals Python's json accepts, overflowing float32
            return t.wrap(b'{"x":[' + b",".join([b"1e39"] * DIM) + b"]}"), "non_finite"
        # a blank line or CRLF-terminated whitespace: skipped silently, never counted
        if t.fmt == "framed":
            return t.wrap(_line({"x": [1e40] + x[1:]})), "non_finite"
        return b"  \r\n", SKIP


def run(messages: int, seed: int, block: int = 500, state_check_every: int = 20) -> dict:
    rng = np.random.default_rng(seed)
    gen = Generator(rng)
    targets = [Target("ndjson"), Target("framed")]
    expected = Counter()
    crashes, first_crash = 0, None
    state_checks = state_changes = 0
    done = blocks = 0
    rss_warm = None
    t0 = time.perf_counter()
    while done < messages:
        t = targets[blocks % 5 == 4]  # every fifth block is framed
        n = min(block, messages - done)
        rejects_only = blocks % state_check_every == state_check_every - 1
        parts = []
        for _ in range(n):
            if rejects_only or rng.random() < 0.5:
                raw, why = gen.bad(t)
                if t.fmt == "framed" and why in ("crc", "too_long", "bad_frame"):
                    raw += t.wrap(_line({"cmd": "stats"}))  # a good frame ends the junk run
                    expected["control_disabled"] += 1
            else:
                raw, why = gen.valid(t)
            parts.append(raw)
            expected[why] += 1
        data = b"".join(parts)
        before = state_bytes(t.daemon.learner) if rejects_only else None
        d = t.daemon
        try:
            i = 0
            while i < len(data):
                j = i + int(rng.integers(1, 4096))
                for item in d.parser.feed(data[i:j]):
                    d.handle(item)
                t.max_buffered = max(t.max_buffered, d.parser.buffered)
                i = j
            if rng.random() < 0.1 and not rejects_only:  # the link drops mid-message
                partial = t.wrap(_line({"x": gen.vector()}))[: int(rng.integers(1, 20))]
                for item in d.parser.feed(partial):
                    d.handle(item)
                for item in d.parser.reset():  # what Daemon._loop does on a disconnect
                    d.handle(item)
                d._new_connection()
                t.disconnect()
                expected["truncated"] += 1
        except Exception:  # noqa: BLE001 - the fuzzer counts what must never happen
            crashes += 1
            first_crash = first_crash or traceback.format_exc()
        if before is not None:
            state_checks += 1
            state_changes += state_bytes(d.learner) != before
        done += n
        blocks += 1
        if rss_warm is None and done >= min(messages, 50_000) // 10:
            rss_warm = rss_bytes()
    seconds = time.perf_counter() - t0
    got = Counter()
    samples = labels = 0
    for t in targets:
        got.update(t.daemon.stats.rejects)
        samples += t.daemon.stats.samples
        labels += t.daemon.stats.labels
    injected = {k: v for k, v in expected.items() if k not in (OK_SAMPLE, OK_LABEL, SKIP)}
    # Labels the daemon counts: every valid delayed label and every labelled sample.
    want_labels = expected[OK_LABEL] + sum(t.labelled for t in targets)
    counters_match = (
        dict(got) == injected and samples == expected[OK_SAMPLE] and labels == want_labels
    )
    probe = np.ones(DIM)
    return {
        "messages": done,
        "seconds": round(seconds, 1),
        "messages_per_s": round(done / seconds),
        "crashes": crashes,
        "first_crash": first_crash,
        "counters_match": counters_match,
        "injected_rejects": dict(sorted(injected.items())),
        "daemon_rejects": dict(sorted(got.items())),
        "valid_samples": expected[OK_SAMPLE],
        "daemon_samples": samples,
        "valid_labels": want_labels,
        "daemon_labels": labels,
        "learned": sum(t.daemon.stats.learned for t in targets),
        "state_checks": state_checks,
        "state_changed_by_rejects": state_changes,
        "max_parser_buffered": max(t.max_buffered for t in targets),
        "rss_warm_mb": round((rss_warm or 0) / 2**20, 1),
        "rss_end_mb": round(rss_bytes() / 2**20, 1),
        "rss_growth_mb": round((rss_bytes() - (rss_warm or 0)) / 2**20, 1),
        "learner_still_predicts": all(
            np.isfinite(list(t.daemon.learner.predict_proba_one(probe).values())).all()
            for t in targets
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "seed": args.seed,
        **run(args.messages, args.seed),
    }
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    ok = (
        res["crashes"] == 0
        and res["counters_match"]
        and res["state_changed_by_rejects"] == 0
        and res["max_parser_buffered"] <= MAX_LINE + 16
        and res["learner_still_predicts"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
