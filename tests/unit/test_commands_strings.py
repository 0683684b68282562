"""String commands, run through the engine with a hand-driven clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helios_core.atlas.commands import Simple
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError
from tests.unit.atlas_harness import NOT_INT, SYNTAX, T0, WRONGTYPE, Atlas

NOT_FLOAT = "ERR value is not a valid float"


def invalid_expire(cmd: str) -> str:
    return f"ERR invalid expire time in '{cmd}' command"


# -- GET / SET ---------------------------------------------------------------------------

def test_set_and_get(a: Atlas) -> None:
    reply = a("SET", "k", "v")
    assert reply == "OK" and isinstance(reply, Simple)
    assert a("GET", "k") == b"v"
    assert a("GET", "nokey") is None
    assert a("set", b"\xff", b"\x00\xfe") == "OK"  # command names in any case; binary-safe
    assert a("GET", b"\xff") == b"\x00\xfe"


def test_set_replaces_a_zset_and_clears_the_ttl(a: Atlas) -> None:
    a("ZADD", "k", 1, "m")
    a("EXPIRE", "k", 100)
    assert a("SET", "k", "v") == "OK"
    assert (a("TYPE", "k"), a("TTL", "k")) == ("string", -1)


@pytest.mark.parametrize("opt, arg, ttl_ms", [
    ("EX", 10, 10_000), ("PX", 1500, 1500), ("EXAT", T0 // 1000 + 20, 20_000), ("PXAT", T0 + 2500, 2500),
])
def test_set_expiry_options(a: Atlas, opt: str, arg: int, ttl_ms: int) -> None:
    assert a("SET", "k", "v", opt.lower(), arg) == "OK"
    assert a("PTTL", "k") == ttl_ms
    a.now += ttl_ms - 1
    assert a("GET", "k") == b"v"
    a.now += 1
    assert a("GET", "k") is None


def test_set_nx_xx(a: Atlas) -> None:
    assert a("SET", "k", "1", "XX") is None
    assert a("GET", "k") is None
    assert a("SET", "k", "1", "NX") == "OK"
    assert a("SET", "k", "2", "NX") is None
    assert a("SET", "k", "3", "XX") == "OK"
    assert a("GET", "k") == b"3"


def test_set_get_returns_the_old_value(a: Atlas) -> None:
    assert a("SET", "k", "1", "GET") is None
    assert a("SET", "k", "2", "GET") == b"1"
    assert a("SET", "k", "3", "NX", "GET") == b"2"   # allowed since Redis 7.0; nothing set
    assert a("SET", "new", "3", "XX", "GET") is None
    assert (a("GET", "k"), a("EXISTS", "new")) == (b"2", 0)
    a("ZADD", "z", 1, "m")
    assert a.error("SET", "z", "v", "GET") == WRONGTYPE
    assert a("TYPE", "z") == "zset"


def test_set_keepttl(a: Atlas) -> None:
    a("SET", "k", "v", "EX", 100)
    a("SET", "k", "w", "KEEPTTL")
    assert a("TTL", "k") == 100
    a("SET", "k", "x", "KEEPTTL", "KEEPTTL")
    assert a("TTL", "k") == 100
    a("SET", "k", "y")
    assert a("TTL", "k") == -1


def test_set_repeated_expiry_option_last_wins(a: Atlas) -> None:
    assert a("SET", "k", "v", "EX", 10, "EX", 20) == "OK"
    assert a("TTL", "k") == 20


@pytest.mark.parametrize("opts", [
    ["NX", "XX"], ["XX", "NX"], ["EX", 10, "PX", 100], ["PX", 10, "EXAT", 100], ["EX", 10, "KEEPTTL"],
    ["KEEPTTL", "EX", 10], ["KEEPTTL", "PXAT", 10], ["EX"], ["PXAT"], ["FOO"], ["PERSIST"],
    ["EX", 0, "FOO"], ["EX", "abc", "NX", "XX"],
])
def test_set_invalid_option_combinations(a: Atlas, opts: list) -> None:
    assert a.error("SET", "k", "v", *opts) == SYNTAX
    assert a("EXISTS", "k") == 0


@pytest.mark.parametrize("opt, value, error", [
    ("EX", 0, invalid_expire("set")), ("EX", -1, invalid_expire("set")), ("PX", 0, invalid_expire("set")),
    ("EXAT", 0, invalid_expire("set")), ("PXAT", -5, invalid_expire("set")),
    ("EX", 9223372036854775807, invalid_expire("set")), ("EX", 9223372036854775, invalid_expire("set")),
    ("PX", 9223372036854775807, invalid_expire("set")), ("EXAT", 9223372036854775807, invalid_expire("set")),
    ("EX", "abc", NOT_INT), ("PX", "1.5", NOT_INT), ("EX", " 1", NOT_INT),
])
def test_set_bad_expire_values(a: Atlas, opt: str, value: Any, error: str) -> None:
    a("SET", "k", "old")
    assert a.error("SET", "k", "v", opt, value) == error
    assert a("GET", "k") == b"old"


def test_set_bad_expire_is_reported_before_wrongtype(a: Atlas) -> None:
    a("ZADD", "z", 1, "m")
    assert a.error("SET", "z", "v", "EX", 0, "GET") == invalid_expire("set")


def test_set_with_a_past_absolute_time_deletes(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("SET", "k", "w", "PXAT", T0 - 1) == "OK"
    assert a("EXISTS", "k") == 0
    assert a.aof()[-1] == ("DEL", b"k")
    assert a("SET", "k", "w", "EXAT", 1, "GET") is None


# -- SETNX SETEX PSETEX GETSET GETDEL ---------------------------------------------------------

def test_setnx(a: Atlas) -> None:
    assert a("SETNX", "k", "1") == 1
    assert a("SETNX", "k", "2") == 0
    a("ZADD", "z", 1, "m")
    assert a("SETNX", "z", "2") == 0
    assert a("GET", "k") == b"1"


def test_setex_and_psetex(a: Atlas) -> None:
    assert a("SETEX", "k", 10, "v") == "OK"
    assert (a("GET", "k"), a("PTTL", "k")) == (b"v", 10_000)
    assert a("PSETEX", "p", 1500, "v") == "OK"
    assert a("PTTL", "p") == 1500
    for cmd in ("SETEX", "PSETEX"):
        assert a.error(cmd, "k", 0, "v") == invalid_expire(cmd.lower())
        assert a.error(cmd, "k", -1, "v") == invalid_expire(cmd.lower())
        assert a.error(cmd, "k", "x", "v") == NOT_INT
    assert a.error("SETEX", "k", 9223372036854775807, "v") == invalid_expire("setex")


def test_getset(a: Atlas) -> None:
    assert a("GETSET", "k", "1") is None
    a("EXPIRE", "k", 100)
    assert a("GETSET", "k", "2") == b"1"
    assert (a("GET", "k"), a("TTL", "k")) == (b"2", -1)
    a("ZADD", "z", 1, "m")
    assert a.error("GETSET", "z", "v") == WRONGTYPE


def test_getdel(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("GETDEL", "k") == b"v"
    assert a("GETDEL", "k") is None
    a("ZADD", "z", 1, "m")
    assert a.error("GETDEL", "z") == WRONGTYPE
    assert a("EXISTS", "z") == 1


# -- GETEX -------------------------------------------------------------------------------------

def test_getex_sets_and_removes_expiry(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("GETEX", "k") == b"v" and a("TTL", "k") == -1
    assert a("GETEX", "k", "EX", 100) == b"v" and a("TTL", "k") == 100
    assert a("GETEX", "k", "PX", 5000) == b"v" and a("PTTL", "k") == 5000
    assert a("GETEX", "k", "EXAT", T0 // 1000 + 50) == b"v" and a("TTL", "k") == 50
    assert a("GETEX", "k", "PXAT", T0 + 7) == b"v" and a("PTTL", "k") == 7
    assert a("GETEX", "k", "PERSIST") == b"v" and a("TTL", "k") == -1
    assert a("GETEX", "k", "persist", "PERSIST") == b"v"
    assert a("GETEX", "k", "EX", 5, "EX", 6) == b"v" and a("TTL", "k") == 6


def test_getex_past_time_deletes(a: Atlas) -> None:
    a("SET", "k", "v")
    assert a("GETEX", "k", "PXAT", T0 - 1) == b"v"
    assert a("EXISTS", "k") == 0
    assert a.aof()[-1] == ("DEL", b"k")


@pytest.mark.parametrize("opts", [
    ["PERSIST", "EX", 5], ["EX", 5, "PERSIST"], ["EX", 5, "PX", 6], ["KEEPTTL"], ["NX"], ["GET"], ["EX"], ["FOO"],
])
def test_getex_syntax_errors(a: Atlas, opts: list) -> None:
    a("SET", "k", "v")
    assert a.error("GETEX", "k", *opts) == SYNTAX


def test_getex_checks_the_time_only_for_an_existing_string(a: Atlas) -> None:
    assert a("GETEX", "nokey", "EX", 0) is None
    assert a("GETEX", "nokey", "EX", "abc") is None
    a("ZADD", "z", 1, "m")
    assert a.error("GETEX", "z", "EX", 0) == WRONGTYPE
    a("SET", "k", "v")
    assert a.error("GETEX", "k", "EX", 0) == invalid_expire("getex")
    assert a.error("GETEX", "k", "PX", "abc") == NOT_INT


# -- MGET MSET MSETNX --------------------------------------------------------------------------

def test_mget(a: Atlas) -> None:
    a("SET", "a", "1")
    a("ZADD", "z", 1, "m")
    assert a("MGET", "a", "z", "missing", "a") == [b"1", None, None, b"1"]


def test_mset_and_msetnx(a: Atlas) -> None:
    a("SET", "a", "old", "EX", 100)
    assert a("MSET", "a", "1", "b", "2") == "OK"
    assert (a("MGET", "a", "b"), a("TTL", "a")) == ([b"1", b"2"], -1)
    assert a.error("MSET", "a", "1", "b") == "ERR wrong number of arguments for 'mset' command"
    assert a("MSETNX", "c", "3", "a", "x") == 0
    assert a("MGET", "c", "a") == [None, b"1"]
    assert a("MSETNX", "c", "3", "d", "4") == 1
    assert a("MGET", "c", "d") == [b"3", b"4"]
    assert a.error("MSETNX", "e", "1", "f") == "ERR wrong number of arguments for 'msetnx' command"
    a("ZADD", "z", 1, "m")
    assert a("MSETNX", "z", "1", "g", "2") == 0


# -- INCR family ---------------------------------------------------------------------------------

def test_incr_decr_family(a: Atlas) -> None:
    assert a("INCR", "n") == 1
    assert a("INCRBY", "n", 10) == 11
    assert a("DECR", "n") == 10
    assert a("DECRBY", "n", -5) == 15
    assert a("INCRBY", "n", -20) == -5
    assert a("GET", "n") == b"-5"
    assert a("DECRBY", "new", 3) == -3


def test_incr_keeps_the_ttl(a: Atlas) -> None:
    a("SET", "n", "1", "EX", 100)
    a.now += 10_000
    assert a("INCR", "n") == 2
    assert a("TTL", "n") == 90
    assert a("INCRBYFLOAT", "n", "0.5") == b"2.5"
    assert a("TTL", "n") == 90


@pytest.mark.parametrize("value", [
    "1.5", " 1", "1 ", "+1", "-0", "01", "", "abc", "9223372036854775808", "123456789012345678901", "1e3",
])
def test_incr_refuses_values_that_are_not_integers(a: Atlas, value: str) -> None:
    a("SET", "n", value)
    assert a.error("INCR", "n") == NOT_INT
    assert a("GET", "n") == value.encode()


@pytest.mark.parametrize("by", ["1.5", "x", "+1", "-0", "9223372036854775808", ""])
def test_incrby_refuses_bad_increments(a: Atlas, by: str) -> None:
    assert a.error("INCRBY", "n", by) == NOT_INT
    assert a.error("DECRBY", "n", by) == NOT_INT


def test_incr_overflow(a: Atlas) -> None:
    a("SET", "n", "9223372036854775807")
    assert a.error("INCR", "n") == "ERR increment or decrement would overflow"
    a("SET", "n", "-9223372036854775808")
    assert a.error("DECR", "n") == "ERR increment or decrement would overflow"
    assert a.error("INCRBY", "n", -1) == "ERR increment or decrement would overflow"
    assert a("GET", "n") == b"-9223372036854775808"
    assert a.error("DECRBY", "m", "-9223372036854775808") == "ERR decrement would overflow"
    assert a("INCRBY", "m", "-9223372036854775808") == -9223372036854775808


def test_incr_on_a_zset(a: Atlas) -> None:
    a("ZADD", "z", 1, "m")
    for cmd in (["INCR", "z"], ["DECR", "z"], ["INCRBY", "z", 1], ["DECRBY", "z", 1], ["INCRBYFLOAT", "z", 1]):
        assert a.error(*cmd) == WRONGTYPE
    assert a.error("INCRBYFLOAT", "z", "x") == WRONGTYPE  # the type is checked first


# -- INCRBYFLOAT: Redis's long double arithmetic and "%.17Lf" output -------------------------------

@pytest.mark.parametrize("start, by, result", [
    (None, "0.1", b"0.1"),
    ("10.50", "0.1", b"10.6"),
    ("0.1", "0.2", b"0.3"),
    ("10.6", "1e20", b"100000000000000000008"),
    ("5.0e3", "2.0e2", b"5200"),
    ("1", "-1", b"0"),
    ("-0.0", "0", b"0"),
    (None, "1.5e-17", b"0.00000000000000002"),
    (None, "5e-18", b"0"),
    ("3", "0x1.8p3", b"15"),
    (None, ".5", b"0.5"),
    (None, "5.", b"5"),
    (None, "3.14159265358979323846", b"3.14159265358979324"),
    ("9223372036854775807", "0.3333333333333333333333333333333", b"9223372036854775807.5"),
    ("1", "1.0000000000000000001", b"2"),
])
def test_incrbyfloat_matches_redis(a: Atlas, start: str | None, by: str, result: bytes) -> None:
    if start is not None:
        a("SET", "f", start)
    assert a("INCRBYFLOAT", "f", by) == result
    assert a("GET", "f") == result


def test_incrbyfloat_beyond_double_range(a: Atlas) -> None:
    # Every digit of the long double nearest to 1e400, as redis-server 7.0 on x86-64 prints it.
    got = a("INCRBYFLOAT", "f", "1e400")
    assert len(got) == 401
    assert got.startswith(b"10000000000000000000281880683947586514586453433629052038625910693539685534")
    assert got.endswith(b"116674971723778943824391593338047470675026246684401359237513603830343735485505244955964979"
                        b"021825038280091068414947402456898653040951017512658092615827588920183472511643316591362664"
                        b"138176309734806343732497430221946880")
    assert a("INCRBYFLOAT", "f", "-1e400") == b"0"


@pytest.mark.parametrize("start, by", [
    (None, "inf"), (None, "-inf"), ("1.1e4932", "1.1e4932"),
])
def test_incrbyfloat_refuses_infinity(a: Atlas, start: str | None, by: str) -> None:
    if start is not None:
        a("SET", "f", start)
    assert a.error("INCRBYFLOAT", "f", by) == "ERR increment would produce NaN or Infinity"


@pytest.mark.parametrize("by", ["abc", "nan", " 1", "1 ", "", "1_0", "1e5000", "1e-5000", "0x", "1e", "1\x002"])
def test_incrbyfloat_refuses_bad_increments(a: Atlas, by: str) -> None:
    assert a.error("INCRBYFLOAT", "f", by) == NOT_FLOAT
    assert a("EXISTS", "f") == 0


def test_incrbyfloat_refuses_a_bad_current_value(a: Atlas) -> None:
    a("SET", "f", "abc")
    assert a.error("INCRBYFLOAT", "f", "1") == NOT_FLOAT
    a("SET", "f", "0\x001")
    assert a.error("INCRBYFLOAT", "f", "1") == NOT_FLOAT


# -- APPEND STRLEN GETRANGE SETRANGE ----------------------------------------------------------------

def test_append_and_strlen(a: Atlas) -> None:
    assert a("APPEND", "k", "ab") == 2
    a("EXPIRE", "k", 100)
    assert a("APPEND", "k", b"\xff") == 3
    assert a("APPEND", "k", "") == 3
    assert (a("GET", "k"), a("STRLEN", "k"), a("TTL", "k")) == (b"ab\xff", 3, 100)
    assert a("STRLEN", "missing") == 0


@pytest.mark.parametrize("start, end, want", [
    (0, -1, b"Hello"), (1, 3, b"ell"), (-3, -1, b"llo"), (0, -100, b"H"), (-100, -200, b""), (5, 2, b""),
    (3, 100, b"lo"), (10, 20, b""), (-1, 0, b""), (-100, 100, b"Hello"),
])
def test_getrange(a: Atlas, start: int, end: int, want: bytes) -> None:
    a("SET", "k", "Hello")
    assert a("GETRANGE", "k", start, end) == want


def test_getrange_edge_cases(a: Atlas) -> None:
    assert a("GETRANGE", "missing", 0, -1) == b""
    assert a.error("GETRANGE", "missing", "a", 1) == NOT_INT
    a("SET", "e", "")
    assert a("GETRANGE", "e", 0, -1) == b""


def test_setrange(a: Atlas) -> None:
    assert a("SETRANGE", "k", 0, "") == 0
    assert a("EXISTS", "k") == 0
    assert a("SETRANGE", "k", 3, "x") == 4
    assert a("GET", "k") == b"\x00\x00\x00x"
    a("EXPIRE", "k", 100)
    assert a("SETRANGE", "k", 1, "ab") == 4
    assert a("SETRANGE", "k", 10, "") == 4
    assert (a("GET", "k"), a("TTL", "k")) == (b"\x00abx", 100)
    assert a("SETRANGE", "k", 2, "LONGER") == 8
    assert a("GET", "k") == b"\x00aLONGER"
    assert a.error("SETRANGE", "k", -1, "x") == "ERR offset is out of range"
    assert a.error("SETRANGE", "k", "x", "x") == NOT_INT


@pytest.mark.parametrize("cmd", [
    ["GET", "z"], ["APPEND", "z", "x"], ["STRLEN", "z"], ["GETRANGE", "z", 0, 1], ["SETRANGE", "z", 0, "x"],
    ["SETRANGE", "z", 0, ""], ["GETEX", "z"], ["GETDEL", "z"], ["GETSET", "z", "v"], ["SET", "z", "v", "GET"],
])
def test_string_commands_on_a_zset(a: Atlas, cmd: list) -> None:
    a("ZADD", "z", 1, "m")
    assert a.error(*cmd) == WRONGTYPE
    assert a("ZCARD", "z") == 1


# -- arity and size limits -------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [
    ["GET"], ["GET", "a", "b"], ["SET", "k"], ["SETNX", "k"], ["SETEX", "k", 1], ["GETEX"], ["MGET"],
    ["MSET", "k"], ["INCR"], ["INCRBY", "k"], ["INCRBYFLOAT", "k", 1, 2], ["APPEND", "k"], ["GETRANGE", "k", 0],
    ["SETRANGE", "k", 0], ["STRLEN"], ["GETDEL", "a", "b"],
])
def test_wrong_number_of_arguments(a: Atlas, cmd: list) -> None:
    assert a.error(*cmd) == f"ERR wrong number of arguments for '{cmd[0].lower()}' command"


@pytest.fixture
def small(tmp_path: Path):
    atlas = Atlas(tmp_path, AtlasConfig(max_value_bytes=8))
    yield atlas
    atlas.engine.close()


def test_values_over_the_limit_are_refused_and_nothing_is_written(small: Atlas) -> None:
    small("SET", "k", "12345678")
    before = small.aof()
    for cmd in (["SET", "k", "123456789"], ["SET", "other", "123456789"], ["MSET", "a", "1", "b", "123456789"],
                ["APPEND", "k", "9"], ["SETRANGE", "k", 8, "x"], ["SETRANGE", "n", 100, "x"],
                ["GETSET", "k", "123456789"], ["SETEX", "k", 10, "123456789"]):
        err = small.error(*cmd)
        if cmd[0] == "SETRANGE":  # Redis's text, which clients match (the limit is atlas.max_value_bytes)
            assert err == "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
        else:
            assert err.startswith("ERR value of ") and "atlas.max_value_bytes" in err
    assert small("MGET", "k", "other", "a", "b", "n") == [b"12345678", None, None, None, None]
    assert small.aof() == before


def test_an_empty_command_and_the_limit_message(small: Atlas) -> None:
    assert small.error("SET", "k", "x" * 9) == (
        "ERR value of 9 bytes exceeds the maximum of 8 bytes (atlas.max_value_bytes); "
        "send a smaller value or raise the limit")
    with pytest.raises(CommandError, match="empty command"):
        small.engine.execute([])
