"""The on-device run loop: bytes in, predictions out, learning from every label.

One plain call chain per message, no queues or threads (DESIGN §1)::

    source.read() → Parser.feed() → StreamWindower.push() → extractor.embed()
        → learner.predict_proba_one() → {"seq","pred","p","us"} line
        → learner.observe_one() → (label?) learn_one()

Every window the device embeds, labelled or not, updates the current user's
embedding statistics (``observe_one``, after the prediction went out; a no-op
unless the learner standardises per user); ``{"cmd": "reset-user"}`` starts a
new user (the labels learned so far stay) and checkpoints at once.

Three modes: a sensor bundle (raw rows are windowed with the bundle's
length/hop/channels), a bundle without a window spec (each ``x`` is one model
input, flattened), and ``features=DIM`` with no bundle (``x`` is already an
embedding — for users with their own extractor, and for tests).

Every prediction carries ``seq``, the number of its window (or feature vector)
since the connection opened; a delayed label ``{"label": y, "seq": n}`` reaches
window ``n`` while it is among the last ``pending`` ones. A reconnect starts a
new numbering at 0 on both ends, since the sender cannot know which of its rows
arrived before the drop.

Around the loop: checkpoints every ``checkpoint_every_samples`` learned labels
and every ``checkpoint_every_s`` seconds (only when something changed), the last
two kept, resumed on start (:mod:`edgecl.runtime.checkpoint`; a write that fails,
say on a full disk, is logged and counted as ``checkpoint_errors``, the previous
checkpoint stays and serving goes on); in between, every change to the learner
goes to the label journal (:mod:`edgecl.runtime.journal`, replayed on start by
:func:`~edgecl.runtime.launch.build_daemon`), which each checkpoint restarts; SIGTERM/SIGINT →
final checkpoint and exit 0; SIGHUP or ``{"cmd": "stats"}`` → a stats line,
also every ``stats_every_s``; a dropped port is reopened by the transport while
the loop keeps its timers; systemd ``READY=1`` after warm-up and watchdog pings
(:mod:`edgecl.runtime.sdnotify`).

>>> import tempfile
>>> from pathlib import Path
>>> from edgecl.runtime.protocol import format_sample
>>> f = tempfile.NamedTemporaryFile(suffix=".ndjson", delete=False)
>>> _ = f.write(format_sample([1, 0], 0) + format_sample([0, 1], 1) + format_sample([0.9, 0.2]))
>>> f.close()
>>> from edgecl.runtime.launch import build_daemon
>>> d = build_daemon(DaemonConfig(source=f.name, out=f.name + ".out", stats_every_s=0), features=2)
>>> d.run(install_signals=False)
0
>>> Path(f.name + ".out").read_text().splitlines()[2]  # doctest: +ELLIPSIS
'{"seq":2,"pred":0,"p":1.0,"us":...}'
"""

from __future__ import annotations

import gc
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgecl.errors import ConfigError, InputError
from edgecl.learner import StreamingLearner
from edgecl.runtime.checkpoint import CheckpointStore
from edgecl.runtime.journal import Journal
from edgecl.runtime.protocol import (
    Command,
    Label,
    Parser,
    ProtocolConfig,
    Reject,
    Sample,
    format_prediction,
    format_stats,
)
from edgecl.runtime.sdnotify import Notifier
from edgecl.runtime.stats import Stats
from edgecl.runtime.transport import Backoff, Sink, Source, open_sink, open_source
from edgecl.runtime.windowing import LABEL_RULES, SeqMemory, StreamWindower

__all__ = ["Daemon", "DaemonConfig"]

log = logging.getLogger("edgecl.run")


_SECONDS = ("checkpoint_every_s", "journal_fsync_s", "stats_every_s", "serial_timeout_s",
            "reconnect_max_s")  # fmt: skip


@dataclass(frozen=True)
class DaemonConfig:
    """Settings of one ``edgecl run`` (the device profile supplies the defaults' values)."""

    source: str  # a pyserial URL, "-" (stdin) or a file path
    out: str = "-"  # "-" (stdout), a file path or a pyserial URL
    state_dir: str | None = None  # checkpoints; None: no checkpoints at all
    format: str = "ndjson"  # ndjson | csv | framed
    max_line: int = 65536  # bytes; longer lines/frames are rejected (the memory bound)
    control: bool = False  # accept {"cmd": ...} messages
    checkpoint_every_samples: int = 1000  # learned labels between checkpoints; 0: off
    checkpoint_every_s: float = 300.0  # seconds between checkpoints (if changed); 0: off
    journal_fsync_s: float = 1.0  # label journal fsync period (power-cut loss bound); 0: every
    stats_every_s: float = 10.0  # a stats line this often; 0: only on demand and at exit
    pending: int = 1024  # windows remembered for delayed labels
    label_rule: str = "majority"  # how row labels label a window: majority | last
    learn: bool = True  # False: a frozen head (predictions only)
    follow: bool = False  # a file source: wait for more at EOF instead of exiting
    baudrate: int = 115200
    serial_timeout_s: float = 0.5  # the loop wakes at least this often when idle
    reconnect_max_s: float = 5.0  # cap of the reconnect backoff
    warmup: int = 10  # dummy inferences before READY

    def __post_init__(self) -> None:
        ProtocolConfig(format=self.format, max_line=self.max_line)  # validates both
        if self.label_rule not in LABEL_RULES:
            raise ConfigError(f"label_rule = {self.label_rule!r}: one of {', '.join(LABEL_RULES)}")
        for name in ("checkpoint_every_samples", "pending", "warmup", "baudrate"):
            v = getattr(self, name)
            low = 1 if name in ("pending", "baudrate") else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{name} = {v!r}: must be an integer >= {low}")
        for name in _SECONDS:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} = {v!r}: must be a number >= 0")
        if self.serial_timeout_s <= 0 or self.reconnect_max_s < 0.1:
            raise ConfigError("serial_timeout_s must be > 0 and reconnect_max_s >= 0.1")


class Daemon:
    """The run loop over one source; :func:`edgecl.runtime.launch.build_daemon` builds one."""

    def __init__(
        self,
        config: DaemonConfig,
        extractor: Any,
        learner: StreamingLearner,
        *,
        window: Any = None,
        source: Source | None = None,
        sink: Sink | None = None,
        notifier: Notifier | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.config, self.extractor, self.learner = config, extractor, learner
        if learner.config.dim != extractor.dim:
            raise ConfigError(
                f"learner dim {learner.config.dim} != extractor dim {extractor.dim} "
                "(a state directory from another bundle?)"
            )
        self.windower: StreamWindower | None = None
        if window is not None:
            width = len(window.channels)
            self.windower = StreamWindower(
                window.length, window.hop, width, label=config.label_rule
            )
        else:
            width = int(np.prod(extractor.input_shape))
        self.parser = Parser(
            ProtocolConfig(
                format=config.format,
                dim=width,
                max_classes=learner.config.max_classes,
                max_line=config.max_line,
                control=config.control,
            )
        )
        self.memory = SeqMemory(config.pending, extractor.dim)
        self.store = CheckpointStore(config.state_dir) if config.state_dir else None
        self.journal = journal
        self.state_lock: Any = None  # the state directory's lock (build_daemon sets it)
        self.stats = Stats()
        self.notifier = notifier or Notifier()
        self.source, self.sink = source, sink
        self.seq = 0  # feature mode's counter (the windower keeps its own)
        # Changes (labels learned, windows observed) since the last checkpoint; records
        # replayed from the journal at start count too, so the next checkpoint holds them.
        self._dirty = journal.replayed if journal is not None else 0
        self._since_try = journal.replayed_labels if journal is not None else 0
        self._last_ckpt = self._last_stats = time.monotonic()
        self._stop = threading.Event()
        self._want_stats = False
        self._disconnects = 0

    # -- control -------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish (thread- and signal-safe): final checkpoint, exit 0."""
        self._stop.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self._want_stats = True
        else:
            self._stop.set()

    # -- the loop ------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Read until stopped or the source ends; returns the exit code (0)."""
        cfg = self.config
        self.extractor.warmup(cfg.warmup)
        self.learner.predict_proba_one(np.zeros(self.extractor.dim))
        if self.source is None:
            self.source = open_source(
                cfg.source,
                baudrate=cfg.baudrate,
                timeout=cfg.serial_timeout_s,
                follow=cfg.follow,
                backoff=Backoff(cap=cfg.reconnect_max_s),
            )
        if self.sink is None:
            self.sink = open_sink(cfg.out, baudrate=cfg.baudrate, timeout=cfg.serial_timeout_s)
        old: dict[int, Any] = {}
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                old[sig] = signal.signal(sig, self._on_signal)
        gc.collect()
        gc.freeze()  # long-lived objects out of the collector's way: fewer latency spikes
        self.notifier.notify(f"READY=1\nSTATUS=reading {cfg.source}")
        log.info("ready: reading %s, writing %s", cfg.source, cfg.out)
        try:
            self._loop()
        finally:
            self.notifier.notify("STOPPING=1")
            self.checkpoint(final=True)
            if self.journal is not None:
                self.journal.close()
            if self.state_lock is not None:
                self.state_lock.close()
            self._write_stats()
            self.source.close()
            self.sink.close()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            gc.unfreeze()
        return 0

    def _loop(self) -> None:
        source, parser = self.source, self.parser
        assert source is not None
        while not self._stop.is_set():
            data = source.read()
            if source.disconnects != self._disconnects:
                self._disconnects = source.disconnects
                self._handle_all(parser.reset())
                self._new_connection()
            if data is None:
                self._handle_all(parser.flush())
                log.info("end of input")
                break
            if data:
                self._handle_all(parser.feed(data))
            self._timers()

    def _new_connection(self) -> None:
        # Both ends number windows from 0 on a new connection (the sender cannot know
        # how many rows of the old one arrived), so forget the old numbering entirely.
        if self.windower is not None:
            self.windower.reset()
        self.seq = 0
        self.memory.clear()

    def _timers(self) -> None:
        cfg, now = self.config, time.monotonic()
        if self._want_stats or (cfg.stats_every_s and now - self._last_stats >= cfg.stats_every_s):
            self._want_stats = False
            self._write_stats()
        if cfg.checkpoint_every_s and now - self._last_ckpt >= cfg.checkpoint_every_s:
            self.checkpoint()
        if self.journal is not None:
            self.journal.tick(now)
        self.notifier.ping(now)

    def _handle_all(self, items: list[Any]) -> None:
        for item in items:
            self.handle(item)

    # -- one message ---------------------------------------------------------
    def handle(self, msg: Any) -> None:
        """Process one parsed message (a sample, label, command or reject)."""
        if isinstance(msg, Sample):
            self._sample(msg)
        elif isinstance(msg, Label):
            emb = self.memory.take(msg.seq)
            if isinstance(emb, str):
                self.stats.reject(emb)
            else:
                self.stats.labels += 1
                self._learn(emb, msg.label, msg.seq)
        elif isinstance(msg, Reject):
            self.stats.reject(msg.reason)
        elif isinstance(msg, Command):
            self.stats.commands += 1
            if msg.cmd == "stats":
                self._write_stats()
            elif msg.cmd == "reset-user":
                self.reset_user()
            else:
                self.checkpoint()

    def reset_user(self) -> None:
        """Start a new user now (see :meth:`StreamingLearner.reset_user`) and checkpoint,
        so a restart cannot bring the previous user's statistics back."""
        self.learner.reset_user()
        if self.journal is not None:
            self.journal.reset_user()
        self.stats.user_resets += 1
        self._dirty += 1
        self.checkpoint()

    def _sample(self, msg: Sample) -> None:
        t0 = time.perf_counter()
        self.stats.samples += 1
        w = self.windower
        if w is not None:
            seq = w.push(msg.x, msg.y)
            if seq is None:
                return
            y = w.window_label()
            x = w.window()
        else:
            seq, self.seq = self.seq, self.seq + 1
            y = -1 if msg.y is None else msg.y
            x = msg.x.reshape(self.extractor.input_shape)
        try:
            emb = self.extractor.embed(x)
            # The learner validates its input: a non-finite embedding raises here.
            proba = self.learner.predict_proba_one(emb)
        except InputError:
            self.stats.reject("non_finite")
            return
        if proba:
            pred = max(proba, key=proba.__getitem__)
            p = proba[pred]
        else:
            pred, p = -1, 0.0
        us = (time.perf_counter() - t0) * 1e6
        sink = self.sink
        assert sink is not None
        sink.write(format_prediction(seq, pred, p, us))
        sink.flush()
        self.stats.latency(us)
        self.stats.windows += 1
        self.memory.put(seq, emb)
        if self.config.learn and self.learner.user is not None:
            self.learner.observe_one(emb)  # finite: the prediction above validated it
            if self.journal is not None:
                self.journal.observe(emb)
            self._dirty += 1
        if y >= 0:
            self.memory.take(seq)  # labelled now: a delayed label for it is a duplicate
            self.stats.labels += 1
            self._learn(emb, y, seq)

    def _learn(self, emb: np.ndarray, y: int, seq: int = -1) -> None:
        if not self.config.learn:
            return
        try:
            self.learner.learn_one(emb, y)
        except InputError:
            self.stats.reject("non_finite")
            return
        # Refresh lazily cached state (SLDA's precision) now, after the prediction went
        # out, rather than inside the next window's prediction latency.
        self.learner.head.refresh()
        if self.journal is not None:
            self.journal.learn(emb, y, seq)
        self.stats.learned += 1
        self._dirty += 1
        self._since_try += 1
        every = self.config.checkpoint_every_samples
        if every and self._since_try >= every:
            self.checkpoint()

    # -- state ---------------------------------------------------------------
    def checkpoint(self, final: bool = False) -> None:
        """Write a checkpoint now if anything was learned since the last one.

        A failed write (disk full, file size limit, I/O error) is logged and counted
        as ``checkpoint_errors``; the previous checkpoint stays in place and the
        daemon keeps serving, trying again after the next interval.
        """
        self._last_ckpt = time.monotonic()
        self._since_try = 0
        if self.store is None or not self._dirty:
            return
        try:
            path = self.store.save(self.learner)
        except OSError as exc:
            self.stats.checkpoint_errors += 1
            log.error("checkpoint failed (%s); the previous one is kept", exc)
            return
        self._dirty = 0
        self.stats.checkpoints += 1
        log.log(logging.INFO if final else logging.DEBUG, "checkpoint %s", path.name)
        if self.journal is not None and self.store.last_sha256 is not None:
            # Only now, with the checkpoint durable: a crash before this line leaves the
            # old journal, whose base the new checkpoint supersedes (never replayed twice).
            self.journal.restart(path.name, self.store.last_sha256)

    def snapshot(self) -> dict[str, Any]:
        """The current stats dict (DESIGN §5 keys)."""
        rep = self.learner.memory_report()
        src = self.source
        return self.stats.snapshot(
            state_bytes=rep["state_bytes"],
            n_learned=rep["n_learned"],
            user_windows=rep["user_windows"],
            reconnects=max(0, (src.connects if src else 0) - 1),
            dropped_out=self.sink.dropped if self.sink else 0,
            **(
                {"journal_bytes": j.size, "journal_errors": j.errors} if (j := self.journal) else {}
            ),
        )

    def _write_stats(self) -> None:
        self._last_stats = time.monotonic()
        if self.sink is None:
            return
        self.sink.write(format_stats(self.snapshot()))
        self.sink.flush()
