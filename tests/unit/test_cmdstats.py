"""INFO commandstats and latencystats in process: what counts as a call, a rejection and a failure,
under which name, and what CONFIG RESETSTAT resets (cmdstats.py, Engine.execute)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from helios_core.atlas.cmdstats import HIST, CommandStats, _at_percentile, add, new_record
from helios_core.atlas.commands.server import info_text
from helios_core.atlas.commands.table import TABLE
from helios_core.errors import CommandError
from tests.unit.atlas_harness import Atlas


@pytest.fixture
def a(tmp_path: Path) -> Iterator[Atlas]:
    atlas = Atlas(tmp_path / "data")
    yield atlas
    atlas.engine.close()


def stats(a: Atlas) -> dict[str, dict[str, float]]:
    out = {}
    for line in info_text(a.engine, None, ["commandstats"]).splitlines():
        if line.startswith("cmdstat_"):
            name, fields = line[len("cmdstat_"):].split(":", 1)
            out[name] = {k: float(v) for k, v in (f.split("=") for f in fields.split(","))}
    return out


def counts(a: Atlas) -> dict[str, tuple[int, int, int]]:
    return {n: (int(f["calls"]), int(f["rejected_calls"]), int(f["failed_calls"])) for n, f in stats(a).items()}


def fails(a: Atlas, *args: object) -> str:
    with pytest.raises(CommandError) as e:
        a(*args)
    return str(e.value)


# -- attacker / edge cases first ------------------------------------------------------------------

def test_names_from_clients_never_grow_the_table(a: Atlas) -> None:
    # Unknown commands and subcommands count nowhere (as in Redis): their names come from the client.
    for i in range(2000):
        fails(a, f"nosuch{i}")
        fails(a, "CONFIG", f"sub{i}")
        fails(a, "CLIENT", b"x" * 100_000 + b"%d" % i)   # (a long one is not even lower-cased)
    a("GET", "k")
    a("gEt", "k")
    assert counts(a) == {"get": (2, 0, 0)}
    assert len(a.engine.stats.commands.records) <= len(TABLE.commands) + 100
    assert sum(a.engine.stats.commands.values()) == 2


def test_a_parked_or_refused_command_is_not_timed_as_a_call(a: Atlas) -> None:
    fails(a, "GET")                                  # arity: refused before running
    fails(a, "CONFIG", "GET")                        # a subcommand's arity: under its own name
    fails(a, "CONFIG")                               # the container's own arity
    fails(a, "INCR")
    a("SET", "k", "v")
    fails(a, "INCR", "k")                            # ran, answered an error
    assert counts(a) == {"get": (0, 1, 0), "config|get": (0, 1, 0), "config": (0, 1, 0), "incr": (1, 1, 1),
                         "set": (1, 0, 0)}
    assert stats(a)["get"]["usec"] == 0


def test_subcommands_count_under_their_own_names(a: Atlas) -> None:
    a("CONFIG", "GET", "maxmemory")
    a("config", "get", "timeout")
    a("SLOWLOG", "LEN")
    a("COMMAND", "COUNT")
    a("COMMAND")
    a("OBJECT", "HELP")
    assert counts(a) == {"config|get": (2, 0, 0), "slowlog|len": (1, 0, 0), "command|count": (1, 0, 0),
                         "command": (1, 0, 0), "object|help": (1, 0, 0)}


def test_scripts_count_their_commands_and_their_refusals(a: Atlas) -> None:
    a("EVAL", "redis.call('set', 'a', '1'); return redis.call('get', 'a')", 0)
    fails(a, "EVAL", "return redis.call('incr', 'a', 'b')", 0)             # arity, from a script
    fails(a, "EVAL_RO", "return redis.call('set', 'a', '2')", 0)           # a write from a read-only one
    fails(a, "EVAL", "return redis.call('nosuch')", 0)                     # unknown: nowhere
    a("SET", "s", "x")
    fails(a, "EVAL", "return redis.pcall('incr', 's')", 0)                 # pcall's error returned: failed
    assert counts(a) == {"eval": (4, 0, 3), "eval_ro": (1, 0, 1), "set": (2, 1, 0), "get": (1, 0, 0),
                         "incr": (1, 1, 1)}


def test_time_is_the_handlers_and_resetstat_resets_it_all(a: Atlas) -> None:
    for _ in range(50):
        a("SET", "k", "v")
    fails(a, "GET")
    s = stats(a)["set"]
    assert s["calls"] == 50 and s["usec"] > 0
    assert s["usec_per_call"] == pytest.approx(s["usec"] / 50, abs=0.01)
    lat = info_text(a.engine, None, ["latencystats"])
    assert re.search(r"^latency_percentiles_usec_set:p50=\d+\.\d{3},p99=\d+\.\d{3},p99\.9=\d+\.\d{3}\r?$", lat,
                     re.M)
    assert "latency_percentiles_usec_get" not in lat          # refused calls are not timed
    a("CONFIG", "RESETSTAT")
    # (the records live on in the dispatch cache, zeroed: the next SET counts from 1)
    a("SET", "k", "v")
    assert counts(a) == {"config|resetstat": (1, 0, 0), "set": (1, 0, 0)}
    assert "latency_percentiles_usec_set" in info_text(a.engine, None, ["latencystats"])
    assert info_text(a.engine, None, ["commandstats"]).startswith("# Commandstats")


def test_percentiles_are_the_highest_value_of_their_bucket() -> None:
    rec = new_record()
    for ns in [1000] * 98 + [50_000, 2_000_000]:
        add(rec, ns, False)
    # 1000 ns: 1000*1000 < 2**20, so the bucket's highest is isqrt(2**20 - 1) = 1023 ns
    assert _at_percentile(rec, 100, 50) == 1023
    assert 50_000 <= _at_percentile(rec, 100, 99) < 50_000 * 1.42
    assert 2_000_000 <= _at_percentile(rec, 100, 99.9) < 2_000_000 * 1.42
    assert sum(rec[HIST:]) == 100
    empty = CommandStats()
    assert empty.info() == [] and empty.latency() == [] and dict(empty) == {}


def test_latency_histogram_buckets_are_powers_of_two_of_usec() -> None:
    cs = CommandStats()
    for ns in (100, 1023, 1024, 7000, 9000, 9000):
        add(cs.record_for("get"), ns, False)
    add(cs.record_for("config|get"), 5000, False)
    cs.record_for("set")  # (made by the dispatch cache, never called: not listed)
    # under 1024 ns -> 1, under 2048 -> 2, under 8192 -> 8, under 16384 -> 16 (Redis's keys)
    assert cs.histograms(["get"]) == {b"get": {b"calls": 6, b"histogram_usec": {1: 2, 2: 3, 8: 4, 16: 6}}}
    assert list(cs.histograms(["config", "set", "nosuch" * 1000])) == [b"config|get"]
    assert list(cs.histograms(None)) == [b"config|get", b"get"]
    cs.clear()
    assert cs.histograms(None) == {}
