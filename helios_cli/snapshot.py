"""`helios snapshot`: snapshot a data directory, or verify a snapshot file.

Built for cron: exit 0 on success, 1 on any failure with the reason on
stderr, 2 on a usage error.  A directory no process owns is snapshotted in
this process (open the engine, `snapshot_sync()`, close), which also rotates
and prunes the AOF.  A directory a daemon owns must be snapshotted by that
daemon; asking it is `_snapshot_via_owner`'s job.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson
from rich.console import Console
from rich.text import Text

from helios_cli.context import CliContext, fail, pass_cli
from helios_core.atlas.datadir import DataDir, fsync_dir
from helios_core.atlas.engine import Engine
from helios_core.atlas.snapshot import SnapshotInfo, read_header
from helios_core.config import HeliosConfig
from helios_core.errors import DataDirLockedError, HeliosError

__all__ = ["snapshot", "snapshot_dir", "copy_atomic"]


def _snapshot_via_owner(ddir: DataDir, owner: dict, output: Path | None) -> NoReturn:
    """Snapshot a directory a running process owns.  Not yet: it will ask the owner over its socket."""
    pid = owner.get("pid") or "(unknown pid)"
    reach = f" (socket {owner['socket']})" if owner.get("socket") else ""
    raise DataDirLockedError(
        f"data directory {ddir.path} is in use by process {pid}{reach}; ask that daemon to snapshot "
        f"(BGSAVE through its socket): helios snapshot cannot ask a running owner yet")


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy src to dst so that dst is always either the old file or the whole new one."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with open(src, "rb") as f, open(tmp, "wb") as out:
            shutil.copyfileobj(f, out, 8 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)


def snapshot_dir(ddir: DataDir, config: HeliosConfig, output: Path | None) -> SnapshotInfo:
    """Snapshot an unowned directory in this process; with `output`, also copy the new file there."""
    owner = ddir.owner()
    if owner is not None:
        _snapshot_via_owner(ddir, owner, output)
    engine = Engine.open(ddir.path, config.atlas, tool="helios snapshot")
    try:
        info = engine.snapshot_sync()
        # Copy while the lock is still held: once released, a daemon could start and
        # replace dump.rdb with a newer image than the one reported here.
        if output is not None:
            copy_atomic(Path(info.path), output)
    finally:
        engine.close()
    return info


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _emit(fields: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(fields).decode())
        return
    console = Console(highlight=False, soft_wrap=True)
    for name, value in fields.items():
        if value is not None:
            line = Text(f"{name:<8} ", style="bold")
            line.append(str(value))
            console.print(line)


@click.command("snapshot", short_help="Snapshot a data directory, or verify a snapshot file.",
               options_metavar="(--data DIR [--output FILE] | --verify FILE) [--json]")
@click.option("--data", "data_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory to snapshot (no running process may own it).")
@click.option("--output", "-o", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="With --data: also copy the new snapshot here (atomically).")
@click.option("--verify", "verify_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Check a snapshot file's checksum and print its header.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@pass_cli
def snapshot(obj: CliContext, data_dir: Path | None, output: Path | None, verify_path: Path | None,
             as_json: bool) -> None:
    """Write DIR/dump.rdb from DIR's snapshot and AOF (rotating and pruning the AOF), or verify FILE.

    Exit status: 0 success, 1 failure (reason on stderr), 2 usage error.
    """
    if data_dir is not None and verify_path is None:
        if not data_dir.is_dir():
            fail(HeliosError(f"data directory {data_dir} does not exist", code="data_dir"))
        t0 = time.perf_counter()
        info = _guarded(lambda: snapshot_dir(DataDir(data_dir), obj.config, output), "snapshot failed")
        _emit({"path": info.path, "seq": info.seq, "keys": info.keys, "bytes": info.bytes,
               "seconds": round(time.perf_counter() - t0, 3), "created": _iso(info.created_ms),
               "output": str(output) if output else None}, as_json)
    elif verify_path is not None and data_dir is None:
        if output is not None:
            raise click.UsageError("--output only applies with --data")
        info = _guarded(lambda: read_header(verify_path), "cannot verify")
        _emit({"path": info.path, "seq": info.seq, "created": _iso(info.created_ms), "keys": info.keys,
               "bytes": info.bytes, "version": info.version}, as_json)
    else:
        raise click.UsageError("give exactly one of --data DIR or --verify FILE")


def _guarded(work: Callable[[], SnapshotInfo], what: str) -> SnapshotInfo:
    """Run `work`, turning every expected failure into exit status 1 with the reason on stderr."""
    try:
        return work()
    except HeliosError as e:
        fail(e)
    except OSError as e:
        fail(HeliosError(f"{what}: {e.filename or ''}: {e.strerror or e}", code="io"))
