"""Corrupt files, property-based (issue 16 §1): damage what the real engine wrote, then recover.

An embedded engine in a temp dir runs random writes (rotating the AOF into
parts and snapshotting on the way), is closed, and then its files are
damaged: a cut, or a bit flip, in the active part, a rotated part or the
snapshot.  Properties:

- cutting the active (last) part anywhere recovers exactly the records whose
  lines survive whole: the state the engine had after the last of them;
- any other damage (a flip anywhere, a cut in a rotated part or the snapshot)
  stops recovery with a `CorruptFileError` naming the file and, in the AOF,
  the offset of the damaged line, and leaves the files as they were;
- `helios aof-check` (`check_parts` + `check_snapshot`, the command's own
  functions) calls exactly that damage, at the same place.

tests/unit/test_recovery_property.py checks the same agreement on
hand-encoded records; this file starts from the engine's own files,
snapshots and rotations included.  Cutting a rotated part exactly at a line
boundary is left out: nothing in the files tells it apart from a part that
held fewer records (see the report of issue 16).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helios_cli.aof_check import TORN_TAIL, check_parts, check_snapshot
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.engine import Engine
from helios_core.atlas.hashtype import Hash
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.listvalue import List
from helios_core.atlas.recovery import recover
from helios_core.atlas.zset import ZSet
from helios_core.config import AtlasConfig
from helios_core.errors import CommandError, CorruptFileError
from tests.fuzz.support import fuzz, fuzz_timeout

pytestmark = fuzz_timeout(300)

NOW = 1_700_000_000_000
CONFIG = AtlasConfig(save=(), appendfsync="no", snapshot_on_aof_bytes=0)

key = st.sampled_from([b"a", b"b", b"\xff\x00k", b"l", b"z", b"h"])
val = st.one_of(st.binary(max_size=10), st.integers(-3, 3).map(lambda i: b"%d" % i))
command = st.one_of(
    st.tuples(st.just(b"SET"), key, val),
    st.tuples(st.just(b"SET"), key, val, st.just(b"PX"), st.integers(1, 10**6).map(lambda i: b"%d" % i)),
    st.tuples(st.just(b"DEL"), key),
    st.tuples(st.just(b"INCR"), key),
    st.tuples(st.just(b"ZADD"), key, st.sampled_from([b"1", b"-inf", b"2.5"]), val),
    st.tuples(st.just(b"HSET"), key, val, val),
    st.tuples(st.just(b"SADD"), key, val),
    st.tuples(st.just(b"RPUSH"), key, val, val),
    st.tuples(st.just(b"LPOP"), key),
    st.tuples(st.just(b"MSET"), key, val, key, val),
    st.tuples(st.just(b"FLUSHALL")),
).map(list)
step = st.one_of(command.map(lambda c: ("cmd", c)), command.map(lambda c: ("cmd", c)),
                 st.just(("rotate", None)), st.just(("snapshot", None)))


def state(ks: Keyspace) -> tuple[dict, dict]:
    def plain(v: Any) -> Any:
        if isinstance(v, ZSet):
            return ("z", sorted(v.scores.items()))
        if isinstance(v, (dict, Hash)):
            return ("h", sorted(v.items()))
        if isinstance(v, set):
            return ("s", sorted(v))
        if isinstance(v, (deque, List)):
            return ("l", list(v))
        return v
    return {k: plain(v) for k, v in ks.data.items()}, dict(ks.expires)


class Written:
    """What the engine wrote: per AOF part, (end of each record's line, the state after it)."""

    def __init__(self, d: Path) -> None:
        self.d = d
        self.start_state: dict[Path, tuple[dict, dict]] = {}
        self.records: dict[Path, list[tuple[int, tuple[dict, dict]]]] = {}


def write(d: Path, steps: list[tuple[str, Any]]) -> Written:
    """Run `steps` on an engine in `d`; a rotation closes it, renames the active part as the engine's
    own rotation does, and opens it again (recovery runs each time, so the files stay loadable)."""
    w = Written(d)
    ddir = DataDir(d)
    e = Engine.open(d, CONFIG, clock=lambda: NOW)
    try:
        w.start_state[ddir.aof_path] = state(e.ks)
        w.records[ddir.aof_path] = []
        for kind, arg in steps:
            if kind == "cmd":
                try:
                    e.execute(arg)
                except CommandError:
                    continue
                e.flush_sync()
                size = ddir.aof_path.stat().st_size
                recs = w.records[ddir.aof_path]
                if size != (recs[-1][0] if recs else 0):
                    recs.append((size, state(e.ks)))
            elif kind == "snapshot":
                e.snapshot_sync()
                # Covered parts are gone; the active part may have been rotated and emptied.
                for p in list(w.records):
                    if not p.exists():
                        del w.records[p], w.start_state[p]
                if ddir.aof_path.stat().st_size == 0:
                    w.start_state[ddir.aof_path] = state(e.ks)
                    w.records[ddir.aof_path] = []
            elif ddir.aof_path.stat().st_size:  # rotate a part that holds something
                seq = e.seq
                e.close()
                rotated = ddir.rotated_path(seq)
                ddir.aof_path.rename(rotated)
                w.records[rotated] = w.records.pop(ddir.aof_path)
                w.start_state[rotated] = w.start_state.pop(ddir.aof_path)
                e = Engine.open(d, CONFIG, clock=lambda: NOW)
                w.start_state[ddir.aof_path] = state(e.ks)
                w.records[ddir.aof_path] = []
    finally:
        e.close()
    return w


def try_recover(d: Path) -> tuple[tuple[dict, dict] | None, CorruptFileError | None]:
    ks = Keyspace()
    try:
        recover(DataDir(d), ks, now_ms=NOW, truncate_torn_tail=True)
    except CorruptFileError as e:
        return None, e
    return state(ks), None


def files_of(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != "helios.lock"}


damage = st.tuples(st.sampled_from(["cut", "flip"]), st.integers(0, 10**9), st.floats(0, 1, exclude_max=True),
                   st.integers(0, 7))


@fuzz(40)
@given(st.lists(step, min_size=1, max_size=14), damage)
@example([("cmd", [b"SET", b"a", b"1"]), ("cmd", [b"SET", b"b", b"2"])], ("flip", 0, 0.999, 3))  # the last newline
@example([("cmd", [b"SET", b"a", b"1"]), ("cmd", [b"SET", b"b", b"2"])], ("cut", 0, 0.99, 0))
@example([("cmd", [b"SET", b"a", b"1"]), ("rotate", None), ("cmd", [b"SET", b"b", b"2"]),
          ("snapshot", None), ("cmd", [b"RPUSH", b"l", b"x", b"y"])], ("flip", 0, 0.5, 1))
def test_damage_to_engine_files(steps: list[tuple[str, Any]], dmg: tuple[str, int, float, int]) -> None:
    kind, which, where, bit = dmg
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "data"
        w = write(d, steps)
        ddir = DataDir(d)
        targets = [p for p in [*ddir.aof_parts(), ddir.snapshot_path] if p.exists() and p.stat().st_size]
        if not targets:
            return
        target = targets[which % len(targets)]
        blob = bytearray(target.read_bytes())
        at = int(where * len(blob))
        active = target == ddir.aof_path
        if kind == "cut":
            if not active and target != ddir.snapshot_path and (at == 0 or blob[at - 1] == 10):
                return  # a rotated part cut at a line boundary: undetectable (module docstring)
            del blob[at:]
        else:
            blob[at] ^= 1 << bit
        target.write_bytes(bytes(blob))
        before = files_of(d)

        report = check_parts(ddir.aof_parts(), NOW)
        snap = check_snapshot(ddir.snapshot_path) if ddir.snapshot_path.exists() else None
        got, err = try_recover(d)

        if kind == "cut" and active:
            # Exactly the records whose lines survive (a line cut only of its newline still decodes).
            assert err is None, err
            kept = [s for end, s in w.records[target] if end - 1 <= at]
            assert got == (kept[-1] if kept else w.start_state[target])
            assert report.damage is None or report.damage.kind == TORN_TAIL
            assert snap is None or snap.ok
            return
        assert err is not None, f"{kind} at byte {at} of {target.name} was loaded"
        assert err.path == str(target)
        assert files_of(d) == before, "a refused recovery must leave the files alone"
        if target == ddir.snapshot_path:
            assert snap is not None and not snap.ok
        else:
            line_start = bytes(blob).rfind(b"\n", 0, at) + 1 if kind == "flip" else None
            if line_start is not None:
                assert err.offset == line_start
            assert report.damage is not None and not report.damage.torn_tail
            assert (report.damage.file, report.damage.offset) == (err.path, err.offset)


def test_aof_check_command_agrees_as_a_subprocess(tmp_path: Path) -> None:
    """The one run through the `helios` command: its JSON names what check_parts names."""
    d = tmp_path / "data"
    write(d, [("cmd", [b"SET", b"k%d" % i, b"v"]) for i in range(5)])
    aof = DataDir(d).aof_path
    blob = bytearray(aof.read_bytes())
    blob[len(blob) // 2] ^= 0x04
    aof.write_bytes(bytes(blob))
    helios = str(Path(sys.executable).parent / "helios")
    out = subprocess.run([helios, "aof-check", "--json", "--data", str(d)], capture_output=True, timeout=120)
    assert out.returncode == 1, out.stderr
    got = orjson.loads(out.stdout)["damage"]
    want = check_parts(DataDir(d).aof_parts(), NOW).damage
    assert want is not None and (got["file"], got["offset"], got["kind"]) == (want.file, want.offset, want.kind)
    _, err = try_recover(d)
    assert err is not None and err.offset == want.offset


def test_copy_of_damaged_dir_is_not_touched_by_aof_check(tmp_path: Path) -> None:
    d = tmp_path / "data"
    write(d, [("cmd", [b"SET", b"a", b"1"]), ("rotate", None), ("cmd", [b"SET", b"b", b"2"])])
    part = DataDir(d).aof_parts()[0]
    part.write_bytes(part.read_bytes()[:-3])
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    report = check_parts(DataDir(d).aof_parts(), NOW)
    assert report.damage is not None and report.damage.kind == "rotated_part"
    assert files_of(d) == files_of(copy)


@pytest.mark.parametrize("bit", range(8))
def test_a_flipped_last_newline_is_damage_not_a_torn_tail(tmp_path: Path, bit: int) -> None:
    """Found by the property above: a flip of the file's last byte (the last record's newline) made the
    record look torn, and recovery cut a whole, possibly acknowledged record without a word."""
    d = tmp_path / "data"
    write(d, [("cmd", [b"SET", b"a", b"1"]), ("cmd", [b"SET", b"b", b"2"])])
    aof = DataDir(d).aof_path
    blob = bytearray(aof.read_bytes())
    last_line = bytes(blob).rindex(b"\n", 0, len(blob) - 1) + 1
    blob[-1] ^= 1 << bit
    aof.write_bytes(bytes(blob))
    _, err = try_recover(d)
    assert err is not None and err.offset == last_line and "newline" in err.message
    dmg = check_parts([aof], NOW).damage
    assert dmg is not None and dmg.kind == "last_record" and dmg.offset == last_line
    assert aof.read_bytes() == bytes(blob)
