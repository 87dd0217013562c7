"""Shared fixtures: no test writes to the user's cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def unimoco_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """``UNIMOCO_CACHE`` pointed at a fresh temporary folder for every test."""
    cache = tmp_path_factory.mktemp("unimoco_cache")
    monkeypatch.setenv("UNIMOCO_CACHE", str(cache))
    return cache
