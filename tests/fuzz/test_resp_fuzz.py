"""RESP request parser under random input (helios_core/atlas/resp.py).

The parser's contract is that it never raises: damage sets `error` after the
commands before it are returned.  Checked here: random bytes in random
chunks never raise, give the same commands and error however they are cut,
round-trip what a client writes, and refuse absurd declared lengths before
allocating them.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helios_core.atlas.resp import MAX_MULTIBULK, QUERY_BUFFER_EXCEEDED, RespParser, split_inline
from tests.fuzz.support import fuzz, fuzz_timeout, peak_bytes

pytestmark = fuzz_timeout(120)

# Bytes that are mostly RESP-shaped: random mixes of protocol tokens and noise find more than noise alone.
TOKENS = [b"*", b"$", b"\r\n", b"\n", b"\r", b"0", b"1", b"2", b"3", b"-1", b"-", b"10", b"999999999999",
          b"2147483647", b"\"", b"'", b"\\", b"\\x4", b"\\xff", b" ", b"\t", b"\0", b"SET", b"GET", b"k", b"v"]
resp_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=4)), max_size=60).map(b"".join),
)


def encode_request(argv: list[bytes]) -> bytes:
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)


def feed_in_pieces(p: RespParser, data: bytes, cuts: list[int]) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    at = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += p.feed(data[at:cut])
        at = cut
    out += p.feed(data[at:])
    return out


@fuzz(120)
@given(resp_bytes, st.lists(st.integers(0, 10_000), max_size=6))
@example(b"*2147483647\r\n", [])
@example(b"*1\r\n$999999999999\r\n", [])
@example(b"*1\r\n$-5\r\nab\r\n", [3])
@example(b"\"unbalanced\r\n", [])
@example(b"*1\r\n$3\r\nabc\r\n*1\r\nX", [2, 5])
def test_random_bytes_never_raise_and_chunking_does_not_matter(data: bytes, cuts: list[int]) -> None:
    whole = RespParser()
    got = whole.feed(data)
    pieces = RespParser()
    assert feed_in_pieces(pieces, data, cuts) == got
    assert pieces.error == whole.error
    assert all(type(a) is list and all(type(x) is bytes for x in a) for a in got)
    if whole.error is not None:
        assert whole.feed(b"*1\r\n$4\r\nPING\r\n") == []  # a broken stream is never resynchronised


argv = st.lists(st.binary(max_size=40), min_size=1, max_size=8)


@fuzz(80)
@given(st.lists(argv, max_size=6), st.lists(st.integers(0, 10_000), max_size=6))
def test_what_a_client_writes_comes_back_whole(commands: list[list[bytes]], cuts: list[int]) -> None:
    data = b"".join(encode_request(a) for a in commands)
    p = RespParser()
    assert feed_in_pieces(p, data, cuts) == commands
    assert p.error is None and p.buffered() == 0


@fuzz(50)
@given(st.lists(st.binary(min_size=1, max_size=10).filter(lambda b: not any(c in b for c in b" \t\r\n\v\f\"'\0")),
                min_size=1, max_size=6))
def test_inline_requests_split_like_redis(words: list[bytes]) -> None:
    assert split_inline(b" ".join(words)) == words
    if words[0].startswith(b"*"):
        return  # a multibulk request, not an inline one
    p = RespParser()
    assert p.feed(b" ".join(words) + b"\r\n") == [words]


@fuzz(100)
@given(st.binary(max_size=120))
def test_split_inline_never_raises(line: bytes) -> None:
    out = split_inline(line)
    assert out is None or all(type(a) is bytes for a in out)


@fuzz(60)
@given(resp_bytes)
def test_unauthenticated_limits_hold_for_any_input(data: bytes) -> None:
    p = RespParser()
    p.set_unauthenticated(True, 512 * 1024 * 1024)
    got = p.feed(data)
    # Before AUTH at most one command comes out of a read, with at most 10 arguments of 16 KiB.
    assert len(got) <= 1
    assert all(len(a) <= 10 and all(len(x) <= 16 * 1024 for x in a) for a in got)


# -- absurd declared lengths: refused (or streamed) without allocating what they declare ----------------

@pytest.mark.parametrize("head", [
    b"*2147483647\r\n",
    b"*9223372036854775807\r\n",
    b"*99999999999999999999999\r\n",
    b"*1\r\n$999999999999\r\n",
    b"*1\r\n$9223372036854775807\r\n",
    b"*%d\r\n" % (MAX_MULTIBULK + 1),
])
def test_absurd_declared_lengths_are_refused_at_once(head: bytes) -> None:
    p = RespParser()
    got, peak = peak_bytes(lambda: p.feed(head + b"x" * 100))
    assert got == [] and p.error is not None and p.error.startswith("ERR Protocol error")
    assert peak < 1 << 20, f"{peak} bytes allocated for a refused header"


def test_largest_allowed_declarations_allocate_only_what_arrives() -> None:
    # *1048576 and $536870912 are inside Redis's limits: nothing is allocated for them up front.
    p = RespParser()
    data = b"*%d\r\n" % MAX_MULTIBULK + b"$%d\r\n" % (512 * 1024 * 1024) + b"y" * (1 << 20)
    got, peak = peak_bytes(lambda: p.feed(data))
    assert got == [] and p.error is None
    assert peak < 8 << 20, f"{peak} bytes allocated for 1 MiB of input"


def test_a_header_that_never_ends_is_cut_off() -> None:
    p = RespParser()
    for _ in range(40):
        p.feed(b"9" * 4096 if p.buffered() else b"*" + b"9" * 4095)
    assert p.error is not None and p.buffered() == 0


def test_query_buffer_limit_stops_a_bulk_that_outgrows_it() -> None:
    p = RespParser(max_query=1 << 20)
    p.feed(b"*1\r\n$%d\r\n" % (400 << 20))
    for _ in range(40):
        p.feed(b"z" * 65536)
    assert p.error == QUERY_BUFFER_EXCEEDED
