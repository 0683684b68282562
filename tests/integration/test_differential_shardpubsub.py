"""Sharded pub/sub (SSUBSCRIBE SUNSUBSCRIBE SPUBLISH, PUBSUB SHARDCHANNELS/SHARDNUMSUB) on a real atlasd and
a real redis-server 7.0 (not a cluster: one shard) side by side.

Several connections per server, RESP2 and RESP3 among them, run the same steps; after every step each
connection is flushed with a PING, and the bytes it received (replies, ssubscribe/sunsubscribe
confirmations, smessage pushes, the subscribed-mode refusals) must be the same on both servers, byte for
byte.  Shard channels are a namespace apart from channels and patterns: PUBLISH and PSUBSCRIBE never
meet them, and the counts in the confirmations are Redis's (shard channels alone for SSUBSCRIBE, channels
and patterns for SUBSCRIBE).  redis-py's spublish and its PubSub's ssubscribe work against atlasd too.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_differential_types import Raw
from tests.redis_server import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def atlasd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(tmp_path_factory.mktemp("shardpubsub")) as d:
        yield d


class Tap(Raw):
    """A raw connection that keeps every byte it received, to compare the wire itself."""

    def __init__(self, port: int, password: str | None, resp3: bool) -> None:
        self.log = bytearray()
        super().__init__(port, password, resp3)
        self.mark = len(self.log) - len(self.buf)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.log += chunk
        self.buf += chunk

    def send(self, args: list[bytes]) -> None:
        out = bytearray(b"*%d\r\n" % len(args))
        for a in args:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def flush(self) -> bytes:
        """Everything received since the last flush, up to and including the answer to a PING sent now."""
        self.send([b"PING", b"flush-mark"])
        while True:
            frame = self._read()
            if frame in (("$", b"flush-mark"), ("*", [("$", b"pong"), ("$", b"flush-mark")]),
                         (">", [("$", b"pong"), ("$", b"flush-mark")])):
                break
        end = len(self.log) - len(self.buf)
        got, self.mark = bytes(self.log[self.mark:end]), end
        return got


class Sides:
    """N connections to each server, connection i of one the twin of connection i of the other."""

    def __init__(self, atlasd: Daemon, redis: RedisServer, resp3: list[bool]) -> None:
        self.atlas = [Tap(atlasd.port, atlasd.password, r) for r in resp3]
        self.redis = [Tap(redis.port, None, r) for r in resp3]
        self.password = atlasd.password
        self.done: list[tuple[int, list[bytes]]] = []

    def close(self) -> None:
        for c in self.atlas + self.redis:
            c.close()

    def step(self, i: int, args: list) -> None:
        """One command on connection i (or several, sent together: a MULTI ... EXEC), then a flush of all."""
        for cmd in args if type(args[0]) is list else [args]:
            self.atlas[i].send(cmd)
            self.redis[i].send(cmd)
            if cmd == [b"RESET"]:  # (atlasd has a password: RESET logs out, as Redis's does; log in again)
                a, r = self.atlas[i], self.redis[i]
                assert a._read() == r._read() == ("+", "RESET")
                assert a.call([b"AUTH", (self.password or "").encode()]) == ("+", "OK")
                for c in (a, r):
                    c.mark = len(c.log) - len(c.buf)
        self.done.append((i, args))
        for j, (a, r) in enumerate(zip(self.atlas, self.redis, strict=True)):
            got, want = _same_ids(a.flush()), _same_ids(r.flush())
            assert got == want, f"connection {j} after {self.done!r}:\natlasd {got!r}\nredis  {want!r}"


_CLIENT_FIELDS = re.compile(rb"flags=\S+ db=\d+ sub=\d+ psub=\d+ ssub=\d+")


def _same_ids(wire: bytes) -> bytes:
    """CLIENT LIST / INFO lines reduced to what both servers must agree on."""
    if b"id=" in wire and b"addr=" in wire:
        return b"|".join(_CLIENT_FIELDS.findall(wire))
    if b"pubsub_channels:" in wire:
        return b"|".join(re.findall(rb"pubsub\w*:\d+", wire))
    return wire


@pytest.fixture
def sides(atlasd: Daemon, redis_server: RedisServer) -> Iterator[Sides]:  # noqa: F811
    s = Sides(atlasd, redis_server, [False, False, True, True])
    try:
        yield s
    finally:
        s.close()


def w(*words: str) -> list[bytes]:
    return [x.encode() for x in words]


# Bad input and the subscribed-mode rules first: arity, a RESP2 subscriber's refusals (shard channels count
# as subscriptions), scripts and MULTI, an empty SUNSUBSCRIBE, a name never subscribed, binary names.
RULES: list[tuple[int, list]] = [
    (0, w("SSUBSCRIBE")), (0, w("SPUBLISH", "a")), (0, w("SPUBLISH", "a", "b", "c")), (0, w("SUNSUBSCRIBE")),
    (0, w("SUNSUBSCRIBE", "never", "never")), (1, w("SSUBSCRIBE", "s1", "s2", "s1")), (1, w("GET", "k")),
    (1, w("PING")), (1, w("SUBSCRIBE", "c1")), (1, w("PSUBSCRIBE", "s*")), (1, w("UNSUBSCRIBE")),
    (1, w("SET", "k", "v")),
    (1, w("PUNSUBSCRIBE")), (1, w("CLIENT", "LIST")), (0, w("CLIENT", "LIST")), (0, w("SPUBLISH", "s1", "m1")),
    (0, w("PUBLISH", "s1", "not-shard")), (0, w("SPUBLISH", "c1", "x")), (0, w("SPUBLISH", "s2", "")),
    (0, w("PUBSUB", "SHARDCHANNELS")), (0, w("PUBSUB", "SHARDCHANNELS", "s[12]")),
    (0, w("PUBSUB", "SHARDCHANNELS", "x*")),
    (0, w("PUBSUB", "SHARDNUMSUB", "s1", "s2", "nope", "s1")), (0, w("PUBSUB", "SHARDNUMSUB")),
    (0, w("PUBSUB", "SHARDCHANNELS", "a", "b")), (0, w("PUBSUB", "CHANNELS")), (0, w("PUBSUB", "NUMSUB", "s1")),
    (2, w("SSUBSCRIBE", "s1")), (3, w("SSUBSCRIBE", "s1", "r3")), (2, w("GET", "k")), (0, w("SPUBLISH", "s1", "m2")),
    (0, w("PUBSUB", "SHARDNUMSUB", "s1")), (3, w("SUBSCRIBE", "s1")), (0, w("PUBLISH", "s1", "m3")),
    (0, w("SPUBLISH", "s1", "m4")), (1, w("SUNSUBSCRIBE", "s2", "zz")), (1, w("GET", "k")), (1, w("SUNSUBSCRIBE")),
    (1, w("GET", "k")), (1, w("SUNSUBSCRIBE")), (2, w("SUNSUBSCRIBE")), (3, w("RESET")),
    (0, w("PUBSUB", "SHARDNUMSUB", "s1", "r3")), (0, w("PUBSUB", "SHARDCHANNELS")),
    (0, [w("MULTI"), w("SSUBSCRIBE", "q"), w("SPUBLISH", "q", "x"), w("EXEC")]),
    (0, [w("MULTI"), w("SUNSUBSCRIBE"), w("EXEC")]), (0, w("EVAL", "return redis.call('ssubscribe','x')", "0")),
    (0, w("EVAL", "return redis.call('sunsubscribe')", "0")),
    (0, w("EVAL", "return redis.call('spublish','x','y')", "0")),
    (1, [b"SSUBSCRIBE", b"\x00bin\xff", b""]), (0, [b"SPUBLISH", b"\x00bin\xff", b"\r\n\x00"]),
    (0, [b"SPUBLISH", b"", b"e"]),
    (1, w("SSUBSCRIBE", "t")), (2, w("SSUBSCRIBE", "t")), (0, w("INFO", "stats")), (1, w("QUIT")),
    (0, w("PUBSUB", "SHARDNUMSUB", "t")), (2, w("SUNSUBSCRIBE", "t")), (0, w("PUBSUB", "SHARDCHANNELS")),
    (0, w("INFO", "stats")),
]


def test_fixed_steps_byte_for_byte(sides: Sides) -> None:
    for i, args in RULES:
        if args == [b"QUIT"]:  # its connection closes: compare its last bytes, then replace it
            for side in (sides.atlas, sides.redis):
                side[i].send(args)
            assert sides.atlas[i]._read() == sides.redis[i]._read() == ("+", "OK")
            sides.atlas[i] = Tap(sides.atlas[i].sock.getpeername()[1], _PASSWORD[0], False)
            sides.redis[i] = Tap(sides.redis[i].sock.getpeername()[1], None, False)
            _settle(sides)
            continue
        if args[:2] == [b"PUBSUB", b"SHARDCHANNELS"]:
            _compare_unordered(sides, i, args)  # (Redis lists its dict's order)
            continue
        sides.step(i, args)


def _settle(sides: Sides) -> None:
    """Wait until both servers forgot a closed connection's subscriptions (a close is noticed in the
    background): poll PUBSUB SHARDNUMSUB until they agree, for at most 5 s."""
    deadline = time.monotonic() + 5
    args = w("PUBSUB", "SHARDNUMSUB", "t")
    while time.monotonic() < deadline:
        if sides.atlas[0].call(args) == sides.redis[0].call(args):
            break
        time.sleep(0.01)  # a peer's close, not a TTL
    for c in (sides.atlas[0], sides.redis[0]):
        c.mark = len(c.log) - len(c.buf)


_PASSWORD: list[str | None] = [None]


@pytest.fixture(scope="module", autouse=True)
def _remember_password(atlasd: Daemon) -> None:
    _PASSWORD[0] = atlasd.password


# -- random programs ------------------------------------------------------------------------------------

# (an unsubscribe from all names lists them in Redis's dict order: the random programs name them)
ALL = [b"a", b"b", b"a*", b"c"]
chan = st.sampled_from(ALL)
conn_i = st.integers(0, 3)
step = st.one_of(
    st.tuples(conn_i, st.lists(chan, min_size=1, max_size=3).map(lambda cs: [b"SSUBSCRIBE", *cs])),
    st.tuples(conn_i, st.lists(chan, max_size=2).map(lambda cs: [b"SUNSUBSCRIBE", *(cs or ALL)])),
    st.tuples(conn_i, st.lists(chan, min_size=1, max_size=2).map(lambda cs: [b"SUBSCRIBE", *cs])),
    st.tuples(conn_i, st.lists(chan, max_size=2).map(lambda cs: [b"UNSUBSCRIBE", *(cs or ALL)])),
    st.tuples(conn_i, st.lists(chan, min_size=1, max_size=1).map(lambda cs: [b"PSUBSCRIBE", *cs])),
    st.tuples(conn_i, st.just([b"PUNSUBSCRIBE", *ALL])),
    st.tuples(conn_i, st.tuples(chan, st.sampled_from([b"m", b"n"])).map(lambda t: [b"SPUBLISH", *t])),
    st.tuples(conn_i, st.tuples(chan, st.sampled_from([b"m", b"n"])).map(lambda t: [b"PUBLISH", *t])),
    st.tuples(conn_i, st.sampled_from([[b"GET", b"k"], [b"PUBSUB", b"SHARDNUMSUB", b"a", b"b", b"c"],
                                       [b"PUBSUB", b"SHARDCHANNELS"], [b"CLIENT", b"INFO"]])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(program=st.lists(step, min_size=1, max_size=10))
def test_random_programs_byte_for_byte(atlasd: Daemon, redis_server: RedisServer,  # noqa: F811
                                       program: list[tuple[int, list[bytes]]]) -> None:
    s = Sides(atlasd, redis_server, [False, True, False, True])
    try:
        for i, args in program:
            if args[0] == b"PUBSUB" and args[1] == b"SHARDCHANNELS":
                _compare_unordered(s, i, args)  # (Redis lists its dict's order)
            else:
                s.step(i, args)
    finally:
        s.close()


def _compare_unordered(s: Sides, i: int, args: list[bytes]) -> None:
    got, want = s.atlas[i].call(args), s.redis[i].call(args)
    assert (got[0], sorted(got[1])) == (want[0], sorted(want[1])), (s.done, args)
    for c in (s.atlas[i], s.redis[i]):
        c.mark = len(c.log) - len(c.buf)


# -- redis-py ---------------------------------------------------------------------------------------------

def test_redis_py_sharded_pubsub_against_atlasd(atlasd: Daemon, redis_server: RedisServer) -> None:  # noqa: F811
    import redis
    seen = []
    for port, password in ((atlasd.port, atlasd.password), (redis_server.port, None)):
        r = redis.Redis(port=port, password=password)
        p = r.pubsub()
        p.ssubscribe("news", "sports")
        confirmations = [p.get_sharded_message(timeout=2) for _ in range(2)]
        assert r.spublish("news", "hello") == 1
        assert r.publish("news", "plain") == 0
        got = p.get_sharded_message(timeout=2)
        numsub = r.pubsub_shardnumsub("news", "nope")
        channels = sorted(r.pubsub_shardchannels())
        p.sunsubscribe("news")
        gone = p.get_sharded_message(timeout=2)
        p.close()
        r.close()
        seen.append((confirmations, got, numsub, channels, gone))
    assert seen[0] == seen[1]
    assert seen[0][1]["type"] == "smessage" and seen[0][1]["data"] == b"hello"


def test_command_info_and_getkeys(sides: Sides) -> None:
    a, r = sides.atlas[0], sides.redis[0]
    from tests.integration.test_differential_types import norm
    args = w("COMMAND", "INFO", "ssubscribe", "sunsubscribe", "spublish")
    assert norm(a.call(args)) == norm(r.call(args))
    for line in (w("COMMAND", "GETKEYS", "SPUBLISH", "c", "m"), w("COMMAND", "GETKEYSANDFLAGS", "SSUBSCRIBE", "a", "b"),
                 w("COMMAND", "GETKEYS", "SUNSUBSCRIBE"), w("COMMAND", "GETKEYS", "SUNSUBSCRIBE", "a")):
        assert a.call(line) == r.call(line), line
