"""HyperLogLog encoding (helios_core/atlas/hll.py) without a server: hashing, the estimator, sparse edits and
sparse -> dense, against values taken from redis-server 7.0.15; corrupt and hostile values are refused
without crashing, looping or expanding past 16384 registers."""

from __future__ import annotations

import hashlib
import random
import time

import pytest

from helios_core.atlas import hll

# (register index, pattern length) of single elements, read back from Redis with PFDEBUG GETREG.
REDIS_PAT = {b"": (5938, 2), b"a": (12711, 2), b"hello world": (9399, 4), b"12345678": (10579, 3),
             b"x" * 17: (13758, 2), b"\x00\xff": (3937, 1)}
# PFCOUNT after PFADD of e0 .. e(n-1) on Redis.
REDIS_COUNTS = {1: 1, 10: 10, 100: 100, 1000: 1008, 10000: 9973, 100000: 100853}
# GET after PFADD s0, s1, ... s199 one at a time (sparse), and the sha256 of the value after PFDEBUG TODENSE.
REDIS_SPARSE_200 = bytes.fromhex(
    "48594c4c010000000000000000000080405c8c41898040998840d18c108040ac800f9440708040788440b48040a3840a840a8040478c2184108040578c288c40418004843a8013802f80218040408020801c80128c218040768c41c480406d803884404284218439840f8c407184406484349c407a8c4040941e880e804066803090405a800f804102802d84158440638824800d8408800384308041168c40858041418c0d8c27840e804056841c80404f842284405584404080409b8419844078803f84208421844049803f84408d8004840a80148424841681406d90406780098440e28440558040458040949440448440c588298440b08036844079803780178840498040568436801584408484405a88158403801084413e84148c407d884047804088840a843a8040888040ba80404f841d900484358040d288008040a184417388028c4079803784406380407e9c18940e800d88404180208c407d80218040d080058409844040844055881684298040e18016840b8840cb800e800380406c80404c801a84408380028c0c801a9440458040768440a78440a38c268840d7880680149040f6804187804041802d881c80409180159429880f842d84409d84404384108440a088088840ac80398420801a8836803e842980188040f6843280388030804040883880008438800380404a8840718004804064")
REDIS_DENSE_200_SHA = "f1de5b15cf3deed4e86e0fca866a99055b7096d29f896bf92cdfc6d558ca6fe6"


def sparse_adds(elements: list[bytes], value: bytes = hll.EMPTY, limit: int = 3000) -> bytes:
    s = hll.Sparse(value)
    for e in elements:
        assert s.set(*hll.pat_len(e), limit) in (0, 1)
    return s.value()


def dense_of(elements: list[bytes]) -> bytes:
    buf = bytearray(hll.to_dense(hll.EMPTY))
    touched: list[int] = []
    for e in elements:
        hll.dense_add(buf, *hll.pat_len(e), touched)
    return bytes(buf)


@pytest.mark.parametrize("element", list(REDIS_PAT))
def test_hash_and_pattern_as_redis(element: bytes) -> None:
    assert hll.pat_len(element) == REDIS_PAT[element]


@pytest.mark.parametrize("n", list(REDIS_COUNTS))
def test_estimator_as_redis(n: int) -> None:
    value = dense_of([b"e%d" % i for i in range(n)])
    assert hll.count_value(value) == REDIS_COUNTS[n]
    assert hll.count_raw(hll.dense_registers(value)) == REDIS_COUNTS[n]


def test_sparse_edits_and_conversion_as_redis() -> None:
    value = sparse_adds([b"s%d" % i for i in range(200)])
    assert value[:15] == REDIS_SPARSE_200[:15] and value[16:] == REDIS_SPARSE_200[16:]
    assert value[15] & 0x80  # the cache went stale with the first add
    dense = hll.to_dense(REDIS_SPARSE_200)
    assert hashlib.sha256(dense).hexdigest() == REDIS_DENSE_200_SHA
    assert hll.count_value(dense) == hll.count_value(REDIS_SPARSE_200)
    assert hll.Sparse(REDIS_SPARSE_200).value() == REDIS_SPARSE_200  # parse and write back unchanged


def test_sparse_and_dense_agree_register_by_register() -> None:
    rnd = random.Random(7)
    elements = [rnd.randbytes(rnd.randrange(0, 20)) for _ in range(700)]
    sparse = sparse_adds(elements, limit=1 << 30)
    assert sparse[4] == hll.SPARSE
    assert hll.sparse_registers(sparse) == hll.dense_registers(dense_of(elements))


def test_promotion_signals() -> None:
    s = hll.Sparse(hll.EMPTY)
    assert s.set(5, 33, 3000) == 2  # beyond a VAL's 32: dense first
    assert s.set(5, 3, 18) == 2     # the split would pass hll-sparse-max-bytes
    assert s.set(5, 3, 3000) == 1 and s.set(5, 3, 3000) == 0 and s.set(5, 2, 3000) == 0


def test_dense_pack_unpack_and_max() -> None:
    rnd = random.Random(3)
    a = bytes(rnd.randrange(64) for _ in range(hll.REGISTERS))
    b = bytes(rnd.randrange(64) for _ in range(hll.REGISTERS))
    packed = hll.pack_registers(a)
    assert len(packed) == 12288 and hll.dense_registers(b"H" * 16 + packed) == a
    assert hll.raw_max(a, b) == bytes(map(max, a, b))


def test_estimate_of_impossible_registers_overflows_as_redis() -> None:
    assert hll.count_raw(bytes([63]) * hll.REGISTERS) == 1 << 63  # Redis answers -9223372036854775808
    assert hll.count_raw(bytes(hll.REGISTERS)) == 0


# -- corrupt and hostile values ----------------------------------------------------------------------

HDR = hll.EMPTY[:16]


@pytest.mark.parametrize("payload", [b"", b"\x7f", b"\x5f\xff", b"\x7f\xff" * 2, b"\x7f\xff\x80", b"\x00" * 100])
def test_corrupt_sparse_refused(payload: bytes) -> None:
    value = HDR + payload
    with pytest.raises(hll.Corrupt):
        hll.count_value(value)
    with pytest.raises(hll.Corrupt):
        hll.to_dense(value)


def test_hostile_runs_are_refused_not_expanded() -> None:
    """262144 XZEROs of 16384 registers each: Redis 7.0.15's int counter wraps to 16384 and takes it as
    valid; here it is refused, in time linear in the value's length, with nothing expanded."""
    value = HDR + b"\x7f\xff" * 262144
    t0 = time.perf_counter()
    for f in (hll.count_value, hll.to_dense, hll.sparse_registers):
        with pytest.raises(hll.Corrupt):
            f(value)
    s = hll.Sparse(value)
    assert s.set(20000, 3, 1 << 40) == 1  # an edit far past register 16383 is possible, as in Redis
    assert time.perf_counter() - t0 < 10


def test_random_bytes_never_crash_or_loop() -> None:
    rnd = random.Random(11)
    for _ in range(1500):
        payload = rnd.randbytes(rnd.randrange(0, 40))
        value = HDR + payload
        assert hll.is_hll(value)
        s = hll.Sparse(value)
        assert len(s.payload()) == len(payload) and s.payload() == payload
        hll.decode(value)
        try:
            hll.count_value(value)
        except hll.Corrupt:
            pass
        for _ in range(3):
            r = s.set(rnd.randrange(hll.REGISTERS), rnd.randrange(1, 40), rnd.choice([20, 3000]))
            assert r in (-1, 0, 1, 2)
            assert len(s.payload()) == s.nbytes


def test_is_hll() -> None:
    assert hll.is_hll(hll.EMPTY) and hll.is_hll(hll.to_dense(hll.EMPTY))
    for bad in (b"", b"HYLL", b"hyll" + hll.EMPTY[4:], b"HYLL\x02" + hll.EMPTY[5:], hll.to_dense(hll.EMPTY) + b"x",
                b"HYLL\x00" + hll.EMPTY[5:]):
        assert not hll.is_hll(bad)


def test_histogram_kept_along_pfadd_and_pfcount() -> None:
    """The cached histogram PFADD moves along stays the histogram of the value the keyspace holds."""
    from helios_core.atlas.commands import hyperloglog as commands
    from helios_core.atlas.commands.table import Ctx
    from helios_core.atlas.effects import apply_effect
    from helios_core.atlas.keyspace import Keyspace

    ks = Keyspace()
    ctx = Ctx(ks, lambda eff: apply_effect(ks, eff, None))
    commands.pfadd(ctx, [b"k", *(b"a%d" % i for i in range(3000))])
    rnd = random.Random(5)
    for i in range(60):
        commands.pfadd(ctx, [b"k", *(b"b%d" % rnd.randrange(10**6) for _ in range(rnd.randrange(1, 4)))])
        if i % 3:
            value = ks.data[b"k"]
            want = hll.estimate(hll._hist_raw(hll.dense_registers(value)))
            assert commands.pfcount(ctx, [b"k"]) == want
            value = ks.data[b"k"]
            cached = hll.cached_hist(value)
            assert cached is None or cached == hll._hist_raw(hll.dense_registers(value))
    assert hll.cached_hist(ks.data[b"k"]) is not None
