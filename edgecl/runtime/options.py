"""Learner flags that cannot apply: ``--head``, ``--max-classes``, ``--budget-bytes``.

They describe a *new* learner. When ``edgecl run`` resumes a checkpoint or
starts from the bundle's ``head.safetensors``, the learner's configuration
comes from that file and the flags are ignored; a user who passed them is told
so once, on stderr, instead of believing they took effect.

>>> ignored_options_note({"head": "ncm", "max_classes": None}, "checkpoint /s/a.safetensors")
'edgecl run: --head ignored: the learner comes from checkpoint /s/a.safetensors'
>>> ignored_options_note({"head": None}, "bundle head h.safetensors") is None
True
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["NEW_LEARNER_FLAGS", "ignored_options_note", "warn_ignored_options"]

#: ``learner_options`` key → the ``edgecl run`` flag that sets it, in the CLI's order.
NEW_LEARNER_FLAGS = {
    "head": "--head",
    "max_classes": "--max-classes",
    "budget_bytes": "--budget-bytes",
}


def ignored_options_note(options: Mapping[str, Any] | None, origin: str) -> str | None:
    """The line telling that the given new-learner flags are ignored, or None if none was given.

    ``options`` are :func:`~edgecl.runtime.launch.build_daemon`'s ``learner_options``
    (None values: flag not given); ``origin`` says where the learner comes from.
    """
    given = [
        flag for key, flag in NEW_LEARNER_FLAGS.items() if (options or {}).get(key) is not None
    ]
    if not given:
        return None
    return f"edgecl run: {'/'.join(given)} ignored: the learner comes from {origin}"


def warn_ignored_options(
    options: Mapping[str, Any] | None, origin: str, file: IO[str] | None = None
) -> None:
    """Print :func:`ignored_options_note` to ``file`` (default stderr) when there is one."""
    note = ignored_options_note(options, origin)
    if note is not None:
        print(note, file=sys.stderr if file is None else file)
