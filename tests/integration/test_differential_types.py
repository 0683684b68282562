"""Hashes and sets: a real atlasd against a real redis-server, RESP2 and RESP3, reply by reply.

Both servers are reached through raw sockets (no client library between the
bytes and the comparison): every reply is parsed into a tree that keeps its
RESP type (`~` set, `%` map, `*` array, `$` bulk, `-` error ...), and the
trees are compared after normalising only what Redis leaves unordered:

1. The members of a set (`~`) and the pairs of a map (`%`) are compared as
   multisets, as are the arrays Redis fills in hash-table order: HKEYS, HVALS,
   HGETALL/SMEMBERS/SINTER/... in RESP2, SPOP with a count in RESP2, and the
   items of HSCAN/SSCAN.
2. Random choices (SRANDMEMBER, HRANDFIELD, SPOP) are checked for their shape:
   the same type and length, distinct members where Redis promises them, every
   member (and HRANDFIELD's value) taken from the collection.  After an SPOP the
   two servers popped different members; the test puts atlasd's back and pops
   Redis's from it, so both hold the same set again.
3. HSCAN/SSCAN cursors: Redis 7.0 keeps a small hash, or a set of integers,
   in one block it returns whole (cursor 0), but a set of strings in a hash
   table whose cursor walks buckets; ATLAS returns collections of up to 128
   whole and walks larger ones in sorted order with cursors of its own (see
   hashset.py).  What a whole iteration returns is compared, from cursor 0.

Everything else, error texts included, must be equal.  After every command the
whole keyspace (type, content, whether a TTL is set) is compared too.  COMMAND
INFO's name, arity, flags and key positions are compared for every new command.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

Tree = tuple[str, Any]


# -- a raw RESP client ------------------------------------------------------------------------

class Raw:
    """One connection; `call` sends commands (pipelined) and parses each reply into a typed tree."""

    def __init__(self, port: int, password: str | None, resp3: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        self.resp3 = resp3
        if password is not None:
            assert self.call([b"AUTH", password.encode()]) == ("+", "OK")
        if resp3:
            assert self.call([b"HELLO", b"3"])[0] == "%"

    def close(self) -> None:
        self.sock.close()

    def call(self, args: list[bytes]) -> Tree:
        return self.call_many([args])[0]

    def call_many(self, commands: list[list[bytes]]) -> list[Tree]:
        out = bytearray()
        for args in commands:
            out += b"*%d\r\n" % len(args)
            for a in args:
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return [self._read() for _ in commands]

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _bytes(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def _read(self) -> Tree:
        line = self._line()
        kind, rest = chr(line[0]), line[1:]
        if kind in "+-":
            return (kind, rest.decode(errors="replace"))
        if kind in ":(,#":
            return (kind, rest.decode())
        if kind == "_":
            return ("nil", None)
        if kind in "$=":
            n = int(rest)
            return ("nil", None) if n < 0 else ("$", self._bytes(n))
        if kind in "*~>":
            n = int(rest)
            return ("nil", None) if n < 0 else (kind, [self._read() for _ in range(n)])
        if kind == "%":
            n = int(rest)
            return ("%", [(self._read(), self._read()) for _ in range(n)])
        raise AssertionError(f"unexpected reply line {line!r}")


# -- servers ------------------------------------------------------------------------------------

@dataclass
class Side:
    r2: Raw
    r3: Raw

    def conn(self, resp3: bool) -> Raw:
        return self.r3 if resp3 else self.r2


@dataclass
class Pair:
    atlas: Side
    redis: Side
    done: list = field(default_factory=list)

    def reset(self) -> None:
        self.done = []
        for side in (self.atlas, self.redis):
            for conn in (side.r2, side.r3):
                conn.call_many([[b"DISCARD"], [b"UNWATCH"]])  # out of a MULTI a failed test left open
            assert side.r2.call([b"FLUSHALL"]) == ("+", "OK")


def make_pair(atlasd: Daemon, redis: RedisServer) -> Pair:
    """Raw RESP2 and RESP3 connections to both servers (every differential module's `pair`)."""
    pw = atlasd.password
    return Pair(Side(Raw(atlasd.port, pw, False), Raw(atlasd.port, pw, True)),
                Side(Raw(redis.port, None, False), Raw(redis.port, None, True)))


def close_pair(p: Pair) -> None:
    for side in (p.atlas, p.redis):
        side.r2.close()
        side.r3.close()


def module_pair(label: str) -> tuple[Any, Any]:
    """A differential module's two fixtures: `atlasd` (a daemon of its own, for the module) and `pair`
    (RESP2 and RESP3 connections to it and to the session's redis-server); `atlasd, pair = module_pair(..)`."""

    @pytest.fixture(scope="module")
    def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
        with running_daemon(tmp_path_factory.mktemp(label)) as d:
            yield d

    @pytest.fixture(scope="module")
    def pair(atlasd: Daemon, redis_server: RedisServer) -> Iterator[Pair]:  # noqa: F811
        p = make_pair(atlasd, redis_server)
        try:
            yield p
        finally:
            close_pair(p)

    return atlasd, pair


atlasd, pair = module_pair("types")


# -- normalising ---------------------------------------------------------------------------------

UNORDERED = {b"HKEYS", b"HVALS", b"SMEMBERS", b"SINTER", b"SUNION", b"SDIFF", b"SPOP"}
PAIRED = {b"HGETALL"}
SCANS = {b"HSCAN", b"SSCAN", b"SCAN"}  # SCAN: ATLAS walks keys in sorted order, Redis in hash order


def _sort(items: list) -> list:
    return sorted(items, key=repr)


def norm(tree: Tree) -> Tree:
    """Sets and maps to sorted lists of their (normalised) items."""
    kind, v = tree
    if kind == "~":
        return ("~", _sort([norm(x) for x in v]))
    if kind == "%":
        return ("%", _sort([(norm(k), norm(x)) for k, x in v]))
    if kind in "*>":
        return (kind, [norm(x) for x in v])
    return tree


def norm_for(args: list[bytes], tree: Tree) -> Tree:
    tree = norm(tree)
    name = args[0].upper()
    kind, v = tree
    if kind != "*":
        return tree
    if name in UNORDERED:
        return ("*", _sort(v))
    if name in PAIRED:
        return ("*", _sort(list(zip(v[::2], v[1::2], strict=True))))
    if name in SCANS and len(v) == 2 and v[1][0] == "*":
        items = v[1][1]
        if name == b"HSCAN":
            items = list(zip(items[::2], items[1::2], strict=True))
        return ("*", [v[0], ("*", _sort(items))])
    return tree


# -- comparing -----------------------------------------------------------------------------------

RANDOM = {b"SRANDMEMBER", b"HRANDFIELD", b"SPOP"}


def _members(pair: Pair, key: bytes) -> tuple[str, Any]:
    """(type, content) of `key` on redis-server, before a random command runs."""
    kind = pair.redis.r2.call([b"TYPE", key])[1]
    if kind == "set":
        return kind, {x[1] for x in pair.redis.r2.call([b"SMEMBERS", key])[1]}
    if kind == "hash":
        flat = [x[1] for x in pair.redis.r2.call([b"HGETALL", key])[1]]
        return kind, dict(zip(flat[::2], flat[1::2], strict=True))
    return kind, None


def _flat_items(tree: Tree) -> list[Any]:
    kind, v = tree
    if kind == "$":
        return [v]
    return [x[1] if x[0] == "$" else tuple(y[1] for y in x[1]) for x in v]


def check_random(pair: Pair, args: list[bytes], resp3: bool, got: Tree, want: Tree, before: tuple) -> None:
    name = args[0].upper()
    where = f"{args!r} (resp{3 if resp3 else 2}) after {pair.done!r}: atlasd {got!r}, redis {want!r}"
    if want[0] in ("-", "nil") or got[0] in ("-", "nil"):
        assert got == want, where
        return
    assert got[0] == want[0] and type(got[1]) is type(want[1]), where
    if want[0] != "$":
        assert len(got[1]) == len(want[1]), where
    kind, content = before
    items = _flat_items(got)
    withvalues = name == b"HRANDFIELD" and len(args) == 4
    if withvalues and not resp3:
        items = list(zip(items[::2], items[1::2], strict=True))
    for item in items:
        if withvalues:
            assert isinstance(item, tuple) and content.get(item[0]) == item[1], where
        else:
            assert item in content, where
    count = int(args[2]) if len(args) > 2 else 1
    if count > 0:
        assert len(set(items)) == len(items), where


def sync_after_spop(pair: Pair, args: list[bytes], got: Tree, want: Tree) -> None:
    """Make atlasd's set equal Redis's again: put back what it popped, pop what Redis popped."""
    if got[0] in ("-", "nil") or want[0] in ("-", "nil"):
        return
    mine, theirs = set(_flat_items(got)), set(_flat_items(want))
    if mine == theirs:
        return
    key = args[1]
    pair.atlas.r2.call([b"SADD", key, *sorted(mine)])
    pair.atlas.r2.call([b"SREM", key, *sorted(theirs)])


def scan_all(conn: Raw, args: list[bytes]) -> Tree:
    """Follow HSCAN/SSCAN's cursor to the end: the first error, or every item the iteration returned."""
    items: list[Tree] = []
    cur = args[2]
    for _ in range(1000):
        reply = conn.call([*args[:2], cur, *args[3:]])
        if reply[0] != "*":
            return reply
        batch = reply[1][1][1]
        items += (list(zip(batch[::2], batch[1::2], strict=True)) if args[0].upper() == b"HSCAN" else batch)
        cur = reply[1][0][1]
        if cur == b"0":
            break
    return ("items", _sort(set(items)))


def run(pair: Pair, args: list[bytes], resp3: bool) -> None:
    name = args[0].upper()
    if name in (b"HSCAN", b"SSCAN") and len(args) > 2 and args[2] == b"0":
        # Redis 7.0 keeps a set of strings in a hash table, whose cursor walks buckets: compare
        # what whole iterations return (intended difference 3), and errors as they are.
        got, want = scan_all(pair.atlas.conn(resp3), args), scan_all(pair.redis.conn(resp3), args)
        assert got == want, f"{args!r} (resp{3 if resp3 else 2}) after {pair.done!r}: atlasd {got!r}, redis {want!r}"
        pair.done.append((args, resp3))
        return
    before = _members(pair, args[1]) if name in RANDOM and len(args) > 1 else None
    got = pair.atlas.conn(resp3).call(args)
    want = pair.redis.conn(resp3).call(args)
    if before is not None:
        check_random(pair, args, resp3, norm(got), norm(want), before)
        if name == b"SPOP":
            sync_after_spop(pair, args, got, want)
    else:
        got_n, want_n = norm_for(args, got), norm_for(args, want)
        assert got_n == want_n, (f"{args!r} (resp{3 if resp3 else 2}) after {pair.done!r}: "
                                 f"atlasd {got!r}, redis {want!r}")
    pair.done.append((args, resp3))


def state(side: Side) -> list:
    types = side.r2.call_many([[b"TYPE", k] for k in ALL_KEYS])
    reads: list[list[bytes]] = []
    for k, (_, t) in zip(ALL_KEYS, types, strict=True):
        reads.append({"string": [b"GET", k], "hash": [b"HGETALL", k], "set": [b"SMEMBERS", k],
                      "zset": [b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"]}.get(t, [b"EXISTS", k]))
        reads.append([b"EXPIRETIME", k])
    replies = side.r2.call_many(reads)
    out = []
    for (_, t), args, reply in zip(types, reads[::2], replies[::2], strict=True):
        out.append((t, norm_for(args, reply)))
    out.append([r[1] != "-1" for r in replies[1::2]])  # a TTL or not (clocks differ, values may too)
    return out


def compare_state(pair: Pair) -> None:
    got, want = state(pair.atlas), state(pair.redis)
    assert got == want, f"keyspace differs after {pair.done!r}:\natlasd {got!r}\nredis  {want!r}"


# -- generating ----------------------------------------------------------------------------------

HKEYS = [b"h1", b"h2"]
SKEYS = [b"s1", b"s2", b"s3"]
OTHER = [b"k1", b"z1"]
ALL_KEYS = HKEYS + SKEYS + OTHER

hkey = st.sampled_from(HKEYS * 3 + SKEYS + OTHER)
skey = st.sampled_from(SKEYS * 3 + HKEYS + OTHER)
any_key = st.sampled_from(ALL_KEYS)
item = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"1", b"2", b"10", b"-3", b"", b"\xff\xfe"])
value = st.one_of(item, st.sampled_from([b"5", b"0.5", b"1e3", b"x", b"9223372036854775807", b"-0", b" 1"]),
                  st.binary(max_size=4))
int_text = st.one_of(st.integers(-20, 20).map(lambda n: b"%d" % n),
                     st.sampled_from([b"9223372036854775807", b"-9223372036854775808", b"x", b"1.5", b"+1", b""]))
float_text = st.sampled_from([b"0.1", b"-0.2", b"1e3", b"3", b"1.5e-17", b"inf", b"-inf", b"nan", b"abc",
                              b"10.50", b"0x10", b"", b" 1"])
small_count = st.one_of(st.integers(-5, 7).map(lambda n: b"%d" % n), st.sampled_from([b"x", b"1.0"]))
pattern = st.sampled_from([b"*", b"a*", b"[ab]", b"?", b"1*", b"\\a", b"[^a]*"])


def cased(word: bytes) -> st.SearchStrategy[bytes]:
    return st.sampled_from([word, word.lower()])


def cmd(name: bytes, *parts: st.SearchStrategy) -> st.SearchStrategy[list[bytes]]:
    def flat(items: tuple) -> list[bytes]:
        out: list[bytes] = []
        for x in items:
            out.extend(x if isinstance(x, list) else [x])
        return out
    return st.tuples(cased(name), *parts).map(flat)


def some(s: st.SearchStrategy, lo: int = 1, hi: int = 3) -> st.SearchStrategy[list[bytes]]:
    return st.lists(s, min_size=lo, max_size=hi)


fv_pairs = some(st.tuples(item, value).map(list)).map(lambda ps: [b for p in ps for b in p])
scan_opts = st.lists(st.one_of(
    st.tuples(cased(b"MATCH"), pattern).map(list),
    st.tuples(cased(b"COUNT"), st.sampled_from([b"1", b"2", b"100", b"0", b"x"])).map(list),
    st.just([b"NOVALUES"]), st.just([b"COUNT"])), max_size=2).map(lambda xs: [b for x in xs for b in x])
cursor = st.sampled_from([b"0", b"0", b"0", b"x", b"+x"])  # a non-zero cursor: see intended difference 3

HASH_CMDS = [
    cmd(b"HSET", hkey, fv_pairs), cmd(b"HSET", hkey, item), cmd(b"HSET", hkey, item, value, item),
    cmd(b"HMSET", hkey, fv_pairs), cmd(b"HSETNX", hkey, item, value), cmd(b"HGET", hkey, item),
    cmd(b"HMGET", hkey, some(item)), cmd(b"HGETALL", hkey), cmd(b"HDEL", hkey, some(item)),
    cmd(b"HEXISTS", hkey, item), cmd(b"HLEN", hkey), cmd(b"HKEYS", hkey), cmd(b"HVALS", hkey),
    cmd(b"HINCRBY", hkey, item, int_text), cmd(b"HINCRBYFLOAT", hkey, item, float_text),
    cmd(b"HSTRLEN", hkey, item), cmd(b"HRANDFIELD", hkey), cmd(b"HRANDFIELD", hkey, small_count),
    cmd(b"HRANDFIELD", hkey, small_count, st.sampled_from([b"WITHVALUES", b"withvalues", b"x"])),
    # Range errors only: a huge negative count that passes would ask both servers for 2**63 fields.
    cmd(b"HRANDFIELD", hkey, st.just(b"-9223372036854775808"), st.sampled_from([[], [b"WITHVALUES"]])),
    cmd(b"HRANDFIELD", hkey, st.just(b"-9223372036854775807"), st.just(b"WITHVALUES")),
    cmd(b"HSCAN", hkey, cursor, scan_opts),
]
SET_CMDS = [
    cmd(b"SADD", skey, some(item)), cmd(b"SREM", skey, some(item)), cmd(b"SMEMBERS", skey),
    cmd(b"SISMEMBER", skey, item), cmd(b"SMISMEMBER", skey, some(item)), cmd(b"SCARD", skey),
    cmd(b"SPOP", skey), cmd(b"SPOP", skey, st.one_of(small_count.filter(lambda c: c != b"1.0"),
                                                     st.just(b"100"))),
    cmd(b"SRANDMEMBER", skey), cmd(b"SRANDMEMBER", skey, small_count),
    cmd(b"SMOVE", skey, skey, item),
    cmd(b"SINTER", some(skey)), cmd(b"SUNION", some(skey)), cmd(b"SDIFF", some(skey)),
    cmd(b"SINTERSTORE", any_key, some(skey)), cmd(b"SUNIONSTORE", any_key, some(skey)),
    cmd(b"SDIFFSTORE", any_key, some(skey)),
    st.tuples(cased(b"SINTERCARD"), some(skey), st.sampled_from([[], [b"LIMIT", b"1"], [b"LIMIT", b"0"],
                                                                  [b"LIMIT", b"-1"], [b"LIMIT"], [b"FOO"]]),
              st.sampled_from([0, 0, 1, -1])).map(
        lambda t: [t[0], b"%d" % (len(t[1]) + t[3]), *t[1], *t[2]]),
    cmd(b"SINTERCARD", st.sampled_from([b"0", b"x", b"9223372036854775807"]), skey),
    cmd(b"SSCAN", skey, cursor, scan_opts),
]
CROSS_CMDS = [
    cmd(b"TYPE", any_key), cmd(b"DEL", some(any_key)), cmd(b"EXISTS", some(any_key)),
    cmd(b"EXPIRE", any_key, st.just(b"1000")), cmd(b"PERSIST", any_key), cmd(b"RENAME", any_key, any_key),
    cmd(b"SET", any_key, value), cmd(b"GET", any_key), cmd(b"INCR", any_key), cmd(b"APPEND", any_key, value),
    cmd(b"ZADD", any_key, st.just(b"1"), item), cmd(b"ZCARD", any_key), cmd(b"STRLEN", any_key),
    cmd(b"SCAN", st.just(b"0"), st.sampled_from([b"TYPE"]), st.sampled_from([b"hash", b"set", b"string"]),
        st.just(b"COUNT"), st.just(b"1000")),
]
SETUP = [cmd(b"HSET", st.sampled_from(HKEYS), fv_pairs), cmd(b"SADD", st.sampled_from(SKEYS), some(item, 1, 5))]

step = st.tuples(st.one_of(*HASH_CMDS, *SET_CMDS, *CROSS_CMDS), st.booleans())
programs = st.tuples(st.lists(st.tuples(st.one_of(*SETUP), st.booleans()), min_size=1, max_size=4),
                     st.lists(step, min_size=1, max_size=12)).map(lambda parts: parts[0] + parts[1])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args, resp3 in program:
        run(pair, args, resp3)
        compare_state(pair)


# -- every command, fixed cases -------------------------------------------------------------------

FIXED: list[list[bytes]] = [[w.encode() if isinstance(w, str) else w for w in c] for c in [
    ["HSET", "h", "f", "v"], ["HSET", "h", "g", "w", "f", "v2"], ["HSET", "h", "x"], ["HMSET", "h", "a"],
    ["HGETALL", "h"], ["HGETALL", "nope"], ["HKEYS", "nope"], ["HVALS", "nope"], ["HSETNX", "h", "f", "z"],
    ["HMGET", "h", "f", "nope"], ["HSTRLEN", "h", "f"], ["HEXISTS", "h", "f"], ["HLEN", "h"],
    ["HINCRBY", "h", "n", "5"], ["HINCRBY", "h", "f", "1"], ["HINCRBY", "h", "n", "9223372036854775807"],
    ["HINCRBYFLOAT", "h", "n", "0.1"], ["HINCRBYFLOAT", "h", "fl", "1e3"], ["HINCRBYFLOAT", "h", "f", "1"],
    ["HINCRBYFLOAT", "h", "n", "inf"], ["HINCRBYFLOAT", "h", "n", "x"],
    ["HRANDFIELD", "nope"], ["HRANDFIELD", "nope", "3"], ["HRANDFIELD", "h", "0", "WITHVALUES"],
    ["HRANDFIELD", "h", "10"], ["HRANDFIELD", "h", "10", "WITHVALUES"], ["HRANDFIELD", "h", "1", "x"],
    ["HRANDFIELD", "h", "1", "WITHVALUES", "x"],
    ["HSCAN", "h", "0"], ["HSCAN", "h", "0", "MATCH", "f*", "COUNT", "1"], ["HSCAN", "nope", "0", "BAD"],
    ["HSCAN", "h", "0", "BAD"], ["HSCAN", "h", "abc"], ["HSCAN", "h", "0", "NOVALUES"],
    ["HDEL", "h", "f", "f", "zz"], ["HDEL", "nope", "f"],
    ["SADD", "s", "a", "b", "c", "1"], ["SADD", "i", "1", "2", "3"], ["SREM", "s", "zz", "1"], ["SCARD", "s"],
    ["SMEMBERS", "s"], ["SMEMBERS", "nope"], ["SISMEMBER", "s", "a"], ["SMISMEMBER", "s", "a", "z"],
    ["SINTER", "s", "i"], ["SINTER", "s", "nope"], ["SUNION", "s", "i"], ["SDIFF", "s", "i"],
    ["SINTERSTORE", "d", "s", "s"], ["SUNIONSTORE", "d", "s", "i"], ["SDIFFSTORE", "d", "s", "s"],
    ["SINTERCARD", "2", "s", "i"], ["SINTERCARD", "1", "s", "LIMIT", "2"], ["SINTERCARD", "0", "s"],
    ["SINTERCARD", "3", "s"], ["SINTERCARD", "1", "s", "LIMIT", "-1"], ["SINTERCARD", "1", "s", "LIMIT"],
    ["SRANDMEMBER", "nope"], ["SRANDMEMBER", "nope", "2"], ["SRANDMEMBER", "s", "0"], ["SRANDMEMBER", "s", "10"],
    ["SRANDMEMBER", "s", "1", "2"], ["SRANDMEMBER", "s", "x"],
    ["SPOP", "nope"], ["SPOP", "nope", "2"], ["SPOP", "s", "0"], ["SPOP", "s", "-1"], ["SPOP", "s", "x"],
    ["SPOP", "s", "1", "2"], ["SPOP", "i", "10"],
    ["SMOVE", "s", "t", "a"], ["SMOVE", "nope", "h", "a"], ["SMOVE", "s", "h", "b"], ["SMOVE", "h", "s", "b"],
    ["SSCAN", "s", "0"], ["SSCAN", "s", "0", "MATCH", "[ab]"], ["SSCAN", "s", "x"],
    ["TYPE", "h"], ["TYPE", "s"], ["GET", "h"], ["GET", "s"], ["HGET", "s", "a"], ["SADD", "h", "a"],
    ["ZADD", "s", "1", "a"], ["INCR", "h"], ["SMEMBERS", "h"], ["HGETALL", "s"], ["SINTER", "s", "h"],
    ["SUNIONSTORE", "d", "nope", "h"], ["RENAME", "h", "h2"], ["HGETALL", "h2"], ["RENAME", "s", "h2"],
    ["TYPE", "h2"], ["SMEMBERS", "h2"],
]]


# Edge cases: long double arithmetic, 64-bit limits, cursors, TTLs kept and dropped, WRONGTYPE everywhere.
# ("big" holds 1e400 as text: over 64 bytes, so Redis turns that hash into a hash table and
# its cursors stop being comparable; only cursor-free calls follow it.)
EDGES: list[list[bytes]] = [[w.encode() for w in c] for c in [
    ["HSET", "h", "inf", "inf", "big", "1e400", "neg", "-9223372036854775808", "sp", " 1", "f", "1.5"],
    ["HINCRBYFLOAT", "h", "inf", "1"], ["HINCRBYFLOAT", "h", "big", "1"], ["HINCRBYFLOAT", "h", "sp", "1"],
    ["HINCRBYFLOAT", "h", "f", " 1"], ["HINCRBYFLOAT", "h", "f", "1 "], ["HINCRBYFLOAT", "h", "f", "-1.5"],
    ["HGET", "h", "f"], ["HINCRBYFLOAT", "h", "f", "1e-20"], ["HINCRBYFLOAT", "h", "new", "5"],
    ["HINCRBYFLOAT", "h", "new", "0x10"], ["HINCRBY", "h", "neg", "-1"], ["HINCRBY", "h", "neg", "0"],
    ["HINCRBY", "h", "sp", "1"], ["HINCRBY", "h", "f2", "+1"], ["HSETNX", "h", "x"], ["HSETNX", "k", "f", "v"],
    ["SADD", "s", "1", "2", "3", "a"], ["SRANDMEMBER", "s", "-9223372036854775808"],
    ["SRANDMEMBER", "s", "9223372036854775807"], ["HRANDFIELD", "h", "9223372036854775807"],
    ["HRANDFIELD", "h", "-9223372036854775808", "WITHVALUES"], ["HSCAN", "h", "18446744073709551616"],
    ["HSCAN", "h", " 0"], ["HSCAN", "h", "+0"], ["SADD", "ints", "1", "2", "3"], ["SSCAN", "ints", "-1"],
    ["SSCAN", "ints", "7"], ["HSCAN", "h", "0", "MATCH", "b*", "MATCH", "n*"], ["HSCAN", "h", "0", "COUNT", "-1"],
    ["HSCAN", "h", "0", "COUNT", "x"], ["SSCAN", "s", "0", "MATCH", "[0-9]"], ["SMISMEMBER", "h", "a"],
    ["SINTERCARD", "1", "s", "LIMIT", "9223372036854775808"], ["SINTERCARD", "1", "s", "limit", "1", "LIMIT", "0"],
    ["SPOP", "s", "9223372036854775808"], ["SPOP", "s", "9223372036854775807"], ["EXISTS", "s"], ["SADD", "t", "a"],
    ["EXPIRE", "t", "100"], ["SADD", "t", "b"], ["TTL", "t"], ["SREM", "t", "a", "b"], ["TTL", "t"],
    ["HSET", "e", "f", "v"], ["EXPIRE", "e", "100"], ["HDEL", "e", "f"], ["TTL", "e"], ["SADD", "u", "x"],
    ["SUNIONSTORE", "u", "u", "nope"], ["SINTERSTORE", "nope2", "u", "nope"], ["EXISTS", "nope2"], ["SDIFF", "u"],
    ["SDIFF", "nope", "u"], ["SMOVE", "u", "u", "x"], ["SMOVE", "u", "k2", "x"], ["EXISTS", "u"], ["SET", "k", "x"],
    ["SMOVE", "k2", "k", "x"], ["SMOVE", "k2", "nope", "zz"], ["HMGET", "k", "a"], ["HSTRLEN", "k", "a"],
    ["HEXISTS", "k", "a"], ["HDEL", "k", "a"], ["HKEYS", "k"], ["HSCAN", "k", "x"], ["SSCAN", "k", "0"],
    ["SINTERCARD", "2", "k"], ["SINTERCARD", "1", "nope", "k"], ["SUNION", "nope", "k"], ["SDIFF", "nope", "k"],
    ["SDIFFSTORE", "d", "nope", "k"], ["SISMEMBER", "k", "a"], ["SCARD", "k"], ["SREM", "k", "a"], ["SPOP", "k"],
    ["SRANDMEMBER", "k"],
]]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [FIXED, EDGES], ids=["fixed", "edges"])
def test_every_new_command_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    for args in cases:
        run(pair, args, resp3)
        compare_state(pair)


NEW_COMMANDS = ["hset", "hsetnx", "hget", "hmget", "hmset", "hgetall", "hdel", "hexists", "hlen", "hkeys",
                "hvals", "hincrby", "hincrbyfloat", "hstrlen", "hrandfield", "hscan", "sadd", "srem", "smembers",
                "sismember", "smismember", "scard", "spop", "srandmember", "smove", "sinter", "sintercard",
                "sunion", "sdiff", "sinterstore", "sunionstore", "sdiffstore", "sscan"]


def test_command_info_matches(pair: Pair) -> None:
    args = [b"COMMAND", b"INFO", *[c.encode() for c in NEW_COMMANDS]]
    got, want = pair.atlas.r2.call(args), pair.redis.r2.call(args)
    for g, w, name in zip(got[1], want[1], NEW_COMMANDS, strict=True):
        # name, arity, flags (atlasd lists them sorted), first key, last key, step
        g6, w6 = norm(g)[1][:6], norm(w)[1][:6]
        g6[2], w6[2] = _sort(g6[2][1]), _sort(w6[2][1])
        assert g6 == w6, name
        assert norm(g)[1][6] == norm(w)[1][6], (name, "ACL categories")


TRANSACTION: list[list[bytes]] = [[w.encode() for w in c] for c in [
    ["HSET", "tx", "a", "1"], ["MULTI"], ["HSET", "tx", "b", "2"], ["HGETALL", "tx"], ["SADD", "txs", "m", "n"],
    ["SMEMBERS", "txs"], ["SDIFF", "txs", "tx2"], ["HINCRBYFLOAT", "tx", "a", "0.5"], ["SADD", "tx", "x"],
    ["HSET", "tx"], ["SINTERCARD", "1", "txs"], ["EXEC"],
]]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_transactions_and_watch(pair: Pair, resp3: bool) -> None:
    pair.reset()
    for args in TRANSACTION:
        run(pair, args, resp3)
        if args[0] in (b"EXEC", b"HSET"):
            compare_state(pair)
    # A write to a watched hash or set by another client makes EXEC fail, on both servers.
    for watched, write in ((b"tx", [b"HDEL", b"tx", b"a"]), (b"txs", [b"SREM", b"txs", b"m"])):
        for args in ([b"WATCH", watched],):
            run(pair, args, resp3)
        for side in (pair.atlas, pair.redis):
            side.conn(not resp3).call(write)
        for args in ([b"MULTI"], [b"SCARD", b"txs"], [b"EXEC"]):
            run(pair, args, resp3)
        compare_state(pair)
