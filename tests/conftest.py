"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger


@pytest.fixture(autouse=True)
def _no_helios_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's HELIOS_* variables out of every test."""
    for name in list(os.environ):
        if name.startswith("HELIOS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from an empty directory: with no --data and no --url the CLI uses ./data when it exists,
    and a checkout where `make run` ran has one (a CLI test would pass or fail by that, and write
    into it)."""
    empty = tmp_path / "cwd"
    empty.mkdir()
    monkeypatch.chdir(empty)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put loguru and the process's one log writer back as they were before the test reconfigured them."""
    from helios_core.observability.logwriter import WRITER

    yield
    logger.remove()
    logger.add(sys.stderr)
    WRITER.flush()
    WRITER.set_stream(None)  # stderr again, not a test's StringIO
    WRITER.fmt, WRITER.level = "console", "info"
