"""A test harness for command tests: an engine on a temp dir with a hand-driven clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helios_core.atlas.effects import decode_line
from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError

T0 = 1_700_000_000_000  # the clock at the start of every test (ms)
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
NOT_INT = "ERR value is not an integer or out of range"
SYNTAX = "ERR syntax error"


class Atlas:
    """An engine on a temp dir whose clock is `self.now`; `a("SET", "k", 1)` runs a command."""

    def __init__(self, path: Path, config: AtlasConfig | None = None) -> None:
        self.now = T0
        self.path = path
        self.engine = Engine.open(path, config or AtlasConfig(), clock=lambda: self.now)

    def __call__(self, *args: Any) -> Any:
        return self.engine.execute([a if isinstance(a, bytes) else str(a).encode() for a in args])

    def error(self, *args: Any) -> str:
        with pytest.raises(CommandError) as e:
            self(*args)
        return str(e.value)

    def aof(self) -> list[tuple]:
        """The effects written to the AOF so far, one per record."""
        self.engine.flush_sync()
        lines = (self.path / "appendonly.aof").read_bytes().splitlines()
        return [decode_line(line, 0)[1] for line in lines if line]
