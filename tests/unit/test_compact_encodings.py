"""The compact hash and list encodings behave exactly like a dict and a deque, conversions included.

Random operation sequences run on a `Hash` and a dict (a `List` and a deque)
side by side; after every step the contents, lengths and lookups agree, and
the encoding is the one Redis 7.0's rules give for the history so far
(hashtype.py, listvalue.py).  Elements come from a small pool that holds the
separator and escape bytes, empty strings and elements past the value limit.
Thresholds are lowered (packed.LIMITS) so conversions happen within a few steps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.atlas.hashtype import Hash
from helios_core.atlas.listvalue import List, _fits
from helios_core.atlas.packed import ESC, LIMITS, SEP, VSEP, Limits, escape, set_limit, unescape

POOL = [b"", b"a", b"b", b"\xff", b"\xfe", b"\xfd", b"\xfd\x01", b"\xfd\x03\xff", b"a\xfeb", b"\x00\xff\x00",
        b"long-element-past-8", b"0123456789"]
element = st.sampled_from(POOL)
binary = st.binary(max_size=12)


@pytest.fixture(autouse=True)
def limits() -> Iterator[None]:
    saved = Limits(**vars(LIMITS))
    yield
    for name, value in vars(saved).items():
        setattr(LIMITS, name, value)


@given(st.binary(max_size=40))
def test_escape_round_trips_and_leaves_no_separator(x: bytes) -> None:
    e = escape(x)
    assert unescape(e) == x and SEP not in e and VSEP not in e
    assert (e == x) == (ESC not in x and SEP not in x and VSEP not in x)


def test_escape_refuses_what_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        escape(3)  # type: ignore[arg-type]


# -- hashes ---------------------------------------------------------------------------------

hash_op = st.one_of(
    st.tuples(st.just("update"), st.lists(st.tuples(element | binary, element | binary), min_size=1, max_size=12)),
    st.tuples(st.just("pop"), element | binary),
    st.tuples(st.just("setitem"), element, element),
)


@settings(max_examples=400, deadline=None)
@given(entries=st.integers(0, 6), value=st.integers(0, 12), ops=st.lists(hash_op, max_size=25))
def test_hash_behaves_like_a_dict(entries: int, value: int, ops: list[tuple]) -> None:
    LIMITS.hash_entries, LIMITS.hash_value = entries, value
    h, model = Hash(), {}
    converted = False
    for op in ops:
        if op[0] == "update":
            pairs = op[1]
            converted = converted or any(len(f) > value or len(v) > value for f, v in pairs)
            h.update(pairs)
            model.update(pairs)
        elif op[0] == "setitem":
            converted = converted or len(op[1]) > value or len(op[2]) > value
            h[op[1]] = op[2]
            model[op[1]] = op[2]
        else:
            assert h.pop(op[1]) == model.pop(op[1], None)
            if not model:  # the HDEL effect deletes an emptied hash: start a new one
                h, converted = Hash(), False
                continue
        converted = converted or len(model) > entries
        assert h.encoding == ("hashtable" if converted else "listpack")
        assert len(h) == len(model) and h == model and h.to_dict() == model
        if not converted:  # a listpack keeps insertion order, a value update keeping its place
            assert h.items() == list(model.items()) and h.keys() == list(model) and list(h) == list(model)
        assert sorted(h.values()) == sorted(model.values())
        for x in POOL:
            assert h.get(x) == model.get(x) and (x in h) == (x in model)


def test_hash_batch_update_keeps_redis_order_and_last_value() -> None:
    h = Hash([(b"b", b"1")])
    pairs = [(b"a%d" % i, b"x") for i in range(10)] + [(b"b", b"2"), (b"a0", b"y")]
    h.update(pairs)  # more than _BATCH pairs: merged at once
    assert h.encoding == "listpack" and h.items()[:2] == [(b"b", b"2"), (b"a0", b"y")] and len(h) == 11


def test_hash_from_dict_picks_the_encoding_by_content() -> None:
    assert Hash.from_dict({b"f": b"v"}).encoding == "listpack"
    assert Hash.from_dict({b"f": b"v" * 65}).encoding == "hashtable"
    assert Hash.from_dict({b"f%d" % i: b"v" for i in range(513)}).encoding == "hashtable"
    assert Hash.from_dict({b"f%d" % i: b"v" for i in range(512)}).encoding == "listpack"


def test_set_limit_takes_both_names() -> None:
    set_limit("hash-max-ziplist-entries", 7)
    set_limit("hash-max-listpack-value", 9)
    set_limit("list-max-ziplist-size", 3)
    set_limit("zset-max-listpack-entries", 1)  # not ours: ignored
    assert (LIMITS.hash_entries, LIMITS.hash_value, LIMITS.list_size) == (7, 9, 3)


# -- lists ----------------------------------------------------------------------------------

list_op = st.one_of(
    st.tuples(st.sampled_from(["append", "appendleft"]), element | binary),
    st.tuples(st.sampled_from(["extend", "extendleft"]), st.lists(element | binary, max_size=6)),
    st.tuples(st.sampled_from(["pop", "popleft", "clear"])),
    st.tuples(st.sampled_from(["getitem", "delitem"]), st.integers(-8, 8)),
    st.tuples(st.just("setitem"), st.integers(-8, 8), element | binary),
    st.tuples(st.just("insert"), st.integers(0, 8), element | binary),
    st.tuples(st.just("range"), st.integers(0, 8), st.integers(0, 8)),
    st.tuples(st.just("count"), element),
)


def _step(lst: List, model: deque[bytes], op: tuple) -> None:
    name = op[0]
    n = len(model)
    if name in ("pop", "popleft"):
        if n:
            assert getattr(lst, name)() == getattr(model, name)()
        else:
            with pytest.raises(IndexError):
                getattr(lst, name)()
    elif name in ("getitem", "delitem", "setitem"):
        i = op[1]
        if not -n <= i < n:
            with pytest.raises(IndexError):
                lst[i]
            return
        if name == "getitem":
            assert lst[i] == model[i]
        elif name == "delitem":
            del lst[i]
            del model[i]
        else:
            lst[i] = op[2]
            model[i] = op[2]
    elif name == "insert":
        i = min(op[1], n)  # the LINSERT effect's positions: 0..len
        lst.insert(i, op[2])
        model.insert(i, op[2])
    elif name == "range":
        a, b = sorted((op[1], op[2]))
        if b < n:
            assert lst.range(a, b) == list(model)[a:b + 1]
    elif name == "count":
        assert lst.count(op[1]) == model.count(op[1])
    else:
        getattr(lst, name)(*op[1:])
        getattr(model, name)(*op[1:])


def check_nodes(lst: List) -> None:
    """The quicklist's invariants: no empty node, every node within the limits (or one item alone),
    counts that match the nodes, one node held as a plain node."""
    nodes, counts = ([lst._v], [lst._n]) if lst.packed else (lst._v.nodes, lst._v.counts)
    if not lst.packed:
        assert len(nodes) > 1 and lst._v.total == sum(counts)
    for node, n in zip(nodes, counts, strict=True):
        assert node[:1] == SEP and node[-1:] == SEP and node.count(SEP) == n + 1
        assert n <= 1 or _fits(n, len(node))
        assert n > 0 or len(nodes) == 1


@settings(max_examples=400, deadline=None)
@given(size=st.sampled_from([0, 1, 3, 6, -1]), ops=st.lists(list_op, max_size=40))
def test_list_behaves_like_a_deque(size: int, ops: list[tuple]) -> None:
    LIMITS.list_size = size
    lst, model = List(), deque()
    for op in ops:
        _step(lst, model, op)
        assert len(lst) == len(model) and lst == model and list(lst) == list(model)
        assert list(reversed(lst)) == list(reversed(model))
        check_nodes(lst)
        for i in (0, len(model) // 2, len(model) - 1):
            if 0 <= i < len(model):
                assert lst[i] == model[i] and lst.range(i, len(model) - 1) == list(model)[i:]


def test_list_nodes_hold_up_to_128_items_or_8_kib() -> None:
    lst = List([b"x"] * 128)
    assert lst.packed
    lst.append(b"x")
    assert not lst.packed and len(lst) == 129 and lst._v.counts == [128, 1]
    for _ in range(2):
        lst.pop()
    assert lst.packed and len(lst) == 127  # back to one node
    big = List([b"y" * 100] * 40)  # 4 KiB: one 8 KiB node
    assert big.packed
    big.extend([b"y" * 100] * 50)
    assert not big.packed and list(big) == [b"y" * 100] * 90 and len(big._v.nodes) == 2
    huge = List([b"z" * 9000])  # an item larger than a node: a node of its own
    assert huge.packed
    huge.appendleft(b"a")
    assert huge._v.counts == [1, 1] and list(huge) == [b"a", b"z" * 9000]
    check_nodes(huge)


def test_a_large_list_is_a_quicklist_of_full_nodes() -> None:
    lst = List(b"%d" % i for i in range(1000))
    assert lst._v.counts == [128] * 7 + [104] and lst[500] == b"500" and lst.range(126, 130) == [
        b"126", b"127", b"128", b"129", b"130"]
    lst.extendleft([b"a", b"b"])
    lst.insert(300, b"mid")
    del lst[700]
    lst[999] = b"set"
    model = [b"b", b"a", *(b"%d" % i for i in range(1000))]
    model.insert(300, b"mid")
    del model[700]
    model[999] = b"set"
    assert list(lst) == model and len(lst) == len(model)
    check_nodes(lst)
