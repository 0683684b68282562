"""Introspection and keyspace notifications: a real atlasd against a real redis-server (7.0), side by side.

Where replies are deterministic (CONFIG parameters and their errors, SLOWLOG
with the log off, LATENCY, ROLE, MEMORY USAGE of a missing key, CLIENT
subcommand errors, COMMAND GETKEYS) they must be equal, RESP2 and RESP3, with
the raw-socket client of test_differential_types.py.  INFO is compared by its
sections and every section's field names, in Redis's order (atlasd's own extra
fields aside), and its counters are checked to move as Redis's do.  Keyspace
notifications are compared message by message: one subscriber per server, the
same commands on both.

The redis-server here is this module's own (CONFIG SET changes it), not the
shared session one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Pair, Raw, Side, Tree, close_pair, make_pair, norm
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    # appendonly yes: atlasd always has its AOF, and Redis prints the aof_* fields only with it.
    server = RedisServer(exe, args=("--appendonly", "yes")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("introspection")) as d:
        yield d


@pytest.fixture(scope="module")
def pair(atlasd: Daemon, own_redis: RedisServer) -> Iterator[Pair]:
    p = make_pair(atlasd, own_redis)
    try:
        yield p
    finally:
        close_pair(p)


def _w(*words: str) -> list[bytes]:
    return [w.encode() for w in words]


def _pairs(tree: Tree) -> Tree:
    """A CONFIG GET reply (flat array in RESP2, map in RESP3) as a sorted map: the order is the hash table's."""
    kind, v = tree
    if kind == "*":
        return ("%", sorted(((v[i], v[i + 1]) for i in range(0, len(v), 2)), key=repr))
    return norm(tree)


def same(pair: Pair, args: list[bytes], *, config_get: bool = False) -> None:
    for resp3 in (False, True):
        got = pair.atlas.conn(resp3).call(args)
        want = pair.redis.conn(resp3).call(args)
        if config_get:
            got, want = _pairs(got), _pairs(want)
        assert norm(got) == norm(want), f"{args!r} (resp{3 if resp3 else 2}): atlasd {got!r}, redis {want!r}"


# -- CONFIG ------------------------------------------------------------------------------------

ENCODING = ["hash-max-ziplist-entries", "hash-max-ziplist-value", "hash-max-listpack-entries",
            "hash-max-listpack-value", "zset-max-ziplist-entries", "zset-max-ziplist-value",
            "zset-max-listpack-entries", "zset-max-listpack-value", "list-max-ziplist-size",
            "list-max-listpack-size", "list-compress-depth", "set-max-intset-entries"]


def test_encoding_parameters_are_stored_and_returned(pair: Pair) -> None:
    for name in ENCODING:
        same(pair, _w("CONFIG", "GET", name), config_get=True)
    same(pair, _w("CONFIG", "SET", "hash-max-ziplist-entries", "100", "zset-max-listpack-value", "32",
                  "list-max-ziplist-size", "-1", "list-compress-depth", "2", "set-max-intset-entries", "1000"))
    same(pair, _w("CONFIG", "GET", "hash-max-listpack-entries", "zset-max-ziplist-value", "list-max-listpack-size",
                  "list-compress-depth", "set-max-intset-entries"), config_get=True)
    for pattern in ("*-max-ziplist-*", "*-max-listpack-*", "set-max-intset-entries", "list-*"):
        same(pair, _w("CONFIG", "GET", pattern), config_get=True)
    # Put the defaults back (the next tests and a rerun see them).
    same(pair, _w("CONFIG", "SET", "hash-max-listpack-entries", "512", "zset-max-listpack-value", "64",
                  "list-max-listpack-size", "-2", "list-compress-depth", "0", "set-max-intset-entries", "512"))


@pytest.mark.parametrize("args", [
    ["CONFIG", "SET", "hash-max-ziplist-entries", "x"],
    ["CONFIG", "SET", "hash-max-ziplist-entries", "-1"],
    ["CONFIG", "SET", "list-compress-depth", "-1"],
    ["CONFIG", "SET", "maxmemory-policy", "foo"],
    ["CONFIG", "SET", "maxmemory", "1x"],
    ["CONFIG", "SET", "maxmemory-samples", "0"],
    ["CONFIG", "SET", "notify-keyspace-events", "Q"],
    ["CONFIG", "SET", "daemonize", "no"],
    ["CONFIG", "SET", "databases", "4"],
    ["CONFIG", "SET", "timeout", "-1"],
    ["CONFIG", "SET", "timeout", "5", "timeout", "6"],
    ["CONFIG", "SET", "slowlog-log-slower-than", "-5"],
    ["CONFIG", "SET", "slowlog-max-len", "x"],
    ["CONFIG", "SET", "no-such-parameter", "1"],
    ["CONFIG", "SET", "appendfsync", "sometimes"],
    ["CONFIG", "SET", "client-output-buffer-limit", "normal 1 2"],
    ["CONFIG", "SET", "client-output-buffer-limit", "foo 1 2 3"],
    ["CONFIG", "SET", "client-output-buffer-limit", "pubsub x 1 1"],
    ["CONFIG", "SET", "client-output-buffer-limit", "pubsub 1 1 -1"],
    ["CONFIG", "SET", "client-output-buffer-limit", "pubsub 1 1 1.5"],
    ["CONFIG", "SET", "hz", "-1"],
    ["CONFIG", "SET", "hz", "abc"],
    ["CONFIG", "SET", "hz", "2147483648"],
    ["CONFIG", "SET", "hash-max-listpack-value", "-1"],  # the memory parameters: Redis's memory notation
    ["CONFIG", "SET", "zset-max-ziplist-value", "abc"],
    ["CONFIG", "SET", "stream-node-max-bytes", "1x"],
    ["CONFIG", "SET", "stream-node-max-bytes", "99999999999999999999"],
    ["CONFIG", "SET", "proto-max-bulk-len", "10"],     # below 1mb: the CONFIG SET raising it would not fit
    ["CONFIG", "SET", "proto-max-bulk-len", "1kb"],
    ["CONFIG", "SET", "proto-max-bulk-len", "0"],
    ["CONFIG", "SET", "proto-max-bulk-len", "-1"],
    ["CONFIG", "SET", "proto-max-bulk-len", "abc"],
    ["CONFIG", "SET", "proto-max-bulk-len", "99999999999999999999"],
    ["CONFIG", "SET", "timeout"],
    ["CONFIG", "GET"],
    ["CONFIG", "RESETSTAT", "x"],
    ["CONFIG", "FOO"],
])
def test_config_errors_match(pair: Pair, args: list[str]) -> None:
    same(pair, _w(*args))


@pytest.mark.parametrize("flags", ["KEA", "KEAnm", "Kg$", "Elshz", "Ex", "Ee", "KEg$lshzxetd", "Kn", "", "AK"])
def test_notify_keyspace_events_round_trip(pair: Pair, flags: str) -> None:
    same(pair, _w("CONFIG", "SET", "notify-keyspace-events", flags))
    same(pair, _w("CONFIG", "GET", "notify-keyspace-events"), config_get=True)
    same(pair, _w("CONFIG", "SET", "notify-keyspace-events", ""))


def test_runtime_parameters_round_trip(pair: Pair) -> None:
    sets = [("maxmemory", "0"), ("maxmemory-policy", "allkeys-lru"), ("maxmemory-policy", "noeviction"),
            ("maxmemory-samples", "7"), ("maxmemory-samples", "5"), ("timeout", "0"),
            ("slowlog-max-len", "64"), ("slowlog-max-len", "128"), ("slowlog-log-slower-than", "10000"),
            ("hash-max-listpack-value", "1kb"), ("hash-max-ziplist-value", "64"), ("zset-max-listpack-value", "2k"),
            ("zset-max-listpack-value", "64"), ("stream-node-max-bytes", "8kb"), ("stream-node-max-bytes", "4096"),
            ("hz", "0"), ("hz", "1000"), ("hz", "50"), ("hz", "10"),  # (kept within 1..500, as Redis does)
            ("client-output-buffer-limit", "normal 0 0 0 replica 1mb 1mb 10 PUBSUB 64mb 16mb 120"),
            ("client-output-buffer-limit", "pubsub 1kb 1kb 5 pubsub 2kb 2kb 6"),
            ("client-output-buffer-limit", "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60"),
            ("proto-max-bulk-len", "2mb"), ("proto-max-bulk-len", "1048576"), ("proto-max-bulk-len", "512mb")]
    for name, value in sets:
        same(pair, _w("CONFIG", "SET", name, value))
        same(pair, _w("CONFIG", "GET", name), config_get=True)
    same(pair, _w("CONFIG", "GET", "maxmemory", "nosuch", "timeout", "maxmemory-policy", "maxmemory-samples",
                  "slowlog-log-slower-than", "slowlog-max-len", "notify-keyspace-events"), config_get=True)


# -- SLOWLOG LATENCY MEMORY ROLE -----------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["SLOWLOG", "GET", "x"], ["SLOWLOG", "GET", "-2"], ["SLOWLOG", "FOO"], ["SLOWLOG", "LEN", "x"],
    ["LATENCY", "LATEST"], ["LATENCY", "HISTORY", "command"], ["LATENCY", "RESET"], ["LATENCY", "FOO"],
    ["LATENCY", "GRAPH", "command"], ["LATENCY", "GRAPH", "a b"], ["LATENCY", "GRAPH"], ["LATENCY", "graph", "a", "b"],
    ["PUBSUB", "SHARDCHANNELS"], ["PUBSUB", "SHARDCHANNELS", "x*"], ["PUBSUB", "shardchannels", "x*", "y"],
    ["PUBSUB", "SHARDNUMSUB"], ["PUBSUB", "SHARDNUMSUB", "a", "b"], ["PUBSUB", "CHANNELS", "x*", "y"],
    ["PUBSUB", "channels", "x*", "y"],
    ["MEMORY", "USAGE", "nokey"], ["MEMORY", "USAGE", "nokey", "SAMPLES", "x"], ["MEMORY", "USAGE", "a", "FOO", "1"],
    ["MEMORY", "FOO"], ["MEMORY", "USAGE"], ["ROLE"], ["ROLE", "x"],
])
def test_introspection_replies_match(pair: Pair, args: list[str]) -> None:
    same(pair, _w(*args))


def test_slowlog_off_then_reset(pair: Pair) -> None:
    same(pair, _w("CONFIG", "SET", "slowlog-log-slower-than", "-1"))
    same(pair, _w("SLOWLOG", "RESET"))
    same(pair, _w("SET", "a", "1"))
    same(pair, _w("SLOWLOG", "GET"))
    same(pair, _w("SLOWLOG", "GET", "0"))
    same(pair, _w("SLOWLOG", "LEN"))
    same(pair, _w("CONFIG", "SET", "slowlog-log-slower-than", "10000"))


# -- CLIENT and COMMAND ----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["CLIENT", "REPLY", "FOO"], ["CLIENT", "REPLY", "ON"], ["CLIENT", "TRACKING", "OFF"], ["CLIENT", "TRACKING", "foo"],
    ["CLIENT", "NO-EVICT", "ON"], ["CLIENT", "NO-EVICT", "OFF"], ["CLIENT", "NO-EVICT", "maybe"],
    ["CLIENT", "PAUSE", "x"], ["CLIENT", "PAUSE", "10", "foo"], ["CLIENT", "UNPAUSE"],
    ["CLIENT", "KILL", "ID", "999999"], ["CLIENT", "KILL", "1.2.3.4:5"], ["CLIENT", "KILL", "foo", "bar"],
    ["CLIENT", "KILL", "SKIPME", "no", "ID", "999999"], ["CLIENT", "KILL", "ID"],
    ["CLIENT", "UNBLOCK", "999999"], ["CLIENT", "UNBLOCK", "x"], ["CLIENT", "UNBLOCK", "1", "foo"],
    ["CLIENT", "GETREDIR"],
    ["COMMAND", "GETKEYS", "get"], ["COMMAND", "GETKEYS", "set", "a", "b"], ["COMMAND", "GETKEYS", "ping", "x"],
    ["COMMAND", "GETKEYS", "foo", "x"], ["COMMAND", "GETKEYS", "get", "a", "b"],
    ["COMMAND", "GETKEYS", "mset", "a", "1", "b", "2"], ["COMMAND", "GETKEYS", "del", "a", "b", "c"],
    ["COMMAND", "GETKEYS", "eval", "x", "2", "a", "b", "c"], ["COMMAND", "GETKEYS", "eval", "x", "5", "a"],
    ["COMMAND", "GETKEYS", "zunionstore", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
    ["COMMAND", "GETKEYS", "lmpop", "2", "a", "b", "LEFT"], ["COMMAND", "GETKEYS", "blpop", "a", "b", "0"],
    ["COMMAND", "GETKEYS"],
    ["CLIENT", "HELP"], ["CONFIG", "HELP"], ["COMMAND", "HELP"], ["SLOWLOG", "HELP"], ["MEMORY", "HELP"],
    ["LATENCY", "HELP"], ["PUBSUB", "HELP"], ["OBJECT", "HELP"], ["SCRIPT", "HELP"],
])
def test_client_and_command_replies_match(pair: Pair, args: list[str]) -> None:
    same(pair, _w(*args))


def test_command_info_acl_categories_of_every_command(pair: Pair) -> None:
    """COMMAND INFO's ACL categories (element 6, in Redis's order) for every command atlasd has."""
    kind, names = pair.atlas.r2.call(_w("COMMAND", "LIST"))
    args = [b"COMMAND", b"INFO", *(v for _, v in names)]
    (_, got), (_, want) = pair.atlas.r2.call(args), pair.redis.r2.call(args)
    compared = 0
    for (_, name), g, w in zip(names, got, want, strict=True):
        if w[0] == "*":  # (a command Redis 7.0 lacks answers nil there)
            assert g[1][6] == w[1][6], (name, g[1][6], w[1][6])
            compared += 1
    assert compared > 150


def test_client_list_has_redis_fields(pair: Pair) -> None:
    def fields(side: Side) -> tuple[list[str], str]:
        kind, line = side.r2.call(_w("CLIENT", "INFO"))
        text = line.decode()
        names = [kv.split("=", 1)[0] for kv in text.split()]
        return [n for n in names if not n.startswith("lib-")], dict(kv.split("=", 1) for kv in text.split())["cmd"]
    (got, got_cmd), (want, want_cmd) = fields(pair.atlas), fields(pair.redis)
    assert got == want
    assert got_cmd == want_cmd == "client|info"


def test_client_kill_of_itself_replies_before_closing(atlasd: Daemon, own_redis: RedisServer) -> None:
    for port, pw in ((atlasd.port, atlasd.password), (own_redis.port, None)):
        raw = Raw(port, pw, False)
        _, cid = raw.call(_w("CLIENT", "ID"))
        assert raw.call(_w("CLIENT", "KILL", "ID", cid, "SKIPME", "no")) == (":", "1")
        with pytest.raises(ConnectionError):
            raw.call(_w("PING"))
        raw.close()


# -- INFO ----------------------------------------------------------------------------------------------

CLIENT_FIELDS = {
    "server": ["redis_version", "redis_mode", "os", "arch_bits", "process_id", "run_id", "tcp_port",
               "uptime_in_seconds", "uptime_in_days", "hz", "executable"],
    "clients": ["connected_clients", "maxclients", "blocked_clients", "tracking_clients"],
    "memory": ["used_memory", "used_memory_human", "used_memory_rss", "used_memory_peak", "used_memory_dataset",
               "total_system_memory", "maxmemory", "maxmemory_human", "maxmemory_policy", "mem_fragmentation_ratio"],
    "persistence": ["loading", "rdb_changes_since_last_save", "rdb_bgsave_in_progress", "rdb_last_save_time",
                    "rdb_last_bgsave_status", "aof_enabled", "aof_rewrite_in_progress", "aof_last_write_status"],
    "stats": ["total_connections_received", "total_commands_processed", "instantaneous_ops_per_sec",
              "total_net_input_bytes", "total_net_output_bytes", "rejected_connections", "expired_keys",
              "evicted_keys", "keyspace_hits", "keyspace_misses", "pubsub_channels", "pubsub_patterns"],
    "replication": ["role", "connected_slaves", "master_replid", "master_repl_offset"],
    "cpu": ["used_cpu_sys", "used_cpu_user", "used_cpu_sys_children", "used_cpu_user_children"],
    "cluster": ["cluster_enabled"],
}
SAME_VALUES = ["redis_mode", "arch_bits", "role", "connected_slaves", "cluster_enabled", "maxmemory",
               "maxmemory_policy", "loading", "master_repl_offset"]


def _info(raw: Raw, *sections: str) -> tuple[list[str], dict[str, str]]:
    kind, body = raw.call(_w("INFO", *sections))
    text = body.decode() if isinstance(body, bytes) else body
    heads = [line[2:] for line in text.split("\r\n") if line.startswith("# ")]
    fields = dict(line.split(":", 1) for line in text.split("\r\n") if line and not line.startswith("#"))
    return heads, fields


@pytest.mark.parametrize("sections", [(), ("default",), ("all",), ("everything",), ("server", "clients"),
                                      ("cpu",), ("replication",), ("cluster",), ("nosuch",), ("keyspace",)])
def test_info_sections_match(pair: Pair, sections: tuple[str, ...]) -> None:
    pair.atlas.r2.call(_w("SET", "infokey", "1"))
    pair.redis.r2.call(_w("SET", "infokey", "1"))
    (got, _), (want, _) = _info(pair.atlas.r2, *sections), _info(pair.redis.r2, *sections)
    assert got == want


def test_info_has_the_fields_clients_read(pair: Pair) -> None:
    _, got = _info(pair.atlas.r2, "everything")
    _, want = _info(pair.redis.r2, "everything")
    for section, names in CLIENT_FIELDS.items():
        for name in names:
            assert name in want, f"redis 7.0 has no {section}.{name}?"
            assert name in got, f"atlasd's INFO lacks {section}.{name}"
    for name in SAME_VALUES:
        assert got[name] == want[name], name


# atlasd's fields Redis 7.0 does not have (README: atlasd as a drop-in Redis); every other field of
# these sections is Redis 7.0.15's, in its order.
ATLAS_EXTRAS = {
    "server": {"atlas_version", "python_version", "unix_socket", "data_dir"},
    "clients": {"pubsub_clients", "watching_clients"},  # (Redis 7.2's)
    "persistence": {"rdb_last_bgsave_error", "aof_last_error", "aof_fsync_policy", "aof_fsyncs",
                    "aof_fsync_seconds_total", "aof_last_seq"},
    "stats": {"total_aof_bytes"},
}
# Sections whose lines are per command, error or database: their names follow the traffic.
TRAFFIC_SECTIONS = {"commandstats", "errorstats", "latencystats", "keyspace"}


def _names(raw: Raw) -> dict[str, list[str]]:
    kind, body = raw.call(_w("INFO", "everything"))
    text = body.decode() if isinstance(body, bytes) else body
    out: dict[str, list[str]] = {}
    names: list[str] = []
    for line in text.split("\r\n"):
        if line.startswith("# "):
            names = out.setdefault(line[2:].lower(), [])
        elif line:
            names.append(line.split(":", 1)[0])
    return out


def test_info_field_names_match_redis_in_order(pair: Pair) -> None:
    got, want = _names(pair.atlas.r2), _names(pair.redis.r2)
    assert list(got) == list(want)
    for section, names in want.items():
        if section in TRAFFIC_SECTIONS:
            continue
        extras = ATLAS_EXTRAS.get(section, set())
        assert extras <= set(got[section]), f"{section}: documented extras gone: {extras - set(got[section])}"
        assert [n for n in got[section] if n not in extras] == names, section


def _stats(raw: Raw, section: str = "everything") -> dict[str, str]:
    return _info(raw, section)[1]


def test_info_reads_and_writes_grow_with_traffic(pair: Pair) -> None:
    for side in (pair.atlas, pair.redis):
        raw = side.r2
        before = _stats(raw, "stats")
        for _ in range(20):  # one request, one reply at a time: a read and a write each
            assert raw.call(_w("PING")) == ("+", "PONG")
        after = _stats(raw, "stats")
        for name in ("total_reads_processed", "total_writes_processed"):
            assert int(after[name]) >= int(before[name]) + 20, (side is pair.atlas, name, before[name], after[name])
        assert after["io_threaded_reads_processed"] == "0"


def test_info_network_rates_follow_traffic(pair: Pair) -> None:
    """instantaneous_input/output_kbps: sampled every second (as instantaneous_ops_per_sec), so
    they rise within a few seconds of traffic; polled with a deadline while the traffic runs."""
    value = b"x" * 64 * 1024
    for side in (pair.atlas, pair.redis):
        raw = side.r2
        deadline = time.monotonic() + 15
        while True:
            raw.call_many([[b"SET", b"ratekey", value], [b"GET", b"ratekey"]])
            fields = _stats(raw, "stats")
            if float(fields["instantaneous_input_kbps"]) > 0 and float(fields["instantaneous_output_kbps"]) > 0:
                break
            assert time.monotonic() < deadline, (side is pair.atlas, fields["instantaneous_input_kbps"],
                                                 fields["instantaneous_output_kbps"])
        assert fields["instantaneous_input_repl_kbps"] == fields["instantaneous_output_repl_kbps"] == "0.00"
        raw.call(_w("DEL", "ratekey"))


def _memory(raw: Raw) -> dict[str, int]:
    fields = _stats(raw, "memory")
    return {k: int(v) for k, v in fields.items() if k.startswith(("used_memory_scripts", "used_memory_functions",
                                                                   "used_memory_lua", "used_memory_vm_"))
            and not k.endswith("_human")}


def test_info_script_memory_follows_the_caches(pair: Pair) -> None:
    """used_memory_scripts_eval grows with SCRIPT LOAD and returns to its base after SCRIPT FLUSH;
    used_memory_functions likewise with FUNCTION LOAD and FLUSH; used_memory_scripts is their sum."""
    library = b"#!lua name=infolib\nredis.register_function('infofn', function() return 1 end)"
    for side in (pair.atlas, pair.redis):
        raw = side.r2
        raw.call(_w("SCRIPT", "FLUSH"))
        raw.call(_w("FUNCTION", "FLUSH"))
        base = _memory(raw)
        assert raw.call([b"SCRIPT", b"LOAD", b"return '" + b"y" * 500 + b"'"])[0] == "$"
        loaded = _memory(raw)
        assert loaded["used_memory_scripts_eval"] >= base["used_memory_scripts_eval"] + 500, side is pair.atlas
        assert loaded["used_memory_lua"] > 0 and loaded["used_memory_vm_total"] >= loaded["used_memory_vm_eval"] > 0
        assert raw.call([b"FUNCTION", b"LOAD", library]) == ("$", b"infolib")
        with_lib = _memory(raw)
        assert with_lib["used_memory_functions"] > base["used_memory_functions"], side is pair.atlas
        assert with_lib["used_memory_scripts"] == (with_lib["used_memory_scripts_eval"]
                                                   + with_lib["used_memory_functions"])
        raw.call(_w("SCRIPT", "FLUSH"))
        raw.call(_w("FUNCTION", "FLUSH"))
        after = _memory(raw)
        assert after["used_memory_scripts_eval"] == base["used_memory_scripts_eval"], side is pair.atlas
        assert after["used_memory_functions"] == base["used_memory_functions"], side is pair.atlas
    human = _stats(pair.atlas.r2, "memory")
    for name in ("used_memory_lua_human", "used_memory_vm_total_human", "used_memory_scripts_human"):
        value = human[name]
        assert value.endswith("B") or (value[-1] in "KMGT" and value[:-1].count(".") == 1), (name, value)


def test_info_counts_the_keys_loaded_at_startup(tmp_path_factory: pytest.TempPathFactory) -> None:
    """rdb_last_load_keys_loaded: the keys the snapshot gave back at the last start, as Redis counts
    the keys of the RDB (or its AOF's RDB base) it loaded; aof_base_size is that snapshot's size."""
    with running_daemon(tmp_path_factory.mktemp("keysloaded")) as d:
        with d.client() as c:
            assert c.info("persistence")["rdb_last_load_keys_loaded"] == 0
            c.mset({f"k{i}": "v" for i in range(25)})
            c.save()
            c.set("after", "1")  # in the AOF only: replayed, not loaded from the snapshot
            size = c.info("persistence")["aof_base_size"]
            assert size == (d.data / "dump.rdb").stat().st_size > 0
        d.stop()
        d.start()
        with d.client() as c:
            fields = c.info("persistence")
            assert c.dbsize() == 26
            assert fields["rdb_last_load_keys_loaded"] == 25
            assert fields["rdb_last_load_keys_expired"] == 0
            assert fields["aof_base_size"] == size


# -- keyspace notifications ------------------------------------------------------------------------------

EVENTS = [
    ["SET", "k", "v"], ["SET", "k", "v2", "EX", "100"], ["SETEX", "k2", "100", "v"], ["APPEND", "k", "x"],
    ["INCR", "n"], ["INCRBY", "n", "5"], ["DECR", "n"], ["INCRBYFLOAT", "n", "1.5"], ["SETRANGE", "k", "1", "ab"],
    ["MSET", "m1", "1", "m2", "2"], ["GETSET", "m1", "x"], ["GETDEL", "m2"], ["SETNX", "m1", "y"],
    ["EXPIRE", "k", "500"], ["PEXPIRE", "k", "500000"], ["PERSIST", "k"], ["EXPIRE", "k", "-1"],
    ["DEL", "k2", "nope"], ["RENAME", "m1", "m3"], ["UNLINK", "m3"],
    ["LPUSH", "l", "a", "b"], ["RPUSH", "l", "c"], ["LPOP", "l"], ["RPOP", "l"], ["LSET", "l", "0", "z"],
    ["LINSERT", "l", "BEFORE", "z", "y"], ["LREM", "l", "0", "y"], ["RPUSH", "l", "q"], ["LTRIM", "l", "0", "0"],
    ["RPOP", "l"],
    ["HSET", "h", "f", "1", "g", "2"], ["HINCRBY", "h", "f", "2"], ["HDEL", "h", "f"], ["HDEL", "h", "g"],
    ["SADD", "s", "a", "b"], ["SREM", "s", "a"], ["SPOP", "s"], ["SADD", "s1", "x"], ["SADD", "s2", "x"],
    ["SINTERSTORE", "s3", "s1", "s2"], ["SUNIONSTORE", "s4", "s1", "s2"],
    ["ZADD", "z", "1", "a", "2", "b"], ["ZINCRBY", "z", "1", "a"], ["ZREM", "z", "a"], ["ZPOPMIN", "z"],
    ["ZADD", "z", "1", "a", "2", "b", "3", "c"], ["ZREMRANGEBYSCORE", "z", "0", "1"],
    ["ZREMRANGEBYRANK", "z", "0", "0"],
    ["SET", "gone", "1", "PX", "1"],
]


def _messages(raw: Raw, until: bytes) -> list[tuple[bytes, bytes]]:
    """pmessages up to the one on channel `until` (a marker published after the commands)."""
    out: list[tuple[bytes, bytes]] = []
    while True:
        kind, items = raw._read()
        vals = [v for _, v in items]
        assert vals[0] == b"pmessage", (kind, items)
        if vals[2] == until:
            return out
        out.append((vals[2], vals[3]))


@pytest.mark.parametrize("flags", ["KEA", "Kg", "E$", "Klshz", "KEn", "Ex"])
def test_keyspace_notifications_match(pair: Pair, atlasd: Daemon, own_redis: RedisServer, flags: str) -> None:
    streams = []
    for side, port, pw in ((pair.atlas, atlasd.port, atlasd.password), (pair.redis, own_redis.port, None)):
        side.r2.call(_w("FLUSHALL"))
        side.r2.call(_w("CONFIG", "SET", "notify-keyspace-events", flags))
        sub = Raw(port, pw, False)
        try:
            assert sub.call(_w("PSUBSCRIBE", "__key*__:*", "marker"))[0] == "*"
            sub._read()  # the second subscription's reply
            replies = side.r2.call_many([[w.encode() for w in c] for c in EVENTS])
            # "gone" (PX 1) expires: a read after its millisecond (or the active cycle) deletes it, and
            # both servers report "expired".  Poll until it is gone: waiting on a condition, not a sleep.
            while side.r2.call(_w("EXISTS", "gone")) != (":", "0"):
                pass
            side.r2.call(_w("PUBLISH", "marker", "end"))
            streams.append((replies, _messages(sub, b"marker")))
        finally:
            sub.close()
            side.r2.call(_w("CONFIG", "SET", "notify-keyspace-events", ""))
    (a_replies, got), (r_replies, want) = streams
    assert [norm(x) for x in a_replies] == [norm(x) for x in r_replies]
    assert got == want
