"""The RESP parser and reply encoder (helios_core/atlas/resp.py), including a fuzz test."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.atlas.commands.table import OK, Simple
from helios_core.atlas.commands.zsets import Pairs
from helios_core.atlas.resp import (
    NULL_ARRAY,
    QUERY_BUFFER_EXCEEDED,
    Push,
    Replies,
    RespParser,
    encode,
    encode_error,
    split_inline,
)
from helios_core.errors import CommandError


def wire(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def feed_all(data: bytes, chunk: int | None = None, **limits: int) -> tuple[list[list[bytes]], str | None]:
    p = RespParser(**limits)
    out: list[list[bytes]] = []
    if chunk is None:
        out += p.feed(data)
    else:
        for i in range(0, len(data), chunk):
            out += p.feed(data[i:i + chunk])
            if p.error:
                break
    return out, p.error


# -- requests ------------------------------------------------------------------------

def test_multibulk_and_pipelining() -> None:
    data = wire(b"SET", b"k", b"v") + wire(b"GET", b"k") + wire(b"PING")
    assert feed_all(data) == ([[b"SET", b"k", b"v"], [b"GET", b"k"], [b"PING"]], None)


def test_binary_bulk_with_crlf_inside() -> None:
    value = b"a\r\nb\r\n\r\n\x00\xff"
    data = wire(b"SET", b"k\r\n", value) + wire(b"GET", b"k")
    assert feed_all(data)[0] == [[b"SET", b"k\r\n", value], [b"GET", b"k"]]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_every_split_gives_the_same_commands(chunk: int) -> None:
    data = wire(b"SET", b"key", b"x" * 100) + b"PING\r\n" + wire(b"ECHO", b"\r\n") + wire(b"GET", b"")
    expected = [[b"SET", b"key", b"x" * 100], [b"PING"], [b"ECHO", b"\r\n"], [b"GET", b""]]
    assert feed_all(data, chunk) == (expected, None)


def test_empty_and_negative_multibulk_are_skipped() -> None:
    assert feed_all(b"*0\r\n*-1\r\n" + wire(b"PING")) == ([[b"PING"]], None)


def test_inline_commands() -> None:
    assert feed_all(b"SET a b\r\nGET  a\n\r\n\r\nPING\r\n")[0] == [[b"SET", b"a", b"b"], [b"GET", b"a"], [b"PING"]]


@pytest.mark.parametrize("line,expected", [
    (b'set "a b" c', [b"set", b"a b", b"c"]),
    (b'echo "\\x41\\n\\t\\"q"', [b"echo", b"A\n\t\"q"]),
    (b"echo 'it\\'s'", [b"echo", b"it's"]),
    (b'echo a"b c"', [b"echo", b"ab c"]),
    (b'echo ""', [b"echo", b""]),
    (b'   ', []),
    (b'echo "a"b', None),
    (b'echo "abc', None),
    (b"echo 'abc", None),
])
def test_split_inline_like_sdssplitargs(line: bytes, expected: list[bytes] | None) -> None:
    assert split_inline(line) == expected


@pytest.mark.parametrize("data,error", [
    (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*+1\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*01\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*1\r\nx\r\n", "ERR Protocol error: expected '$', got 'x'"),
    (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
    (b"*1\r\n$ 4\r\nPING\r\n", "ERR Protocol error: invalid bulk length"),
    (b"*1\r\n$04\r\nPING\r\n", "ERR Protocol error: invalid bulk length"),
    (b'SET "a\r\n', "ERR Protocol error: unbalanced quotes in request"),
])
def test_protocol_errors(data: bytes, error: str) -> None:
    cmds, err = feed_all(wire(b"PING") + data)
    assert cmds == [[b"PING"]]  # what came before the damage still runs
    assert err == error


def test_limits() -> None:
    assert feed_all(wire(b"SET", b"k", b"x" * 11), max_bulk=10)[1] == "ERR Protocol error: invalid bulk length"
    assert feed_all(wire(b"SET", b"k", b"x" * 10), max_bulk=10)[1] is None
    assert feed_all(b"*4\r\n", max_count=3)[1] == "ERR Protocol error: invalid multibulk length"
    assert feed_all(b"*1048577\r\n")[1] == "ERR Protocol error: invalid multibulk length"
    assert feed_all(b"a" * (64 * 1024 + 1))[1] == "ERR Protocol error: too big inline request"
    assert feed_all(b"*" + b"1" * (64 * 1024 + 1))[1] == "ERR Protocol error: too big mbulk count string"
    assert feed_all(b"*1\r\n$" + b"1" * (64 * 1024 + 1))[1] == "ERR Protocol error: too big bulk count string"
    # Below the inline limit a partial line just waits for more.
    assert feed_all(b"a" * 1000) == ([], None)


def test_query_buffer_limit() -> None:
    p = RespParser(max_query=100_000)
    p.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$500000\r\n")
    for _ in range(20):
        p.feed(b"x" * 10_000)
    assert p.error == QUERY_BUFFER_EXCEEDED


def test_big_bulk_in_small_chunks_is_linear() -> None:
    value = bytes(range(256)) * (4 * 4096)  # 4 MiB
    data = wire(b"SET", b"k", value)
    start = time.perf_counter()
    cmds, err = feed_all(data, chunk=4096)
    assert err is None and cmds == [[b"SET", b"k", value]]
    assert time.perf_counter() - start < 2.0  # a quadratic re-join would take far longer


def test_feed_after_error_returns_nothing() -> None:
    p = RespParser()
    p.feed(b"*x\r\n")
    assert p.error and p.feed(wire(b"PING")) == []


argvs = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1, max_size=8)


@given(argvs, st.integers(min_value=1, max_value=50))
@settings(max_examples=300, deadline=None)
def test_roundtrip_any_split(cmds: list[list[bytes]], chunk: int) -> None:
    data = b"".join(wire(*c) for c in cmds)
    assert feed_all(data, chunk) == (cmds, None)
    assert feed_all(data) == (cmds, None)


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_random_bytes(data: bytes, chunk: int) -> None:
    """Random bytes: only protocol errors, never an exception, never a stall."""
    p = RespParser(max_bulk=1000, max_inline=200)
    for i in range(0, len(data), chunk):
        cmds = p.feed(data[i:i + chunk])
        assert all(isinstance(c, list) and c and all(type(a) is bytes for a in c) for c in cmds)
        if p.error:
            assert p.error.startswith("ERR Protocol error") or p.error == QUERY_BUFFER_EXCEEDED
            break


valid_then_noise = st.tuples(argvs, st.binary(max_size=80), st.integers(min_value=0, max_value=200))


@given(valid_then_noise, st.integers(min_value=1, max_value=30))
@settings(max_examples=800, deadline=None)
def test_fuzz_truncated_and_corrupted(case: tuple[list[list[bytes]], bytes, int], chunk: int) -> None:
    """Valid RESP, cut short or with bytes spliced in: a prefix of the commands, then an error or a wait."""
    cmds, noise, cut = case
    data = b"".join(wire(*c) for c in cmds)
    cut = min(cut, len(data))
    mangled = data[:cut] + noise + data[cut:]
    got, err = feed_all(mangled, chunk, max_bulk=10_000, max_inline=1000)
    assert err is None or err.startswith("ERR Protocol error")
    truncated, err2 = feed_all(data[:cut], chunk)
    assert err2 is None and truncated == cmds[:len(truncated)]


# -- replies ---------------------------------------------------------------------------

@pytest.mark.parametrize("reply,resp2,resp3", [
    (b"v", b"$1\r\nv\r\n", b"$1\r\nv\r\n"),
    (None, b"$-1\r\n", b"_\r\n"),
    (7, b":7\r\n", b":7\r\n"),
    (OK, b"+OK\r\n", b"+OK\r\n"),
    (Simple("PONG"), b"+PONG\r\n", b"+PONG\r\n"),
    (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
    (2.0, b"$1\r\n2\r\n", b",2\r\n"),
    (1.1, b"$18\r\n1.1000000000000001\r\n", b",1.1000000000000001\r\n"),
    (float("inf"), b"$3\r\ninf\r\n", b",inf\r\n"),
    (float("-inf"), b"$4\r\n-inf\r\n", b",-inf\r\n"),
    ([b"a", None, 1], b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n", b"*3\r\n$1\r\na\r\n_\r\n:1\r\n"),
    ([], b"*0\r\n", b"*0\r\n"),
    ({b"k": 1}, b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n"),
    (Pairs([(b"m", 1.0)]), b"*2\r\n$1\r\nm\r\n$1\r\n1\r\n", b"*1\r\n*2\r\n$1\r\nm\r\n,1\r\n"),
    (Push([b"message", b"c", b"x"]), b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n",
     b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n"),
    (Replies([Push([b"s", 1]), Push([b"s", 2])]), b"*2\r\n$1\r\ns\r\n:1\r\n*2\r\n$1\r\ns\r\n:2\r\n",
     b">2\r\n$1\r\ns\r\n:1\r\n>2\r\n$1\r\ns\r\n:2\r\n"),
    (NULL_ARRAY, b"*-1\r\n", b"_\r\n"),
    ([CommandError("ERR x")], b"*1\r\n-ERR x\r\n", b"*1\r\n-ERR x\r\n"),
    ("text", b"$4\r\ntext\r\n", b"$4\r\ntext\r\n"),
    (True, b":1\r\n", b"#t\r\n"),
])
def test_encode(reply: object, resp2: bytes, resp3: bytes) -> None:
    assert encode(reply, False) == resp2
    assert encode(reply, True) == resp3


def test_error_text_cannot_break_the_stream() -> None:
    assert encode_error(CommandError("ERR bad\r\nthing")) == b"-ERR bad  thing\r\n"


def test_encode_unknown_type() -> None:
    with pytest.raises(TypeError):
        encode(object())


def test_unauthenticated_limits() -> None:
    p = RespParser(max_bulk=1 << 20)
    p.set_unauthenticated(True, 1 << 20)
    assert p.feed(wire(b"AUTH", b"x" * 100)) == [[b"AUTH", b"x" * 100]]
    p.feed(wire(*[b"a"] * 11))
    assert p.error == "ERR Protocol error: unauthenticated multibulk length"
    p = RespParser()
    p.set_unauthenticated(True, 1 << 20)
    p.feed(wire(b"SET", b"k", b"x" * 20_000))
    assert p.error == "ERR Protocol error: unauthenticated bulk length"
    p = RespParser()
    p.set_unauthenticated(True, 1 << 20)
    p.set_unauthenticated(False, 1 << 20)  # after AUTH the configured limits are back
    assert p.feed(wire(*[b"a"] * 11)) == [[b"a"] * 11] and p.max_bulk == 1 << 20
