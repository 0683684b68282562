"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.atlas_harness import Atlas


@pytest.fixture
def a(tmp_path: Path) -> Iterator[Atlas]:
    """An engine with a hand-driven clock (`a.now`); `a("SET", "k", 1)` runs a command."""
    atlas = Atlas(tmp_path)
    yield atlas
    atlas.engine.close()
