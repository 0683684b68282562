"""The file-system seam of the durability path: every call the AOF writer and
the snapshotter make that can fail on a sick disk or a tight machine.

`Fs` is the real thing (thin wrappers over `os`).  `FaultyFs` lets a test
make any call fail at any point ("the 2nd fsync from now raises EIO", "the
next write stores 10 bytes, then ENOSPC", "fork raises ENOMEM") or block
until released (a slow fsync), next to the real-disk tests.

Data files are created owner-only (0600): AOF parts, the manifest-like
rotated parts, snapshots and their temp files.
"""

from __future__ import annotations

import errno as errno_mod
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Fs", "FaultyFs", "REAL_FS", "DATA_FILE_MODE"]

DATA_FILE_MODE = 0o600


class Fs:
    """Real file-system calls."""

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = DATA_FILE_MODE) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        os.rename(src, dst)

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def fork(self) -> int:
        return os.fork()

    def pipe(self) -> tuple[int, int]:
        return os.pipe()

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        return os.waitpid(pid, options)


REAL_FS = Fs()


@dataclass
class _Fault:
    skip: int            # calls to let through first
    count: int           # calls to fail after that
    err: int
    partial: int | None  # write: store this many bytes before failing
    gate: threading.Event | None = None  # block (instead of failing) until set
    pid: int | None = None  # only in this process (not in a forked snapshot child)


@dataclass
class FaultyFs(Fs):
    """An `Fs` whose calls fail (or block) as planned; counts every call in `calls`."""

    calls: Counter[str] = field(default_factory=Counter)
    _plan: dict[str, list[_Fault]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, op: str, *, after: int = 0, count: int = 1, err: int = errno_mod.EIO,
             partial: int | None = None, parent_only: bool = False) -> None:
        """Let `after` calls of `op` through, then fail the next `count` with OSError(err)
        (parent_only: in this process only, not in a snapshot child forked later)."""
        self._plan.setdefault(op, []).append(_Fault(after, count, err, partial,
                                                    pid=os.getpid() if parent_only else None))

    def block(self, op: str, *, after: int = 0) -> threading.Event:
        """Make the next call of `op` (after `after` others) wait until the returned event is set."""
        gate = threading.Event()
        self._plan.setdefault(op, []).append(_Fault(after, 1, 0, None, gate))
        return gate

    def heal(self) -> None:
        """The disk recovers: forget every planned failure (blocked calls stay blocked until set)."""
        with self._lock:
            self._plan.clear()

    def _check(self, op: str) -> _Fault | None:
        with self._lock:
            self.calls[op] += 1
            for fault in self._plan.get(op, []):
                if fault.pid is not None and fault.pid != os.getpid():
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.count > 0:
                    fault.count -= 1
                    return fault
            return None

    def _raise(self, fault: _Fault) -> None:
        raise OSError(fault.err, os.strerror(fault.err))

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = DATA_FILE_MODE) -> int:
        fault = self._check("open")
        if fault:
            self._raise(fault)
        return super().open(path, flags, mode)

    def write(self, fd: int, data: bytes | bytearray | memoryview) -> int:
        fault = self._check("write")
        if fault:
            if fault.partial:
                os.write(fd, bytes(memoryview(data)[:fault.partial]))
            self._raise(fault)
        return super().write(fd, data)

    def fsync(self, fd: int) -> None:
        fault = self._check("fsync")
        if fault and fault.gate is not None:
            fault.gate.wait()
        elif fault:
            self._raise(fault)
        super().fsync(fd)

    def ftruncate(self, fd: int, size: int) -> None:
        fault = self._check("ftruncate")
        if fault:
            self._raise(fault)
        super().ftruncate(fd, size)

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        fault = self._check("rename")
        if fault:
            self._raise(fault)
        super().rename(src, dst)

    def fsync_dir(self, path: str | os.PathLike[str]) -> None:
        fault = self._check("fsync_dir")
        if fault:
            self._raise(fault)
        super().fsync_dir(path)

    def fork(self) -> int:
        fault = self._check("fork")
        if fault:
            self._raise(fault)
        return super().fork()

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        fault = self._check("waitpid")
        if fault:
            self._raise(fault)
        return super().waitpid(pid, options)


def open_data_file(fs: Fs, path: Path, flags: int) -> int:
    """Open (creating owner-only) a data file through the seam."""
    return fs.open(path, flags | os.O_CLOEXEC, DATA_FILE_MODE)
