"""Function libraries: the FLOAD/FDEL/FFLUSH effects, their AOF records, snapshots, and the engine.

The replies themselves are compared with redis-server in
tests/integration/test_differential_functions.py; here is what a differential
test cannot see: the record codec's refusals, undo, replay without Lua, and
snapshot chunks old and new.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helios_core.atlas.commands.scripting import scripting_of
from helios_core.atlas.effects import RecordError, apply_effect, decode_line, encode_record, undo_effects
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.snapshot import check_snapshot, load_snapshot, write_snapshot
from tests.unit.atlas_harness import Atlas

NOW = 1_700_000_000_000
LIB = (b"#!lua name=lib\n"
       b"redis.register_function('f', function(keys, args) return redis.call('set', keys[1], args[1]) end)")


@pytest.fixture
def a(tmp_path: Path) -> Atlas:
    atlas = Atlas(tmp_path / "data")
    yield atlas
    atlas.engine.close()


# -- the record codec ------------------------------------------------------------------------

@pytest.mark.parametrize("eff", [
    ("FLOAD", b"lib", LIB),
    ("FLOAD", b"lib", b"#!lua name=lib\n-- \xff not UTF-8\nredis.register_function('f', function() end)"),
    ("FDEL", b"lib"),
    ("FFLUSH",),
])
def test_library_effects_round_trip(eff: tuple) -> None:
    line = encode_record(7, [eff])
    assert decode_line(line[:-1], NOW) == (7, eff)
    assert decode_line(encode_record(8, [eff, ("SET", b"k", b"v", None)])[:-1], NOW) == (
        8, ("MULTI", [eff, ("SET", b"k", b"v", None)]))


@pytest.mark.parametrize("line, why", [
    (b'{"cmd":"FLOAD","code":"#!lua name=x\\n"}', "FLOAD record without 'name'"),
    (b'{"cmd":"FLOAD","name":"x"}', "FLOAD record without 'code'"),
    (b'{"cmd":"FLOAD","name":"","code":"#!lua name=x\\n"}', "FLOAD record with an empty library 'name'"),
    (b'{"cmd":"FLOAD","name":"x","code":"return 1"}', "FLOAD 'code' must start with a '#!' library metadata line"),
    (b'{"cmd":"FLOAD","name":7,"code":"#!lua name=x\\n"}', "FLOAD record without 'name'"),
    (b'{"cmd":"FLOAD","name":"x","code_b64":"!!"}', "field 'code_b64' is not valid base64"),
    (b'{"cmd":"FDEL"}', "FDEL record without 'name'"),
    (b'{"cmd":"FDEL","name":""}', "FDEL record with an empty library 'name'"),
    (b'{"cmd":"FDEL","name_b64":"%%"}', "field 'name_b64' is not valid base64"),
    (b'{"cmd":"MULTI","ops":[{"cmd":"FDEL"}]}', "FDEL record without 'name'"),
])
def test_bad_library_records_raise_record_error_naming_the_problem(line: bytes, why: str) -> None:
    with pytest.raises(RecordError, match=why.replace("(", r"\(").replace(")", r"\)")):
        decode_line(line, NOW)


# -- applying and undoing ----------------------------------------------------------------------

def test_library_effects_apply_and_undo_leaving_keys_alone() -> None:
    ks = Keyspace()
    ks.put(b"lib", b"a key named like the library", None)
    apply_effect(ks, ("FLOAD", b"lib", LIB), None)
    v0 = ks.functions_version
    undo: list = []
    for eff in [("FLOAD", b"lib", LIB + b" "), ("FLOAD", b"two", LIB), ("FDEL", b"lib"), ("FFLUSH",),
                ("FLOAD", b"three", LIB), ("FLUSHALL",)]:
        apply_effect(ks, eff, undo)
    assert ks.functions == {b"three": LIB} and not ks.data  # FLUSHALL keeps the libraries
    assert ks.functions_version > v0
    undo_effects(ks, undo)
    assert ks.functions == {b"lib": LIB} and ks.data == {b"lib": b"a key named like the library"}


# -- snapshots -----------------------------------------------------------------------------------

def test_snapshots_hold_the_libraries_and_old_ones_load(tmp_path: Path) -> None:
    path = tmp_path / "snap"
    write_snapshot(path, {b"k": b"v"}, {}, seq=3, created_ms=1, functions={b"lib": LIB, b"b\xff": b"#!lua name=b\n"})
    got: dict = {}
    info, data, _ = load_snapshot(path, got)
    assert got == {b"lib": LIB, b"b\xff": b"#!lua name=b\n"} and data == {b"k": b"v"} and info.seq == 3
    assert check_snapshot(path).ok
    # A snapshot without libraries (every one written before functions existed) has no F chunk.
    write_snapshot(path, {b"k": b"v"}, {}, seq=4, created_ms=1)
    assert b"\x93\xa1F" not in path.read_bytes()  # (msgpack of ["F", names, codes])
    got = {}
    assert load_snapshot(path, got)[1] == {b"k": b"v"} and got == {}


# -- the engine ------------------------------------------------------------------------------------

def test_function_load_is_one_record_of_code_and_fcall_logs_effects(a: Atlas) -> None:
    assert a("FUNCTION", "LOAD", LIB) == b"lib"
    assert a("FCALL", "F", 1, "k", "v") == "OK"  # function names are case-insensitive
    assert a.aof() == [("FLOAD", b"lib", LIB), ("SET", b"k", b"v", None)]
    assert a("FUNCTION", "DELETE", "lib") == "OK" and a.error("FUNCTION", "DELETE", "lib") == "ERR Library not found"
    assert a("FUNCTION", "FLUSH") == "OK"  # nothing to flush: no record
    assert a.aof()[-1] == ("FDEL", b"lib")


def test_replay_registers_libraries_without_running_functions(tmp_path: Path) -> None:
    a = Atlas(tmp_path / "data")
    marker = (b"#!lua name=m\nredis.register_function('w', function() return redis.call('incr', 'calls') end)\n"
              b"redis.register_function{function_name='r', callback=function() return 1 end, flags={'no-writes'}}")
    a("FUNCTION", "LOAD", marker)
    assert a("FCALL", "w", 0) == 1
    a.engine.close()
    b = Atlas(tmp_path / "data")
    try:
        assert b("GET", "calls") == b"1"  # replay applied the INCR's effect, and ran no function
        assert b("FCALL_RO", "r", 0) == 1 and b("FCALL", "w", 0) == 2
        assert b.error("FCALL_RO", "w", 0) == "ERR Can not execute a script with write flag using *_ro command."
        assert b("FUNCTION", "STATS")[b"engines"][b"LUA"] == {b"libraries_count": 1, b"functions_count": 2}
    finally:
        b.engine.close()


def test_a_failed_transaction_takes_its_library_back(a: Atlas) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with a.engine.batch():
            a("FUNCTION", "LOAD", LIB)
            assert a("FCALL", "f", 1, "k", "v") == "OK"
            raise RuntimeError("boom")
    assert a.error("FCALL", "f", 1, "k", "v") == "ERR Function not found"
    assert a("GET", "k") is None and a("FUNCTION", "LIST") == []


def test_a_runaway_function_is_killed_and_its_writes_undone(a: Atlas) -> None:
    a("FUNCTION", "LOAD", b"#!lua name=spin\nredis.register_function('spin', function(keys, args)\n"
                          b"  redis.call('set', 'undone', '1') while true do end end)")
    scripting_of(a.engine).kill_after_ms = 50
    assert "Script killed" in a.error("FCALL", "spin", 0) and "script: spin" in a.error("FCALL", "spin", 0)
    assert a("GET", "undone") is None
    assert a.error("FUNCTION", "KILL") == "NOTBUSY No scripts in execution right now."
    # A library whose top-level code does not return in time is refused, as Redis refuses it.
    assert a.error("FUNCTION", "LOAD", b"#!lua name=loop\nwhile true do end") == (
        "ERR Error registering functions: ERR FUNCTION LOAD timeout")
    assert a("FUNCTION", "LIST", "LIBRARYNAME", "loop") == []


def test_libraries_are_not_keys_to_maxmemory(a: Atlas) -> None:
    a("CONFIG", "SET", "maxmemory", "100mb")
    a("SET", "lib", "a key named like the library")
    used = a.engine.memory.used
    a("FUNCTION", "LOAD", LIB)
    with pytest.raises(RuntimeError):
        with a.engine.batch():
            a("FUNCTION", "FLUSH")
            raise RuntimeError("undone")
    a("FUNCTION", "RESTORE", a("FUNCTION", "DUMP"), "FLUSH")
    assert a.engine.memory.used == used and a("FCALL", "f", 1, "k", "v") == "OK"


def test_a_library_is_capped_like_a_value(tmp_path: Path) -> None:
    # What one caller can make the server store: a library (and a RESTORE payload) is held to
    # atlas.max_value_bytes as a value is; nothing is stored or logged when it is refused.
    from helios_core.config import AtlasConfig

    atlas = Atlas(tmp_path / "data", AtlasConfig(max_value_bytes=len(LIB) + 10))
    try:
        assert atlas("FUNCTION", "LOAD", LIB) == b"lib"
        big = LIB.replace(b"name=lib", b"name=big") + b"\n--" + b"x" * 20
        assert "atlas.max_value_bytes" in atlas.error("FUNCTION", "LOAD", big)
        assert "atlas.max_value_bytes" in atlas.error("FUNCTION", "RESTORE", b"x" * (len(LIB) + 11))
        assert [lib[b"library_name"] for lib in atlas("FUNCTION", "LIST")] == [b"lib"]
    finally:
        atlas.engine.close()
