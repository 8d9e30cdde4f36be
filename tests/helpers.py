"""Helpers shared by several test files (imported as ``from helpers import ...``)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

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


def small_watch(path: Path, subjects=(6, 7), rows_per_recording: int = 400) -> Path:
    """Two wearers of the shipped smartwatch rows, each recording cut short (fast to embed)."""
    src = Path(__file__).resolve().parents[1] / "edgecl" / "data" / "watch_imu.npz"
    with np.load(src) as z:
        a = {k: z[k] for k in z.files}
    keep = np.isin(a["subject"], subjects)
    for r in np.unique(a["recording"][keep]):
        idx = np.flatnonzero(keep & (a["recording"] == r))
        keep[idx[rows_per_recording:]] = False
    np.savez(path, **{k: (v[keep] if v.ndim and len(v) == len(keep) else v) for k, v in a.items()})
    return path
