"""RPOPLPUSH/LMOVE of a one-item list onto itself keeps the key and its TTL, as Redis does
(found by test_differential_lists' random programs: the pop emptied the key, which dropped its TTL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helios_core.atlas.engine import Engine
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.listvalue import List
from helios_core.atlas.recovery import recover

NOW = 1_700_000_000_000


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine.open(tmp_path / "data", clock=lambda: NOW)
    yield eng
    eng.close()


@pytest.mark.parametrize("cmd", [
    [b"RPOPLPUSH", b"l", b"l"],
    [b"LMOVE", b"l", b"l", b"LEFT", b"LEFT"],
    [b"LMOVE", b"l", b"l", b"LEFT", b"RIGHT"],
    [b"LMOVE", b"l", b"l", b"RIGHT", b"LEFT"],
    [b"LMOVE", b"l", b"l", b"RIGHT", b"RIGHT"],
])
def test_rotating_a_one_item_list_keeps_its_ttl(engine: Engine, cmd: list[bytes], tmp_path: Path) -> None:
    engine.execute([b"RPUSH", b"l", b"a"])
    engine.execute([b"EXPIRE", b"l", b"100"])
    assert engine.execute(cmd) == b"a"
    assert engine.execute([b"LRANGE", b"l", b"0", b"-1"]) == [b"a"]
    assert engine.execute([b"PTTL", b"l"]) == 100_000
    engine.flush_sync()
    ks = Keyspace()
    recover(engine.dir, ks, now_ms=NOW, truncate_torn_tail=True)  # replay gives the same list and TTL
    value = ks.data[b"l"]
    assert isinstance(value, List) and list(value) == [b"a"] and ks.expires[b"l"] == NOW + 100_000


def test_rotating_longer_lists_is_unchanged(engine: Engine) -> None:
    engine.execute([b"RPUSH", b"l", b"a", b"b", b"c"])
    assert engine.execute([b"RPOPLPUSH", b"l", b"l"]) == b"c"
    assert engine.execute([b"LRANGE", b"l", b"0", b"-1"]) == [b"c", b"a", b"b"]
