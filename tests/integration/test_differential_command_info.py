"""COMMAND (INFO, DOCS, LIST, COUNT, GETKEYS, GETKEYSANDFLAGS): a real atlasd against a real redis-server (7.0).

Every command atlasd has (and Redis 7.0 has too) gets the same COMMAND INFO entry, byte for byte in RESP2
and RESP3 (flags, ACL categories, tips and key specs are RESP3 sets, in Redis's order), a container's
subcommands (element 10) included: each subcommand's entry is compared byte for byte, their order is not
(Redis lists them in its dict's order, which changes from one redis-server process to the next).  The
subcommands atlasd does not implement (UNIMPLEMENTED, with the reason) are the one difference: atlasd
does not list them anywhere and refuses them as unknown.  A container's COMMAND DOCS, `COMMAND INFO
container|sub`, `COMMAND DOCS container|sub` and COMMAND LIST with each filter are compared the same way.
Key finding is compared on command lines that walk each key spec kind (index/keyword, range/keynum), the
commands whose flags depend on their arguments (SET ... GET, BITFIELD), subcommands' keys and the lines
where a spec does not fit (a numkeys out of range).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.test_atlasd_support import running_daemon
from tests.integration.test_differential_types import Pair, Raw, Tree, close_pair, make_pair
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Pair]]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(exe).start()
    try:
        with running_daemon(tmp_path_factory.mktemp("command-info")) as d:
            p = make_pair(d, server)
            try:
                yield d.port, p
            finally:
                close_pair(p)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pair(servers: tuple[int, Pair]) -> Pair:
    return servers[1]


@pytest.fixture(scope="module")
def daemon_port(servers: tuple[int, Pair]) -> int:
    return servers[0]


def _w(line: str) -> list[bytes]:
    return [w.encode() for w in line.split()]


# Commands atlasd takes in a later Redis's form: ZRANK/ZREVRANK ... WITHSCORE (7.2) make their arity -3.
LATER = {b"zrank", b"zrevrank"}

# Subcommands Redis 7.0 has that atlasd does not implement, so it does not advertise them (left out of
# keyspecs.py and container_docs.py by scripts/gen_keyspecs.py's UNIMPLEMENTED, the same list).
UNIMPLEMENTED = {
    b"script|debug": "atlasd has no Lua debugger (LDB)",
}


def _top_level(pair: Pair) -> list[bytes]:
    """atlasd's commands (COMMAND LIST lists each container's subcommands too: `config|get`)."""
    _, names = pair.atlas.r2.call(_w("COMMAND LIST"))
    return [v for _, v in names if b"|" not in v]


def _sub_name(entry: Tree) -> bytes:
    return entry[1][0][1]


def _info(entry: Tree) -> Tree:
    """A COMMAND INFO entry with its subcommands (element 10) in name order, without the ones atlasd
    does not implement: Redis's order is its dict's, new with every process."""
    if entry[0] != "*":
        return entry
    kind, subs = entry[1][9]
    subs = sorted((s for s in subs if _sub_name(s) not in UNIMPLEMENTED), key=_sub_name)
    return ("*", [*entry[1][:9], (kind, subs)])


def _docs(reply: Tree, resp3: bool) -> dict[bytes, Any]:
    """A COMMAND DOCS reply as {name: docs}, each docs map's subcommands sorted by name (Redis's order is
    its dict's), without the ones atlasd does not implement; everything else as typed trees."""
    kind, items = reply
    pairs = items if resp3 else list(zip(items[::2], items[1::2], strict=True))
    out: dict[bytes, Any] = {}
    for (_, name), (dkind, fields) in pairs:
        fields = fields if resp3 else list(zip(fields[::2], fields[1::2], strict=True))
        norm = []
        for k, v in fields:
            if k == ("$", b"subcommands"):
                v = (v[0], _docs(v, resp3))
            norm.append((k, v))
        out[name] = (dkind, norm)
    return {k: out[k] for k in sorted(out) if k not in UNIMPLEMENTED}


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_info_of_every_command_matches_redis(pair: Pair, resp3: bool) -> None:
    names = _top_level(pair)
    args = [b"COMMAND", b"INFO", *names]
    (_, got), (_, want) = pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)
    compared, containers, differ = 0, 0, []
    for name, g, w in zip(names, got, want, strict=True):
        if w[0] != "*" or name in LATER:  # a command Redis 7.0 lacks answers nil there
            continue
        compared += 1
        containers += bool(w[1][9][1])
        if _info(g) != _info(w):
            differ.append((name, _info(g), _info(w)))
    assert not differ, f"{len(differ)} of {compared} differ: " + "\n".join(map(repr, differ))
    assert compared > 150 and containers >= 13


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_all_matches_command_info(pair: Pair, resp3: bool) -> None:
    """COMMAND alone: every command's entry, subcommands included, as COMMAND INFO gives it."""
    conn = pair.atlas.conn(resp3)
    kind, every = conn.call([b"COMMAND"])
    assert kind == "*"
    by_name = {e[1][0][1]: e for e in every}
    names = _top_level(pair)
    assert sorted(by_name) == sorted(names)
    (_, infos) = conn.call([b"COMMAND", b"INFO", *names])
    assert [by_name[n] for n in names] == infos
    want = pair.redis.conn(resp3).call([b"COMMAND"])[1]
    want_by_name = {e[1][0][1]: e for e in want}
    for name in (b"config", b"client", b"object", b"xinfo", b"memory", b"module", b"command"):
        assert _info(by_name[name]) == _info(want_by_name[name]), name


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_info_and_docs_of_each_subcommand_match_redis(pair: Pair, resp3: bool) -> None:
    """`COMMAND INFO config|get` and `COMMAND DOCS config|get` (Redis 7.0 looks a `container|sub` name
    up, one level, in any case), for every subcommand Redis has of every container atlasd has."""
    (_, every) = pair.redis.r2.call([b"COMMAND", b"INFO", *_top_level(pair)])
    subs = [_sub_name(s) for e in every if e[0] == "*" for s in e[1][9][1]]
    assert len(subs) > 80
    odd = [b"CONFIG|GET", b"config|nosuch", b"config|", b"config|get|x", b"get|x", b"nosuch|get", b"|"]
    args = [b"COMMAND", b"INFO", *subs, *odd]
    (_, got), (_, want) = pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)
    differ = []
    for name, g, w in zip(subs + odd, got, want, strict=True):
        expect = ("nil", None) if name in UNIMPLEMENTED else w
        if g != expect:
            differ.append((name, g, expect))
    assert not differ, differ
    args = [b"COMMAND", b"DOCS", *subs, *odd]
    got_docs = _docs(pair.atlas.conn(resp3).call(args), resp3)
    want_docs = _docs(pair.redis.conn(resp3).call(args), resp3)
    assert got_docs == want_docs


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_docs_of_every_container_matches_redis(pair: Pair, resp3: bool) -> None:
    (_, every) = pair.redis.r2.call([b"COMMAND", b"INFO", *_top_level(pair)])
    containers = [e[1][0][1] for e in every if e[0] == "*" and e[1][9][1]]
    assert len(containers) >= 13
    args = [b"COMMAND", b"DOCS", *containers]
    got = _docs(pair.atlas.conn(resp3).call(args), resp3)
    want = _docs(pair.redis.conn(resp3).call(args), resp3)
    assert list(got) == list(want) == sorted(containers)
    differ = [(name, got[name], want[name]) for name in containers if got[name] != want[name]]
    assert not differ, differ


def test_unimplemented_subcommands_are_refused_as_unknown(pair: Pair, daemon_port: int) -> None:
    """What UNIMPLEMENTED says: atlasd's handlers refuse every call of them, and its command table (what
    refuses before AUTH, and what COMMAND GETKEYS looks up) does not know them."""
    bare = Raw(daemon_port, None, False)  # not authenticated: the table's refusal comes first
    try:
        for full in UNIMPLEMENTED:
            container, sub = full.split(b"|")
            unknown = ("-", f"ERR unknown subcommand '{sub.decode()}'. Try {container.decode().upper()} HELP.")
            assert bare.call([container, sub, b"x"]) == unknown
            got = pair.atlas.r2.call([container, sub, b"x"])
            assert got[0] == "-" and got[1].startswith("ERR "), got
            assert pair.atlas.r2.call([b"COMMAND", b"GETKEYS", container, sub, b"x"]) == (
                "-", "ERR Invalid command specified")
    finally:
        bare.close()


LISTS = [
    "", "FILTERBY PATTERN mod*", "FILTERBY PATTERN config|*", "FILTERBY PATTERN *|*", "FILTERBY pattern C*G*",
    "FILTERBY PATTERN x*", "FILTERBY ACLCAT admin", "FILTERBY aclcat SLOW", "FILTERBY ACLCAT dangerous",
    "FILTERBY ACLCAT connection", "FILTERBY ACLCAT scripting", "FILTERBY ACLCAT stream", "FILTERBY ACLCAT read",
    "FILTERBY ACLCAT @admin", "FILTERBY ACLCAT nosuch", "FILTERBY MODULE nosuch",
]


@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_command_list_and_its_filters_match_redis(pair: Pair, resp3: bool) -> None:
    """COMMAND LIST names every command and every subcommand (`module|list`), a filter picks among
    both, as Redis 7.0's commandListWithFilter.  Redis lists them in its dict's order and has commands
    atlasd lacks, so each list is compared as a set, Redis's cut to the names atlasd has."""
    (_, all_redis) = pair.redis.r2.call(_w("COMMAND LIST"))
    redis_names = {v for _, v in all_redis}
    (_, all_atlas) = pair.atlas.r2.call(_w("COMMAND LIST"))
    ours = {v for _, v in all_atlas}
    assert ours - redis_names <= LATER | set()  # (every name atlasd lists is one Redis 7.0 has)
    for line in LISTS:
        args = _w("COMMAND LIST " + line)
        got, want = pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)
        assert got[0] == want[0] == "*", (line, got, want)
        g = [v for _, v in got[1]]
        w = {v for _, v in want[1]} & ours
        assert len(g) == len(set(g)) and set(g) == w, (line, sorted(set(g) ^ w))
    assert b"module|list" in {v for _, v in pair.atlas.r2.call(_w("COMMAND LIST FILTERBY PATTERN mod*"))[1]}
    for line in ("FILTERBY", "FILTERBY PATTERN", "FILTERBY NOSUCH x", "FILTERBY PATTERN a b", "x",
                 "FILTERBY MODULE"):
        args = _w("COMMAND LIST " + line)
        assert pair.atlas.conn(resp3).call(args) == pair.redis.conn(resp3).call(args), line


def test_command_count_counts_commands_not_subcommands(pair: Pair) -> None:
    """COMMAND COUNT is the number of commands, as in Redis (which has more of them): not subcommands."""
    for side in (pair.atlas, pair.redis):
        (_, listed) = side.r2.call(_w("COMMAND LIST"))
        assert side.r2.call(_w("COMMAND COUNT")) == (":", str(sum(b"|" not in v for _, v in listed)))


GETKEYS = [
    "get a", "set a 1", "set a 1 GET", "set a 1 EX 10 get", "mset a 1 b 2", "del a b c", "mget a b",
    "lmove a b LEFT RIGHT", "blmove a b LEFT RIGHT 0", "bitop AND d a b", "rename a b", "copy a b",
    "bitfield k GET u8 0", "bitfield k GET u8 0 OVERFLOW WRAP GET i4 1", "bitfield k SET u8 0 1",
    "bitfield k INCRBY u8 0 1", "bitfield k GET u8", "bitfield k", "bitfield_ro k GET u8 0",
    "eval x 2 a b c", "eval x 0", "eval x 5 a", "eval x -1 a", "eval x foo a", "evalsha x 1 a",
    "fcall f 1 a", "fcall_ro f 0",
    "zunionstore d 2 a b WEIGHTS 1 2", "zunionstore d 0 a", "zunionstore d 5 a", "zinterstore d 1 a",
    "zdiffstore d 2 a b", "zunion 2 a b", "zinter 3 a b", "zintercard 1 a LIMIT 1", "sintercard 2 a b",
    "lmpop 2 a b LEFT", "lmpop 0 a LEFT", "zmpop 1 a MIN", "blmpop 0 2 a b LEFT", "bzmpop 0 1 a MAX",
    "blpop a b 0", "brpop a 0", "brpoplpush a b 0", "sdiffstore d a b", "smove a b m",
    "xread STREAMS a 0", "xread COUNT 1 BLOCK 0 STREAMS a b 0 0", "xread STREAMS a", "xread streams",
    "xreadgroup GROUP g c STREAMS a b 0 0", "xreadgroup GROUP g c NOACK STREAMS a >",
    "zrangestore d a 0 -1", "hset h f v", "sadd s m", "lpush l v", "expire a 10", "object encoding a",
    "ping x", "foo x", "get a b", "get",
    "config get x", "xgroup create s g $", "object encoding", "object encoding a b", "xinfo stream s",
    "memory usage k", "object foo a", "object", "object help", "script flush", "function load x",
    "memory usage k SAMPLES 5", "object freq k", "object idletime k", "object refcount k", "OBJECT ENCODING k",
    "xinfo groups s", "xinfo consumers s g", "xinfo stream s FULL", "xgroup createconsumer s g c",
    "xgroup delconsumer s g c", "xgroup destroy s g", "xgroup setid s g $", "xgroup help", "client list",
    "config set a b", "command info",
]


@pytest.mark.parametrize("sub", ["GETKEYS", "GETKEYSANDFLAGS"])
@pytest.mark.parametrize("resp3", [False, True], ids=["resp2", "resp3"])
def test_getkeys_and_flags_match_redis(pair: Pair, sub: str, resp3: bool) -> None:
    differ = []
    for line in GETKEYS:
        args = [b"COMMAND", sub.encode(), *_w(line)]
        got, want = pair.atlas.conn(resp3).call(args), pair.redis.conn(resp3).call(args)
        if got != want:
            differ.append((line, got, want))
    assert not differ, differ
