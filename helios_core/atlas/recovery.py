"""Recovery: the snapshot, then every AOF record after its seq.

Only a line the last AOF part ends inside (no newline: a write cut short by a
crash) is a torn tail; it is cut off with a warning when allowed.  A whole
record with one byte after it is no prefix of a record: its newline was
altered, so it is damage, not a torn write.  A damaged
line that ends with its newline is corruption, last line or not: every byte
of that record was written, so it may have been acknowledged, and cutting it
would drop an acknowledged write silently.  Corruption stops start-up with an
error naming the file, the byte offset and the repair command; `helios
aof-check` applies the same rule to the same scan, so the two always agree.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from helios_core.atlas.aof import DECODE_ERRORS, damaged_newline_reason, newline_damaged, scan_lines
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.effects import NoSuchDatabase, apply_effect, decode_line
from helios_core.atlas.keyspace import Keyspace
from helios_core.atlas.snapshot import load_snapshot
from helios_core.errors import CorruptFileError
from helios_core.observability.logging import get_logger

__all__ = ["recover", "RecoveryReport"]

log = get_logger("atlas.recovery")


@dataclass
class RecoveryReport:
    snapshot_seq: int = 0
    snapshot_keys: int = 0
    records_replayed: int = 0
    records_skipped: int = 0
    last_seq: int = 0
    aof_files: list[str] = field(default_factory=list)
    truncated_bytes: int = 0
    needs_newline: bool = False
    seconds: float = 0.0


def recover(ddir: DataDir, ks: Keyspace, *, now_ms: int, truncate_torn_tail: bool) -> RecoveryReport:
    """Load the snapshot and replay the AOF into `ks`, database 0 (its other databases, when it has
    them: Keyspace.dbs, are reached through the snapshot's "DB" chunks and the records' SELECTs)."""
    started = time.perf_counter()
    rep = RecoveryReport()
    snap = ddir.snapshot_path
    if snap.exists():
        libraries: dict[bytes, bytes] = {}
        others: dict[int, tuple[dict, dict]] = {}
        info, data, expires = load_snapshot(snap, libraries, others)
        ks.swap_in(data, expires)
        ks.swap_libraries(libraries)
        count = ks.dbs.count if ks.dbs is not None else 1
        if others and max(others) >= count:
            raise _too_few_databases(snap, max(others), count)
        for index, (db_data, db_expires) in others.items():
            assert ks.dbs is not None
            ks.dbs[index].swap_in(db_data, db_expires)
        rep.snapshot_seq = rep.last_seq = info.seq
        rep.snapshot_keys = len(data) + sum(len(d) for d, _ in others.values())
    parts = ddir.aof_parts()
    last_seq = rep.last_seq if not parts else 0
    snap_seq = rep.snapshot_seq
    for i, path in enumerate(parts):
        rep.aof_files.append(str(path))
        is_last = i == len(parts) - 1
        data, expires = ks.data, ks.expires
        lines = scan_lines(path)
        for offset, line, complete in lines:
            try:
                seq, eff = decode_line(line, now_ms)
            except DECODE_ERRORS as e:
                if not line.strip() and complete:
                    continue  # blank lines are harmless
                _bad_line(path, offset, line, str(e), complete, lines, is_last, ddir, rep, truncate_torn_tail,
                          now_ms)
                break
            if seq is None:
                seq = last_seq + 1
            elif seq <= last_seq:
                raise _damage(path, offset, ddir, f"record seq {seq} is not above the previous record's {last_seq}")
            last_seq = seq
            if seq <= snap_seq:
                rep.records_skipped += 1
                continue
            rep.records_replayed += 1
            # The hot case inline: a plain SET without expiry on an unindexed keyspace.
            if eff[0] == "SET" and eff[3] is None and ks._index is None:
                data[eff[1]] = eff[2]
                if expires:
                    expires.pop(eff[1], None)
            else:
                try:
                    apply_effect(ks, eff, None)
                except NoSuchDatabase as e:
                    raise _too_few_databases(path, e.index, e.count, offset) from None
                except _APPLY_ERRORS as e:
                    raise _unappliable(path, offset, e) from None
                data, expires = ks.data, ks.expires  # FLUSHALL replaces them
    rep.last_seq = max(last_seq, snap_seq)
    if parts:
        last = parts[-1]
        size = last.stat().st_size
        if size:
            with open(last, "rb") as f:
                f.seek(size - 1)
                rep.needs_newline = f.read(1) != b"\n"
    rep.seconds = time.perf_counter() - started
    return rep


def _bad_line(path: Path, offset: int, line: bytes, reason: str, complete: bool,
              rest: Iterator[tuple[int, bytes, bool]], is_last: bool, ddir: DataDir, rep: RecoveryReport,
              truncate_torn_tail: bool, now_ms: int) -> None:
    """Decide about the first bad line: cut a torn tail, or stop with the damage named."""
    # The file ends inside an incomplete line (it has no newline), so nothing follows it.  A whole
    # record with a byte after it is not a prefix of one: its newline was damaged, not torn off.
    if not complete and newline_damaged(line, now_ms):
        raise _damage(path, offset, ddir, f"{damaged_newline_reason(line)}; the record may have been acknowledged",
                      force=True)
    if is_last and not complete:
        if not truncate_torn_tail:
            raise _damage(path, offset, ddir, f"torn last record ({reason}); atlas.aof_truncate_torn_tail is off",
                          force=False)
        size = path.stat().st_size
        log.warning("cutting torn last AOF record (the file ends inside it: a write cut short)",
                    path=str(path), offset=offset, bytes=size - offset, reason=reason)
        with open(path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())
        rep.truncated_bytes = size - offset
        return
    following = 0
    for _, line, _ in rest:
        try:
            decode_line(line, now_ms)
            following += 1
        except DECODE_ERRORS:
            pass
    if following:
        why = f"{reason}; {following} valid record(s) follow it"
    elif complete:
        why = (f"{reason}; the line ends with a newline, so this is not a torn write but a damaged record "
               f"that may have been acknowledged")
    else:
        why = f"{reason}; the file ends inside this line but it is not the last AOF part"
    raise _damage(path, offset, ddir, why, force=True)


# What replaying a well-formed record can raise when it does not fit the state before it: an
# LSET past the end of its list (IndexError), an index beyond any list (OverflowError).  The
# engine never writes such a record; a hand-made or foreign one can hold it (found by tests/fuzz).
_APPLY_ERRORS = (IndexError, OverflowError, ValueError, TypeError, KeyError, AttributeError)


def _unappliable(path: Path, offset: int, e: Exception) -> CorruptFileError:
    """The error for a record that decodes but cannot be applied: aof-check reads lines, it does not
    replay them, so it cannot see this; the message says what to do instead of naming it."""
    return CorruptFileError(
        f"AOF {path} is damaged at byte {offset}: the record there cannot be applied to the state "
        f"before it ({type(e).__name__}: {e}); HELIOS never writes such a record, so the file was "
        f"edited or comes from elsewhere. Start-up stopped so nothing is lost; keep a copy of the file, "
        f"then remove that record (or cut the file at byte {offset}) and start again",
        path=str(path), offset=offset)


def _too_few_databases(path: Path, index: int, count: int, offset: int | None = None) -> CorruptFileError:
    """Redis refuses to load data of a database beyond its `databases` setting; so does atlasd,
    rather than drop those keys."""
    where = f" at byte {offset}" if offset is not None else ""
    return CorruptFileError(
        f"{path}{where} holds database {index}, but atlasd.databases is {count} (databases 0..{count - 1}); "
        f"start-up stopped so nothing is dropped: set atlasd.databases (HELIOS_ATLASD__DATABASES) to at least "
        f"{index + 1}", path=str(path), offset=offset)


def _damage(path: Path, offset: int, ddir: DataDir, why: str, *, force: bool = True) -> CorruptFileError:
    """The error that stops start-up; `force`: the repair drops records, so aof-check wants --force."""
    fix = "--fix --force" if force else "--fix"
    return CorruptFileError(
        f"AOF {path} is damaged at byte {offset}: {why}. Start-up stopped so nothing is lost; "
        f"inspect it with `helios aof-check --data {ddir.path}` and repair with "
        f"`helios aof-check {fix} --data {ddir.path}` (it keeps a copy of the file as "
        f"{path.name}.bak-<time> first)",
        path=str(path), offset=offset)
