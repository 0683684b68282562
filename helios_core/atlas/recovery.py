"""Recovery: the snapshot, then every AOF record after its seq.

A torn last line of the last AOF part (a write cut short by a crash) is cut
off with a warning when allowed.  Any other damage stops start-up with an
error naming the file, the byte offset and the repair command.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from helios_core.atlas.aof import BadLine, Record, scan_file
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.effects import apply_effect
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
    started = time.perf_counter()
    rep = RecoveryReport()
    snap = ddir.snapshot_path
    if snap.exists():
        info, data, expires = load_snapshot(snap)
        ks.swap_in(data, expires)
        rep.snapshot_seq = rep.last_seq = info.seq
        rep.snapshot_keys = len(data)
    parts = ddir.aof_parts()
    last_seq = rep.last_seq if not parts else 0
    snap_seq = rep.snapshot_seq
    for i, path in enumerate(parts):
        rep.aof_files.append(str(path))
        is_last = i == len(parts) - 1
        items = scan_file(path, now_ms)
        for item in items:
            if type(item) is Record:
                seq = item.seq if item.seq is not None else last_seq + 1
                if seq <= last_seq:
                    raise _damage(path, item.offset, ddir,
                                  f"record seq {seq} is not above the previous record's {last_seq}")
                last_seq = seq
                if seq > snap_seq:
                    apply_effect(ks, item.effect, None)
                    rep.records_replayed += 1
                else:
                    rep.records_skipped += 1
                continue
            bad: BadLine = item  # type: ignore[assignment]
            following = sum(1 for x in items if type(x) is Record)
            # Under appendfsync always nothing after the last valid record of the last
            # part was acknowledged, so bad bytes there are a cut-short write, not loss.
            if is_last and following == 0:
                if not truncate_torn_tail:
                    raise _damage(path, bad.offset, ddir, f"torn last record ({bad.reason}); "
                                  "atlas.aof_truncate_torn_tail is off")
                size = path.stat().st_size
                log.warning("cutting torn last AOF record", path=str(path), offset=bad.offset,
                            bytes=size - bad.offset, reason=bad.reason)
                with open(path, "r+b") as f:
                    f.truncate(bad.offset)
                    f.flush()
                    os.fsync(f.fileno())
                rep.truncated_bytes = size - bad.offset
                break
            raise _damage(path, bad.offset, ddir, bad.reason +
                          (f"; {following} valid record(s) follow it" if following else ""))
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


def _damage(path: Path, offset: int, ddir: DataDir, why: str) -> CorruptFileError:
    return CorruptFileError(
        f"AOF {path} is damaged at byte {offset}: {why}. Start-up stopped so nothing is lost; "
        f"inspect it with `helios aof-check --data {ddir.path}` and repair with "
        f"`helios aof-check --fix --data {ddir.path}` (it keeps a backup copy)",
        path=str(path), offset=offset)
