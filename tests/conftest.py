"""Shared fixtures: where the real market data lives (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$HMM_DATA_DIR`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("HMM_DATA_DIR") or REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "README.md").exists():
        pytest.fail(f"real market data not found at {path} (set HMM_DATA_DIR)")
    return path
