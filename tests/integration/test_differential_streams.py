"""Streams: a real atlasd against a real redis-server, RESP2 and RESP3, reply by reply.

The raw-socket client and the reply trees are test_differential_types.py's: every
reply keeps its RESP type and everything (error texts included) must be equal.
Ids are given explicitly so both servers agree; `*` ids are checked for their
shape and monotonicity only.  What depends on the clock or on Redis's radix-tree
internals is masked: idle times and delivery/seen times (XPENDING, XINFO) and
XINFO STREAM's radix-tree-nodes.  After every command each stream key is compared
whole: entries, XINFO STREAM, its groups, each group's PEL and consumers.

Blocking XREAD/XREADGROUP are compared where their reply does not depend on
another client (data present, inside MULTI, a short BLOCK timing out, argument
errors); waking by another client is test_atlasd_streams.py's.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Pair, Raw, Side, cased, cmd, norm, some
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)

Tree = tuple[str, Any]


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("streams")) as d:
        yield d


@pytest.fixture(scope="module")
def pair(atlasd: Daemon, redis_server: RedisServer) -> Iterator[Pair]:  # noqa: F811
    pw = atlasd.password
    p = Pair(Side(Raw(atlasd.port, pw, False), Raw(atlasd.port, pw, True)),
             Side(Raw(redis_server.port, None, False), Raw(redis_server.port, None, True)))
    try:
        yield p
    finally:
        for side in (p.atlas, p.redis):
            side.r2.close()
            side.r3.close()


SKEYS = [b"s1", b"s2"]
OTHER = [b"k1"]
ALL_KEYS = SKEYS + OTHER + [b"nope", b"s3"]
GROUPS = [b"g1", b"g2"]

# -- masking what the clock or Redis's internals decide -----------------------------------------------

_MASKED_KEYS = {b"idle", b"seen-time", b"radix-tree-nodes"}
MASK = ("masked", None)


def _mask_map_items(items: list[tuple[Tree, Tree]]) -> list[tuple[Tree, Tree]]:
    out = []
    for k, v in items:
        name = k[1] if k[0] in "$+" else None
        if isinstance(name, str):
            name = name.encode()
        if name in _MASKED_KEYS:
            v = MASK
        elif name == b"pending" and v[0] == "*":
            v = ("*", [_mask_pel_row(r) for r in v[1]])
        else:
            v = mask(v)
        out.append((k, v))
    return out


def _mask_pel_row(row: Tree) -> Tree:
    """XINFO FULL's PEL rows: [id, consumer, time, count] or [id, time, count]: the time goes."""
    kind, v = row
    if kind != "*" or len(v) not in (3, 4):
        return mask(row)
    v = list(v)
    v[-2] = MASK
    return ("*", v)


def _is_flat_map(v: list[Tree]) -> bool:
    return (len(v) >= 2 and len(v) % 2 == 0 and v[0][0] == "$" and v[0][1] in
            {b"name", b"length", b"last-delivered-id"})


def mask(tree: Tree) -> Tree:
    kind, v = tree
    if kind == "%":
        return ("%", _mask_map_items(v))
    if kind == "*" and _is_flat_map(v):
        pairs = _mask_map_items(list(zip(v[::2], v[1::2], strict=True)))
        return ("*", [x for p in pairs for x in p])
    if kind in "*>~":
        return (kind, [mask(x) for x in v])
    return tree


def mask_for(args: list[bytes], tree: Tree) -> Tree:
    name = args[0].upper()
    if name == b"XPENDING" and len(args) > 3 and tree[0] == "*":
        # [id, consumer, idle ms, deliveries]: the idle time is the clock's
        return ("*", [("*", [r[1][0], r[1][1], MASK, r[1][3]]) if r[0] == "*" else r for r in tree[1]])
    if name in (b"XINFO",):
        return mask(tree)
    return tree


# -- running and comparing -------------------------------------------------------------------------

def run(pair: Pair, args: list[bytes], resp3: bool) -> None:
    got = pair.atlas.conn(resp3).call(args)
    want = pair.redis.conn(resp3).call(args)
    g, w = norm(mask_for(args, got)), norm(mask_for(args, want))
    assert g == w, (f"{args!r} (resp{3 if resp3 else 2}) after {pair.done!r}:\n atlasd {got!r}\n redis  {want!r}")
    pair.done.append((args, resp3))


def _group_names(side: Side, key: bytes) -> list[bytes]:
    reply = side.r2.call([b"XINFO", b"GROUPS", key])
    if reply[0] != "*":
        return []
    return [g[1][1][1] for g in reply[1]]


def state(side: Side) -> list:
    out: list = []
    types = side.r2.call_many([[b"TYPE", k] for k in ALL_KEYS])
    for k, (_, t) in zip(ALL_KEYS, types, strict=True):
        if t != "stream":
            out.append((k, t, side.r2.call([b"EXISTS", k])))
            continue
        reads = [[b"XRANGE", k, b"-", b"+"], [b"XINFO", b"STREAM", k], [b"XINFO", b"GROUPS", k],
                 [b"XINFO", b"STREAM", k, b"FULL"]]
        for g in _group_names(side, k):
            reads += [[b"XPENDING", k, g], [b"XPENDING", k, g, b"-", b"+", b"100"], [b"XINFO", b"CONSUMERS", k, g]]
        replies = side.r2.call_many(reads)
        out.append((k, t, [(a, norm(mask_for(a, r))) for a, r in zip(reads, replies, strict=True)]))
    return out


def compare_state(pair: Pair) -> None:
    got, want = state(pair.atlas), state(pair.redis)
    assert got == want, f"keyspace differs after {pair.done!r}:\natlasd {got!r}\nredis  {want!r}"


def _words(cases: list[list[str]]) -> list[list[bytes]]:
    return [[w.encode() for w in c] for c in cases]


FIXED = _words([
    ["XADD", "s", "1-1", "a", "1"], ["XADD", "s", "1-1", "a", "1"], ["XADD", "s", "1-0", "a", "1"],
    ["XADD", "s", "1", "b", "2"], ["XADD", "s", "1-*", "c", "3", "d", "4"], ["XADD", "s", "2-*", "e", "5"],
    ["XADD", "s", "0-0", "a", "1"], ["XADD", "s", "0", "a", "1"], ["XADD", "s", "0-*", "a", "1"],
    ["XADD", "s", "3-1", "a"], ["XADD", "s", "3-1"], ["XADD", "s"], ["XADD", "s", "x", "a", "1"],
    ["XADD", "s", "3-x", "a", "1"], ["XADD", "s", "-1", "a", "1"], ["XADD", "s", "+", "a", "1"],
    ["XADD", "s", "3-1-1", "a", "1"], ["XADD", "s", "18446744073709551616-1", "a", "1"],
    ["XADD", "s", "NOMKSTREAM", "4-1", "f", "v"], ["XADD", "nope", "NOMKSTREAM", "1-1", "f", "v"],
    ["XADD", "s", "MAXLEN", "-1", "5-1", "a", "1"], ["XADD", "s", "MAXLEN", "x", "5-1", "a", "1"],
    ["XADD", "s", "MAXLEN", "5", "LIMIT", "2", "5-1", "a", "1"], ["XADD", "s", "LIMIT", "2", "5-1", "a", "1"],
    ["XADD", "s", "LIMIT", "0", "5-1", "a", "1"], ["XADD", "s", "MAXLEN", "~", "5", "LIMIT", "-1", "5-1", "a", "1"],
    ["XADD", "s", "MINID", "x", "5-1", "a", "1"], ["XADD", "s", "MINID", "=", "2", "5-1", "a", "1"],
    ["XRANGE", "s", "-", "+"], ["XADD", "s", "MAXLEN", "=", "3", "6-1", "a", "1"], ["XRANGE", "s", "-", "+"],
    ["XADD", "s", "maxlen", "~", "1", "7-1", "a", "1"], ["XLEN", "s"], ["XLEN", "nope"],
    ["XRANGE", "s", "-", "+", "COUNT", "2"], ["XRANGE", "s", "-", "+", "COUNT", "0"],
    ["XRANGE", "s", "-", "+", "COUNT", "-1"], ["XRANGE", "s", "-", "+", "COUNT", "x"],
    ["XRANGE", "s", "-", "+", "COUNT"], ["XRANGE", "s", "-", "+", "FOO", "1"], ["XRANGE", "s", "5", "6"],
    ["XRANGE", "s", "(5-1", "+"], ["XRANGE", "s", "-", "(7-1"], ["XRANGE", "s", "(-", "+"], ["XRANGE", "s", "-", "(+"],
    ["XRANGE", "s", "(18446744073709551615-18446744073709551615", "+"], ["XRANGE", "s", "-", "(0-0"],
    ["XRANGE", "s", "9", "1"], ["XRANGE", "nope", "-", "+"], ["XRANGE", "nope", "x", "+"],
    ["XRANGE", "nope", "-", "+", "COUNT", "0"], ["XRANGE", "s", "x", "+"], ["XRANGE", "s", "5-1", "5-1"],
    ["XREVRANGE", "s", "+", "-"], ["XREVRANGE", "s", "+", "-", "COUNT", "1"], ["XREVRANGE", "s", "(7-1", "-"],
    ["XREVRANGE", "s", "-", "+"], ["XRANGE", "s", "01", "+"], ["XRANGE", "s", " 6", "+"], ["XRANGE", "s", "+6", "+"],
    ["XDEL", "s", "6-1"], ["XDEL", "s", "6-1", "7-1", "7-1", "99-1"], ["XDEL", "s", "x"], ["XDEL", "nope", "x"],
    ["XDEL", "s", "-"], ["XLEN", "s"], ["XRANGE", "s", "-", "+"], ["EXISTS", "s"], ["XADD", "s", "7-1", "a", "1"],
    ["XADD", "s", "8-1", "a", "1"], ["XADD", "s", "9-1", "a", "1"], ["XDEL", "s", "8-1"],
    ["XTRIM", "s", "MAXLEN", "1"], ["XTRIM", "s", "MAXLEN", "5"], ["XTRIM", "nope", "MAXLEN", "1"],
    ["XTRIM", "s", "FOO", "1"], ["XTRIM", "s", "MAXLEN", "-1"], ["XTRIM", "s", "LIMIT", "1"],
    ["XTRIM", "s", "MAXLEN", "1", "LIMIT", "1"], ["XTRIM", "s", "MINID", "(1"], ["XTRIM", "s", "MINID", "-"],
    ["XTRIM", "s", "MAXLEN", "0"], ["XLEN", "s"], ["TYPE", "s"], ["OBJECT", "ENCODING", "s"],
    ["XSETID", "s", "1-1"], ["XSETID", "s", "100-1"], ["XSETID", "nope", "1-1"], ["XSETID", "s", "x"],
    ["XSETID", "s", "200-1", "ENTRIESADDED", "-1"], ["XSETID", "s", "200-1", "ENTRIESADDED", "50"],
    ["XSETID", "s", "200-1", "MAXDELETEDID", "300-1"], ["XSETID", "s", "200-1", "MAXDELETEDID", "150-1"],
    ["XSETID", "s", "100-1"], ["XSETID", "s", "300-1", "FOO"], ["XADD", "s", "300-5", "a", "1"],
    ["XADD", "big", "1-1", "a", "1"], ["XSETID", "big", "1-1", "ENTRIESADDED", "0"],
    ["XSETID", "big", "18446744073709551615-18446744073709551615"], ["XADD", "big", "*", "a", "1"],
    ["XADD", "big", "18446744073709551615-*", "a", "1"],
    ["SET", "k1", "v"], ["XADD", "k1", "1-1", "a", "1"], ["XADD", "k1", "0-0", "a", "1"], ["XLEN", "k1"],
    ["XRANGE", "k1", "-", "+"], ["XDEL", "k1", "1-1"], ["XTRIM", "k1", "MAXLEN", "1"], ["XSETID", "k1", "1-1"],
    ["XADD", "bin", "1-1", "\x00\xff", "", "", "v"], ["XRANGE", "bin", "-", "+"],
    ["RENAME", "bin", "bin2"], ["XRANGE", "bin2", "-", "+"], ["TYPE", "bin2"], ["XINFO", "STREAM", "bin2"],
])

GROUPS_CASES = _words([
    ["XADD", "s", "1-1", "a", "1"], ["XADD", "s", "2-1", "b", "2"], ["XADD", "s", "3-1", "c", "3"],
    ["XGROUP", "CREATE", "s", "g1", "0"], ["XGROUP", "CREATE", "s", "g1", "0"], ["XGROUP", "CREATE", "s", "g2", "$"],
    ["XGROUP", "CREATE", "s", "g3", "1-1", "ENTRIESREAD", "1"], ["XGROUP", "CREATE", "s", "g4", "x"],
    ["XGROUP", "CREATE", "s", "g4", "0", "ENTRIESREAD", "-2"], ["XGROUP", "CREATE", "s", "g4", "0", "FOO"],
    ["XGROUP", "CREATE", "s", "g4", "0", "1", "2", "3", "4"], ["XGROUP", "CREATE", "nope", "g", "0"],
    ["XGROUP", "CREATE", "s3", "g", "$", "MKSTREAM"], ["XINFO", "STREAM", "s3"], ["XGROUP", "CREATE", "s"],
    ["XGROUP", "FOO"], ["XGROUP", "HELP"], ["XGROUP", "DESTROY", "s3", "g"], ["XGROUP", "DESTROY", "s3", "g"],
    ["XGROUP", "DESTROY", "nope", "g"], ["XGROUP", "SETID", "nope", "g", "0"], ["XGROUP", "SETID", "s", "nog", "0"],
    ["XGROUP", "SETID", "s", "g3", "2-1", "ENTRIESREAD", "2"], ["XGROUP", "SETID", "s", "g3", "+"],
    ["XGROUP", "SETID", "s", "g3", "$"], ["XGROUP", "SETID", "s", "g3", "0", "FOO"],
    ["XGROUP", "CREATECONSUMER", "s", "g1", "c0"], ["XGROUP", "CREATECONSUMER", "s", "g1", "c0"],
    ["XGROUP", "CREATECONSUMER", "s", "nog", "c0"], ["XGROUP", "CREATECONSUMER", "s", "g1"],
    ["XREADGROUP", "GROUP", "g1", "c1", "COUNT", "1", "STREAMS", "s", ">"],
    ["XREADGROUP", "GROUP", "g1", "c2", "STREAMS", "s", ">"], ["XREADGROUP", "GROUP", "g1", "c2", "STREAMS", "s", ">"],
    ["XREADGROUP", "GROUP", "g1", "c1", "STREAMS", "s", "0"], ["XREADGROUP", "GROUP", "g1", "c9", "STREAMS", "s", "0"],
    ["XREADGROUP", "GROUP", "g1", "c2", "COUNT", "1", "STREAMS", "s", "1-1"],
    ["XREADGROUP", "GROUP", "g1", "c2", "STREAMS", "s", "$"], ["XREADGROUP", "GROUP", "nog", "c2", "STREAMS", "s", ">"],
    ["XREADGROUP", "GROUP", "g1", "c2", "STREAMS", "nope", ">"], ["XREADGROUP", "STREAMS", "s", ">"],
    ["XREADGROUP", "GROUP", "g1", "c2", "STREAMS", "s"], ["XREADGROUP", "GROUP", "g1", "c2", "STREAMS", "s", "x"],
    ["XREADGROUP", "GROUP", "g2", "c1", "NOACK", "STREAMS", "s", ">"], ["XADD", "s", "4-1", "d", "4"],
    ["XREADGROUP", "GROUP", "g2", "c1", "NOACK", "STREAMS", "s", ">"], ["XREADGROUP", "GROUP", "g2", "c1", "STREAMS",
                                                                       "s", "0"],
    ["XPENDING", "s", "g1"], ["XPENDING", "s", "g2"], ["XPENDING", "s", "nog"], ["XPENDING", "nope", "g1"],
    ["XPENDING", "s", "g1", "-", "+", "10"], ["XPENDING", "s", "g1", "-", "+", "1"],
    ["XPENDING", "s", "g1", "(1-1", "+", "10"], ["XPENDING", "s", "g1", "-", "+", "10", "c2"],
    ["XPENDING", "s", "g1", "-", "+", "10", "c0"], ["XPENDING", "s", "g1", "-", "+", "10", "nobody"],
    ["XPENDING", "s", "g1", "IDLE", "0", "-", "+", "10"], ["XPENDING", "s", "g1", "IDLE", "9999999", "-", "+", "10"],
    ["XPENDING", "s", "g1", "IDLE", "x", "-", "+", "10"], ["XPENDING", "s", "g1", "IDLE", "0", "-", "+"],
    ["XPENDING", "s", "g1", "-", "+"], ["XPENDING", "s", "g1", "-", "+", "x"], ["XPENDING", "s", "g1", "x", "+", "1"],
    ["XPENDING", "s", "g1", "-", "+", "-1"], ["XPENDING", "s", "g1", "-"],
    ["XCLAIM", "s", "g1", "c3", "0", "1-1"], ["XCLAIM", "s", "g1", "c3", "0", "1-1", "2-1", "JUSTID"],
    ["XCLAIM", "s", "g1", "c4", "9999999", "1-1"], ["XCLAIM", "s", "g1", "c4", "0", "1-1", "RETRYCOUNT", "7"],
    ["XCLAIM", "s", "g1", "c4", "0", "4-1"], ["XCLAIM", "s", "g1", "c4", "0", "4-1", "FORCE"],
    ["XCLAIM", "s", "g1", "c4", "0", "4-1", "FORCE", "JUSTID", "IDLE", "5"],
    ["XCLAIM", "s", "g1", "c4", "0", "9-9", "FORCE"], ["XCLAIM", "s", "g1", "c4", "x", "1-1"],
    ["XCLAIM", "s", "g1", "c4", "0", "1-1", "FOO"], ["XCLAIM", "s", "g1", "c4", "0", "1-1", "IDLE", "x"],
    ["XCLAIM", "s", "g1", "c4", "0", "1-1", "TIME", "x"], ["XCLAIM", "s", "g1", "c4", "0", "1-1", "RETRYCOUNT", "x"],
    ["XCLAIM", "s", "g1", "c4", "0", "1-1", "LASTID", "x"], ["XCLAIM", "s", "g1", "c4", "0", "1-1", "LASTID", "9-9"],
    ["XCLAIM", "s", "nog", "c4", "0", "1-1"], ["XCLAIM", "nope", "g1", "c4", "0", "1-1"],
    ["XCLAIM", "s", "g1", "c4", "0", "1-1", "1-1"],
    ["XDEL", "s", "2-1"], ["XCLAIM", "s", "g1", "c4", "0", "2-1"], ["XPENDING", "s", "g1"],
    ["XREADGROUP", "GROUP", "g1", "c4", "STREAMS", "s", "0"],
    ["XAUTOCLAIM", "s", "g1", "c5", "0", "0"], ["XAUTOCLAIM", "s", "g1", "c5", "0", "0", "COUNT", "1"],
    ["XAUTOCLAIM", "s", "g1", "c6", "0", "(1-1", "COUNT", "1", "JUSTID"],
    ["XAUTOCLAIM", "s", "g1", "c6", "9999999", "0"], ["XAUTOCLAIM", "s", "g1", "c6", "0", "0", "COUNT", "0"],
    ["XAUTOCLAIM", "s", "g1", "c6", "0", "0", "COUNT", "x"], ["XAUTOCLAIM", "s", "g1", "c6", "x", "0"],
    ["XAUTOCLAIM", "s", "g1", "c6", "0", "x"], ["XAUTOCLAIM", "s", "g1", "c6", "0", "0", "FOO"],
    ["XAUTOCLAIM", "s", "nog", "c6", "0", "0"], ["XAUTOCLAIM", "nope", "g1", "c6", "0", "0"],
    ["XREADGROUP", "GROUP", "g1", "c7", "STREAMS", "s", "0"], ["XADD", "s", "5-1", "e", "5"],
    ["XREADGROUP", "GROUP", "g1", "c7", "STREAMS", "s", ">"], ["XDEL", "s", "5-1"],
    ["XAUTOCLAIM", "s", "g1", "c8", "0", "0"], ["XPENDING", "s", "g1"],
    ["XACK", "s", "g1", "1-1", "3-1", "1-1", "9-9"], ["XACK", "s", "g1", "x"], ["XACK", "s", "nog", "x"],
    ["XACK", "nope", "g1", "1-1"], ["XACK", "s", "g1"], ["XPENDING", "s", "g1"],
    ["XINFO", "GROUPS", "s"], ["XINFO", "CONSUMERS", "s", "g1"], ["XINFO", "CONSUMERS", "s", "nog"],
    ["XINFO", "STREAM", "s"], ["XINFO", "STREAM", "s", "FULL"], ["XINFO", "STREAM", "s", "FULL", "COUNT", "1"],
    ["XINFO", "STREAM", "s", "FULL", "COUNT", "0"], ["XINFO", "STREAM", "s", "FULL", "COUNT", "x"],
    ["XINFO", "STREAM", "s", "FOO"], ["XINFO", "STREAM", "s", "FULL", "FOO", "1"], ["XINFO", "STREAM", "nope"],
    ["XINFO", "GROUPS", "nope"], ["XINFO", "FOO"], ["XINFO", "HELP"], ["XINFO", "GROUPS"],
    ["XGROUP", "DELCONSUMER", "s", "g1", "c4"], ["XGROUP", "DELCONSUMER", "s", "g1", "c4"],
    ["XGROUP", "DELCONSUMER", "s", "nog", "c4"], ["XPENDING", "s", "g1"], ["XGROUP", "DESTROY", "s", "g1"],
    ["XINFO", "GROUPS", "s"], ["SET", "k1", "v"], ["XGROUP", "CREATE", "k1", "g", "0"],
    ["XREADGROUP", "GROUP", "g", "c", "STREAMS", "k1", ">"], ["XACK", "k1", "g", "1-1"],
    ["XPENDING", "k1", "g"], ["XCLAIM", "k1", "g", "c", "0", "1-1"], ["XAUTOCLAIM", "k1", "g", "c", "0", "0"],
    ["XINFO", "STREAM", "k1"], ["XINFO", "GROUPS", "k1"],
])

READS = _words([
    ["XADD", "s1", "1-1", "a", "1"], ["XADD", "s1", "2-1", "b", "2"], ["XADD", "s2", "1-1", "c", "3"],
    ["XREAD", "STREAMS", "s1", "0"], ["XREAD", "COUNT", "1", "STREAMS", "s1", "s2", "0", "0"],
    ["XREAD", "STREAMS", "s1", "s2", "1-1", "1-1"], ["XREAD", "STREAMS", "s1", "s1", "s1", "0", "1-1", "0"],
    ["XREAD", "STREAMS", "s1", "$"], ["XREAD", "STREAMS", "nope", "0"],
    ["XREAD", "STREAMS", "s1"], ["XREAD", "STREAMS", "s1", "s2", "0"], ["XREAD", "STREAMS", "s1", ">"],
    ["XREAD", "STREAMS", "s1", "x"], ["XREAD", "GROUP", "g", "c", "STREAMS", "s1", "0"],
    ["XREAD", "NOACK", "STREAMS", "s1", "0"], ["XREAD", "COUNT", "x", "STREAMS", "s1", "0"],
    ["XREAD", "COUNT", "-5", "STREAMS", "s1", "0"], ["XREAD", "FOO", "STREAMS", "s1", "0"],
    ["XREAD", "COUNT", "1", "s1", "0"], ["XREAD", "BLOCK", "x", "STREAMS", "s1", "0"],
    ["XREAD", "BLOCK", "-1", "STREAMS", "s1", "0"], ["XREAD", "BLOCK", "10", "STREAMS", "s1", "0"],
    ["XREAD", "BLOCK", "10", "STREAMS", "s1", "$"], ["XREAD", "BLOCK", "10", "STREAMS", "nope", "0"],
    ["XREAD", "BLOCK", "1.5", "STREAMS", "nope", "0"],
    ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s1", ">"],
    ["XGROUP", "CREATE", "s1", "g", "$"], ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s1", ">"],
    ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "10", "STREAMS", "s1", "0"],
    ["SET", "k1", "v"], ["XREAD", "STREAMS", "k1", "0"], ["XREAD", "STREAMS", "s1", "k1", "0", "0"],
    ["MULTI"], ["XREAD", "BLOCK", "0", "STREAMS", "nope", "0"], ["XREAD", "BLOCK", "0", "STREAMS", "s1", "$"],
    ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s1", ">"], ["XADD", "s1", "3-1", "d", "4"],
    ["XREAD", "BLOCK", "0", "STREAMS", "s1", "2-1"], ["XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s1",
                                                     ">"], ["EXEC"],
    ["EVAL", "return redis.call('XREAD', 'STREAMS', KEYS[1], '0')", "1", "s1"],
    ["EVAL", "return redis.pcall('XREAD', 'BLOCK', '0', 'STREAMS', KEYS[1], '0')", "1", "s1"],
])


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
@pytest.mark.parametrize("cases", [FIXED, GROUPS_CASES, READS], ids=["fixed", "groups", "reads"])
def test_every_stream_command_fixed_cases(pair: Pair, resp3: bool, cases: list[list[bytes]]) -> None:
    pair.reset()
    for args in cases:
        run(pair, args, resp3)
        compare_state(pair)


def test_approximate_trimming_follows_redis_nodes(pair: Pair) -> None:
    """`~` trims whole nodes of 100 entries, as Redis's listpacks (small entries)."""
    pair.reset()
    for side in (pair.atlas, pair.redis):
        side.r2.call_many([[b"XADD", b"t", b"%d-1" % i, b"f", b"v"] for i in range(1, 351)])
    for args in ([b"XTRIM", b"t", b"MAXLEN", b"~", b"260"], [b"XTRIM", b"t", b"MAXLEN", b"~", b"180"],
                 [b"XDEL", b"t", b"201-1", b"250-1"], [b"XTRIM", b"t", b"MINID", b"~", b"305-1"],
                 [b"XADD", b"t", b"MAXLEN", b"~", b"10", b"LIMIT", b"50", b"400-1", b"f", b"v"],
                 [b"XADD", b"t", b"MAXLEN", b"~", b"10", b"400-2", b"f", b"v"], [b"XLEN", b"t"],
                 [b"XTRIM", b"t", b"MINID", b"305-1"], [b"XRANGE", b"t", b"-", b"+", b"COUNT", b"3"],
                 [b"XINFO", b"STREAM", b"t"]):
        run(pair, args, False)


def test_node_layout_follows_redis_with_large_and_mixed_entries(pair: Pair) -> None:
    """Nodes also end at 4096 listpack bytes: entries of every size and integer encoding, field
    sets equal to a node's master fields or not, ids far apart (9-byte deltas) - compared through
    XINFO STREAM's radix-tree-keys (one per node) and what approximate trims remove."""
    rnd = random.Random(7)
    pair.reset()
    ms = 1
    values = [b"1", b"-5", b"123456", b"99999999999", b"x" * 63, b"x" * 64, b"-4097", b"40000", b"9000000"]
    for i in range(700):
        ms += rnd.choice([0, 1, 1000, 70000, 1 << 33])
        names = rnd.choice([[b"a"], [b"a", b"b"], [b"x", b"a", b"b"], [b"f%d" % rnd.randint(0, 3)]])
        fv: list[bytes] = []
        for _ in range(rnd.choice([1, 1, 2, 3])):
            fv += [rnd.choice(names), rnd.choice(values + [b"v" * rnd.randint(0, 300)])]
        args = [b"XADD", b"big", b"%d-%d" % (ms, i), *fv]
        if i % 97 == 96:
            args[2:2] = [b"MAXLEN", b"~", b"%d" % rnd.randint(0, 300)]
        run(pair, args, False)
        if i % 50 == 0:
            run(pair, [b"XINFO", b"STREAM", b"big"], False)
            got_info = pair.atlas.r2.call([b"XINFO", b"STREAM", b"big"])[1]
            want_info = pair.redis.r2.call([b"XINFO", b"STREAM", b"big"])[1]
            # [name, value, ...]: radix-tree-keys (one per node) is not masked here
            assert got_info[3] == want_info[3] and got_info[2] == ("$", b"radix-tree-keys"), i
    for n in (b"400", b"100", b"0"):
        run(pair, [b"XTRIM", b"big", b"MAXLEN", b"~", n], False)


def test_dump_payloads_restore_on_the_other_server(pair: Pair) -> None:
    """DUMP of a stream (entries, deleted ones, groups, consumers, PELs) restores on the other side
    as the same stream; Redis's own payloads (deleted entries still in their nodes) load in atlasd."""
    pair.reset()
    setup = _words([
        ["XADD", "s", "1-1", "a", "1", "b", "x" * 70], ["XADD", "s", "2-1", "a", "2", "b", "y"],
        ["XADD", "s", "3-1", "c", "-4097"], ["XADD", "s", "18446744073709551614-3", "a", "99999999999"],
        ["XDEL", "s", "2-1"], ["XGROUP", "CREATE", "s", "g", "0"], ["XGROUP", "CREATE", "s", "h", "$"],
        ["XREADGROUP", "GROUP", "g", "c1", "COUNT", "2", "STREAMS", "s", ">"],
        ["XCLAIM", "s", "g", "c2", "0", "3-1", "FORCE", "TIME", "1700000000000", "RETRYCOUNT", "5"],
        ["XGROUP", "CREATECONSUMER", "s", "h", "idle"], ["XGROUP", "CREATE", "e", "g", "$", "MKSTREAM"],
    ])
    for args in setup:
        run(pair, args, False)
    for i in range(150):
        run(pair, [b"XADD", b"big", b"%d-0" % (i + 1), b"f", b"v%d" % i], False)
    run(pair, [b"XDEL", b"big", b"50-0", b"120-0"], False)
    for key in (b"s", b"e", b"big"):
        mine = pair.atlas.r2.call([b"DUMP", key])[1]
        theirs = pair.redis.r2.call([b"DUMP", key])[1]
        assert pair.redis.r2.call([b"RESTORE", key + b"-a", b"0", mine]) == ("+", "OK")
        assert pair.atlas.r2.call([b"RESTORE", key + b"-r", b"0", theirs]) == ("+", "OK")
        full = [b"XINFO", b"STREAM"]
        want = norm(mask(pair.redis.r2.call([*full, key, b"FULL"])))
        assert norm(mask(pair.redis.r2.call([*full, key + b"-a", b"FULL"]))) == want, key
        assert norm(mask(pair.atlas.r2.call([*full, key + b"-r", b"FULL"]))) == want, key
    # a restored stream keeps the payload's nodes: approximate trims go as on the original
    for n in (b"120", b"0"):
        got = pair.atlas.r2.call([b"XTRIM", b"big-r", b"MAXLEN", b"~", n])
        assert got == pair.redis.r2.call([b"XTRIM", b"big", b"MAXLEN", b"~", n]), n
    # a payload with a wrong checksum or a cut-off body: Redis's errors
    bad = pair.atlas.r2.call([b"DUMP", b"s"])[1]
    for payload in (bad[:-1] + bytes((bad[-1] ^ 1,)), bad[:5] + bad[-10:]):
        run(pair, [b"RESTORE", b"x", b"0", payload], False)


NEW_COMMANDS = ["xadd", "xlen", "xrange", "xrevrange", "xdel", "xtrim", "xread", "xreadgroup", "xack", "xpending",
                "xclaim", "xautoclaim", "xsetid"]


def test_command_info_matches(pair: Pair) -> None:
    args = [b"COMMAND", b"INFO", *[c.encode() for c in NEW_COMMANDS + ["xgroup", "xinfo"]]]
    got, want = pair.atlas.r2.call(args), pair.redis.r2.call(args)
    for g, w, name in zip(got[1], want[1], NEW_COMMANDS + ["xgroup", "xinfo"], strict=True):
        g6, w6 = norm(g)[1][:6], norm(w)[1][:6]
        g6[2], w6[2] = sorted(g6[2][1]), sorted(w6[2][1])
        assert g6 == w6, name
        assert norm(g)[1][6] == norm(w)[1][6], (name, "ACL categories")
        if name in ("xread", "xreadgroup"):  # (atlasd reports key specs only where they find movable keys)
            assert norm(g)[1][8] == norm(w)[1][8], (name, "key specs")


# COMMAND GETKEYS as Redis 7.0 finds XREAD/XREADGROUP's keys: the STREAMS key spec (the first half of
# what follows the first STREAMS from argument 1, or 4 for XREADGROUP), and where the spec does not fit
# the command line, xreadGetKeys (which parses the options to find its STREAMS).
GETKEYS = _words([["COMMAND", "GETKEYS", *c.split()] for c in (
    "XREAD STREAMS a 0", "XREAD STREAMS a b 0 0", "XREAD COUNT 1 BLOCK 0 STREAMS a b 0 0", "XREAD streams a 0",
    "XREAD STREAMS a b 0", "XREAD STREAMS a b c", "XREAD STREAMS a", "XREAD COUNT 1 STREAMS", "XREAD COUNT 1 STREAMS a",
    "XREAD FOO STREAMS a 0", "XREAD STREAMS STREAMS a 0", "XREAD COUNT STREAMS STREAMS a 0", "XREAD a b c d",
    "XREAD BLOCK STREAMS STREAMS x", "XREADGROUP GROUP g c STREAMS a 0", "XREADGROUP GROUP g c STREAMS a b > >",
    "XREADGROUP GROUP g c NOACK STREAMS a b 1 2", "XREADGROUP GROUP g STREAMS c STREAMS a 0",
    "XREADGROUP GROUP g c STREAMS a 0 b", "XREADGROUP GROUP g c COUNT 1 STREAMS a", "XREADGROUP GROUP g c d e f",
    "XREADGROUP GROUP g c STREAMS STREAMS", "XREADGROUP GROUP", "XREADGROUP STREAMS a b c d STREAMS x",
    "XREADGROUP STREAMS a b c d STREAMS x y", "XREADGROUP NOACK STREAMS a b c STREAMS x",
    "XREADGROUP STREAMS a b c STREAMS x", "XREADGROUP COUNT STREAMS a b c STREAMS x",
    "XREADGROUP BLOCK 1 STREAMS a b STREAMS x", "XREADGROUP FOO STREAMS a b c d STREAMS x",
)]) + [[b"COMMAND", b"GETKEYS", b"XREAD", b"streams\0x", b"a", b"0"],
       [b"COMMAND", b"GETKEYS", b"XREADGROUP", b"STREAMS\0x", b"a", b"b", b"c", b"d", b"STREAMS", b"x"]]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_getkeys_finds_the_stream_keys(pair: Pair, resp3: bool) -> None:
    for args in GETKEYS:
        run(pair, args, resp3)


_ID = re.compile(rb"\A([0-9]+)-([0-9]+)\Z")


def test_auto_ids_have_the_shape_and_grow(pair: Pair) -> None:
    pair.reset()
    conn = pair.atlas.r2
    seen: list[tuple[int, int]] = []
    for i in range(50):
        kind, v = conn.call([b"XADD", b"auto", b"*", b"n", b"%d" % i])
        m = _ID.match(v)
        assert kind == "$" and m is not None, v
        seen.append((int(m[1]), int(m[2])))
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    # an explicit id far in the future: `*` continues from it (seq + 1), never below
    assert conn.call([b"XADD", b"auto", b"99999999999999-7", b"n", b"x"]) == ("$", b"99999999999999-7")
    assert conn.call([b"XADD", b"auto", b"*", b"n", b"y"]) == ("$", b"99999999999999-8")
    kind, v = conn.call([b"XADD", b"auto", b"99999999999999-*", b"n", b"z"])
    assert v == b"99999999999999-9"


# -- random programs, compared state by state ------------------------------------------------

skey = st.sampled_from(SKEYS * 4 + OTHER + [b"nope"])
group = st.sampled_from(GROUPS + [b"nog"])
consumer = st.sampled_from([b"c1", b"c2", b"c3"])
sid = st.one_of(st.tuples(st.integers(0, 6), st.integers(0, 3)).map(lambda t: b"%d-%d" % t),
                st.sampled_from([b"3", b"-", b"+", b"x", b"(2-1", b"$", b">", b"0"]))
fields = some(st.tuples(st.sampled_from([b"a", b"b", b""]), st.sampled_from([b"1", b"x", b"\xff"])).map(list),
              1, 2).map(lambda ps: [b for p in ps for b in p])
count = st.sampled_from([b"0", b"1", b"2", b"-1", b"x"])
trim = st.one_of(st.just([]), st.tuples(cased(b"MAXLEN"), st.sampled_from([[], [b"="], [b"~"]]),
                                        st.sampled_from([b"0", b"1", b"2", b"-1"])).map(lambda t: [t[0], *t[1], t[2]]),
                 st.tuples(cased(b"MINID"), st.sampled_from([[], [b"="]]), sid).map(lambda t: [t[0], *t[1], t[2]]))

STREAM_CMDS = [
    st.tuples(cased(b"XADD"), skey, trim, sid, fields).map(lambda t: [t[0], t[1], *t[2], t[3], *t[4]]),
    st.tuples(cased(b"XADD"), skey, sid, fields).map(lambda t: [t[0], t[1], t[2], *t[3]]),
    cmd(b"XLEN", skey), cmd(b"XRANGE", skey, sid, sid), cmd(b"XREVRANGE", skey, sid, sid, st.just(b"COUNT"), count),
    cmd(b"XDEL", skey, some(sid)), st.tuples(cased(b"XTRIM"), skey, trim).map(lambda t: [t[0], t[1], *t[2]]),
    st.tuples(st.just(b"XREAD"), st.sampled_from([[], [b"COUNT", b"1"]]), some(st.tuples(skey, sid), 1, 2)).map(
        lambda t: [t[0], *t[1], b"STREAMS", *[k for k, _ in t[2]], *[i for _, i in t[2]]]),
    cmd(b"XGROUP", st.just(b"CREATE"), skey, group, sid, st.sampled_from([[], [b"MKSTREAM"]])),
    cmd(b"XGROUP", st.just(b"SETID"), skey, group, sid), cmd(b"XGROUP", st.just(b"DESTROY"), skey, group),
    cmd(b"XGROUP", st.just(b"CREATECONSUMER"), skey, group, consumer),
    cmd(b"XGROUP", st.just(b"DELCONSUMER"), skey, group, consumer),
    st.tuples(st.just(b"XREADGROUP"), group, consumer, st.sampled_from([[], [b"COUNT", b"1"], [b"NOACK"]]),
              skey, st.sampled_from([b">", b">", b"0", b"2-0"])).map(
        lambda t: [t[0], b"GROUP", t[1], t[2], *t[3], b"STREAMS", t[4], t[5]]),
    cmd(b"XACK", skey, group, some(sid)), cmd(b"XPENDING", skey, group),
    cmd(b"XPENDING", skey, group, sid, sid, count, st.sampled_from([[], [b"c1"]])),
    cmd(b"XCLAIM", skey, group, consumer, st.sampled_from([b"0", b"100000"]), some(sid),
        st.sampled_from([[], [b"JUSTID"], [b"FORCE"], [b"RETRYCOUNT", b"5"], [b"LASTID", b"4-0"]])),
    cmd(b"XAUTOCLAIM", skey, group, consumer, st.just(b"0"), sid,
        st.sampled_from([[], [b"COUNT", b"1"], [b"JUSTID"]])),
    cmd(b"XSETID", skey, sid), cmd(b"DEL", skey), cmd(b"TYPE", skey), cmd(b"SET", skey, st.just(b"v")),
]
SETUP = [st.tuples(st.just(b"XADD"), st.sampled_from(SKEYS), st.integers(1, 3)).map(
    lambda t: [t[0], t[1], b"%d-1" % t[2], b"f", b"v"])]

step = st.tuples(st.one_of(*STREAM_CMDS), st.booleans())
programs = st.tuples(st.lists(st.tuples(st.one_of(*SETUP), st.booleans()), min_size=1, max_size=4),
                     st.lists(step, min_size=1, max_size=14)).map(lambda parts: parts[0] + parts[1])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(program=programs)
def test_random_programs_match_redis_state_by_state(pair: Pair, program: list[tuple[list[bytes], bool]]) -> None:
    pair.reset()
    for args, resp3 in program:
        run(pair, args, resp3)
        compare_state(pair)
