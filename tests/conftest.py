"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.paths import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (tinyshakespeare, Multi30k)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
