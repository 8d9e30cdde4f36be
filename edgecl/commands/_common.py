"""Helpers shared by the subcommands: value parsing, JSON output, usage errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Default learner budget: roomy for IMU features, and grown to fit the head plus
# this many replay slots when the data is wider (e.g. SLDA on 784 raw pixels).
DEFAULT_BUDGET_BYTES = 8_000_000
DEFAULT_BUFFER_ITEMS = 1000


class UsageError(Exception):
    """A flag combination the parser cannot express; exits 2 like argparse errors."""


# -- shared helpers ----------------------------------------------------------


def _parse_value(text: str) -> Any:
    """``true``/``false`` → bool, ``none`` → None, then int, float, else the string.

    >>> [_parse_value(v) for v in ["true", "None", "3", "1e-3", "float32"]]
    [True, None, 3, 0.001, 'float32']
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _head_options(pairs: Sequence[str] | None, known: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--head-option {pair!r}: expected KEY=VALUE")
        if key not in known:
            raise UsageError(
                f"--head-option {key}: not a LearnerConfig field; known: {', '.join(sorted(known))}"
            )
        out[key] = _parse_value(value)
    return out


def _write_json(data: dict[str, Any], dest: str) -> None:
    text = json.dumps(data, indent=2)
    if dest == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n", encoding="utf-8")
