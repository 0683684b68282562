"""atlasd's JSON-lines protocol (helios_core/atlas/jsonlines.py), spoken over a raw socket.

A connection whose first byte is "{" sends one JSON request per line, in the
AOF's record format or as {"cmd": ..., "args": [...]}, and gets one JSON
reply line per request.  The codec's pure functions are tested first, then a
real daemon: replies, errors, pipelining, atomic batches, auth, pub/sub, the
durability rule across a SIGKILL, and a fuzz run that must never cost more
than an error line.
"""

from __future__ import annotations

import base64
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.atlas.commands.table import OK
from helios_core.atlas.commands.zsets import Pairs
from helios_core.atlas.jsonlines import JsonBad, JsonBatch, JsonLinesParser, encode_json, encode_json_error
from helios_core.atlas.resp import NULL_ARRAY, Push, Replies
from helios_core.errors import CommandError
from tests.integration.test_atlasd_support import Daemon, running_daemon

pytestmark = pytest.mark.timeout(120)


# -- the codec, without a server ---------------------------------------------------------

def parse(*lines: bytes, unauth: bool = False) -> list[Any]:
    p = JsonLinesParser()
    p.set_unauthenticated(unauth, 1 << 20)
    out = p.feed(b"".join(line + b"\n" for line in lines))
    assert p.error is None
    return out


def test_aof_record_fields_become_commands() -> None:
    assert parse(b'{"cmd":"SET","key":"foo","value":"bar","ttl":0}') == [[b"SET", b"foo", b"bar"]]
    assert parse(b'{"cmd":"SET","key":"k","value":"v","ttl":1.5}') == [[b"SET", b"k", b"v", b"PX", b"1500"]]
    assert parse(b'{"cmd":"SET","key":"k","value":"v","exp":1700000000000}') == [
        [b"SET", b"k", b"v", b"PXAT", b"1700000000000"]]
    assert parse(b'{"cmd":"SET","key_b64":"/w==","value_b64":"AP8="}') == [[b"SET", b"\xff", b"\x00\xff"]]
    assert parse(b'{"cmd":"EXPIRE","key":"k","ttl":10}') == [[b"PEXPIRE", b"k", b"10000"]]
    assert parse(b'{"cmd":"PEXPIRE","key":"k","exp":5}') == [[b"PEXPIREAT", b"k", b"5"]]
    assert parse(b'{"cmd":"ZADD","key":"z","members":[[1.5,"a"],["inf","b"]]}') == [
        [b"ZADD", b"z", b"1.5", b"a", b"inf", b"b"]]
    assert parse(b'{"cmd":"ZADD","key":"z","members_b64":[[2,"/w=="]]}') == [[b"ZADD", b"z", b"2", b"\xff"]]
    assert parse(b'{"cmd":"ZREM","key":"z","members":["a","b"]}') == [[b"ZREM", b"z", b"a", b"b"]]
    assert parse(b'{"cmd":"DEL","key":"k"}', b'{"cmd":"FLUSHALL"}') == [[b"DEL", b"k"], [b"FLUSHALL"]]
    # An AOF line pasted as it is: seq and crc are ignored.
    assert parse(b'{"seq":7,"cmd":"DEL","key":"k","crc":123}') == [[b"DEL", b"k"]]


def test_generic_requests() -> None:
    assert parse(b'{"cmd":"ZADD","args":["z","1","m"]}') == [[b"ZADD", b"z", b"1", b"m"]]
    assert parse(b'{"cmd":"incrby","key":"n","args":[5]}') == [[b"incrby", b"n", b"5"]]
    assert parse(b'{"cmd":"ECHO","args":[{"b64":"AAE="}]}') == [[b"ECHO", b"\x00\x01"]]
    assert parse(b'{"cmd":"MGET","args_b64":["YQ==","Yg=="]}') == [[b"MGET", b"a", b"b"]]
    assert parse(b'{"cmd":"PING"}', b"   ", b'{"cmd":"PING"}\r') == [[b"PING"], [b"PING"]]
    batch = parse(b'{"cmd":"MULTI","ops":[{"cmd":"SET","key":"a","value":"1"},{"cmd":"INCR","key":"a"}]}')[0]
    assert type(batch) is JsonBatch and batch.ops == [[b"SET", b"a", b"1"], [b"INCR", b"a"]]
    assert parse(b'{"cmd":"MULTI"}') == [[b"MULTI"]]


@pytest.mark.parametrize("line,why", [
    (b"not json", "invalid JSON"),
    (b'{"cmd":"SET","key":"a"', "invalid JSON"),
    (b"[1,2]", "must be a JSON object, not a list"),
    (b'{"key":"a"}', 'needs "cmd"'),
    (b'{"cmd":""}', 'needs "cmd"'),
    (b'{"cmd":"SET","key":"a","value":true}', "'value' must be a string"),
    (b'{"cmd":"GET","key_b64":"***"}', "not valid base64"),
    (b'{"cmd":"ECHO","args":"x"}', "'args' must be a list"),
    (b'{"cmd":"ECHO","args":[null]}', "must be a string, a number"),
    (b'{"cmd":"SET","key":"a","value":"b","ttl":"x"}', "'ttl' must be a number"),
    (b'{"cmd":"SET","key":"a","value":"b","exp":1.5}', "'exp' must be an integer"),
    (b'{"cmd":"ZADD","key":"z","members":[[1]]}', "[score, member] pairs"),
    (b'{"cmd":"MULTI","ops":{}}', "'ops' must be a list"),
    (b'{"cmd":"MULTI","ops":[{"cmd":"GET","key":7.5},3]}', "must be a JSON object"),
])
def test_bad_lines_become_errors(line: bytes, why: str) -> None:
    (item,) = parse(line)
    assert type(item) is JsonBad and item.error.startswith("ERR ") and why in item.error


def test_lines_split_across_reads_and_limits() -> None:
    p = JsonLinesParser()
    data = b'{"cmd":"ECHO","args":["' + b"x" * 100 + b'"]}\n{"cmd":"PING"}\n'
    out: list[Any] = []
    for i in range(0, len(data), 7):
        out += p.feed(data[i:i + 7])
    assert out == [[b"ECHO", b"x" * 100], [b"PING"]] and p.buffered() == 0
    # Before AUTH, RESP's limits for strangers: 10 arguments, 16 KiB each, a line of 64 KiB.
    (item,) = parse(b'{"cmd":"DEL","args":[' + b",".join([b'"k"'] * 11) + b"]}", unauth=True)
    assert type(item) is JsonBad and "more than 10 arguments" in item.error
    (item,) = parse(b'{"cmd":"ECHO","args":["' + b"x" * 20000 + b'"]}', unauth=True)
    assert type(item) is JsonBad and "over the limit" in item.error
    p.set_unauthenticated(True, 1 << 20)
    assert p.feed(b"{" + b" " * 70000) == [] and p.error is not None and "too big" in p.error
    p = JsonLinesParser()
    p.set_unauthenticated(True, 1 << 20)
    assert p.feed(b'{"cmd":"PING"}\n{' + b" " * 70000 + b'}\n{"cmd":"PING"}\n') == [[b"PING"]]
    assert p.feed(b"") == [] and p.error is not None and "too big" in p.error
    # Before AUTH lines come out one at a time, so AUTH's outcome sets the limits for the next.
    p = JsonLinesParser()
    p.set_unauthenticated(True, 1 << 20)
    assert p.feed(b'{"cmd":"AUTH","args":["pw"]}\n{"cmd":"PING"}\n{"cmd":"ECHO","args":["a"]}\n') == [
        [b"AUTH", b"pw"]]
    assert p.feed(b"") == [[b"PING"]] and p.buffered() > 0
    p.set_unauthenticated(False, 1 << 20)
    assert p.feed(b"") == [[b"ECHO", b"a"]] and p.buffered() == 0


def test_reply_encoding() -> None:
    def j(reply: Any) -> Any:
        return orjson.loads(encode_json(reply))

    assert j(OK) == {"ok": "OK"} and j(b"bar") == {"ok": "bar"} and j(None) == {"ok": None}
    assert j(b"\xff\x00") == {"ok": {"b64": base64.b64encode(b"\xff\x00").decode()}}
    assert j(7) == {"ok": 7} and j(2.5) == {"ok": 2.5} and j(float("-inf")) == {"ok": "-inf"}
    assert j([b"a", None, [1, b"b"]]) == {"ok": ["a", None, [1, "b"]]}
    assert j(Pairs([(b"m", 1.0), (b"n", float("inf"))])) == {"ok": [["m", 1.0], ["n", "inf"]]}
    assert j({b"server": b"atlas", b"proto": 2}) == {"ok": {"server": "atlas", "proto": 2}}
    assert j(NULL_ARRAY) == {"ok": None}
    assert j([OK, CommandError("WRONGTYPE x")]) == {"ok": ["OK", {"error": "WRONGTYPE x"}]}
    assert encode_json(Replies([Push([b"subscribe", b"c", 1]), Push([b"subscribe", b"d", 2])])) == (
        b'{"push":["subscribe","c",1]}\n{"push":["subscribe","d",2]}\n')
    assert encode_json_error(CommandError("ERR a\nb")) == b'{"error":"ERR a\\nb"}\n'


# -- against a running atlasd ------------------------------------------------------------

class JsonLines:
    """A raw-socket JSON-lines client."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")

    @classmethod
    def connect(cls, where: int | Path) -> JsonLines:
        """TCP to a port (AUTH needed), or the unix socket at a path (none needed)."""
        if isinstance(where, int):
            return cls(socket.create_connection(("127.0.0.1", where), timeout=10))
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(where))
        return cls(s)

    def send(self, *lines: bytes | dict) -> None:
        self.sock.sendall(b"".join((orjson.dumps(x) if isinstance(x, dict) else x) + b"\n" for x in lines))

    def reply(self) -> Any:
        line = self.file.readline()
        assert line.endswith(b"\n"), f"connection closed (got {line!r})"
        return orjson.loads(line)

    def call(self, request: bytes | dict) -> Any:
        self.send(request)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("jsonlines")) as d:
        yield d


@pytest.fixture
def jl(daemon: Daemon) -> Iterator[JsonLines]:
    with daemon.client() as r:
        r.flushall()
    c = JsonLines.connect(daemon.socket_path)
    try:
        yield c
    finally:
        c.close()


def test_replies_over_the_wire(jl: JsonLines, daemon: Daemon) -> None:
    assert jl.call({"cmd": "SET", "key": "foo", "value": "bar", "ttl": 0}) == {"ok": "OK"}
    assert jl.call({"cmd": "GET", "key": "foo"}) == {"ok": "bar"}
    assert jl.call({"cmd": "GET", "key": "nothing"}) == {"ok": None}
    assert jl.call({"cmd": "ZADD", "args": ["z", "1", "m"]}) == {"ok": 1}
    assert jl.call({"cmd": "ZADD", "key": "z", "members": [[2.5, "n"]]}) == {"ok": 1}
    assert jl.call({"cmd": "ZRANGE", "args": ["z", "0", "-1", "WITHSCORES"]}) == {"ok": [["m", 1.0], ["n", 2.5]]}
    assert jl.call({"cmd": "ZSCORE", "key": "z", "args": ["n"]}) == {"ok": 2.5}
    assert jl.call({"cmd": "SET", "key_b64": "/w==", "value_b64": "AP8="}) == {"ok": "OK"}
    assert jl.call({"cmd": "GET", "key_b64": "/w=="}) == {"ok": {"b64": "AP8="}}
    assert jl.call({"cmd": "SET", "key": "t", "value": "v", "ttl": 100}) == {"ok": "OK"}
    assert 98_000 < jl.call({"cmd": "PTTL", "key": "t"})["ok"] <= 100_000
    exp = int(time.time() * 1000) + 600_000
    assert jl.call({"cmd": "SET", "key": "e", "value": "v", "exp": exp}) == {"ok": "OK"}
    assert jl.call({"cmd": "PEXPIRETIME", "key": "e"}) == {"ok": exp}
    assert jl.call({"cmd": "EXPIRE", "key": "foo", "ttl": 50}) == {"ok": 1}
    hello = jl.call({"cmd": "HELLO"})["ok"]
    assert hello["server"] == "atlas" and hello["proto"] == 2
    # The same keyspace RESP clients see.
    with daemon.client() as r:
        assert r.get("foo") == b"bar" and r.get(b"\xff") == b"\x00\xff" and 40 < r.ttl("foo") <= 50


def test_errors_keep_the_connection(jl: JsonLines) -> None:
    jl.call({"cmd": "SET", "key": "s", "value": "abc"})
    assert jl.call({"cmd": "INCR", "key": "s"}) == {"error": "ERR value is not an integer or out of range"}
    assert jl.call({"cmd": "NOSUCH", "args": ["a"]}) == {
        "error": "ERR unknown command 'NOSUCH', with args beginning with: 'a' "}
    assert jl.call({"cmd": "GET"}) == {"error": "ERR wrong number of arguments for 'get' command"}
    assert jl.call({"cmd": "ZADD", "args": ["s", "1", "m"]})["error"].startswith("WRONGTYPE")
    bad = jl.call(b"this is not json")["error"]
    assert bad.startswith("ERR Protocol error: invalid JSON")
    assert jl.call(b'{"cmd":"GET","key":"s"')["error"].startswith("ERR Protocol error: invalid JSON")
    assert jl.call(b"[1]") == {"error": "ERR invalid JSON request: a request must be a JSON object, not a list"}
    assert jl.call(b"\xff\xfe{}")["error"].startswith("ERR Protocol error: invalid JSON")
    assert jl.call({"cmd": "GET", "key": "s"}) == {"ok": "abc"}


def test_pipelined_lines_reply_in_order(jl: JsonLines) -> None:
    requests = [{"cmd": "INCR", "key": "n"} for _ in range(500)] + [{"cmd": "GET", "key": "n"}]
    jl.send(*requests, b"oops", {"cmd": "PING"})
    assert [jl.reply()["ok"] for _ in range(500)] == list(range(1, 501))
    assert jl.reply() == {"ok": "500"}
    assert "error" in jl.reply() and jl.reply() == {"ok": "PONG"}


def test_multi_with_ops_is_one_atomic_record(jl: JsonLines, daemon: Daemon) -> None:
    jl.call({"cmd": "ZADD", "args": ["z", "1", "m"]})
    reply = jl.call({"cmd": "MULTI", "ops": [{"cmd": "SET", "key": "a", "value": "1"}, {"cmd": "INCR", "key": "a"},
                                             {"cmd": "INCR", "key": "z"}, {"cmd": "WATCH", "key": "a"}]})
    assert reply == {"ok": ["OK", 2, {"error": "WRONGTYPE Operation against a key holding the wrong kind of value"},
                            {"error": "ERR Command not allowed inside a transaction"}]}
    lines = (daemon.data / "appendonly.aof").read_bytes().splitlines()
    last = orjson.loads(lines[-1])
    assert last["cmd"] == "MULTI" and [op["cmd"] for op in last["ops"]] == ["SET", "SET"]
    # The RESP-style transaction works too, one line per command.
    assert jl.call({"cmd": "MULTI"}) == {"ok": "OK"}
    assert jl.call({"cmd": "INCR", "key": "a"}) == {"ok": "QUEUED"}
    assert jl.call({"cmd": "MULTI", "ops": []})["error"] == "ERR MULTI with ops inside MULTI is not allowed"
    assert jl.call({"cmd": "EXEC"})["error"].startswith("EXECABORT")
    assert jl.call({"cmd": "GET", "key": "a"}) == {"ok": "2"}


def test_pubsub_messages_arrive_as_push_lines(jl: JsonLines, daemon: Daemon) -> None:
    jl.send({"cmd": "SUBSCRIBE", "args": ["c1", "c2"]})
    assert jl.reply() == {"push": ["subscribe", "c1", 1]} and jl.reply() == {"push": ["subscribe", "c2", 2]}
    assert jl.call({"cmd": "PING"}) == {"ok": "PONG"}  # a JSON subscriber may run any command
    with daemon.client() as r:
        assert r.publish("c2", "hi") == 1
    assert jl.reply() == {"push": ["message", "c2", "hi"]}


def test_auth_and_protected_limits(tmp_path: Path) -> None:
    with running_daemon(tmp_path, "--requirepass", "s3cret") as d:
        c = JsonLines.connect(d.port)
        try:
            assert c.call({"cmd": "GET", "key": "a"}) == {"error": "NOAUTH Authentication required."}
            assert c.call({"cmd": "MULTI", "ops": [{"cmd": "GET", "key": "a"}]}) == {
                "error": "NOAUTH Authentication required."}
            assert c.call({"cmd": "AUTH", "args": ["wrong"]})["error"].startswith("WRONGPASS")
            assert c.call({"cmd": "AUTH", "args": ["s3cret"]}) == {"ok": "OK"}
            assert c.call({"cmd": "SET", "key": "a", "value": "x" * 100_000}) == {"ok": "OK"}
        finally:
            c.close()
        stranger = JsonLines.connect(d.port)
        try:
            stranger.send({"cmd": "PING"}, b'{"cmd":"AUTH","args":["' + b"x" * 70_000, {"cmd": "PING"})
            assert stranger.reply() == {"error": "NOAUTH Authentication required."}  # the line before: answered
            assert stranger.reply() == {"error": "ERR Protocol error: too big JSON line"}
            assert stranger.file.readline() == b""  # closed: the line can not be resynchronised
        finally:
            stranger.close()
        piped = JsonLines.connect(d.port)
        try:  # AUTH pipelined with a command over the strangers' limits: AUTH runs first
            piped.send({"cmd": "AUTH", "args": ["s3cret"]}, {"cmd": "SET", "key": "b", "value": "y" * 100_000})
            assert piped.reply() == {"ok": "OK"} and piped.reply() == {"ok": "OK"}
        finally:
            piped.close()
        with d.client(password="s3cret") as r:
            assert r.ping() and r.strlen("b") == 100_000


def test_reply_waits_for_durability_and_survives_sigkill(tmp_path: Path) -> None:
    """appendfsync always: every acknowledged JSON write is on disk when SIGKILL comes."""
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    acked = 0
    try:
        c = JsonLines.connect(d.socket_path)
        c.send(*({"cmd": "SET", "key": f"k{i}", "value": str(i)} for i in range(200)))
        for _ in range(200):
            assert c.reply() == {"ok": "OK"}
            acked += 1
        d.send(signal.SIGKILL)
        d.proc.wait(10)  # type: ignore[union-attr]
        c.close()
    finally:
        d.kill()
    d2 = Daemon(data, "--appendfsync", "always", port=d.port).start()
    try:
        c = JsonLines.connect(d2.socket_path)
        c.send(*({"cmd": "GET", "key": f"k{i}"} for i in range(acked)))
        assert [c.reply()["ok"] for _ in range(acked)] == [str(i) for i in range(acked)]
        c.close()
    finally:
        d2.kill()


# -- fuzz: random and truncated lines ---------------------------------------------------------

SAFE_CMDS = ["GET", "SET", "ECHO", "PING", "INCR", "ZADD", "DEL", "EXPIRE", "MGET", "get", "ZRANGE", "NOSUCH"]
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1), st.floats(),
                        st.text(max_size=8))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=8)
request = st.fixed_dictionaries(
    {"cmd": st.sampled_from(SAFE_CMDS)},
    optional={"key": json_value, "value": json_value, "args": json_value, "ttl": json_value, "exp": json_value,
              "key_b64": json_value, "members": json_value})


fuzz_line = st.one_of(
    request.map(orjson.dumps),
    json_value.map(orjson.dumps),
    st.sampled_from([b'{"cmd":"GET","key":123456789012345678901234567890}', b'{"cmd":"ECHO","args":[1e999]}',
                     b'{"cmd":"PING"}}', b'{"cmd":"PING",}', b"{" * 200 + b"}" * 200, b'"\\ud800"']),
    st.tuples(request.map(orjson.dumps), st.integers(1, 40)).map(lambda t: t[0][:t[1]]),  # truncated
    st.binary(min_size=1, max_size=40),
).map(lambda b: b.replace(b"\n", b" ")).filter(lambda b: b.strip() != b"")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(lines=st.lists(fuzz_line, min_size=1, max_size=15))
def test_fuzz_every_line_gets_one_reply(daemon: Daemon, lines: list[bytes]) -> None:
    c = JsonLines.connect(daemon.socket_path)
    try:
        c.send(b'{"cmd":"PING"}', *lines, b'{"cmd":"ECHO","args":["end"]}')
        assert c.reply() == {"ok": "PONG"}
        for line in lines:
            got = c.reply()
            assert set(got) <= {"ok", "error"} and len(got) == 1, (line, got)
        assert c.reply() == {"ok": "end"}
    finally:
        c.close()
    with daemon.client() as r:
        assert r.ping()


def test_hash_and_set_requests_in_the_aof_shape(jl: JsonLines) -> None:
    """The AOF's own record shapes are requests too, for the new types as for ZADD."""
    assert jl.call({"cmd": "HSET", "key": "h", "fields": [["a", "1"], ["b", "2"]]}) == {"ok": 2}
    assert jl.call({"cmd": "HSET", "key": "h", "fields_b64": [["Yw==", "/w=="]]}) == {"ok": 1}
    assert jl.call({"cmd": "HDEL", "key": "h", "fields": ["a"]}) == {"ok": 1}
    assert jl.call({"cmd": "HGET", "key": "h", "args": ["c"]}) == {"ok": {"b64": "/w=="}}
    assert jl.call({"cmd": "SADD", "key": "s", "members": ["x", "y"]}) == {"ok": 2}
    assert jl.call({"cmd": "SREM", "key": "s", "members_b64": ["eA=="]}) == {"ok": 1}
    assert jl.call({"cmd": "SCARD", "key": "s"}) == {"ok": 1}
    assert "error" in jl.call({"cmd": "HSET", "key": "h", "fields": [["only-one"]]})


def test_a_json_lines_connection_selects_as_the_aof_records_say(jl: JsonLines, daemon: Daemon) -> None:
    # The AOF's own database records, sent as requests: {"cmd":"SELECT","db":N} moves this connection.
    assert jl.call({"cmd": "SELECT", "db": 3}) == {"ok": "OK"}
    assert jl.call({"cmd": "SET", "key": "k", "value": "three"}) == {"ok": "OK"}
    assert jl.call({"cmd": "SWAPDB", "db1": 3, "db2": 4}) == {"ok": "OK"}
    assert jl.call({"cmd": "GET", "key": "k"}) == {"ok": None}
    assert jl.call({"cmd": "SELECT", "db": 16}) == {"error": "ERR DB index is out of range"}
    with daemon.client(db=4) as r:
        assert r.get("k") == b"three"
    last = orjson.loads((daemon.data / "appendonly.aof").read_bytes().splitlines()[-1])
    assert last["cmd"] == "MULTI" and last["ops"] == [{"cmd": "SELECT", "db": 3}, {"cmd": "SWAPDB", "db1": 3, "db2": 4}]
