"""INFO errorstats and total_error_replies in process: which error replies count, under which code,
the bound on the codes a client can make, and CONFIG RESETSTAT (cmdstats.ErrorStats, Engine.execute,
Engine.reject, the scripts' calls).  What a connection adds (NOAUTH, EXECABORT, MULTI's refusals) is
compared with redis-server in tests/integration/test_differential_errorstats.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from helios_core.atlas.cmdstats import (
    ERRORSTATS_DISABLED,
    ERRORSTATS_LIMIT,
    CommandStats,
    CountedError,
    ErrorStats,
    error_code,
)
from helios_core.atlas.commands.server import info_text
from helios_core.atlas.commands.table import TABLE
from helios_core.errors import CommandError, HeliosError
from tests.unit.atlas_harness import Atlas


@pytest.fixture
def a(tmp_path: Path) -> Iterator[Atlas]:
    atlas = Atlas(tmp_path / "data")
    yield atlas
    atlas.engine.close()


@pytest.fixture
def warnings() -> Iterator[list[Any]]:
    """The warnings logged meanwhile (loguru), as (message, extra)."""
    seen: list[Any] = []
    hid = logger.add(lambda m: seen.append((m.record["message"], m.record["extra"])), level="WARNING")
    yield seen
    logger.remove(hid)


def errorstats(a: Atlas) -> dict[str, int]:
    """INFO errorstats as {code: count}, in the order INFO lists them."""
    out = {}
    for line in info_text(a.engine, None, ["errorstats"]).splitlines()[1:]:
        if line:
            name, count = line.split(":", 1)
            assert name.startswith("errorstat_") and count.startswith("count="), line
            out[name[len("errorstat_"):]] = int(count[len("count="):])
    return out


def total(a: Atlas) -> int:
    for line in info_text(a.engine, None, ["stats"]).splitlines():
        if line.startswith("total_error_replies:"):
            return int(line.split(":", 1)[1])
    raise AssertionError("no total_error_replies in INFO stats")


def fails(a: Atlas, *args: object) -> str:
    with pytest.raises(CommandError) as e:
        a(*args)
    return str(e.value)


# -- attacker / edge cases first --------------------------------------------------------------------

def test_a_client_cannot_grow_the_table_without_bound(a: Atlas, warnings: list[Any]) -> None:
    # Codes come from clients: a script can answer with any it likes.  At the 129th distinct one the
    # table gives up (Redis 7.2's ERROR_STATS_NUMBER): ERRORSTATS_DISABLED, a warning, no code more.
    script = "return redis.error_reply(ARGV[1] .. ' boom')"
    for i in range(ERRORSTATS_LIMIT):
        assert fails(a, "EVAL", script, 0, f"X{i}") == f"X{i} boom"
    assert len(errorstats(a)) == ERRORSTATS_LIMIT
    fails(a, "EVAL", script, 0, "X0")  # a code it has: still counted
    assert errorstats(a)["X0"] == 2
    for i in range(5000):
        fails(a, "EVAL", script, 0, f"Y{i}" + "z" * 25)
        fails(a, "GET")
    assert errorstats(a) == {ERRORSTATS_DISABLED: 1}
    assert len(a.engine.stats.commands.errors.codes) == 1
    assert total(a) == ERRORSTATS_LIMIT + 1 + 10_000     # every reply still counts in the total
    said = [extra for message, extra in warnings if message.startswith("errorstats stopped counting")]
    assert len(said) == 1 and said[0]["codes"].startswith("X0, X1, X10, ")   # the codes it had, logged
    a("CONFIG", "RESETSTAT")                                # counts codes again, from nothing
    fails(a, "EVAL", script, 0, "Z1")
    assert errorstats(a) == {"Z1": 1} and total(a) == 1


def test_a_code_is_the_first_word_within_redis_s_32_bytes() -> None:
    assert error_code("WRONGTYPE Operation against a key") == "WRONGTYPE"
    assert error_code("nospace") == "ERR"
    assert error_code("") == "ERR"
    assert error_code("lower case") == "lower"
    assert error_code(" leading space") == ""                # Redis counts it under "" too
    assert error_code("A" * 30 + " x") == "A" * 30            # the space is the 32nd byte of "-A...A x"
    assert error_code("A" * 31 + " x") == "ERR"               # past it: ERR
    assert error_code("É" * 15 + " x") == "É" * 15             # bytes, not characters: 30 bytes
    assert error_code("É" * 16 + " x") == "ERR"
    assert error_code("X\nY boom") == "X"                     # a newline goes out as a space
    assert error_code(CommandError("NOSCRIPT No matching script")) == "NOSCRIPT"
    assert error_code(HeliosError("oops")) == "ERR"           # (sent as "ERR oops")
    assert error_code(ValueError("BUG x")) == "ERR"


def test_codes_are_listed_in_redis_s_order_and_resetstat_clears_them() -> None:
    cs = CommandStats()
    for text in ("WRONGTYPE x", "lower x", "ERR x", "NOSCRIPT x", "ERR y", "EXECABORT x", "_u x"):
        cs.errors.add(text)
    assert cs.errors.info() == [("errorstat_ERR", "count=2"), ("errorstat_EXECABORT", "count=1"),
                                ("errorstat_NOSCRIPT", "count=1"), ("errorstat_WRONGTYPE", "count=1"),
                                ("errorstat__u", "count=1"), ("errorstat_lower", "count=1")]
    assert cs.errors.total == 7
    cs.clear()
    assert cs.errors.info() == [] and cs.errors.total == 0
    assert ErrorStats().info() == []


# -- what counts ------------------------------------------------------------------------------------

def test_every_refused_or_failed_command_counts_once(a: Atlas) -> None:
    a("SET", "s", "str")
    assert errorstats(a) == {} and total(a) == 0
    fails(a, "GET")                                  # arity
    fails(a, "nosuch", "x")                          # unknown command
    fails(a, "CONFIG", "NOSUCH")                     # unknown subcommand (its handler's error)
    fails(a, "CONFIG", "GET")                        # a subcommand's arity
    fails(a, "INCR", "s")                            # ran and failed
    fails(a, "LPUSH", "s", "x")
    fails(a, "EVALSHA", "0" * 40, 0)
    a("GET", "s")
    assert errorstats(a) == {"ERR": 5, "NOSCRIPT": 1, "WRONGTYPE": 1}
    assert total(a) == 7
    a("CONFIG", "RESETSTAT")
    assert errorstats(a) == {} and total(a) == 0


def test_refusals_before_execute_count_through_reject(a: Atlas) -> None:
    # (what a connection refuses: NOAUTH, MULTI's refusals; the error comes back to be raised)
    e = a.engine.reject([b"GET", b"k"], "NOAUTH Authentication required.")
    assert type(e) is CommandError and str(e) == "NOAUTH Authentication required."
    a.engine.reject([b"nosuch"], CommandError("ERR unknown command"))
    a.engine.reject([b"CONFIG", b"GET"], "ERR wrong number of arguments for 'config|get' command")
    assert errorstats(a) == {"ERR": 2, "NOAUTH": 1}
    cmds = a.engine.stats.commands
    assert cmds.records["get"][2] == 1 and cmds.records["config|get"][2] == 1  # rejected_calls


def test_multi_s_queue_check_names_what_redis_refuses(a: Atlas) -> None:
    def refusal(*args: str) -> str | None:
        argv = [x.encode() for x in args]
        cmd = TABLE.get(argv[0])
        assert cmd is not None
        return a.engine.queue_refusal(cmd, argv)
    assert refusal("CONFIG", "GET") == "ERR wrong number of arguments for 'config|get' command"
    assert refusal("object", "encoding") == "ERR wrong number of arguments for 'object|encoding' command"
    assert refusal("config", "nosuch") == "ERR unknown subcommand 'nosuch'. Try CONFIG HELP."
    assert refusal("CLIENT", "x" * 300) == f"ERR unknown subcommand '{'x' * 128}'. Try CLIENT HELP."
    assert refusal("CONFIG", "GET", "maxmemory") is None
    assert refusal("CONFIG", "help") is None
    assert refusal("GET", "k") is None               # no container
    assert refusal("COMMAND") is None                # a container called alone
    assert refusal("client", "SETINFO", "lib-name", "x") is None   # atlasd takes Redis 7.2's, in MULTI too


def test_a_script_s_errors_count_where_redis_counts_them(a: Atlas) -> None:
    a("SET", "s", "str")
    cases = [
        # (script, codes it adds): a failed call counts when it fails, and the script's error
        # reply made from it does not count again; a reply the script makes itself counts
        ("return redis.pcall('incr', 's')", {"ERR": 1}),
        ("return redis.call('incr', 's')", {"ERR": 1}),
        ("redis.pcall('lpush', 's', 'x'); return 1", {"WRONGTYPE": 1}),
        ("error(redis.pcall('incr', 's'))", {"ERR": 1}),
        ("local e = redis.pcall('incr', 's'); return {err = e.err}", {"ERR": 2}),
        ("local t = redis.pcall('incr', 's'); t.err = 'CHANGED x'; return t", {"ERR": 1}),
        ("redis.pcall('get'); return 1", {"ERR": 1}),                       # refused calls too
        ("redis.pcall('nosuch'); return 1", {"ERR": 1}),
        ("redis.pcall('multi'); return 1", {"ERR": 1}),
        ("redis.pcall(); return 1", {}),                                     # not a call: nothing
        ("return redis.pcall()", {"ERR": 1}),                                # until it is returned
        ("return redis.error_reply('MYERR boom')", {"MYERR": 1}),
        ("return {1, redis.error_reply('NESTED y'), {redis.error_reply('DEEP z')}}", {"NESTED": 1, "DEEP": 1}),
        ("return {1, redis.pcall('lpush', 's', 'x')}", {"WRONGTYPE": 1}),
        ("error('raw')", {"ERR": 1}),
        ("return pcall(redis.call, 'incr', 's')", {"ERR": 1}),
    ]
    for script, codes in cases:
        a("CONFIG", "RESETSTAT")
        try:
            a("EVAL", script, 0)
        except CommandError:
            pass
        assert errorstats(a) == dict(sorted(codes.items())), script
        assert total(a) == sum(codes.values()), script


def test_a_script_s_counted_error_is_marked_for_the_caller(a: Atlas) -> None:
    # The connection inside MULTI gets a script's error as a value: marked, it is not counted twice.
    a("SET", "s", "str")
    with a.engine.batch():
        reply = a("EVAL", "return redis.pcall('incr', 's')", 0)
    assert type(reply) is CountedError
    assert errorstats(a) == {"ERR": 1}
    cjson = a("EVAL", "return cjson.encode(redis.pcall('incr', 's'))", 0)
    assert b'"ignore_error_stats_update":true' in cjson   # (a script sees Redis's mark too)


def test_a_successful_command_counts_no_error(a: Atlas) -> None:
    a("SET", "k", "v")
    errors = a.engine.stats.commands.errors
    before = (dict(errors.codes), errors.total)
    for _ in range(100):
        a("GET", "k")
        a("EVAL", "return redis.call('get', 'k')", 0)
    assert (errors.codes, errors.total) == before
