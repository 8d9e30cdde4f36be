"""The shipped default bundle rebuilds bit for bit from its recipe (``make bundle-check``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_bundle_rebuilds_bit_for_bit():
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_bundle.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "bundle rebuilds bit for bit" in out.stdout
