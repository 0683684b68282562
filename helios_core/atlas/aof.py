"""AOF files: appending (with an injectable I/O seam for fault tests) and scanning.

Scanning yields every line as either a decoded record or a bad line with the
reason and byte offset; recovery and `helios aof-check` both decide what to
do with bad lines from the same scan.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from helios_core.atlas.effects import Effect, RecordError, decode_line
from helios_core.atlas.fsops import REAL_FS, Fs, open_data_file

__all__ = ["AofFile", "Record", "BadLine", "scan_lines", "scan_file", "DECODE_ERRORS", "newline_damaged",
           "damaged_newline_reason"]

CHUNK = 8 << 20

# What decoding a line may raise on a line that is not a record.  The codec's own is RecordError;
# a hand-made line can still trip its arithmetic ({"ttl": 1e308}: OverflowError, found by
# tests/fuzz), and such a line is a bad line like any other, never a crash of the reader.
DECODE_ERRORS = (RecordError, ArithmeticError)


class AofFile:
    """One AOF part opened for appending (created owner-only).

    Bytes reach the disk only through `os_write` and `os_fsync` (and the
    file is cut back only through `fs.ftruncate`): a test passes a
    `fsops.FaultyFs`, or sets `os_write`/`os_fsync` on an instance, to make
    them fail like a full or broken disk would.
    """

    os_write = staticmethod(os.write)
    os_fsync = staticmethod(os.fsync)

    def __init__(self, path: Path, fs: Fs = REAL_FS) -> None:
        self.path = path
        self.fs = fs
        if fs is not REAL_FS:
            self.os_write = fs.write  # type: ignore[assignment]
            self.os_fsync = fs.fsync  # type: ignore[assignment]
        self.fd = open_data_file(fs, path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of data; on error the file may hold part of it (the caller truncates)."""
        view = memoryview(data)
        while view:
            n = self.os_write(self.fd, view)
            self.size += n
            view = view[n:]

    def fsync(self) -> None:
        self.os_fsync(self.fd)

    def truncate(self, size: int) -> None:
        """Cut the file back to `size` bytes; raises if the file may still hold more."""
        self.fs.ftruncate(self.fd, size)
        self.size = size

    def real_size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(slots=True)
class Record:
    offset: int
    end: int
    seq: int | None
    effect: Effect


@dataclass(slots=True)
class BadLine:
    offset: int
    end: int
    reason: str
    torn: bool  # the file ends inside this line (no newline) and it is no whole record: a write cut short


def scan_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, line without newline, ended by a newline) for every line of the file."""
    with open(path, "rb") as f:
        offset = 0
        pending: list[bytes] = []  # the start of a line no newline has ended yet
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            if pending:
                pending.append(chunk)
                if b"\n" not in chunk:
                    continue  # a line longer than a chunk (a big value): joined once, not per chunk
                chunk = b"".join(pending)
            lines = chunk.split(b"\n")
            last = lines.pop()
            pending = [last] if last else []
            for line in lines:
                yield offset, line, True
                offset += len(line) + 1
        if pending:
            yield offset, b"".join(pending), False


def newline_damaged(line: bytes, now_ms: int) -> bool:
    """A line the file ends inside that is a whole record plus one byte: its newline was altered.

    A write cut short leaves a prefix of a record, never a whole one with a byte after it, so
    such a line is not a torn tail but a complete (perhaps acknowledged) record whose newline a
    bit flip turned into something else (found by tests/fuzz/test_corrupt_files.py).  Cutting it
    as a torn write would drop that record silently.
    """
    if len(line) < 2:
        return False
    try:
        decode_line(line[:-1], now_ms)
    except DECODE_ERRORS:
        return False
    return True


def damaged_newline_reason(line: bytes) -> str:
    return (f"a whole record followed by byte 0x{line[-1]:02x} where its newline belongs: the newline "
            f"was damaged, this is not a write cut short")


def scan_file(path: Path, now_ms: int) -> Iterator[Record | BadLine]:
    for offset, line, complete in scan_lines(path):
        end = offset + len(line) + (1 if complete else 0)
        if not line.strip():
            if line and not complete:
                yield BadLine(offset, end, "file ends with an incomplete line", True)
            continue
        try:
            seq, eff = decode_line(line, now_ms)
        except DECODE_ERRORS as e:
            if not complete and newline_damaged(line, now_ms):
                yield BadLine(offset, end, damaged_newline_reason(line), False)
            else:
                yield BadLine(offset, end, str(e), not complete)
            continue
        # A valid last record without its newline (a hand-made file, or a write cut
        # just before it) is kept; recovery adds the newline before appending.
        yield Record(offset, end, seq, eff)
