"""The AOF reader under random input: the line codec, the scan, recovery and aof-check.

Contract: a line that is not a valid record raises `RecordError` (the scan
turns it into a `BadLine`); recovery either loads the file or stops with a
`CorruptFileError` naming the file and offset; aof-check names the same
place.  Lines here are hand-made (no `seq`/`crc`, as the original design's
format allows), so they reach the decoder's and the replay's every branch,
which the CRC would otherwise keep bit flips away from.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helios_cli.aof_check import check_parts
from helios_core.atlas.aof import BadLine, Record, scan_file
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.effects import RecordError, decode_line, encode_record
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.recovery import recover
from helios_core.errors import CorruptFileError
from tests.fuzz.support import fuzz, fuzz_timeout

pytestmark = fuzz_timeout(120)

NOW = 1_700_000_000_000
OPS = ["SET", "DEL", "EXPIRE", "PEXPIRE", "PERSIST", "ZADD", "ZREM", "HSET", "HDEL", "SADD", "SREM",
       "LPUSH", "RPUSH", "LPOP", "RPOP", "LSET", "LINSERT", "LREM", "LTRIM", "FLUSHALL", "MULTI", "NOPE"]
small_int = st.one_of(st.integers(-3, 5), st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 10**6]))
number = st.one_of(small_int, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -1e308]))
text = st.sampled_from(["k", "l", "z", "h", "s", "m", "v", "", "\u00e9", "inf", "-inf", "1.5", "x" * 20])
leaf = st.one_of(st.none(), st.booleans(), number, text, st.just("!!notb64"), st.just("AAEC"))
value = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.lists(st.tuples(inner, inner).map(list), max_size=3)),
                     max_leaves=5)
FIELDS = ["key", "value", "exp", "ttl", "members", "fields", "items", "count", "index", "left", "right",
          "key_b64", "value_b64", "members_b64", "fields_b64", "items_b64", "seq"]


def record_objects(depth: int = 2) -> st.SearchStrategy[dict]:
    fields = st.dictionaries(st.sampled_from(FIELDS), value, max_size=5)
    base = st.tuples(st.sampled_from(OPS), fields).map(lambda t: {"cmd": t[0], **t[1]})
    if depth == 0:
        return base
    multi = st.lists(record_objects(depth - 1), max_size=3).map(lambda ops: {"cmd": "MULTI", "ops": ops})
    return st.one_of(base, base, multi)


lines = st.lists(st.one_of(record_objects().map(orjson.dumps), st.binary(max_size=30)), max_size=8)

# Records that decode and replay on any state before them, so a file of them is valid.
KNOWN_GOOD = [b'{"cmd":"SET","key":"l","value":"v"}', b'{"cmd":"RPUSH","key":"l2","items":["a","b"]}',
              b'{"cmd":"ZADD","key":"z","members":[[1,"m"]]}']


@fuzz(60)
@given(record_objects())
@example({"cmd": "LSET", "key": "l", "index": 10**6, "value": "v"})
@example({"cmd": "ZADD", "key": "z", "members": [["nan", "m"]]})
@example({"cmd": "SET", "key": "k", "value_b64": "!!"})
def test_decode_line_raises_only_record_error(obj: dict) -> None:
    try:
        seq, eff = decode_line(orjson.dumps(obj), NOW)
    except RecordError:
        return
    assert seq is None or (type(seq) is int and seq >= 1)
    assert type(eff) is tuple and type(eff[0]) is str


# (found by the fuzzer: int(ttl * 1000) overflowed for a ttl of 1e308)
@pytest.mark.parametrize("line", [b'{"cmd":"SET","key":"k","value":"v","ttl":1e308}',
                                  b'{"cmd":"EXPIRE","key":"k","ttl":-1e308}'])
def test_decode_line_huge_ttl_is_a_record_error(line: bytes) -> None:
    with pytest.raises(RecordError):
        decode_line(line, NOW)


@fuzz(60)
@given(st.binary(max_size=300))
@example(b"\n\n\n")
@example(b'{"cmd":"SET","key":"k","value":"v"}')  # a valid last record without its newline
@example(b'{"cmd":"SET","key":"k","value":"v","ttl":1e308}\n')
def test_scan_covers_the_file_and_never_raises(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "appendonly.aof"
        path.write_bytes(blob)
        items = list(scan_file(path, NOW))
    assert all(isinstance(i, Record | BadLine) for i in items)
    ends = [(i.offset, i.end) for i in items]
    assert ends == sorted(ends) and all(a < b <= len(blob) for a, b in ends)
    for i in items:
        if isinstance(i, BadLine):
            assert i.torn == (not blob[i.offset:i.end].endswith(b"\n"))


def recover_or_error(d: Path) -> tuple[Keyspace | None, CorruptFileError | None]:
    ks = Keyspace()
    try:
        recover(DataDir(d), ks, now_ms=NOW, truncate_torn_tail=True)
    except CorruptFileError as e:
        return None, e
    return ks, None


@fuzz(40)
@given(st.lists(st.one_of(st.sampled_from(KNOWN_GOOD), record_objects().map(orjson.dumps), st.binary(max_size=20)),
                max_size=8), st.booleans())
@example([KNOWN_GOOD[1], b'{"cmd":"LSET","key":"l2","index":7,"value":"x"}'], True)
@example([b'{"cmd":"SET","key":"k","value":"v","ttl":1e308}'], True)
@example([KNOWN_GOOD[0], b'{"cmd":"ZADD","key":"l","members":[[1,"m"]]}', b'{"cmd":"LPOP","key":"l","count":3}'],
         True)
def test_recovery_loads_or_names_the_damage_and_aof_check_agrees(records: list[bytes], newline_at_end: bool) -> None:
    blob = b"\n".join(records) + (b"\n" if newline_at_end and records else b"")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        aof = d / "appendonly.aof"
        aof.write_bytes(blob)
        report = check_parts(DataDir(d).aof_parts(), NOW)
        ks, err = recover_or_error(d)
        if err is not None:
            assert err.path == str(aof) and err.offset is not None and 0 <= err.offset < len(blob)
            assert f"damaged at byte {err.offset}" in err.message
            assert aof.read_bytes() == blob, "a refused recovery must leave the file alone"
        dmg = report.damage
        if dmg is None:
            # aof-check only reads lines; replay can still find a record that cannot apply
            # to the state before it (LSET past the end): then recovery names that record.
            assert err is None or "cannot be applied" in err.message, err
        elif dmg.torn_tail:
            assert err is None and aof.read_bytes() == blob[:dmg.offset]
        else:
            assert err is not None and (err.path, err.offset) == (dmg.file, dmg.offset)


def test_engine_records_decode_back() -> None:
    eff = [("SET", b"k", b"\xff", NOW + 5), ("ZADD", b"z", [(float("inf"), b"m")]), ("LTRIM", b"l", 1, 2)]
    line = encode_record(7, eff)
    assert decode_line(line[:-1], NOW) == (7, ("MULTI", eff))


@fuzz(100)
@given(st.lists(st.sampled_from([b"\n", b"a", b"bc", b"{}", b"\n\n", b"x" * 9]), max_size=30).map(b"".join),
       st.integers(1, 12))
def test_scan_lines_reads_lines_across_any_chunk_size(blob: bytes, chunk: int) -> None:
    """Lines longer than a read are gathered and joined once (they used to be re-copied on every read)."""
    from helios_core.atlas import aof

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "appendonly.aof"
        path.write_bytes(blob)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(aof, "CHUNK", chunk)  # reads of `chunk` bytes: the real file, the real reader
            got = list(aof.scan_lines(path))
    parts = blob.split(b"\n")
    want, offset = [], 0
    for i, line in enumerate(parts):
        complete = i < len(parts) - 1
        if complete or line:
            want.append((offset, line, complete))
        offset += len(line) + 1
    assert got == want
