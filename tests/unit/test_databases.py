"""Numbered databases below the wire: the effect codec, applying and undoing records that SELECT,
snapshots with several databases, and an engine whose commands run in databases other than 0
(replay must give back every database from the files alone)."""

from __future__ import annotations

import asyncio
import errno
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.atlas.databases import MAX_DATABASES, Databases
from helios_core.atlas.effects import apply_effect, decode_line, encode_record, undo_effects
from helios_core.atlas.engine import Engine
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.snapshot import check_snapshot, load_snapshot, write_snapshot
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError, CorruptFileError

NOW = 1_700_000_000_000


def roundtrip(effects: list[tuple]) -> tuple:
    line = encode_record(7, effects)
    seq, eff = decode_line(line[:-1], NOW)
    assert seq == 7
    return eff


def dump(dbs: Databases) -> dict[int, tuple[dict, dict]]:
    return {i: (dict(ks.data), dict(ks.expires)) for i, ks in dbs.made() if ks.data or ks.expires}


# -- codec ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("effects, line", [
    ([("SELECT", 3)], b'{"seq":7,"cmd":"SELECT","db":3,'),
    ([("FLUSHDB",)], b'{"seq":7,"cmd":"FLUSHDB",'),
    ([("SWAPDB", 1, 2)], b'{"seq":7,"cmd":"SWAPDB","db1":1,"db2":2,'),
    ([("SELECT", 3), ("SET", b"k", b"v", None)],
     b'{"seq":7,"cmd":"MULTI","ops":[{"cmd":"SELECT","db":3},{"cmd":"SET","key":"k","value":"v"}],'),
])
def test_database_effects_encode_as_json_lines(effects: list[tuple], line: bytes) -> None:
    assert encode_record(7, effects).startswith(line)
    assert roundtrip(effects) == (("MULTI", effects) if len(effects) > 1 else effects[0])


@pytest.mark.parametrize("line, why", [
    (b'{"cmd":"SELECT"}', "SELECT field 'db'"),
    (b'{"cmd":"SELECT","db":-1}', "SELECT field 'db'"),
    (b'{"cmd":"SELECT","db":"3"}', "SELECT field 'db'"),
    (b'{"cmd":"SWAPDB","db1":1}', "SWAPDB field 'db2'"),
])
def test_bad_database_records_are_named(line: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_line(line, NOW)


def test_a_record_written_before_databases_replays_into_db0() -> None:
    # The lines the engine wrote before this change: no SELECT anywhere, FLUSHALL as it was.
    old = [b'{"cmd":"SET","key":"a","value":"1"}', b'{"cmd":"SET","key":"b","value":"2","ttl":0}',
           b'{"cmd":"MULTI","ops":[{"cmd":"SET","key":"c","value":"3"},{"cmd":"DEL","key":"c"}]}']
    dbs = Databases(16)
    for line in old:
        _, eff = decode_line(line, NOW)
        apply_effect(dbs[0], eff, None)
    assert dump(dbs) == {0: ({b"a": b"1", b"b": b"2"}, {})}


# -- applying and undoing ------------------------------------------------------------------------------

def test_a_record_starts_in_db0_and_select_moves_the_rest() -> None:
    dbs = Databases(16)
    apply_effect(dbs[0], ("SET", b"k", b"zero", None), None)
    apply_effect(dbs[0], roundtrip([("SELECT", 3), ("SET", b"k", b"three", 5), ("SELECT", 0), ("DEL", b"k")]), None)
    apply_effect(dbs[0], ("SET", b"j", b"zero", None), None)  # the next record: database 0 again
    assert dump(dbs) == {0: ({b"j": b"zero"}, {}), 3: ({b"k": b"three"}, {b"k": 5})}


def test_swapdb_flushdb_flushall() -> None:
    dbs = Databases(4)
    for i in range(4):
        apply_effect(dbs[0], ("MULTI", [("SELECT", i), ("SET", b"k", b"%d" % i, None)]), None)
    apply_effect(dbs[0], ("SWAPDB", 1, 3), None)
    apply_effect(dbs[0], ("MULTI", [("SELECT", 2), ("FLUSHDB",)]), None)
    assert {i: d[0] for i, d in dump(dbs).items()} == {0: {b"k": b"0"}, 1: {b"k": b"3"}, 3: {b"k": b"1"}}
    apply_effect(dbs[0], ("FLUSHALL",), None)
    assert dump(dbs) == {}


def test_a_database_beyond_the_setting_is_refused_on_replay() -> None:
    dbs = Databases(4)
    with pytest.raises(IndexError, match="atlasd.databases"):
        apply_effect(dbs[0], ("MULTI", [("SELECT", 4), ("SET", b"k", b"v", None)]), None)
    with pytest.raises(IndexError):
        apply_effect(dbs[0], ("SWAPDB", 0, 9), None)


ops = st.lists(st.one_of(
    st.tuples(st.just("SELECT"), st.integers(0, 3)),
    st.tuples(st.just("SET"), st.sampled_from([b"a", b"b"]), st.sampled_from([b"1", b"2"]), st.none()),
    st.tuples(st.just("DEL"), st.sampled_from([b"a", b"b"])),
    st.tuples(st.just("SADD"), st.sampled_from([b"a", b"s"]), st.just([b"m"])),
    st.tuples(st.just("SWAPDB"), st.integers(0, 3), st.integers(0, 3)),
    st.just(("FLUSHDB",)), st.just(("FLUSHALL",)),
), max_size=12)


@settings(max_examples=200, deadline=None)
@given(before=ops, record=ops)
def test_undo_of_a_record_puts_every_database_back(before: list[tuple], record: list[tuple]) -> None:
    dbs = Databases(4)
    apply_effect(dbs[0], ("MULTI", before), None)
    want = dump(dbs)
    undo: list = []
    try:
        apply_effect(dbs[0], ("MULTI", record), undo)
    except TypeError:
        return  # (SADD on a string key: not a record the engine would write)
    undo_effects(dbs[0], undo)
    assert dump(dbs) == want


def test_sixteen_unused_databases_cost_a_list_of_slots() -> None:
    dbs = Databases(16)
    assert [i for i, _ in dbs.made()] == [0]
    _ = dbs[9]
    assert [i for i, _ in dbs.made()] == [0, 9]
    with pytest.raises(ValueError):
        Databases(MAX_DATABASES + 1)
    with pytest.raises(ValueError):
        Databases(0)


def test_sixteen_empty_databases_cost_next_to_nothing() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        dbs = Databases(16)
        one = tracemalloc.get_traced_memory()[0] - before
        for i in range(16):
            _ = dbs[i]  # every one selected once: a keyspace each
        all16 = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert one < 1024, one        # a list of slots and database 0's empty keyspace
    assert all16 < 16 * 1024, all16


def test_libraries_are_server_state_whatever_the_database() -> None:
    dbs = Databases(4)
    dbs[2].put_library(b"lib", b"#!lua name=lib\n")
    assert dbs[0].functions == dbs[3].functions == {b"lib": b"#!lua name=lib\n"}
    assert Keyspace().functions == {}


# -- snapshots ---------------------------------------------------------------------------------------

def test_snapshot_holds_every_database(tmp_path: Path) -> None:
    path = tmp_path / "dump.rdb"
    write_snapshot(path, {b"a": b"0"}, {}, 9, 1, functions={b"l": b"#!lua name=l\n"},
                   others=[(3, {b"a": b"3", b"h": {b"f": b"v"}}, {b"a": 99}), (4, {}, {}), (15, {b"z": b"x"}, {})])
    others: dict = {}
    libraries: dict = {}
    info, data, expires = load_snapshot(path, libraries, others)
    assert (info.seq, info.keys, data, expires) == (9, 4, {b"a": b"0"}, {})
    assert others == {3: ({b"a": b"3", b"h": {b"f": b"v"}}, {b"a": 99}), 15: ({b"z": b"x"}, {})}
    assert libraries == {b"l": b"#!lua name=l\n"}
    assert check_snapshot(path).ok


def test_a_snapshot_of_db0_alone_is_the_old_format(tmp_path: Path) -> None:
    old, new = tmp_path / "old.rdb", tmp_path / "new.rdb"
    write_snapshot(old, {b"a": b"0", b"s": {b"m"}}, {b"a": 5}, 3, 1)
    write_snapshot(new, {b"a": b"0", b"s": {b"m"}}, {b"a": 5}, 3, 1, others=[(2, {}, {})])
    assert old.read_bytes() == new.read_bytes()
    assert b'"DB"' not in old.read_bytes() and b"\xa2DB" not in old.read_bytes()


# -- an engine working in several databases -------------------------------------------------------------

class Conn:
    """What the engine reads of a client connection: its database (and its name for the slow log)."""

    def __init__(self, db: int = 0) -> None:
        self.db = db
        self.current = None
        self.tracking = None
        self.addr, self.name = "", b""  # (the slow log names a slow command's client)


def run(eng: Engine, conn: Conn | None, *args: str | bytes) -> object:
    eng.ctx.conn = conn
    try:
        return eng.execute([a.encode() if isinstance(a, str) else a for a in args])
    finally:
        eng.ctx.conn = None


def everything(eng: Engine) -> dict:
    return {i: (dict(ks.data), dict(ks.expires)) for i, ks in eng.dbs.made() if ks.data}


def test_engine_writes_replay_into_their_databases(tmp_path: Path) -> None:
    clock = [NOW]
    eng = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    c3, c5 = Conn(3), Conn(5)
    run(eng, c3, "SET", "k", "three")
    run(eng, c5, "RPUSH", "l", "a", "b")
    run(eng, None, "SET", "k", "zero")  # in-process callers: database 0
    run(eng, c5, "SET", "t", "v", "PX", "100000")
    run(eng, c3, "SWAPDB", "5", "6")
    run(eng, c3, "MOVE", "k", "7")
    run(eng, Conn(6), "COPY", "l", "l2", "DB", "3")
    run(eng, Conn(9), "SET", "gone", "x")
    run(eng, Conn(9), "FLUSHDB")
    assert run(eng, c3, "DBSIZE") == 1
    want = everything(eng)
    assert sorted(want) == [0, 3, 6, 7]
    eng.flush_sync()
    eng.close()
    again = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    try:
        assert everything(again) == want
        again.snapshot_sync()
        run(again, Conn(2), "SET", "after", "snap")
        want = everything(again)
        again.flush_sync()
    finally:
        again.close()
    third = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    try:
        assert third.recovery is not None and third.recovery.snapshot_keys == 5
        assert everything(third) == want
    finally:
        third.close()
    with pytest.raises(CorruptFileError, match=r"holds database 7, but atlasd.databases is 4.*at least 8"):
        Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=4)


def test_a_failed_command_in_another_database_undoes_only_itself(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path, AtlasConfig(), databases=16)
    try:
        c = Conn(4)
        run(eng, c, "SET", "s", "str")
        with eng.batch():  # (MULTI/EXEC: one record; the failing command's part goes)
            run(eng, c, "SET", "a", "1")
            run(eng, c, "SELECT", "6")
            run(eng, c, "SET", "b", "2")
            with pytest.raises(CommandError):
                run(eng, c, "SWAPDB", "6", "99")
            run(eng, c, "SELECT", "4")
            with pytest.raises(CommandError, match="WRONGTYPE"):
                run(eng, c, "LPUSH", "s", "x")
            run(eng, c, "SET", "c", "3")
        assert {i: sorted(d) for i, (d, _) in everything(eng).items()} == {4: [b"a", b"c", b"s"], 6: [b"b"]}
        eng.flush_sync()
    finally:
        eng.close()
    again = Engine.open(tmp_path, AtlasConfig(), databases=16)
    try:
        assert {i: sorted(d) for i, (d, _) in everything(again).items()} == {4: [b"a", b"c", b"s"], 6: [b"b"]}
    finally:
        again.close()


def test_writes_the_disk_lost_are_undone_in_their_databases(tmp_path: Path) -> None:
    async def main() -> None:
        eng = Engine.open(tmp_path, AtlasConfig(appendfsync="always"), databases=16)
        eng.attach()
        run(eng, None, "SET", "k", "zero")
        run(eng, Conn(2), "SET", "k", "two")
        await eng.wait_durable()
        before = everything(eng)

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        eng.aof.os_fsync = eio  # type: ignore[union-attr]
        run(eng, Conn(2), "SET", "k", "lost")
        run(eng, None, "DEL", "k")
        run(eng, Conn(3), "SWAPDB", "2", "5")
        run(eng, Conn(5), "RPUSH", "l", "x")
        with pytest.raises(Exception, match="MISCONF"):
            await eng.wait_durable()
        assert everything(eng) == before  # every database is back where the disk is
        del eng.aof.os_fsync  # type: ignore[union-attr]
        eng._probe_disk()
        await eng.aclose()

    asyncio.run(main())


def test_aof_check_reads_records_that_select(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from helios_cli.main import cli

    eng = Engine.open(tmp_path, AtlasConfig(), databases=16)
    try:
        run(eng, Conn(3), "SET", "a", "1")
        run(eng, Conn(3), "SWAPDB", "3", "4")
        run(eng, Conn(4), "FLUSHDB")
        eng.flush_sync()
    finally:
        eng.close()
    result = CliRunner().invoke(cli, ["aof-check", "--data", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "records    3" in result.output and "OK" in result.output


def test_active_expiry_reaches_every_database_and_logs_where(tmp_path: Path) -> None:
    clock = [NOW]
    eng = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    try:
        run(eng, Conn(4), "SET", "t", "v", "PX", "10")
        run(eng, Conn(9), "SET", "t", "v", "PX", "10")
        run(eng, None, "SET", "t", "kept")
        clock[0] += 100
        eng._active_expire()
        assert everything(eng) == {0: ({b"t": b"kept"}, {})}
        eng.flush_sync()
        lines = (tmp_path / "appendonly.aof").read_bytes().splitlines()
        assert b'{"cmd":"SELECT","db":4},{"cmd":"DEL","key":"t"}' in lines[-2]
        assert b'{"cmd":"SELECT","db":9},{"cmd":"DEL","key":"t"}' in lines[-1]
    finally:
        eng.close()


def test_eviction_finds_keys_in_any_database(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path, AtlasConfig(), databases=16)
    try:
        for i in range(50):
            run(eng, Conn(6), "SET", f"k{i}", "x" * 100)
        eng.evictor.maxmemory = 3000
        eng.evictor.set_policy("allkeys-random", NOW)
        eng.observers_changed()
        assert eng.memory.used > 3000
        run(eng, None, "SET", "new", "v")  # (database 0 holds nothing to evict)
        assert eng.memory.used <= 3000 + 200
        assert 0 < len(eng.dbs[6].data) < 50 and eng.dbs[0].data == {b"new": b"v"}
    finally:
        eng.close()


def test_json_lines_take_the_aofs_database_records_as_requests() -> None:
    from helios_core.atlas.jsonlines import request_argv

    assert request_argv({"cmd": "SELECT", "db": 3}) == [b"SELECT", b"3"]
    assert request_argv({"cmd": "SWAPDB", "db1": 1, "db2": 2}) == [b"SWAPDB", b"1", b"2"]
    assert request_argv({"cmd": "FLUSHDB"}) == [b"FLUSHDB"]


@pytest.mark.parametrize("value", ["0", "10001", "-1", "many"])
def test_databases_setting_is_bounded(value: str) -> None:
    from helios_core.config import load_config
    from helios_core.errors import ConfigError

    assert load_config(env={"HELIOS_ATLASD__DATABASES": "64"}).atlasd.databases == 64
    with pytest.raises(ConfigError, match="atlasd.databases"):
        load_config(env={"HELIOS_ATLASD__DATABASES": value})


def test_a_rollback_back_to_db0_keeps_the_record_in_the_right_database(tmp_path: Path) -> None:
    # A record in database 3, then a command in database 0 whose effects are undone (a lazy-expiry
    # DEL, then an error): the next effect in database 0 must be logged after a SELECT 0 again.
    clock = [NOW]
    eng = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    try:
        c = Conn(0)
        run(eng, c, "SET", "gone", "x", "PX", "5")
        run(eng, c, "SET", "s", "str")
        clock[0] += 10
        with eng.batch():
            run(eng, c, "SELECT", "3")
            run(eng, c, "SET", "a", "3")
            run(eng, c, "SELECT", "0")
            with pytest.raises(CommandError, match="no such key"):
                run(eng, c, "RENAME", "gone", "x")  # (finds "gone" expired: a DEL, then "no such key")
            run(eng, c, "SET", "b", "0")
        want = everything(eng)
        eng.flush_sync()
    finally:
        eng.close()
    again = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    try:
        assert everything(again) == want and b"b" in want[0][0] and b"b" not in want[3][0]
    finally:
        again.close()


# -- the durability invariant: what memory holds is what the files give back ------------------------------

_k = st.sampled_from(["a", "b"])
_db = st.sampled_from(["0", "0", "1", "3"])
_cmds = st.one_of(
    st.tuples(st.just("SELECT"), _db),
    st.just(("TICK",)),  # the PX 5 keys expire: lazily, inside whatever runs next
    st.tuples(st.just("SET"), _k, st.just("t"), st.just("PX"), st.just("5")),
    st.tuples(st.just("SET"), _k, st.sampled_from(["1", "x"])),
    st.tuples(st.just("SET"), _k, st.just("t"), st.just("PX"), st.sampled_from(["5", "100000"])),
    st.tuples(st.just("RPUSH"), _k, st.just("i")),
    st.tuples(st.just("INCR"), _k),
    st.tuples(st.just("DEL"), _k),
    st.tuples(st.just("GET"), _k),
    st.tuples(st.just("RENAME"), _k, _k),
    st.tuples(st.just("RENAME"), _k, st.just("c")),  # (of a key found expired: a DEL, then an error)
    st.tuples(st.just("MOVE"), _k, _db),
    st.tuples(st.just("COPY"), _k, _k, st.just("DB"), _db),
    st.tuples(st.just("SWAPDB"), _db, _db),
    st.tuples(st.just("FLUSHDB"),), st.tuples(st.just("FLUSHALL"),),
    st.tuples(st.just("EVAL"), st.just("redis.call('SELECT', ARGV[1]); return redis.call('SET', KEYS[1], 'e')"),
              st.just("1"), _k, _db),
)
_steps = st.lists(st.one_of(
    st.tuples(st.just("cmd"), st.integers(0, 2), _cmds),
    st.tuples(st.just("batch"), st.integers(0, 2), st.lists(_cmds, min_size=1, max_size=10)),
), min_size=1, max_size=25)


@settings(max_examples=200, deadline=None)
@given(steps=_steps)
def test_memory_is_what_replay_gives_back(steps: list) -> None:
    import shutil
    import tempfile

    clock = [NOW]
    path = Path(tempfile.mkdtemp())
    try:
        eng = Engine.open(path, AtlasConfig(), clock=lambda: clock[0], databases=4)
        try:
            conns = [Conn(), Conn(), Conn()]

            def step(who: int, cmd: tuple) -> None:
                if cmd[0] == "TICK":
                    clock[0] += 10
                    return
                try:
                    run(eng, conns[who], *cmd)
                except CommandError:
                    pass
            for kind, who, what in steps:
                if kind == "cmd":
                    step(who, what)
                else:
                    with eng.batch():  # MULTI/EXEC: one record, each command's error its own
                        for cmd in what:
                            step(who, cmd)
            want = everything(eng)
            eng.flush_sync()
        finally:
            eng.close()
        again = Engine.open(path, AtlasConfig(), clock=lambda: clock[0], databases=4)
        try:
            assert everything(again) == want, steps
        finally:
            again.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_active_expiry_notifies_in_the_keys_database(tmp_path: Path) -> None:
    from helios_core.atlas.notify import parse_flags

    clock = [NOW]
    eng = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    try:
        sent: list[tuple[bytes, bytes]] = []
        eng.notifier.publish = lambda channel, message: sent.append((channel, message)) or 0
        eng.notifier.flags = parse_flags("KEA")
        eng.observers_changed()
        run(eng, Conn(7), "SET", "t", "v", "PX", "10")
        sent.clear()
        clock[0] += 100
        eng._active_expire()
        assert sent == [(b"__keyspace@7__:t", b"expired"), (b"__keyevent@7__:expired", b"t")]
    finally:
        eng.close()


def test_lru_eviction_takes_the_idlest_keys_of_all_databases(tmp_path: Path) -> None:
    clock = [NOW]
    eng = Engine.open(tmp_path, AtlasConfig(), clock=lambda: clock[0], databases=16)
    try:
        eng.evictor.set_policy("allkeys-lru", clock[0])
        eng.evictor.samples = 10
        old, fresh = Conn(5), Conn(2)
        for i in range(5):  # (fewer: the idle keys are not where most keys are)
            run(eng, old, "SET", f"o{i}", "x" * 100)
        clock[0] += 60_000
        for i in range(10):
            run(eng, fresh, "SET", f"f{i}", "x" * 100)
        eng.evictor.maxmemory = 1 << 40
        eng.observers_changed()  # (counts the keyspace)
        eng.evictor.maxmemory = eng.memory.used - 500  # room for a few keys less
        run(eng, fresh, "GET", "f0")
        assert len(eng.dbs[2].data) == 10 and len(eng.dbs[5].data) < 5  # the idle database's keys went
    finally:
        eng.close()
