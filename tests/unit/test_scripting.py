"""Lua scripting in the engine: one step, one AOF record, Redis's failure rules, the sandbox and limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from helios_core.atlas.commands.scripting import scripting_of
from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from tests.unit.atlas_harness import Atlas


@pytest.fixture
def a(tmp_path: Path) -> Atlas:
    atlas = Atlas(tmp_path / "data")
    yield atlas
    atlas.engine.close()


def test_a_script_is_one_record_of_its_effects(a: Atlas) -> None:
    a("SET", "n", "41")
    assert a("EVAL", "redis.call('set', KEYS[1], ARGV[1]); redis.call('zadd', 'z', 2, 'm');"
                     "return redis.call('incr', 'n')", 1, "k", "v") == 42
    records = a.aof()
    assert records[-1] == ("MULTI", [("SET", b"k", b"v", None), ("ZADD", b"z", [(2.0, b"m")]),
                                     ("SET", b"n", b"42", None)])
    assert len(records) == 2  # the first SET and the script: nothing of Lua is logged


def test_a_failed_script_keeps_its_writes_and_a_killed_one_does_not(a: Atlas) -> None:
    assert "after the write" in a.error("EVAL", "redis.call('set', 'kept', '1'); error('after the write')", 0)
    assert a("GET", "kept") == b"1"
    scripting_of(a.engine).kill_after_ms = 50
    assert "Script killed" in a.error("EVAL", "redis.call('set', 'undone', '1'); while true do end", 0)
    assert a("GET", "undone") is None
    # pcall does not catch the kill
    assert "Script killed" in a.error("EVAL", "while true do pcall(function() while true do end end) end", 0)
    assert a("EVAL", "return 'still serving'", 0) == b"still serving"


def test_memory_is_capped(tmp_path: Path) -> None:
    a = Atlas(tmp_path / "data", AtlasConfig())
    try:
        scripting_of(a.engine)  # made with the default cap; a smaller one for the test:
        from helios_core.atlas.scripting import Scripting

        a.engine.scripting = Scripting(a.engine.execute, a.engine.pending_seq, max_memory=8 * 1024 * 1024)
        msg = a.error("EVAL", "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', 100) .. i end", 0)
        assert "memory" in msg
        assert a("EVAL", "return 1", 0) == 1
    finally:
        a.engine.close()


@pytest.mark.parametrize("script", ["return os.time()", "return io.open('/etc/passwd')", "return loadfile('x')",
                                    "return dofile('x')", "return require('os')", "return debug.getinfo(1)",
                                    "return coroutine.create(print)", "return loadstring('return 1')",
                                    "redis = nil", "string.rep = nil", "return setmetatable(string, {})"])
def test_the_sandbox(a: Atlas, script: str) -> None:
    assert a.error("EVAL", script, 0).startswith("ERR user_script:1: ")


def test_conversions_both_ways(a: Atlas) -> None:
    a("HSET", "h", "f", "v")
    a("ZADD", "z", "1.5", "m")
    assert a("EVAL", "return {redis.call('hgetall', 'h'), redis.call('zrange', 'z', 0, -1, 'withscores'),"
                     "redis.call('get', 'none') == false, redis.call('set', 'x', 1).ok, 3.7, true}", 0) == [
        [b"f", b"v"], [b"m", b"1.5"], 1, b"OK", 3, 1]
    assert str(a("EVAL", "return {1, redis.pcall('incr', 'h')}", 0)[1]).startswith("WRONGTYPE")


def test_reveal_rule_covers_what_the_script_read(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path / "data", AtlasConfig(appendfsync="always", save=()), clock=lambda: 1)
    try:
        eng.execute([b"SET", b"k", b"v"])  # pending: not durable yet
        top = eng.pending_seq()
        assert top > 0
        eng.execute([b"EVAL_RO", b"return redis.call('get', KEYS[1])", b"1", b"k"])
        assert eng.pending_seq() == top  # the read-only script saw k: its reply waits for k's record
        eng.flush_sync()
        eng.execute([b"EVAL_RO", b"return redis.call('get', KEYS[1])", b"1", b"k"])
        assert eng.pending_seq() == 0
        eng.execute([b"EVAL", b"return redis.call('set', 'w', '1')", b"0"])
        assert eng.pending_seq() == eng.seq  # a writing script waits for its own record
    finally:
        eng.close()


def test_evalsha_cache_and_flush(a: Atlas) -> None:
    sha = a("SCRIPT", "LOAD", "return ARGV[1]")
    assert a("EVALSHA", sha, 0, "x") == b"x" and a("EVALSHA", sha.upper(), 0, "y") == b"y"
    assert a("SCRIPT", "EXISTS", sha, "0" * 40) == [1, 0]
    a("SCRIPT", "FLUSH")
    assert a.error("EVALSHA", sha, 0) == "NOSCRIPT No matching script. Please use EVAL."


def test_embedded_run_script_waits_for_durability_unless_asked_not_to(tmp_path: Path) -> None:
    import asyncio

    from helios_core.store import EmbeddedStore
    from helios_core.store.scripts import ScriptOp

    op = ScriptOp("test_set", b"return redis.call('set', KEYS[1], ARGV[1])")

    async def main() -> None:
        store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(appendfsync="always", save=()))
        try:
            assert await store.run_script(op, ["a"], ["1"], durable=False) == "OK"
            assert store.engine.pending_seq() > 0  # logged, not yet durable: nobody waited
            assert await store.run_script(op, ["b"], ["2"]) == "OK"
            assert store.engine.pending_seq() == 0 and store.engine.released_seq == store.engine.seq
            store.engine.execute([b"SCRIPT", b"FLUSH"])  # the store loads it again by itself
            assert await store.run_script(op, ["c"], ["3"]) == "OK"
            assert await store.mget(["a", "b", "c"]) == [b"1", b"2", b"3"]
        finally:
            await store.close()

    asyncio.run(main())


def test_time_stands_still_inside_a_script(a: Atlas) -> None:
    a("SET", "k", "v", "PX", "10")
    ticks = iter(range(0, 1000, 5))
    clock = a.engine.clock
    a.engine.clock = lambda: clock() + next(ticks)  # every look at the clock moves it 5 ms on
    try:
        got = a("EVAL", "local r = {} for i = 1, 5 do r[i] = redis.call('pttl', 'k') end return r", 0)
    finally:
        a.engine.clock = clock
    assert len(set(got)) == 1 and got[0] > 0  # one now for the whole script: k neither ages nor expires
