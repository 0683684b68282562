"""JSON-lines protocol under random input (helios_core/atlas/jsonlines.py).

Contract: malformed input costs one error line (a `JsonBad`), never an
exception and never the connection; only a line over the limit sets `error`.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helios_core.atlas.jsonlines import JsonBad, JsonBatch, JsonLinesParser, request_argv
from tests.fuzz.support import fuzz, fuzz_timeout, peak_bytes

pytestmark = fuzz_timeout(120)

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)
FIELDS = ["cmd", "key", "value", "args", "exp", "ttl", "members", "fields", "ops", "seq", "crc",
          "key_b64", "value_b64", "args_b64", "members_b64", "fields_b64"]
CMDS = ["SET", "GET", "DEL", "EXPIRE", "PEXPIRE", "ZADD", "ZREM", "HSET", "HDEL", "SADD", "SREM", "MULTI",
        "set", "multi", ""]
request = st.dictionaries(st.sampled_from(FIELDS), st.one_of(st.sampled_from(CMDS), json_value), max_size=6)


def dumps(obj: object) -> bytes:
    import orjson

    return orjson.dumps(obj)


def ok_item(item: object) -> bool:
    """One request line's outcome: an argv of bytes, a batch of them, or an error line."""
    if isinstance(item, JsonBad):
        return isinstance(item.error, str) and item.error.startswith("ERR")
    if isinstance(item, JsonBatch):
        return all(type(op) is list and all(type(a) is bytes for a in op) for op in item.ops)
    return type(item) is list and all(type(a) is bytes for a in item)


@fuzz(60)
@given(request)
@example({"cmd": "SET", "key": "k", "value": "v", "ttl": 1e308})
@example({"cmd": "EXPIRE", "key": "k", "ttl": -1e308})
@example({"cmd": "SET", "key": "k", "value": "v", "ttl": 1e300})
@example({"cmd": "MULTI", "ops": [{"cmd": "SET", "key": "k", "ttl": 1e308, "value": "v"}]})
@example({"cmd": "ZADD", "key": "z", "members": [[1e308, "m"]]})
@example({"cmd": "SET", "key": {"b64": "!!"}})
def test_any_json_request_is_an_argv_or_an_error_line(obj: dict) -> None:
    p = JsonLinesParser()
    [item] = p.feed(dumps(obj) + b"\n")
    assert ok_item(item) and p.error is None


@fuzz(100)
@given(st.binary(max_size=200), st.lists(st.integers(0, 10_000), max_size=5))
@example(b"{\"cmd\":\"SET\"}\n\xff\xfe\n[]\n\"\\ud800\"\n", [3])
def test_random_bytes_cost_one_error_line_each(data: bytes, cuts: list[int]) -> None:
    p = JsonLinesParser()
    out: list = []
    at = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += p.feed(data[at:cut])
        at = cut
    out += p.feed(data[at:])
    complete = [line for line in data.split(b"\n")[:-1] if line.strip()]
    assert len(out) == len(complete)  # one reply per non-blank line: the stream resynchronises
    assert all(ok_item(item) for item in out) and p.error is None


@fuzz(25)
@given(st.lists(request, max_size=4))
def test_unauthenticated_lines_come_one_at_a_time(objs: list[dict]) -> None:
    p = JsonLinesParser()
    p.set_unauthenticated(True, 512 * 1024 * 1024)
    data = b"".join(dumps(o) + b"\n" for o in objs)
    got = p.feed(data)
    seen = list(got)
    while got:
        got = p.feed(b"")
        seen += got
    assert len(seen) == len(objs) and all(ok_item(i) for i in seen)
    for item in seen:
        if not isinstance(item, JsonBad | JsonBatch):
            assert len(item) <= 10 and all(len(a) <= 16 * 1024 for a in item)


def test_request_argv_refuses_a_non_object() -> None:
    for obj in ([], 1, "SET", None):
        p = JsonLinesParser()
        [item] = p.feed(dumps(obj) + b"\n")
        assert isinstance(item, JsonBad)
    with pytest.raises(Exception, match="JSON object"):
        request_argv([])


# -- memory: a line that never ends is refused at the limit, not buffered ------------------------------

def test_a_line_that_never_ends_is_refused_at_the_line_limit() -> None:
    p = JsonLinesParser(max_bulk=1 << 20)  # max_line is then ~2 MiB

    def flood() -> None:
        p.feed(b'{"cmd":"SET","key":"k","value":"')
        for _ in range(64):
            p.feed(b"a" * 65536)  # 4 MiB in all, no newline

    _, peak = peak_bytes(flood)
    assert p.error is not None and "too big JSON line" in p.error and p.buffered() == 0
    assert peak < 8 << 20, f"{peak} bytes held for a refused line"


def test_an_unauthenticated_line_over_64k_is_refused_before_parsing() -> None:
    p = JsonLinesParser()
    p.set_unauthenticated(True, 512 * 1024 * 1024)
    big = b'{"cmd":"AUTH","args":["' + b"p" * 200_000 + b'"]}\n'
    _, peak = peak_bytes(lambda: p.feed(big))
    assert p.error is not None and peak < 2 * len(big) + (1 << 20)


def test_an_argument_over_max_bulk_is_an_error_line() -> None:
    p = JsonLinesParser(max_bulk=1000)
    [item] = p.feed(dumps({"cmd": "SET", "key": "k", "value": "x" * 1001}) + b"\n")
    assert isinstance(item, JsonBad) and "over the limit" in item.error
