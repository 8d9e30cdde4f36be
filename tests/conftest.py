"""Shared test helpers: locating the development datasets in ../shared/data."""

from __future__ import annotations

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
