"""`helios aof-check`: validate AOF files and the snapshot and, with --fix, cut AOF damage off.

The check is recovery's own scan (`scan_file`) plus recovery's seq rule
across parts, and the snapshot goes through recovery's own loader, so what
this command calls damage is exactly what stops atlasd from starting.  Only
the first damage is reported and repaired; a repair re-checks and says if
more remains.

Only a line the last AOF part ends inside (no newline) is a torn tail: a
write cut short, never acknowledged under `appendfsync always`, so cutting it
loses nothing.  A whole record followed by one more byte is not a write cut
short but a record whose newline was altered (the scan says so).  A damaged
line that ends with its newline is corruption even when it is the last one:
its record was written whole and may have been acknowledged.  Cutting
anything but a torn tail drops such records, which is why it needs --force.

Repair keeps a copy of the whole file first, FILE.bak-<unix time>, written
to a temp name, fsynced, renamed into place and the directory fsynced, and
only then cuts the file back to its last valid record before the damage.  A
crash at any point leaves either the original file or a durable copy of it.
Snapshots are never repaired: a damaged one is named with what to do.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.text import Text

from helios_cli import progress as bars
from helios_cli.context import fail
from helios_core.atlas.aof import Record, scan_file
from helios_core.atlas.datadir import DataDir
from helios_core.atlas.effects import effect_keys
from helios_core.atlas.fsops import REAL_FS, Fs, open_data_file
from helios_core.atlas.snapshot import MAGIC, SnapshotCheck, check_snapshot
from helios_core.clock import wall_ms
from helios_core.errors import DataDirLockedError, HeliosError

__all__ = ["aof_check", "check_parts", "check_snapshot", "AofReport", "Damage", "FixResult", "SnapshotCheck"]

# Below this much AOF a scan finishes before a progress bar is worth drawing.
PROGRESS_MIN_BYTES = 64 << 20
_PROGRESS_STEP = 1 << 20

# TORN_TAIL: the last part ends inside a line.  LAST_RECORD: a complete line of the last
# part is damaged and no valid record follows.  MID_FILE: valid records follow the damage.
TORN_TAIL, LAST_RECORD, MID_FILE, ROTATED_PART = "torn_tail", "last_record", "mid_file", "rotated_part"


@dataclass
class Damage:
    """The first damage found; `cut_at` is where --fix cuts (end of the last valid record before it)."""

    file: str
    offset: int           # first bad byte
    reason: str
    kind: str             # TORN_TAIL, LAST_RECORD, MID_FILE or ROTATED_PART
    records_after: int    # valid records a cut at `cut_at` drops from this file
    bytes_after: int      # bytes a cut at `cut_at` drops
    cut_at: int
    file_size: int
    later_files: int      # AOF parts replayed after this one
    later_records: int    # valid records in those parts
    complete: bool = True  # the bad line ends with a newline (False: the file ends inside it)

    @property
    def torn_tail(self) -> bool:
        return self.kind == TORN_TAIL


@dataclass
class AofReport:
    files: list[str]
    records: int = 0      # lines that decode as valid records, damaged region included
    bytes: int = 0
    keys: int = 0         # distinct keys touched
    first_seq: int | None = None
    last_seq: int | None = None
    bad_lines: int = 0    # every bad line and out-of-order seq, not only the first
    damage: Damage | None = None
    snapshot: SnapshotCheck | None = None

    @property
    def ok(self) -> bool:
        return self.damage is None and (self.snapshot is None or self.snapshot.ok)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        if self.damage is not None:
            out["damage"]["torn_tail"] = self.damage.torn_tail
            del out["damage"]["complete"]
        return out


@dataclass
class FixResult:
    file: str
    cut_at: int
    backup: str
    bytes_dropped: int
    records_dropped: int


def check_parts(paths: list[Path], now_ms: int,
                progress: Callable[[int], None] | None = None) -> AofReport:
    """Scan AOF parts in replay order; `progress(bytes_done)` is called about every MiB."""
    report = AofReport(files=[str(p) for p in paths])
    keys: set[bytes] = set()
    per_file: list[int] = []
    damage_file = -1
    last_seq = 0
    done = 0
    for i, path in enumerate(paths):
        size = path.stat().st_size
        report.bytes += size
        records = good_end = shown = 0
        for item in scan_file(path, now_ms):
            if progress is not None and item.end - shown >= _PROGRESS_STEP:
                shown = item.end
                progress(done + shown)
            if not isinstance(item, Record):
                report.bad_lines += 1
                if report.damage is None:
                    report.damage = _damage(path, item.offset, item.reason, good_end, size)
                    report.damage.complete = not item.torn
                    damage_file = i
                continue
            records += 1
            # Recovery's rule: a line without seq takes the previous one + 1.
            seq = item.seq if item.seq is not None else last_seq + 1
            if seq <= last_seq:
                report.bad_lines += 1
                if report.damage is None:
                    why = f"record seq {seq} is not above the previous record's {last_seq}"
                    report.damage = _damage(path, item.offset, why, good_end, size)
                    damage_file = i
            if report.first_seq is None:
                report.first_seq = seq
            report.last_seq = last_seq = seq
            keys.update(effect_keys(item.effect))
            if report.damage is None:
                good_end = item.end
            elif damage_file == i:
                report.damage.records_after += 1
        per_file.append(records)
        done += size
        if progress is not None:
            progress(done)
    report.records = sum(per_file)
    report.keys = len(keys)
    dmg = report.damage
    if dmg is not None:
        is_last = damage_file == len(paths) - 1
        dmg.later_files = len(paths) - 1 - damage_file
        dmg.later_records = sum(per_file[damage_file + 1:])
        if not is_last:
            dmg.kind = ROTATED_PART
        elif dmg.records_after:
            dmg.kind = MID_FILE
        else:
            # Recovery's rule: only a line the file ends inside is a write cut short.
            dmg.kind = LAST_RECORD if dmg.complete else TORN_TAIL
    return report


def is_snapshot_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def _damage(path: Path, offset: int, reason: str, cut_at: int, size: int) -> Damage:
    return Damage(file=str(path), offset=offset, reason=reason, kind="", records_after=0,
                  bytes_after=size - cut_at, cut_at=cut_at, file_size=size, later_files=0, later_records=0)


# -- repairing ------------------------------------------------------------------------


def _stdin_interactive() -> bool:
    """A seam for tests: CliRunner's stdin is never a terminal."""
    return sys.stdin.isatty()


class RepairRefused(HeliosError):
    code = "aof_repair_refused"


def _refuse_unforced(d: Damage) -> RepairRefused:
    lost = f"{d.records_after} valid record(s) ({d.bytes_after} bytes)"
    if d.kind == LAST_RECORD:
        return RepairRefused(
            f"damage at byte {d.offset} of {d.file} is not a torn tail: the line ends with its newline (or "
            f"holds a whole record where its newline was altered), so the record was written whole and then "
            f"damaged, and it may have been acknowledged. Cutting "
            f"drops it ({d.bytes_after} bytes); add --force to cut there anyway (a copy is kept)")
    if d.kind == ROTATED_PART:
        return RepairRefused(
            f"damage at byte {d.offset} of {d.file} is in a rotated AOF part: {d.later_records} record(s) "
            f"in {d.later_files} later part(s) were written after it and depend on it. Cutting it drops "
            f"{lost} from that part and leaves later parts alone; restore the part from a backup if you "
            f"have one, or add --force to cut it anyway")
    return RepairRefused(
        f"damage at byte {d.offset} of {d.file} is not a torn tail: {lost} follow it and would be "
        f"dropped. Add --force to cut there anyway (a backup copy is kept)")


def _confirm(d: Damage, yes: bool) -> None:
    if yes:
        return
    if not _stdin_interactive():
        raise RepairRefused(f"not cutting {d.file} without confirmation and stdin is not a terminal; "
                            f"add --yes to cut it")
    prompt = (f"Cut {d.file} at byte {d.cut_at}, dropping {d.bytes_after} bytes "
              f"({d.records_after} valid records)? A backup copy is kept")
    if not click.confirm(prompt, err=True):
        raise RepairRefused("not confirmed; nothing changed")


@contextmanager
def _owned(ddir: DataDir, must_lock: bool) -> Iterator[None]:
    """Refuse a directory a live process owns; hold its lock while cutting so none starts meanwhile."""
    owner = ddir.owner()
    if owner is not None:
        raise DataDirLockedError(
            f"data directory {ddir.path} is in use by process {owner.get('pid') or '(unknown pid)'}; "
            f"stop it before running --fix (it may be appending to the file)")
    lock = ddir.lock(tool="helios aof-check --fix") if must_lock else None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def _backup_name(path: Path) -> Path:
    stamp = int(time.time())
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():  # a second fix within the same second
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    return backup


def keep_copy(path: Path, fs: Fs) -> Path:
    """A durable copy of `path` beside it; returns its name.

    Temp name, fsync, rename, then fsync the directory: the copy is the only
    home of the bytes the cut drops, so its name must be on disk before the
    cut is.  Without the directory fsync a crash could keep the cut and lose
    the copy's directory entry.
    """
    backup = _backup_name(path)
    tmp = backup.with_name(backup.name + ".tmp")
    try:
        fd = open_data_file(fs, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # owner-only, as the data
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 8 << 20)
            dst.flush()
            fs.fsync(dst.fileno())
        fs.rename(tmp, backup)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fs.fsync_dir(path.parent)
    return backup


def fix_damage(d: Damage, ddir: DataDir, *, yes: bool, force: bool, must_lock: bool,
               fs: Fs = REAL_FS) -> FixResult:
    """Keep a durable copy of the damaged file, then cut it at `d.cut_at`; raises HeliosError when it must not."""
    if not d.torn_tail and not force:
        raise _refuse_unforced(d)
    path = Path(d.file)
    with _owned(ddir, must_lock):
        _confirm(d, yes)
        if path.stat().st_size != d.file_size:
            raise RepairRefused(f"{path} changed size since it was checked; run aof-check again")
        backup = keep_copy(path, fs)
        fd = os.open(path, os.O_WRONLY)
        try:
            fs.ftruncate(fd, d.cut_at)
            fs.fsync(fd)
        finally:
            os.close(fd)
    return FixResult(str(path), d.cut_at, str(backup), d.bytes_after, d.records_after)


# -- output ---------------------------------------------------------------------------


def _line(console: Console, label: str, value: object, style: str = "") -> None:
    text = Text(f"{label:<10} ", style="bold")
    text.append(str(value), style=style)
    console.print(text)


def _print_report(console: Console, r: AofReport, fix_hint: str) -> None:
    if r.files or r.snapshot is None:  # (a snapshot file given as PATH has no AOF lines)
        _line(console, "files", len(r.files) if len(r.files) != 1 else r.files[0])
        if len(r.files) > 1:
            for f in r.files:
                _line(console, "", f)
        _line(console, "records", r.records)
        _line(console, "bytes", r.bytes)
        _line(console, "keys", r.keys)
        seqs = "-" if r.first_seq is None else f"{r.first_seq} .. {r.last_seq}"
        _line(console, "seq", seqs)
    snap = r.snapshot
    if snap is not None and snap.ok:
        _line(console, "snapshot", f"{snap.file}: seq {snap.seq}, {snap.keys} keys, {snap.bytes} bytes, OK")
    elif snap is not None:
        at = "" if snap.offset is None else f" at byte {snap.offset}"
        _line(console, "snapshot", f"DAMAGED: {snap.file}{at}", "bold red")
        _line(console, "", snap.reason)
    d = r.damage
    if d is None:
        if r.ok:
            _line(console, "status", "OK", "green")
        else:
            _line(console, "status", "DAMAGED: snapshot" + (" (the AOF files are valid)" if r.files else ""),
                  "bold red")
        return
    kinds = {TORN_TAIL: "torn tail (the file ends inside its last line)",
             LAST_RECORD: "damaged last record (its line is complete: not a torn write)",
             MID_FILE: "mid-file damage", ROTATED_PART: "damage in a rotated part (not the last file)"}
    _line(console, "status", f"DAMAGED: {kinds[d.kind]}", "bold red")
    _line(console, "damage", f"{d.file} at byte {d.offset}")
    _line(console, "reason", d.reason)
    _line(console, "after it", f"{d.records_after} valid record(s) in this file, "
                               f"{d.bytes_after} bytes from the last valid record")
    if d.later_files:
        _line(console, "", f"{d.later_records} record(s) in {d.later_files} later part(s)")
    if r.bad_lines > 1:
        _line(console, "", f"{r.bad_lines} bad lines in all")
    _line(console, "fix", fix_hint)


def _scan(paths: list[Path], snapshot: Path | None, show_progress: bool) -> AofReport:
    now_ms = wall_ms()
    total = sum(p.stat().st_size for p in paths)
    snap_bytes = snapshot.stat().st_size if snapshot is not None and snapshot.exists() else 0
    show = show_progress and total + snap_bytes > PROGRESS_MIN_BYTES and bars.enabled()
    with bars.progress("checking AOF", total, unit="bytes", show=show) as bar:
        report = check_parts(paths, now_ms, bar.update if bar.showing else None)
        if snapshot is not None:
            bar.stage(f"checking {snapshot.name}")  # one read and checksum: a spinner
            report.snapshot = check_snapshot(snapshot)
    return report


# -- the command ----------------------------------------------------------------------


@click.command("aof-check", short_help="Check (and repair) AOF files.")
@click.argument("path", required=False, metavar="(PATH | --data DIR)",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", metavar="DIR",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Check the snapshot and every AOF part of this data directory, in replay order.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@click.option("--fix", is_flag=True,
              help="Cut the damaged AOF file back to its last valid record (keeps a copy first).")
@click.option("--yes", "-y", is_flag=True, help="With --fix: do not ask before cutting.")
@click.option("--force", is_flag=True, help="With --fix: also cut damage that is not a torn tail (drops records).")
@click.pass_context
def aof_check(ctx: click.Context, path: Path | None, data_dir: Path | None, as_json: bool,
              fix: bool, yes: bool, force: bool) -> None:
    """Validate AOF records (JSON, checksum, command and fields, seq order) and the snapshot.

    PATH may be one AOF file or a snapshot file. Only a last line without its
    newline is a torn tail; other damage needs --fix --force.

    Exit status: 0 valid (or repaired), 1 damaged (or repair refused), 2 usage error.
    """
    if (yes or force) and not fix:
        raise click.UsageError("--yes and --force only apply with --fix")
    snapshot: Path | None = None
    if data_dir is not None and path is None:
        ddir = DataDir(data_dir)
        paths, target = ddir.aof_parts(), f"--data {data_dir}"
        snapshot = ddir.snapshot_path if ddir.snapshot_path.exists() else None
    elif path is not None and data_dir is None:
        ddir, paths, target = DataDir(path.parent), [path], str(path)
    else:
        raise click.UsageError("give exactly one of PATH or --data DIR")
    try:
        if path is not None and is_snapshot_file(path):
            paths, snapshot = [], path
        report = _scan(paths, snapshot, show_progress=not as_json)
    except OSError as e:
        fail(HeliosError(f"cannot read {e.filename}: {e.strerror}", code="io"))
    console = Console(highlight=False, soft_wrap=True)
    if not as_json:
        hint = "" if report.damage is None or report.damage.torn_tail else "--force "
        _print_report(console, report, f"helios aof-check --fix {hint}{target}")
    snap = report.snapshot
    if fix and report.damage is None and snap is not None and not snap.ok:
        refused = RepairRefused(f"aof-check does not repair snapshots: {snap.reason}")
        if as_json:
            click.echo(orjson.dumps({**report.to_dict(), "fix": {"error": refused.message}}).decode())
        fail(refused)
    if not fix or report.damage is None:
        if as_json:
            click.echo(orjson.dumps({**report.to_dict(), "fix": None}).decode())
        elif fix:
            _line(console, "fix", "nothing to fix")
        ctx.exit(0 if report.ok else 1)
    try:
        result = fix_damage(report.damage, ddir, yes=yes, force=force,
                            must_lock=data_dir is not None or ddir.lock_path.exists())
        after = check_parts(paths, wall_ms())
        after.snapshot = report.snapshot
    except OSError as e:
        err: HeliosError = HeliosError(f"repair failed on {e.filename}: {e.strerror}", code="io")
    except HeliosError as e:
        err = e
    else:
        _print_fix(console, report, result, after, as_json)
        ctx.exit(0 if after.ok else 1)
    if as_json:
        click.echo(orjson.dumps({**report.to_dict(), "fix": {"error": err.message}}).decode())
    fail(err)


def _print_fix(console: Console, report: AofReport, result: FixResult, after: AofReport,
               as_json: bool) -> None:
    if as_json:
        fixed = {**asdict(result), "after": after.to_dict()}
        click.echo(orjson.dumps({**report.to_dict(), "fix": fixed}).decode())
        return
    _line(console, "backup", f"{result.backup} (the whole file as it was before the cut)")
    _line(console, "cut", f"{result.file} at byte {result.cut_at}: dropped {result.bytes_dropped} bytes "
                          f"({result.records_dropped} valid records)")
    if after.ok:
        _line(console, "now", f"OK, {after.records} records", "green")
    elif after.damage is None:
        _line(console, "now", "the AOF is valid; the snapshot is still damaged (see above)", "bold red")
    else:
        _line(console, "now", f"still damaged at byte {after.damage.offset} of {after.damage.file} "
                              f"({after.damage.reason}); run aof-check again", "bold red")
