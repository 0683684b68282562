"""Keyspace: values, expiry times, the expiry heap and the sorted key index."""

from __future__ import annotations

from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.zset import ZSet


def test_put_get_remove() -> None:
    ks = Keyspace()
    ks.put(b"k", b"v", None)
    assert ks.raw_get(b"k") == b"v"
    assert len(ks) == 1
    assert ks.remove(b"k") == b"v"
    assert ks.remove(b"k") is None
    assert ks.raw_get(b"k") is None and len(ks) == 0


def test_empty_values_are_values() -> None:
    ks = Keyspace()
    ks.put(b"s", b"", 50)
    ks.put(b"z", ZSet(), None)
    assert ks.remove(b"s") == b""
    assert b"s" not in ks.expires
    assert isinstance(ks.remove(b"z"), ZSet)


def test_put_replaces_or_clears_expiry() -> None:
    ks = Keyspace()
    ks.put(b"k", b"v", 100)
    assert ks.expires == {b"k": 100}
    ks.put(b"k", b"w", None)
    assert ks.expires == {}
    ks.put(b"k", b"x", 200)
    ks.put_keep_expiry(b"k", b"y")
    assert ks.expires == {b"k": 200} and ks.raw_get(b"k") == b"y"


def test_is_expired_at_the_boundary() -> None:
    ks = Keyspace()
    ks.put(b"k", b"v", 100)
    ks.put(b"p", b"v", None)
    assert not ks.is_expired(b"k", 99)
    assert ks.is_expired(b"k", 100)
    assert not ks.is_expired(b"p", 10**15)
    assert not ks.is_expired(b"missing", 10**15)


def test_due_keys_in_expiry_order_up_to_limit() -> None:
    ks = Keyspace()
    for i, exp in enumerate([300, 100, 200, 400]):
        ks.put(b"k%d" % i, b"v", exp)
    assert ks.due_keys(50, 10) == []
    assert ks.due_keys(300, 2) == [b"k1", b"k2"]
    # Popped entries are not offered again; the rest still are.
    assert ks.due_keys(300, 10) == [b"k0"]
    assert ks.due_keys(10**6, 10) == [b"k3"]


def test_due_keys_skips_stale_heap_entries() -> None:
    ks = Keyspace()
    ks.put(b"moved", b"v", 100)
    ks.set_expiry(b"moved", 5000)   # the (100, moved) entry is stale now
    ks.put(b"persisted", b"v", 100)
    ks.clear_expiry(b"persisted")
    ks.put(b"deleted", b"v", 100)
    ks.remove(b"deleted")
    ks.put(b"live", b"v", 150)
    assert ks.due_keys(1000, 10) == [b"live"]
    assert ks.due_keys(5000, 10) == [b"moved"]


def test_avg_ttl_estimates_live_expiries_and_skips_stale_ones() -> None:
    ks = Keyspace()
    assert ks.avg_ttl(0) == 0
    ks.put(b"plain", b"v", None)
    assert ks.avg_ttl(0) == 0  # no key has an expiry
    for i in range(50):
        ks.put(b"k%d" % i, b"v", 10_000)
        ks.set_expiry(b"k%d" % i, 20_000)  # each leaves a stale (10000, k) entry in the heap
    assert ks.avg_ttl(1_000) == 19_000  # every live expiry is 19 s away; stale entries never count
    assert ks.avg_ttl(25_000) == 0      # all due: none has time left


def test_due_keys_offers_a_key_once_after_its_expiry_came_back() -> None:
    # EXPIREAT k T; PERSIST k; EXPIREAT k T pushes (T, k) twice, both matching `expires`.
    ks = Keyspace()
    ks.put(b"k", b"v", 100)
    ks.clear_expiry(b"k")
    ks.set_expiry(b"k", 100)
    assert ks.due_keys(100, 10) == [b"k"]


def test_heap_stays_bounded_when_one_key_changes_expiry_often() -> None:
    ks = Keyspace()
    ks.put(b"k", b"v", 1)
    for t in range(2, 100_000):
        ks.set_expiry(b"k", t)
    assert len(ks._heap) <= 2 * len(ks.expires) + 1025
    assert ks.due_keys(10**9, 10) == [b"k"]


def test_heap_stays_bounded_when_expiries_are_removed() -> None:
    # The docstring's promise: stale entries never outnumber live ones by more than a constant.
    ks = Keyspace()
    for i in range(20_000):
        ks.put(b"k%d" % i, b"v", 10**12 + i)
    for i in range(20_000):
        if i % 2:
            ks.clear_expiry(b"k%d" % i)
        else:
            ks.remove(b"k%d" % i)
    assert ks.expires == {}
    assert len(ks._heap) <= 2 * len(ks.expires) + 1025


def test_clear_and_swap_in_rebuild_state() -> None:
    ks = Keyspace()
    ks.put(b"a", b"1", 10)
    ks.sorted_keys()
    ks.clear()
    assert len(ks) == 0 and ks.expires == {} and ks.due_keys(10**9, 10) == []
    ks.swap_in({b"x": b"1", b"y": b"2"}, {b"y": 7})
    assert list(ks.sorted_keys()) == [b"x", b"y"]
    assert ks.due_keys(7, 10) == [b"y"]


def test_sorted_index_follows_mutations() -> None:
    ks = Keyspace()
    ks.put(b"b", b"1", None)
    ks.put(b"a", b"1", None)
    assert list(ks.sorted_keys()) == [b"a", b"b"]
    ks.put(b"c", b"1", None)
    ks.put_keep_expiry(b"\x00", b"1")
    ks.put(b"a", b"2", None)  # an overwrite is not a second entry
    ks.remove(b"b")
    assert list(ks.sorted_keys()) == [b"\x00", b"a", b"c"]


def test_keys_from_inclusive_and_exclusive() -> None:
    ks = Keyspace()
    for k in (b"a", b"ab", b"b", b"c"):
        ks.put(k, b"1", None)
    assert list(ks.keys_from(b"ab", True)) == [b"ab", b"b", b"c"]
    assert list(ks.keys_from(b"ab", False)) == [b"b", b"c"]
    assert list(ks.keys_from(b"aa", False)) == [b"ab", b"b", b"c"]
