"""DeviceProfile: how one kind of board runs edgecl, read from ``devices/*.toml``.

A profile is a flat TOML table of settings (DESIGN §7): the onnxruntime
execution providers to try, in order; the session's thread counts, spinning
and memory-arena choice (DESIGN §9: onnxruntime's defaults hurt in a
long-running process on a small board); the learner's memory budget; the p99
end-to-end latency target; serial defaults; how often the daemon
checkpoints and fsyncs its label journal; and, optionally, the public key
every bundle must be signed with (``bundle_public_key``; a relative path is
relative to the profile file).
Unknown keys and out-of-range values raise :class:`~edgecl.errors.ProfileError`
naming the file, the field, the value and the allowed range. Keys left out take
the values of :meth:`DeviceProfile.default` (the ``x86-cpu`` profile), except
``name``, which every file must give.

>>> p = DeviceProfile.from_dict({"name": "pi", "arch": "aarch64", "intra_op_threads": 4})
>>> p.intra_op_threads, p.providers, p.allow_spinning
(4, ('CPUExecutionProvider',), False)
>>> DeviceProfile.from_dict({"name": "pi", "intra_op_thread": 4})
Traceback (most recent call last):
...
edgecl.errors.ProfileError: profile: unknown key(s) intra_op_thread; known: allow_spinning, arch, \
arena, baudrate, bundle_public_key, checkpoint_every_s, checkpoint_every_samples, \
engine_cache_dir, inter_op_threads, intra_op_threads, journal_fsync_s, latency_target_us, \
memory_budget_bytes, name, providers, serial_timeout_s
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecl.errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["ARCHES", "DeviceProfile"]

#: CPU architectures a profile may name (``platform.machine()`` spellings).
ARCHES = ("x86_64", "aarch64", "armv7l", "riscv64")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_PROVIDER = re.compile(r"^[A-Za-z0-9]+ExecutionProvider$")
MAX_PROFILE_BYTES = 64 * 1024  # a profile is a dozen lines; anything bigger is not one


@dataclass(frozen=True)
class DeviceProfile:
    """Settings of one device class; see ``devices/*.toml`` for justified values.

    The defaults are the ``x86-cpu`` profile (:meth:`default`).
    """

    # Short id, also the file stem of the shipped profiles ("jetson-nano").
    name: str = "x86-cpu"
    # platform.machine() of the board; informational (bench reports it), not enforced.
    arch: str = "x86_64"
    # onnxruntime execution providers in order of preference; unavailable ones are skipped
    # with a warning, and CPUExecutionProvider is always the last resort.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    # Threads inside one operator; 1 is fastest for a small model (no fork/join per op).
    # 0 lets onnxruntime pick (one per core).
    intra_op_threads: int = 1
    # Threads across independent operators; only used in parallel execution mode.
    inter_op_threads: int = 1
    # Idle onnxruntime workers busy-wait when true: lower latency, but a core burns at 100 %.
    allow_spinning: bool = False
    # onnxruntime's CPU memory arena: fast re-allocation, but it only ever grows.
    arena: bool = False
    # The learner's state budget (LearnerConfig.budget_bytes) on this device.
    memory_budget_bytes: int = 8_000_000
    # p99 end-to-end (window in → prediction out) target that `edgecl bench` checks.
    latency_target_us: int = 2_000
    # Serial line speed for sensor URLs that are serial ports.
    baudrate: int = 115_200
    # Serial read timeout: how long the daemon blocks before checking timers and signals.
    serial_timeout_s: float = 0.5
    # Checkpoint after this many learned (labelled) samples; 0 = never by count.
    checkpoint_every_samples: int = 1_000
    # Checkpoint at least this often while something changed, in seconds; 0 = never by time.
    checkpoint_every_s: float = 300.0
    # fsync the label journal at most this often, in seconds (0 = after every record): a
    # power cut loses at most this much learning; kill -9 loses at most the record in flight.
    journal_fsync_s: float = 1.0
    # TensorRT engine cache ("~" expanded); None = no cache (engines rebuilt every start).
    engine_cache_dir: str | None = None
    # Ed25519 public key (PEM file) that bundles must be signed with; None = signatures
    # not required. See edgecl.runtime.signing.
    bundle_public_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            self._bad("name", self.name, "1-64 letters, digits, '.', '_' or '-'")
        if self.arch not in ARCHES:
            self._bad("arch", self.arch, f"one of {', '.join(ARCHES)}")
        self._check_providers()
        self._int("intra_op_threads", 0, 1024)
        self._int("inter_op_threads", 0, 1024)
        self._bool("allow_spinning")
        self._bool("arena")
        self._int("memory_budget_bytes", 4096, 1 << 40)
        self._int("latency_target_us", 1, 60_000_000)
        self._int("baudrate", 50, 16_000_000)
        self._float("serial_timeout_s", 0.0, 3600.0, low_open=True)
        self._int("checkpoint_every_samples", 0, 1 << 40)
        self._float("checkpoint_every_s", 0.0, 7 * 86400.0)
        self._float("journal_fsync_s", 0.0, 3600.0)
        d = self.engine_cache_dir
        if d is not None and (not isinstance(d, str) or not d.strip() or "\0" in d):
            self._bad("engine_cache_dir", d, "a non-empty directory path, or left out")
        k = self.bundle_public_key
        if k is not None and (not isinstance(k, str) or not k.strip() or "\0" in k):
            self._bad("bundle_public_key", k, "the path of a PEM public key file, or left out")

    # -- construction ----------------------------------------------------------
    @classmethod
    def default(cls) -> DeviceProfile:
        """The ``x86-cpu`` profile: CPU provider, 1 thread, no spinning, no arena.

        >>> DeviceProfile.default().name
        'x86-cpu'
        """
        return cls()

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "profile") -> DeviceProfile:
        """Build a profile from a mapping; unknown keys are an error, ``name`` is required."""
        if not isinstance(data, dict):
            raise ProfileError(f"{where}: expected a table of settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProfileError(
                f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if "name" not in data:
            raise ProfileError(f"{where}: missing key 'name'")
        values = dict(data)
        if isinstance(values.get("providers"), list):
            values["providers"] = tuple(values["providers"])
        try:
            return cls(**values)
        except ProfileError as exc:
            raise ProfileError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeviceProfile:
        """Read and validate a TOML profile file.

        Raises
        ------
        ProfileError
            The file cannot be read, is not TOML, or has unknown keys or bad values.
        """
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ProfileError(f"{p}: cannot read profile ({exc.strerror or exc})") from None
        if len(raw) > MAX_PROFILE_BYTES:
            raise ProfileError(
                f"{p}: {len(raw):,} bytes; a profile is at most {MAX_PROFILE_BYTES:,}"
            )
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ProfileError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{p}: not valid TOML ({exc})") from None
        key = data.get("bundle_public_key") if isinstance(data, dict) else None
        if isinstance(key, str) and key.strip() and "\0" not in key:
            # Relative to the profile file, not to wherever the daemon was started.
            data["bundle_public_key"] = str(p.parent / os.path.expanduser(key))
        return cls.from_dict(data, where=str(p))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (``providers`` as a list; ``None`` kept)."""
        d = dataclasses.asdict(self)
        d["providers"] = list(self.providers)
        return d

    @property
    def engine_cache_path(self) -> Path | None:
        """:attr:`engine_cache_dir` with ``~`` expanded, or None."""
        if self.engine_cache_dir is None:
            return None
        return Path(os.path.expanduser(self.engine_cache_dir))

    @property
    def bundle_public_key_path(self) -> Path | None:
        """:attr:`bundle_public_key` with ``~`` expanded, or None.

        >>> DeviceProfile(bundle_public_key="~/k.pub").bundle_public_key_path.name
        'k.pub'
        """
        if self.bundle_public_key is None:
            return None
        return Path(os.path.expanduser(self.bundle_public_key))

    # -- validation --------------------------------------------------------------
    def _bad(self, name: str, value: Any, allowed: str) -> None:
        raise ProfileError(f"DeviceProfile.{name} = {value!r}: must be {allowed}")

    def _int(self, name: str, lo: int, hi: int) -> None:
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self._bad(name, v, f"an integer in [{lo}, {hi}]")

    def _float(self, name: str, lo: float, hi: float, *, low_open: bool = False) -> None:
        v = getattr(self, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok:
            ok = (v > lo if low_open else v >= lo) and v <= hi
        if not ok:
            self._bad(name, v, f"a number in {'(' if low_open else '['}{lo}, {hi}]")
        object.__setattr__(self, name, float(v))

    def _bool(self, name: str) -> None:
        v = getattr(self, name)
        if not isinstance(v, bool):
            self._bad(name, v, "true or false")

    def _check_providers(self) -> None:
        v = self.providers
        if isinstance(v, list):
            v = tuple(v)
            object.__setattr__(self, "providers", v)
        if not isinstance(v, tuple) or not v or not all(isinstance(s, str) for s in v):
            self._bad("providers", v, "a non-empty list of execution provider names")
        bad = [s for s in v if not _PROVIDER.match(s)]
        known = _known_providers()
        if known:
            bad += [s for s in v if s not in known and s not in bad]
        if bad:
            hint = f" (onnxruntime knows: {', '.join(known)})" if known else ""
            self._bad("providers", list(v), f"onnxruntime provider names; not {bad}{hint}")
        if len(set(v)) != len(v):
            self._bad("providers", list(v), "a list without duplicates")


def _known_providers() -> tuple[str, ...]:
    """Every provider name this onnxruntime build knows (available here or not)."""
    try:
        import onnxruntime
    except ImportError:  # pragma: no cover - onnxruntime is a core dependency
        return ()
    return tuple(onnxruntime.get_all_providers())
