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


# -- damage: recovery and `helios aof-check` agree (issue 11, item 4) ------------------------

DAMAGE_NOW = 1_700_000_000_000
damage_step = st.tuples(st.sampled_from(["flip", "cut"]), st.floats(0, 1, exclude_max=True), st.integers(0, 7))


def _aof_records(first: int, last: int) -> bytes:
    from helios_core.atlas.effects import encode_record

    return b"".join(encode_record(s, [("SET", b"k%d" % s, b"v%d" % s, None)] if s % 3 else
                                  [("SET", b"k%d" % s, b"v", DAMAGE_NOW + s), ("DEL", b"k%d" % (s - 1))])
                    for s in range(first, last + 1))


def _damaged(blob: bytes, steps: list[tuple[str, float, int]]) -> bytes:
    out = bytearray(blob)
    for kind, where, bit in steps:
        if not out:
            break
        at = int(where * len(out))
        if kind == "flip":
            out[at] ^= 1 << bit
        else:
            del out[at:]
    return bytes(out)


def _try_recover(d: str):
    from helios_core.atlas.datadir import DataDir
    from helios_core.atlas.keyspace import Keyspace
    from helios_core.atlas.recovery import recover
    from helios_core.errors import CorruptFileError

    ks = Keyspace()
    try:
        rep = recover(DataDir(d), ks, now_ms=DAMAGE_NOW, truncate_torn_tail=True)
    except CorruptFileError as e:
        return None, e
    return (dict(ks.data), dict(ks.expires), rep), None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rotated=st.integers(0, 4), active=st.integers(0, 6), in_rotated=st.booleans(),
       steps=st.lists(damage_step, min_size=1, max_size=2))
def test_recovery_and_aof_check_agree_on_damage(rotated: int, active: int, in_rotated: bool,
                                                steps: list[tuple[str, float, int]]) -> None:
    import shutil
    from pathlib import Path

    from helios_cli.aof_check import TORN_TAIL, check_parts
    from helios_core.atlas.datadir import DataDir

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "data"
        d.mkdir()
        parts = []
        if rotated:
            parts.append((DataDir(d).rotated_path(rotated), _aof_records(1, rotated)))
        parts.append((d / "appendonly.aof", _aof_records(rotated + 1, rotated + active)))
        target = 0 if in_rotated else len(parts) - 1
        for i, (path, blob) in enumerate(parts):
            path.write_bytes(_damaged(blob, steps) if i == target else blob)
        damaged_path, before = parts[target][0], parts[target][0].read_bytes()
        report = check_parts(DataDir(d).aof_parts(), DAMAGE_NOW)
        pristine = Path(tmp) / "cut"
        shutil.copytree(d, pristine)
        got, err = _try_recover(str(d))
        dmg = report.damage
        if dmg is None:
            assert err is None and got is not None and got[2].truncated_bytes == 0
        elif dmg.kind == TORN_TAIL:
            # A torn tail is only ever a line the last file ends inside: no complete line is dropped.
            assert not before.endswith(b"\n") and damaged_path == parts[-1][0]
            assert err is None and got is not None
            # Recovery's cut and aof-check --fix's cut recover the same state.
            with open(pristine / damaged_path.name, "r+b") as f:
                f.truncate(dmg.cut_at)
            fixed, err2 = _try_recover(str(pristine))
            assert err2 is None and fixed is not None
            assert (got[0], got[1], got[2].last_seq) == (fixed[0], fixed[1], fixed[2].last_seq)
        else:
            # Corruption: start-up stops at the very place aof-check names, and the file is left alone.
            assert err is not None, f"recovery accepted what aof-check calls {dmg.kind}: {dmg.reason}"
            assert (err.path, err.offset) == (dmg.file, dmg.offset)
            assert damaged_path.read_bytes() == before
