"""`helios backup` and `helios restore`: verified, rotated snapshot copies, and putting one back.

A backup is a snapshot of a data directory (taken by `snapshot_dir`, which
asks a running owner over its socket or works in-process on a free
directory) delivered into BACKUPDIR as ``helios-<UTC time>-seq<N>.rdb``.  The
copy lands under a hidden staging name, is verified there the way recovery
loads it, and only then renamed to its backup name: a file with a backup name
is always a complete, checked snapshot.  Rotation deletes the oldest files
matching that name pattern beyond --keep, never anything else.

A restore installs such a file as DIR/dump.rdb with an empty AOF, so the
next start loads exactly that snapshot.  It never deletes: what DIR held
(dump.rdb and every AOF part) is moved into DIR/pre-restore-<time>/ first.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from helios_cli import progress as bars
from helios_cli.context import CliContext, fail, guarded, pass_cli
from helios_cli.progress import QUIET, Reporter
from helios_cli.snapshot import OWNER_SNAPSHOT_TIMEOUT, snapshot_dir
from helios_core.atlas.datadir import SNAPSHOT_NAME, DataDir, fsync_dir
from helios_core.atlas.engine import Engine
from helios_core.atlas.snapshot import SnapshotCheck, check_snapshot
from helios_core.config import HeliosConfig
from helios_core.errors import CorruptFileError, DataDirLockedError, HeliosError

__all__ = ["backup", "restore", "backup_name", "parse_backup_name", "backups_to_delete", "DEFAULT_KEEP"]

DEFAULT_KEEP = 7
# helios-20261202T132755.123Z-seq42.rdb: the time sorts as text; milliseconds keep two
# backups taken within one second (same seq, say) from sharing a name.
_BACKUP_NAME = re.compile(r"helios-(\d{8}T\d{6}\.\d{3}Z)-seq(\d+)\.rdb\Z")
_STAGING_PREFIX = ".helios-backup-"
_STAGING_SUFFIX = ".partial"
_STAGING = re.compile(r"\.?\.helios-backup-(\d+)\.partial(?:\.tmp-\d+)?\Z")

T = TypeVar("T")


# -- names and rotation (pure) -----------------------------------------------------------

def _stamp(now: datetime) -> str:
    now = now.astimezone(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"


def backup_name(now: datetime, seq: int) -> str:
    """The file name of a backup of seq `seq` taken at `now`."""
    return f"helios-{_stamp(now)}-seq{seq}.rdb"


def parse_backup_name(name: str) -> tuple[str, int] | None:
    """(time stamp, seq) of a backup file name, or None when `name` is not one."""
    m = _BACKUP_NAME.match(name)
    return (m.group(1), int(m.group(2))) if m else None


def backups_to_delete(names: list[str], keep: int, protect: str | None = None) -> list[str]:
    """The backup names beyond the newest `keep`, oldest first; names not matching the pattern never appear.

    `protect` (the backup just made) is never returned, even when a clock set back
    makes it sort older than the others.
    """
    if keep < 1:
        raise HeliosError("--keep must be at least 1", code="usage")
    ours = sorted((key, n) for n in names if (key := parse_backup_name(n)) is not None)
    newest_first = [n for _, n in reversed(ours)]
    kept = [protect] if protect in newest_first else []
    for n in newest_first:
        if len(kept) >= keep:
            break
        if n not in kept:
            kept.append(n)
    return [n for _, n in ours if n not in kept]


# -- file work -----------------------------------------------------------------------------

def _verified(path: Path) -> SnapshotCheck:
    check = check_snapshot(path)
    if not check.ok:
        raise CorruptFileError(check.reason or f"{path}: not a valid snapshot", path=str(path), offset=check.offset)
    return check


def _remove_stale_staging(backup_dir: Path) -> None:
    """Staging files of backups killed mid-copy (their process is gone) are removed.

    Both the staging file and the temp file the copy into it goes through
    (`copy_atomic`'s ``.NAME.tmp-PID``) name the backup's pid.
    """
    for p in backup_dir.iterdir():
        m = _STAGING.match(p.name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except PermissionError:
            pass  # another user's live process


@dataclass
class BackupResult:
    path: Path
    seq: int
    keys: int
    bytes: int
    deleted: list[str]


def make_backup(ddir: DataDir, backup_dir: Path, keep: int, config: HeliosConfig, now: Callable[[], datetime],
                timeout: float = OWNER_SNAPSHOT_TIMEOUT, bar: Reporter = QUIET) -> BackupResult:
    """Snapshot `ddir` into `backup_dir` under a backup name, verified, then rotate."""
    backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale_staging(backup_dir)
    staged = backup_dir / f"{_STAGING_PREFIX}{os.getpid()}{_STAGING_SUFFIX}"
    try:
        snapshot_dir(ddir, config, staged, timeout, bar)
        os.chmod(staged, 0o600)
        bar.stage("verifying the copy")
        check = _verified(staged)  # what was delivered, read back as recovery reads it
        seq = check.seq or 0
        final = backup_dir / backup_name(now(), seq)
        os.replace(staged, final)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    fsync_dir(backup_dir)
    deleted = []
    names = [p.name for p in backup_dir.iterdir() if p.is_file() and not p.is_symlink()]
    for name in backups_to_delete(names, keep, protect=final.name):
        (backup_dir / name).unlink(missing_ok=True)
        deleted.append(name)
    if deleted:
        fsync_dir(backup_dir)
    return BackupResult(final, seq, check.keys or 0, check.bytes or 0, deleted)


def _data_files(ddir: DataDir) -> list[Path]:
    """What recovery would read (snapshot, AOF parts) plus half-written snapshot temp files.

    An empty AOF (a directory a service opened but never wrote to) holds nothing to keep.
    """
    files = [p for p in ddir.aof_parts() if p.stat().st_size > 0]
    files += sorted(ddir.path.glob(SNAPSHOT_NAME + ".tmp-*"))
    if ddir.snapshot_path.exists():
        files.insert(0, ddir.snapshot_path)
    return files


def _stage(src: Path, tmp: Path, bar: Reporter = QUIET) -> None:
    """Copy `src` to `tmp` (0600), fsynced: it becomes the snapshot by one rename."""
    try:
        with open(src, "rb") as f:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o600)
                bar.stage(f"copying {src.name}", total=os.fstat(f.fileno()).st_size)
                while block := f.read(8 << 20):
                    out.write(block)
                    bar.advance(len(block))
                out.flush()
                os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _empty_aof(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class RestoreResult:
    data: Path
    seq: int
    keys: int
    moved_to: Path | None
    moved: list[str]


def restore_dir(source: Path, ddir: DataDir, replace: bool, config: HeliosConfig, now: datetime,
                bar: Reporter = QUIET) -> RestoreResult:
    """Install `source` as `ddir`'s snapshot with an empty AOF, then prove the directory loads."""
    bar.stage(f"verifying {source}")
    check = _verified(source)
    owner = ddir.owner()
    if owner is not None:
        who = f"process {owner.get('pid')}" if owner.get("pid") else "another process"
        raise DataDirLockedError(f"data directory {ddir.path} is in use by {who}; stop it before restoring "
                                 f"(a restore replaces what the running daemon serves)")
    # Hold the lock while files move, so no daemon starts on a half-restored directory.
    lock = ddir.lock(tool="helios restore")
    moved: list[str] = []
    aside: Path | None = None
    # Staged before anything moves: FILE may be one of the files about to move aside
    # (DIR/dump.rdb itself), and DIR is without a snapshot only between two renames.
    staged = ddir.path / f".{SNAPSHOT_NAME}.restore-{os.getpid()}"
    try:
        existing = _data_files(ddir)
        if existing and not replace:
            names = ", ".join(p.name for p in existing)
            raise HeliosError(f"data directory {ddir.path} holds data ({names}); give --yes to move it aside "
                              f"into {ddir.path}/pre-restore-<time>/ and restore", code="not_empty")
        _stage(source, staged, bar)
        bar.stage("verifying the copy")
        _verified(staged)  # the copy, as it will be loaded
        if existing:
            aside = ddir.path / f"pre-restore-{_stamp(now)}"
            aside.mkdir(mode=0o700)
            for p in existing:
                os.rename(p, aside / p.name)
                moved.append(p.name)
            fsync_dir(aside)
        os.replace(staged, ddir.snapshot_path)
        _empty_aof(ddir.aof_path)
        fsync_dir(ddir.path)
    finally:
        staged.unlink(missing_ok=True)
        lock.release()
    bar.stage(f"loading {ddir.path} to check it")
    engine = Engine.open(ddir.path, config.atlas, tool="helios restore")
    try:
        seq, keys = engine.seq, engine.dbs.keys()
    finally:
        engine.close()
    if seq != (check.seq or 0):
        raise HeliosError(f"restored {ddir.path} loads at seq {seq}, the backup is at seq {check.seq}",
                          code="restore_mismatch")
    return RestoreResult(ddir.path, seq, keys, aside, moved)


# -- the commands -----------------------------------------------------------------------------

def _emit(fields: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(fields).decode())
        return
    for name, value in fields.items():
        if value is not None and value != []:
            click.echo(f"{name:<8} {', '.join(value) if isinstance(value, list) else value}")


@click.command("backup", short_help="Write a verified snapshot copy of a data directory into a backup directory.")
@click.option("--data", "data_dir", required=True, metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory to back up; if a daemon owns it, that daemon is asked to snapshot.")
@click.option("--to", "backup_dir", required=True, metavar="BACKUPDIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Where backups go (created 0700 if missing).")
@click.option("--keep", type=click.IntRange(min=1), default=DEFAULT_KEEP, show_default=True, metavar="N",
              help="Keep the newest N backups in BACKUPDIR; older helios-*-seq*.rdb files are deleted.")
@click.option("--timeout", metavar="SECONDS", type=click.FloatRange(min=0, min_open=True),
              default=OWNER_SNAPSHOT_TIMEOUT, show_default=True,
              help="How long to wait for a daemon that owns DIR to snapshot.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@pass_cli
def backup(obj: CliContext, data_dir: Path, backup_dir: Path, keep: int, timeout: float, as_json: bool) -> None:
    """Snapshot DIR into BACKUPDIR as helios-<UTC time>-seq<N>.rdb (0600), verify it, keep the newest N.

    Works whether or not a daemon runs on DIR.  Only files named like a
    backup are ever deleted.  Exit status: 0 success, 1 failure (reason on
    stderr), 2 usage error.
    """
    if not data_dir.is_dir():
        fail(HeliosError(f"data directory {data_dir} does not exist", code="data_dir"))
    t0 = time.perf_counter()
    # Cron and pipes get no bar (progress.enabled): only a terminal does.
    with bars.progress(f"backing up {data_dir}", unit="bytes", show=bars.enabled(as_json=as_json)) as bar:
        res = guarded(lambda: make_backup(DataDir(data_dir), backup_dir, keep, obj.config,
                                           lambda: datetime.now(UTC), timeout, bar), "backup failed")
    _emit({"path": str(res.path), "seq": res.seq, "keys": res.keys, "bytes": res.bytes,
           "seconds": round(time.perf_counter() - t0, 3), "deleted": res.deleted}, as_json)


@click.command("restore", short_help="Install a backup as a stopped data directory's snapshot.")
@click.option("--from", "source", required=True, metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Backup file (a helios backup or any HELIOS snapshot).")
@click.option("--data", "data_dir", required=True, metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory to restore into (created if missing; no process may own it).")
@click.option("--yes", "replace", is_flag=True,
              help="DIR holds data: move its dump.rdb and AOF parts into DIR/pre-restore-<time>/ first.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@pass_cli
def restore(obj: CliContext, source: Path, data_dir: Path, replace: bool, as_json: bool) -> None:
    """Verify FILE, install it as DIR/dump.rdb with an empty AOF, and check that DIR loads it.

    Refuses while a process owns DIR, and refuses a DIR holding data unless
    --yes, which moves that data aside (nothing is deleted).  The next start
    on DIR serves exactly the backup's keys.  Exit status: 0 success, 1
    failure (reason on stderr), 2 usage error.
    """
    if not source.is_file():
        fail(HeliosError(f"backup file {source} does not exist", code="io"))

    def work(bar: Reporter) -> RestoreResult:
        ddir = DataDir(data_dir)
        ddir.ensure()
        return restore_dir(source, ddir, replace, obj.config, datetime.now(UTC), bar)

    with bars.progress(f"restoring {source}", unit="bytes", show=bars.enabled(as_json=as_json)) as bar:
        res = guarded(lambda: work(bar), "restore failed")
    _emit({"data": str(res.data), "seq": res.seq, "keys": res.keys,
           "moved_to": str(res.moved_to) if res.moved_to else None, "moved": res.moved}, as_json)
