"""The snapshot loader under random input (helios_core/atlas/snapshot.py).

Contract: a file that is not a complete, valid snapshot raises
`CorruptFileError` naming the file; `check_snapshot` turns that into a
report.  Random bytes and bit flips stop at the checksum (covered by
tests/unit/test_snapshot_codec.py byte by byte), so these tests re-sign what
they build or damage: the chunk reader itself meets arbitrary msgpack.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helios_core.atlas.snapshot import FOOTER, MAGIC, check_snapshot, load_snapshot, write_snapshot
from helios_core.errors import CorruptFileError
from tests.fuzz.support import fuzz, fuzz_timeout, peak_bytes

pytestmark = fuzz_timeout(120)

HEADER = {"version": 1, "seq": 5, "created_ms": 1, "keys": 1}


def signed(header: object, body: bytes, *, raw_header: bytes | None = None) -> bytes:
    """A snapshot file of `header` and `body` with a correct checksum."""
    head = raw_header if raw_header is not None else msgpack.packb(header, use_bin_type=True)
    blob = MAGIC + struct.pack(">I", len(head)) + head + body
    return blob + FOOTER.pack(b"CRC", zlib.crc32(blob))


def load_or_corrupt(blob: bytes) -> tuple[object, CorruptFileError | None]:
    """Load `blob` as a snapshot: (what loaded, None) or (None, the error)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dump.rdb"
        path.write_bytes(blob)
        try:
            check = check_snapshot(path)
            loaded = load_snapshot(path)
        except CorruptFileError as e:
            assert e.path == str(path) and not check.ok and check.reason
            return None, e
        assert check.ok
        return loaded, None


msg_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**40), st.floats(allow_nan=False),
                     st.binary(max_size=6), st.sampled_from(["S", "E", "Z", "H", "SET", "L", "END", "x"]))
msg_value = st.recursive(msg_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.binary(max_size=3), st.integers(0, 3)), inner,
                                                 max_size=3)), max_leaves=10)
chunk = st.one_of(
    msg_value,
    st.tuples(st.sampled_from(["S", "E", "Z", "H", "SET", "L", "END"]),
              st.lists(msg_value, max_size=3)).map(lambda t: [t[0], *t[1]]),
)


@fuzz(60)
@given(st.lists(chunk, max_size=5), st.booleans())
@example([["S", [b"k"], [b"v"]], ["END", 1]], True)
@example([["S", [b"k", b"j"], [b"v"]], ["END", 1]], True)   # key and value lists of different lengths
@example([["Z", b"z", [b"m", b"n"], [1.0, b"x"]], ["END", 1]], True)  # scores of mixed types
@example([["L", b"l", 5], ["END", 1]], True)
def test_any_signed_body_loads_or_is_refused(chunks: list, end: bool) -> None:
    body = b"".join(msgpack.packb(c, use_bin_type=True) for c in chunks)
    if end:
        body += msgpack.packb(["END", 1])
    loaded, err = load_or_corrupt(signed(HEADER, body))
    assert loaded is not None or err is not None


def test_a_map_chunk_is_refused() -> None:  # (found by the fuzzer: chunk[0] of a map was a KeyError)
    body = msgpack.packb({b"a": 1}) + msgpack.packb(["END", 0])
    assert load_or_corrupt(signed(HEADER, body))[1] is not None


# (found by the fuzzer: int(header["seq"]) escaped as KeyError/ValueError/TypeError)
@pytest.mark.parametrize("header", [{"version": 1}, {"version": 1, "seq": "x", "created_ms": 1, "keys": 0},
                                    {"version": 1, "seq": None, "created_ms": 1, "keys": 0}])
def test_a_header_without_its_numbers_is_refused(header: dict) -> None:
    assert load_or_corrupt(signed(header, msgpack.packb(["END", 0])))[1] is not None


@fuzz(100)
@given(st.binary(max_size=120))
@example(MAGIC)
@example(MAGIC + b"\xff\xff\xff\xff" + b"\0" * 8)
def test_random_bytes_are_refused(blob: bytes) -> None:
    loaded, err = load_or_corrupt(blob)
    assert err is not None


@fuzz(40)
@given(st.data())
def test_a_real_snapshot_damaged_and_re_signed_loads_or_is_refused(data: st.DataObject) -> None:
    from collections import deque

    from helios_core.atlas.zset import ZSet

    z = ZSet()
    z.add(b"m", 1.5)
    z.add(b"n", float("-inf"))
    values = {b"s": b"v", b"z": z, b"h": {b"f": b"x"}, b"set": {b"a", b"b"}, b"l": deque([b"1", b"2"])}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "dump.rdb"
        write_snapshot(path, values, {b"s": 10**13}, seq=9, created_ms=1)
        blob = bytearray(path.read_bytes())
    start = len(MAGIC) + 4 + int.from_bytes(blob[len(MAGIC):len(MAGIC) + 4], "big")
    end = len(blob) - FOOTER.size
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(start, end - 1))
        blob[at] = data.draw(st.integers(0, 255))
    body = bytes(blob[start:end])
    loaded, err = load_or_corrupt(signed(None, body, raw_header=bytes(blob[len(MAGIC) + 4:start])))
    assert loaded is not None or err is not None


# -- absurd declared sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"\xdd\xff\xff\xff\xff",                     # an array of 2**32-1 items
    b"\xdf\xff\xff\xff\xff",                     # a map of 2**32-1 pairs
    b"\xc6\xff\xff\xff\xff",                     # a bin of 4 GiB
    b"\x94\xa1S\xdd\x7f\xff\xff\xff\xdd\x7f\xff\xff\xff",  # ["S", <2**31 keys>, <2**31 values>]
])
def test_absurd_declared_sizes_are_refused_without_allocating_them(body: bytes) -> None:
    blob = signed(HEADER, body)
    (_, err), peak = peak_bytes(lambda: load_or_corrupt(blob))
    assert err is not None
    assert peak < 16 << 20, f"{peak} bytes allocated for a {len(blob)}-byte file"


def test_absurd_header_length_is_refused() -> None:
    blob = MAGIC + b"\xff\xff\xff\xf0" + msgpack.packb(HEADER) + b"\0" * 16
    blob += FOOTER.pack(b"CRC", zlib.crc32(blob))
    assert load_or_corrupt(blob)[1] is not None
