"""Helpers shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"

# DESIGN §6: the JSON keys every continual-learning result carries (eval and pretrain).
RESULT_KEYS = {
    "accuracy_matrix",
    "avg_accuracy",
    "bwt",
    "fwt",
    "forgetting",
    "learn_us",
    "predict_us",
    "state_bytes",
    "seconds",
}
# `edgecl eval` adds test-then-train accuracy.
EVAL_KEYS = RESULT_KEYS | {"prequential_accuracy"}


def import_tool(name: str) -> ModuleType:
    """Import a tools/ script as a module, leaving os.environ and sys.path as they were."""
    saved = dict(os.environ)
    sys.path.insert(0, str(TOOLS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(TOOLS))
        os.environ.clear()
        os.environ.update(saved)
