"""Property: any command sequence, recovered from snapshot + AOF, equals the live state.

Time is a parameter: the engine's clock is a list the test advances, so
expiries, lazy and active, happen inside the sequence without sleeping.
"""

from __future__ import annotations

import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError

KEYS = [b"a", b"b", b"c", b"\xff\x00k", b"z1", b"z2"]
key = st.sampled_from(KEYS)
value = st.one_of(st.binary(max_size=12), st.integers(-5, 5).map(lambda i: b"%d" % i))
member = st.sampled_from([b"m1", b"m2", b"m3", b"\xfe"])
score = st.one_of(st.integers(-3, 3).map(lambda i: b"%d" % i), st.sampled_from([b"1.5", b"-inf", b"+inf"]))
ms = st.integers(1, 5000).map(lambda i: b"%d" % i)

command = st.one_of(
    st.tuples(st.just(b"SET"), key, value),
    st.tuples(st.just(b"SET"), key, value, st.sampled_from([b"PX", b"EX"]), ms),
    st.tuples(st.just(b"SET"), key, value, st.sampled_from([b"NX", b"XX", b"KEEPTTL", b"GET"])),
    st.tuples(st.just(b"DEL"), key),
    st.tuples(st.just(b"INCRBY"), key, st.integers(-3, 3).map(lambda i: b"%d" % i)),
    st.tuples(st.just(b"APPEND"), key, value),
    st.tuples(st.just(b"PEXPIRE"), key, ms),
    st.tuples(st.just(b"PERSIST"), key),
    st.tuples(st.just(b"ZADD"), key, score, member),
    st.tuples(st.just(b"ZINCRBY"), key, score, member),
    st.tuples(st.just(b"ZREM"), key, member),
    st.tuples(st.just(b"ZPOPMIN"), key),
    st.tuples(st.just(b"MSET"), key, value, key, value),
    st.tuples(st.just(b"RENAME"), key, key),
    st.tuples(st.just(b"GETDEL"), key),
    st.tuples(st.just(b"FLUSHALL")),
)
step = st.one_of(
    command.map(lambda c: ("cmd", list(c))),
    st.integers(1, 3000).map(lambda t: ("advance", t)),
    st.just(("snapshot", None)),
    st.just(("expire-cycle", None)),
    st.lists(command.map(list), min_size=1, max_size=3).map(lambda cs: ("batch", cs)),
)


def raw_state(e: Engine) -> tuple[dict, dict]:
    data = {k: (list(v.items()) if not isinstance(v, bytes) else v) for k, v in e.ks.data.items()}
    return data, dict(e.ks.expires)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=40))
def test_recovered_state_equals_live_state(steps: list) -> None:
    now = [1_700_000_000_000]
    with tempfile.TemporaryDirectory() as d:
        e = Engine.open(d, AtlasConfig(save=()), clock=lambda: now[0])
        for kind, arg in steps:
            if kind == "cmd":
                try:
                    e.execute(arg)
                except CommandError:
                    pass
            elif kind == "advance":
                now[0] += arg
            elif kind == "snapshot":
                e.snapshot_sync()
            elif kind == "expire-cycle":
                e._active_expire()
            else:
                try:
                    with e.batch():
                        for c in arg:
                            e.execute(c)
                except CommandError:
                    pass
        live = raw_state(e)
        e.close()
        again = Engine.open(d, AtlasConfig(save=()), clock=lambda: now[0])
        try:
            assert raw_state(again) == live
        finally:
            again.close()
