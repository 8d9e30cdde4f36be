"""Shared test helpers: locating the development datasets in ../shared/data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The datasets live beside the repository (../shared/data), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    """Path of ``name`` in ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{name} not found in {SHARED_DATA} (development data, not shipped)")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ../shared/data directory; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"development datasets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _one_torch_thread(request):
    """Host tests train tiny models: one torch thread is fastest and immune to a busy second
    core. Only where the test module already imported torch (device tests never do)."""
    torch = sys.modules.get("torch")
    if torch is None or not request.module.__name__.startswith("test_host"):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
