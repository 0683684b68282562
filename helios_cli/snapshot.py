"""`helios snapshot`: snapshot a data directory, or verify a snapshot file.

Built for cron: exit 0 on success, 1 on any failure with the reason on
stderr, 2 on a usage error.  A directory no process owns is snapshotted in
this process (open the engine, `snapshot_sync()`, close), which also rotates
and prunes the AOF.  A directory a daemon owns must be snapshotted by that
daemon: `_snapshot_via_owner` asks it over the unix socket its lock file
names and waits (bounded by --timeout) for the result.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
from click.core import ParameterSource
from rich.console import Console
from rich.text import Text

from helios_cli import progress as bars
from helios_cli.context import CliContext, fail, guarded, pass_cli
from helios_cli.progress import QUIET, Reporter
from helios_core.atlas.datadir import SNAPSHOT_NAME, DataDir, fsync_dir
from helios_core.atlas.engine import Engine
from helios_core.atlas.snapshot import SnapshotInfo, check_snapshot, read_header
from helios_core.config import HeliosConfig
from helios_core.errors import CorruptFileError, DataDirLockedError, HeliosError

__all__ = ["snapshot", "snapshot_dir", "copy_atomic"]


# A cron job must end: how long to wait for an owner's snapshot unless --timeout says.
OWNER_SNAPSHOT_TIMEOUT = 600.0


def _snapshot_via_owner(ddir: DataDir, owner: dict, output: Path | None, config: HeliosConfig,
                        timeout: float = OWNER_SNAPSHOT_TIMEOUT, bar: Reporter = QUIET) -> SnapshotInfo:
    """Ask the daemon that owns `ddir` to snapshot it, over the socket its lock file names.

    SAVE on atlasd replies once the snapshot is durable (or with the reason
    it failed); one already running may predate this call, so it is waited
    out (INFO persistence) and a new one asked for.  The result is read back
    from DIR/dump.rdb (or from the `output` copy, which is what was delivered).
    """
    pid = owner.get("pid") or "(unknown pid)"
    sock = owner.get("socket")
    if not sock:
        raise DataDirLockedError(
            f"data directory {ddir.path} is in use by process {pid}, which does not serve other processes "
            f"(its lock file names no socket); stop it and run helios snapshot again")
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as e:
        raise HeliosError(f"snapshotting a directory a daemon owns needs the redis package (pip install redis): "
                          f"{e}", code="missing_dependency") from e
    # No client-side retries: a refused connection or password is reported at once, and
    # SAVE is not sent twice.
    client = redis.Redis(unix_socket_path=sock, password=config.atlasd.requirepass or None,
                         socket_connect_timeout=5, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))
    try:
        with client:
            bar.stage(f"process {pid} is writing the snapshot")
            with _bytes_written(ddir, bar):
                _save_and_wait(client, time.monotonic() + timeout)
    except redis.TimeoutError as e:
        raise HeliosError(f"process {pid} did not finish snapshotting {ddir.path} within {timeout:g}s (it may "
                          f"still be writing it; see INFO persistence on {sock})", code="timeout") from e
    except redis.AuthenticationError as e:
        raise _auth_error(pid, sock, bool(config.atlasd.requirepass)) from e
    except redis.ConnectionError as e:
        raise DataDirLockedError(
            f"data directory {ddir.path} is in use by process {pid}, but its socket {sock} does not answer "
            f"({e}); ask that daemon to snapshot (BGSAVE) once it is reachable, or stop it") from e
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            raise _auth_error(pid, sock, bool(config.atlasd.requirepass)) from e
        raise HeliosError(f"process {pid} could not snapshot {ddir.path}: {e}", code="snapshot_failed") from e
    if output is None:
        return read_header(ddir.snapshot_path)
    # The copy is read through one open file: a newer dump.rdb renamed in meanwhile cannot tear it.
    copy_atomic(ddir.snapshot_path, output, bar)
    info = read_header(output)  # verifies what was delivered
    return dataclasses.replace(info, path=str(ddir.snapshot_path))


def _auth_error(pid: object, sock: str, had_password: bool) -> HeliosError:
    what = "refused our password" if had_password else "needs a password"
    return HeliosError(f"process {pid} (socket {sock}) {what}: set atlasd.requirepass "
                       f"(HELIOS_ATLASD__REQUIREPASS) to the daemon's", code="store_auth")


def _save_and_wait(client: Any, deadline: float) -> None:
    import redis

    while True:
        try:
            client.execute_command("SAVE")
            return
        except redis.ResponseError as e:
            if "in progress" not in str(e):
                raise
        delay = 0.02
        while _persistence(client).get("rdb_bgsave_in_progress") not in (None, 0, "0"):
            if time.monotonic() > deadline:
                raise redis.TimeoutError("a snapshot already running did not finish")
            time.sleep(delay)  # polling the daemon, with backoff
            delay = min(delay * 2, 0.5)


def _persistence(client: Any) -> dict[str, Any]:
    return dict(client.info("persistence"))


def copy_atomic(src: Path, dst: Path, bar: Reporter = QUIET) -> None:
    """Copy src to dst so that dst is always either the old file or the whole new one."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with open(src, "rb") as f, open(tmp, "wb") as out:
            bar.stage(f"copying to {dst}", total=os.fstat(f.fileno()).st_size)
            while block := f.read(8 << 20):
                out.write(block)
                bar.advance(len(block))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dst.parent)


@contextmanager
def _bytes_written(ddir: DataDir, bar: Reporter, every: float = 0.1) -> Iterator[None]:
    """While the block runs, show how far the snapshot being written (DIR/dump.rdb.tmp-PID, by this
    process or the owner's child) has got.  Its final size is not known beforehand: bytes, no total."""
    if not bar.showing:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every):
            sizes = []
            for p in ddir.path.glob(SNAPSHOT_NAME + ".tmp-*"):
                try:
                    sizes.append(p.stat().st_size)
                except FileNotFoundError:  # renamed into place meanwhile
                    pass
            if sizes:
                bar.update(max(sizes))

    t = threading.Thread(target=watch, name="snapshot-progress", daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def snapshot_dir(ddir: DataDir, config: HeliosConfig, output: Path | None,
                 timeout: float = OWNER_SNAPSHOT_TIMEOUT, bar: Reporter = QUIET) -> SnapshotInfo:
    """Snapshot `ddir` (asking its owner if a daemon owns it); with `output`, also copy the new file there.

    `bar` hears of each step (loading, writing, copying), for a progress bar."""
    owner = ddir.owner()
    if owner is not None:
        return _snapshot_via_owner(ddir, owner, output, config, timeout, bar)
    bar.stage(f"loading {ddir.path}")
    engine = Engine.open(ddir.path, config.atlas, tool="helios snapshot")
    try:
        bar.stage(f"writing the snapshot of {engine.dbs.keys():,} keys")
        with _bytes_written(ddir, bar):
            info = engine.snapshot_sync()
        # Copy while the lock is still held: once released, a daemon could start and
        # replace dump.rdb with a newer image than the one reported here.
        if output is not None:
            copy_atomic(Path(info.path), output, bar)
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
              help="Data directory to snapshot; if atlasd owns it, that daemon is asked to (over DIR's socket).")
@click.option("--output", "-o", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="With --data: also copy the new snapshot here (atomically).")
@click.option("--verify", "verify_path", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Check a snapshot file's checksum and print its header.")
@click.option("--timeout", metavar="SECONDS", type=click.FloatRange(min=0, min_open=True),
              default=OWNER_SNAPSHOT_TIMEOUT, show_default=True,
              help="With --data on a directory a daemon owns: how long to wait for its snapshot.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (for scripts).")
@pass_cli
def snapshot(obj: CliContext, data_dir: Path | None, output: Path | None, verify_path: Path | None,
             timeout: float, as_json: bool) -> None:
    """Write DIR/dump.rdb from DIR's snapshot and AOF (rotating and pruning the AOF), or verify FILE.

    When a daemon (atlasd) owns DIR, it is asked to snapshot through its unix
    socket, and the command waits for the result.

    Exit status: 0 success, 1 failure (reason on stderr), 2 usage error.
    """
    if data_dir is not None and verify_path is None:
        if not data_dir.is_dir():
            fail(HeliosError(f"data directory {data_dir} does not exist", code="data_dir"))
        if output is not None and not output.parent.is_dir():  # before the snapshot, not after it
            raise click.BadParameter(f"directory {output.parent} does not exist; create it first "
                                     f"(mkdir -p {output.parent})", param_hint="'--output'")
        t0 = time.perf_counter()
        with bars.progress(f"snapshot of {data_dir}", unit="bytes", show=bars.enabled(as_json=as_json)) as bar:
            info = guarded(lambda: snapshot_dir(DataDir(data_dir), obj.config, output, timeout, bar),
                           "snapshot failed")
        _emit({"path": info.path, "seq": info.seq, "keys": info.keys, "bytes": info.bytes,
               "seconds": round(time.perf_counter() - t0, 3), "created": _iso(info.created_ms),
               "output": str(output) if output else None}, as_json)
    elif verify_path is not None and data_dir is None:
        if output is not None:
            raise click.UsageError("--output only applies with --data")
        if click.get_current_context().get_parameter_source("timeout") is not ParameterSource.DEFAULT:
            raise click.UsageError("--timeout only applies with --data")
        info = guarded(lambda: _verify(verify_path), "cannot verify")
        _emit({"path": info.path, "seq": info.seq, "created": _iso(info.created_ms), "keys": info.keys,
               "bytes": info.bytes, "version": info.version}, as_json)
    else:
        raise click.UsageError("give exactly one of --data DIR or --verify FILE")


def _verify(path: Path) -> SnapshotInfo:
    """The whole file checked as recovery loads it (aof-check's check), then its header."""
    check = check_snapshot(path)
    if not check.ok:
        raise CorruptFileError(check.reason or f"{path}: not a valid snapshot", path=str(path), offset=check.offset)
    return read_header(path)
