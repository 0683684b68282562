"""The data directory: its file layout and its single-owner lock.

    DIR/helios.lock                      fcntl lock; JSON naming the owner (pid, how to reach it)
    DIR/dump.rdb                         newest complete snapshot (at some seq N)
    DIR/appendonly.aof                   the AOF being appended to
    DIR/appendonly-<N>.aof               rotated AOF parts, holding records with seq <= N
    DIR/dump.rdb.tmp-<pid>               a snapshot being written (removed on start)
    DIR/atlasd.password                  atlasd's password for TCP clients (generated when none is set)

Everything here is the owner's alone: the directory is created 0700 and files
0600 (the process umask is 077 too); a directory others can read is served
with a warning naming the fix.

Recovery reads the snapshot, then every AOF part in order (rotated parts by N,
then appendonly.aof), applying records whose seq is above the snapshot's.
Rotated parts are deleted only after a snapshot covering them is durable, so a
kill -9 at any instant leaves a directory that recovers every acknowledged write.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from helios_core.errors import DataDirLockedError, HeliosError
from helios_core.observability.logging import get_logger

__all__ = ["DataDir", "DirLock", "fsync_dir", "PASSWORD_NAME", "read_password", "register_port",
           "unregister_port", "password_for_port"]

log = get_logger("atlas")

LOCK_NAME = "helios.lock"
SNAPSHOT_NAME = "dump.rdb"
AOF_NAME = "appendonly.aof"
PASSWORD_NAME = "atlasd.password"
_ROTATED = re.compile(r"appendonly-(\d{20})\.aof\Z")

# POSIX record locks belong to the process: a second open+close of the lock
# file in the same process would silently drop the first lock.  Track what
# this process holds so an in-process second opener gets the same clear error.
_HELD: dict[str, int] = {}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class DirLock:
    path: Path
    fd: int

    def update(self, **info: object) -> None:
        """Rewrite the owner record (e.g. once a daemon knows its socket path)."""
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": int(time.time()), **info}
        data = json.dumps(record).encode() + b"\n"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)
        os.fsync(self.fd)

    def release(self) -> None:
        if self.fd >= 0:
            _HELD.pop(str(self.path), None)
            os.close(self.fd)  # closing releases the fcntl lock
            self.fd = -1


def read_owner(lock_path: Path) -> dict:
    """The owner record.  When this process holds the lock it must be read through
    the held descriptor: opening and closing the file again would drop the lock."""
    try:
        held = _HELD.get(str(lock_path))
        if held is not None:
            blob = os.pread(held, 4096, 0)
        else:
            blob = lock_path.read_bytes()
        record = json.loads(blob or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def read_password(data_dir: str | os.PathLike[str]) -> bytes | None:
    """The password in DIR/atlasd.password, or None when there is none (or it is not ours to read)."""
    path = Path(data_dir) / PASSWORD_NAME
    try:
        text = path.read_bytes().strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    except OSError as e:
        raise HeliosError(f"cannot read {path}: {e.strerror}", code="data_dir") from e
    return text or None


# -- finding a local atlasd's password from its port -------------------------------------
# `atlas://127.0.0.1:PORT` names no directory.  A daemon listening on TCP records
# "PORT -> its data directory" in a directory only this user can reach; a client
# of a loopback URL given no password reads the password from that data
# directory.  Nothing secret is in the record: the password file's own mode
# (0600) decides who may read it.

def runtime_dir() -> Path:
    """$HELIOS_RUNTIME_DIR, else $XDG_RUNTIME_DIR/helios, else /tmp/helios-UID (created 0700)."""
    base = os.environ.get("HELIOS_RUNTIME_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "helios" if xdg else Path(f"/tmp/helios-{os.getuid()}")


def _own_runtime_dir(create: bool) -> Path | None:
    path = runtime_dir()
    try:
        if create:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError:
        return None
    # Another user may have made /tmp/helios-UID first: never trust or write into it.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        if create:
            log.warning(f"not recording atlasd's port in {path}: it is not a directory only this user owns",
                        path=str(path))
        return None
    return path


def register_port(port: int, data_dir: Path) -> None:
    """Say that this user's atlasd on TCP `port` serves `data_dir` (best effort)."""
    where = _own_runtime_dir(create=True)
    if where is None:
        return
    try:
        tmp = where / f"atlasd-{port}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps({"data": str(data_dir), "pid": os.getpid()}))
        os.replace(tmp, where / f"atlasd-{port}")
    except OSError as e:
        log.warning("cannot record atlasd's port", path=str(where), error=e.strerror)


def unregister_port(port: int, data_dir: Path) -> None:
    where = _own_runtime_dir(create=False)
    if where is None:
        return
    record = where / f"atlasd-{port}"
    try:
        if json.loads(record.read_text()).get("data") == str(data_dir):
            record.unlink()
    except (OSError, ValueError):
        pass


def password_for_port(port: int) -> bytes | None:
    """The password of this user's atlasd on `port`, when it recorded itself; else None."""
    where = _own_runtime_dir(create=False)
    if where is None:
        return None
    try:
        data = json.loads((where / f"atlasd-{port}").read_text()).get("data")
    except (OSError, ValueError):
        return None
    return read_password(data) if isinstance(data, str) else None


class DataDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        # The real path: the in-process lock registry must see through symlinks and "..".
        self.path = Path(os.path.realpath(path))

    @property
    def snapshot_path(self) -> Path:
        return self.path / SNAPSHOT_NAME

    @property
    def aof_path(self) -> Path:
        return self.path / AOF_NAME

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def rotated_path(self, upto_seq: int) -> Path:
        return self.path / f"appendonly-{upto_seq:020d}.aof"

    def rotated_parts(self) -> list[tuple[int, Path]]:
        out = []
        if self.path.is_dir():
            for p in self.path.iterdir():
                m = _ROTATED.match(p.name)
                if m:
                    out.append((int(m.group(1)), p))
        return sorted(out)

    def aof_parts(self) -> list[Path]:
        """Every AOF file in replay order; the last one is the one appended to."""
        parts = [p for _, p in self.rotated_parts()]
        if self.aof_path.exists():
            parts.append(self.aof_path)
        return parts

    @property
    def password_path(self) -> Path:
        return self.path / PASSWORD_NAME

    def ensure(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise HeliosError(f"cannot create data directory {self.path}: {e.strerror}",
                              code="data_dir") from e
        if not os.access(self.path, os.W_OK):
            raise HeliosError(f"data directory {self.path} is not writable by this user", code="data_dir")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            # Not fixed for the operator: a shared directory may be deliberate.  Said every start.
            log.warning(f"data directory {self.path} is open to other users (mode {mode:o}): they may read "
                        f"every value, the password hashes and atlasd's password; run: chmod 700 {self.path}",
                        path=str(self.path), mode=f"{mode:o}", fix=f"chmod 700 {self.path}")

    def write_password(self, password: bytes) -> None:
        """Store atlasd's password (0600, replaced atomically) for local tools to find."""
        tmp = self.path / f"{PASSWORD_NAME}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, password + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.password_path)
        fsync_dir(self.path)

    def ensure_password(self) -> bytes:
        """atlasd's generated password: the one in DIR/atlasd.password, made on first use."""
        existing = read_password(self.path)
        if existing:
            return existing
        password = secrets.token_hex(32).encode()  # hex: never starts with "-", which tools take for an option
        self.write_password(password)
        log.info("generated atlasd's password for TCP clients", path=str(self.password_path))
        return password

    def remove_stale_temp_files(self) -> None:
        for p in self.path.glob(SNAPSHOT_NAME + ".tmp-*"):
            p.unlink(missing_ok=True)

    def owner(self) -> dict | None:
        """The owner record if some process holds the lock now, else None."""
        lock_path = self.lock_path
        if not lock_path.exists():
            return None
        if str(lock_path) in _HELD:
            return read_owner(lock_path)
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return read_owner(lock_path) or {"pid": None}
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def lock(self, **info: object) -> DirLock:
        """Become the directory's one owner, or raise DataDirLockedError naming the owner."""
        self.ensure()
        lock_path = self.lock_path
        if str(lock_path) in _HELD:
            raise DataDirLockedError(self._locked_message(read_owner(lock_path)))
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DataDirLockedError(self._locked_message(read_owner(lock_path))) from None
        _HELD[str(lock_path)] = fd
        lock = DirLock(lock_path, fd)
        lock.update(**info)
        return lock

    def _locked_message(self, owner: dict) -> str:
        pid = owner.get("pid")
        how = f" (reach it at {owner['socket']})" if owner.get("socket") else ""
        who = f"process {pid}" if pid else "another process"
        return (f"data directory {self.path} is in use by {who}{how}; stop that process or, "
                f"if it runs atlasd, talk to it through its socket instead of opening the directory")
