"""Snapshot files: a consistent image of the keyspace at one AOF seq.

Layout (never pickle):

    MAGIC (16 bytes)  b"HELIOS-SNAPSHOT\\n"
    u32 big-endian length + msgpack header {"version", "seq", "created_ms", "keys"}
    msgpack body: a stream of chunks
        ["S", [keys], [values]]            string keys, in chunks of CHUNK
        ["E", [keys], [exp_ms]]            expiry times
        ["Z", key, [members], [scores]]    one sorted set; a 5th element, "skiplist" or "listpack",
                                           where its encoding is not what loading would choose
        ["H", key, [fields], [values]]     one hash; a 5th element, "hashtable" or "listpack", where
                                           its encoding is not what loading would choose (a hash
                                           that shrank stays a hashtable, as Redis's AOF replays it)
        ["SET", key, [members]]            one set; a 4th element, "hashtable" or "intset", likewise
                                           (the one a restart of Redis would give: packed.restart_note)
        ["L", key, [items]]                one list, head first
        ["X", key, [...]]                  one stream (streamtype.to_plain: entries, counters,
                                           node layout, groups with their consumers and PELs)
        ["F", [names], [codes]]            the function libraries (FUNCTION LOAD), when any
        ["DB", index]                      the chunks after it (up to the next "DB") hold database
                                           `index` (SELECT); those before the first hold database 0
        ["END", key_count]                 (keys in all databases)
    footer: b"CRC" + u32 big-endian CRC-32 of everything before the footer

Version 1 readers written before hashes, sets and lists existed refuse "H", "SET"
and "L" chunks by name ("unknown chunk"), and every older file loads here unchanged,
so the version stays 1.  Older readers ignore the encoding elements (they choose by content,
as before).  The same holds for "F": it is written only when libraries
exist, so a build without functions still reads every snapshot that holds none, and
refuses (rather than silently drops) one that holds some.  "DB" likewise: database 0 is
written first with no marker, so a snapshot of database 0 alone is what it always was, and
an older build refuses one holding other databases.  Chunks of parallel lists let
loading run at C speed (dict.update(zip(...))) instead of a Python-level loop per key.
Files are written to a temp name, fsynced, renamed into place and the directory fsynced, so a reader only ever
sees a complete snapshot or the previous one.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgpack

from helios_core.atlas.fsops import REAL_FS, Fs, open_data_file
from helios_core.atlas.hashtype import HASHTABLE, LISTPACK, Hash, content_encoding
from helios_core.atlas.listvalue import List
from helios_core.atlas.packed import INTSET, is_int64, keep_set_encoding, restart_note, set_note
from helios_core.atlas.streamtype import Stream, from_plain, to_plain
from helios_core.atlas.zset import SKIPLIST, ZSet
from helios_core.atlas.zset import content_encoding as content_encoding_z
from helios_core.clock import wall_ms
from helios_core.errors import CorruptFileError

__all__ = ["write_snapshot", "temp_path", "publish", "load_snapshot", "read_header", "check_snapshot", "SnapshotInfo",
           "SnapshotCheck", "VERSION"]

MAGIC = b"HELIOS-SNAPSHOT\n"
VERSION = 1
CHUNK = 4096
FOOTER = struct.Struct(">3sI")
_TAGS = frozenset({"S", "E", "Z", "H", "SET", "L", "X", "F", "DB", "END"})


@dataclass
class SnapshotInfo:
    path: str
    version: int
    seq: int
    created_ms: int
    keys: int
    bytes: int


class _CrcWriter:
    """Checksums what it writes, and syncs every SYNC_EVERY bytes.

    Incremental syncs (like Redis's rdb-save-incremental-fsync) keep a large
    snapshot from piling up dirty pages that the kernel would flush in one
    burst, stalling the AOF's fsyncs behind it.
    """

    SYNC_EVERY = 8 << 20

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.crc = 0
        self.size = 0
        self._unsynced = 0

    def write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.f.write(data)
        self._unsynced += len(data)
        if self._unsynced >= self.SYNC_EVERY:
            self.f.flush()
            os.fdatasync(self.f.fileno())
            self._unsynced = 0


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def temp_path(final_path: Path, pid: int) -> Path:
    """Where process `pid` writes the snapshot that becomes `final_path`."""
    return final_path.with_name(f"{final_path.name}.tmp-{pid}")


def publish(tmp: Path, final_path: Path, fs: Fs = REAL_FS) -> None:
    """Rename a complete, fsynced temp file over the snapshot and make the rename durable."""
    fs.rename(tmp, final_path)
    fs.fsync_dir(final_path.parent)


def write_snapshot(final_path: Path, data: dict, expires: dict, seq: int, created_ms: int | None = None,
                   fs: Fs = REAL_FS, *, rename: bool = True, functions: dict[bytes, bytes] | None = None,
                   others: list[tuple[int, dict, dict]] | None = None, rederive: bool = False) -> int:
    """Write a complete snapshot atomically (owner-only file); returns its size in bytes.

    `data`/`expires` are database 0's; `others` the (index, data, expires) of other databases
    (empty ones are skipped).  `functions` are the function libraries (name -> code) to keep with
    the keys.

    With rederive=True no hash, set or zset encoding is noted: loading chooses each by its
    content, as after Redis's AOF rewrite (the right image for BGREWRITEAOF); by default a
    hashtable or skiplist that shrank is noted as one, as Redis's AOF replay of its commands
    keeps it at a restart.

    With rename=False the fsynced image stays at `temp_path(final_path, getpid())`
    for the caller to `publish` (or delete).  Runs in a forked child during
    background saves: it must not log, take locks or touch the event loop.
    `fs` is the seam tests make fail.
    """
    created_ms = created_ms if created_ms is not None else wall_ms()
    tmp = temp_path(final_path, os.getpid())
    packer = msgpack.Packer(use_bin_type=True)
    try:
        fd = open_data_file(fs, tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        with os.fdopen(fd, "wb", buffering=1 << 20) as raw:
            w = _CrcWriter(raw)
            w.write(MAGIC)
            dbs = [(i, d, e) for i, d, e in (others or []) if d]
            total = len(data) + sum(len(d) for _, d, _ in dbs)
            header = packer.pack({"version": VERSION, "seq": seq, "created_ms": created_ms, "keys": total})
            w.write(struct.pack(">I", len(header)) + header)
            _write_db(w, packer, data, expires, rederive)
            for index, db_data, db_expires in dbs:
                w.write(packer.pack(["DB", index]))
                _write_db(w, packer, db_data, db_expires, rederive)
            if functions:
                names = list(functions)
                w.write(packer.pack(["F", names, [functions[n] for n in names]]))
            w.write(packer.pack(["END", total]))
            raw.write(FOOTER.pack(b"CRC", w.crc))
            raw.flush()
            fs.fsync(raw.fileno())
            size = w.size + FOOTER.size
        if rename:
            publish(tmp, final_path, fs)
        return size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_db(w: _CrcWriter, packer: msgpack.Packer, data: dict, expires: dict, rederive: bool) -> None:
    """One database's chunks."""
    strings: list[bytes] = []
    for key, value in data.items():
        t = type(value)
        if t is ZSet:
            members = list(value.scores)
            chunk = ["Z", key, members, [value.scores[m] for m in members]]
            if not rederive and value.encoding != content_encoding_z(members, len(members)):
                chunk.append(value.encoding)
            w.write(packer.pack(chunk))
        elif t is Hash or t is dict:
            fields, values = list(value), list(value.values())
            if t is Hash and not rederive and value.encoding != content_encoding(fields, values):
                w.write(packer.pack(["H", key, fields, values, value.encoding]))
            else:
                w.write(packer.pack(["H", key, fields, values]))
        elif t is set:
            note = None if rederive else restart_note(value) or set_note(value)
            w.write(packer.pack(["SET", key, list(value)] if note is None else ["SET", key, list(value), note]))
        elif t is List or t is deque:
            w.write(packer.pack(["L", key, list(value)]))
        elif t is Stream:
            w.write(packer.pack(["X", key, to_plain(value)]))
        else:
            strings.append(key)
            if len(strings) == CHUNK:
                w.write(packer.pack(["S", strings, [data[k] for k in strings]]))
                strings = []
    if strings:
        w.write(packer.pack(["S", strings, [data[k] for k in strings]]))
    exp_keys = list(expires)
    for part in _chunks(exp_keys, CHUNK):
        w.write(packer.pack(["E", part, [expires[k] for k in part]]))


def _corrupt(path: Path, why: str, offset: int | None = None) -> CorruptFileError:
    where = f" at byte {offset}" if offset is not None else ""
    return CorruptFileError(
        f"snapshot {path} is damaged{where}: {why}. Move it aside and restore a backup copy "
        f"(`helios snapshot --verify FILE` checks one), or remove it to recover from the AOF alone "
        f"if the AOF still holds every record", path=str(path), offset=offset)


def _parse_header(path: Path, blob: bytes) -> tuple[dict, int]:
    if len(blob) < len(MAGIC) + 4 + FOOTER.size or not blob.startswith(MAGIC):
        raise _corrupt(path, "not a HELIOS snapshot (bad magic or too short)", 0)
    (hlen,) = struct.unpack_from(">I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = msgpack.unpackb(blob[start:start + hlen], raw=False)
    except Exception:
        raise _corrupt(path, "unreadable header", start) from None
    if not isinstance(header, dict) or header.get("version") != VERSION:
        version = header.get("version") if isinstance(header, dict) else None
        raise _corrupt(path, f"unsupported snapshot version {version!r} (this build reads {VERSION})", start)
    return header, start + hlen


def read_header(path: Path) -> SnapshotInfo:
    """Verify the whole file's checksum and return its header."""
    blob = path.read_bytes()
    return _verify(path, blob)[0]


def _verify(path: Path, blob: bytes) -> tuple[SnapshotInfo, int]:
    header, body_at = _parse_header(path, blob)
    tag, crc = FOOTER.unpack_from(blob, len(blob) - FOOTER.size)
    if tag != b"CRC" or zlib.crc32(memoryview(blob)[:len(blob) - FOOTER.size]) != crc:
        raise _corrupt(path, "checksum mismatch (file truncated or altered)", len(blob) - FOOTER.size)
    seq, created_ms, keys = (header.get(name) for name in ("seq", "created_ms", "keys"))
    if not (type(seq) is int and type(created_ms) is int and type(keys) is int):
        # signed, yet not what a snapshot's header holds
        raise _corrupt(path, "header lacks seq, created_ms or keys as integers", len(MAGIC))
    info = SnapshotInfo(str(path), header["version"], seq, created_ms, keys, len(blob))
    return info, body_at


def load_snapshot(path: Path, functions: dict | None = None,
                  others: dict[int, tuple[dict, dict]] | None = None) -> tuple[SnapshotInfo, dict, dict]:
    """Verify and load a snapshot: (info, data, expires) of database 0; its function libraries go
    into `functions` when given (name -> code), its other databases into `others` (index ->
    (data, expires))."""
    blob = path.read_bytes()
    info, body_at = _verify(path, blob)
    data: dict = {}
    expires: dict = {}
    db0 = (data, expires)
    dbs: dict[int, tuple[dict, dict]] = {}
    total = 0
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(blob) + 1)
    unpacker.feed(memoryview(blob)[body_at:len(blob) - FOOTER.size])
    ended = False
    try:
        for chunk in unpacker:
            if not isinstance(chunk, list) or not chunk:  # (a map's [0] would be a KeyError)
                raise ValueError(f"a chunk is {type(chunk).__name__}, not a tagged list")
            tag = chunk[0]
            if tag == "S":
                data.update(zip(chunk[1], chunk[2], strict=True))
            elif tag == "E":
                expires.update(zip(chunk[1], chunk[2], strict=True))
            elif tag == "Z":
                z = ZSet()
                z.scores = dict(zip(chunk[2], chunk[3], strict=True))
                z.order.update(zip(chunk[3], chunk[2], strict=True))
                if len(chunk) > 4:  # its history's encoding
                    if chunk[4] != SKIPLIST and chunk[4] != LISTPACK:
                        raise ValueError(f"a sorted set's encoding is {chunk[4]!r}")
                    z.skiplist = chunk[4] == SKIPLIST
                else:  # the encoding Redis would load
                    z.skiplist = content_encoding_z(z.scores, len(z.scores)) == SKIPLIST
                data[chunk[1]] = z
            elif tag == "H":
                h = data[chunk[1]] = Hash(zip(chunk[2], chunk[3], strict=True))  # the encoding Redis would load
                if len(chunk) > 4:  # ... unless its history says otherwise
                    if chunk[4] != HASHTABLE and chunk[4] != LISTPACK:
                        raise ValueError(f"a hash's encoding is {chunk[4]!r}")
                    h.with_encoding(chunk[4])
            elif tag == "SET":
                members = data[chunk[1]] = set(chunk[2])
                if len(chunk) > 3:
                    if chunk[3] != HASHTABLE and not (chunk[3] == INTSET and all(map(is_int64, members))):
                        raise ValueError(f"a set's encoding is {chunk[3]!r}")
                    keep_set_encoding(members, chunk[3])
            elif tag == "L":
                data[chunk[1]] = List(chunk[2])
            elif tag == "X":
                data[chunk[1]] = from_plain(chunk[2])
            elif tag == "F":
                libraries = dict(zip(chunk[1], chunk[2], strict=True))
                if not all(type(k) is bytes and type(v) is bytes for k, v in libraries.items()):
                    raise ValueError("a function library's name or code is not bytes")
                if functions is not None:
                    functions.update(libraries)
            elif tag == "DB":
                index = chunk[1]
                if type(index) is not int or index < 1 or index in dbs:
                    raise ValueError(f"bad database marker {index!r}")
                total += len(data)
                data, expires = {}, {}
                dbs[index] = (data, expires)
            elif tag == "END":
                total += len(data)
                if chunk[1] != total:
                    raise _corrupt(path, f"holds {total} keys, its trailer says {chunk[1]}")
                ended = True
            else:
                raise _corrupt(path, f"unknown chunk {tag!r}")
    except (ValueError, TypeError, IndexError, msgpack.UnpackException) as e:
        raise _corrupt(path, f"unreadable body ({e})") from None
    if not ended:
        raise _corrupt(path, "body ends before its END marker")
    if others is not None:
        others.update(dbs)
    return info, db0[0], db0[1]


# -- checking a snapshot (helios aof-check, helios snapshot --verify) --------------------

@dataclass
class SnapshotCheck:
    """The snapshot recovery would load first, verified by recovery's own loader."""

    file: str
    ok: bool
    seq: int | None = None
    keys: int | None = None
    bytes: int | None = None
    offset: int | None = None  # where the damage was found, when the loader can tell
    reason: str | None = None  # the loader's whole message: what is wrong and what to do


def check_snapshot(path: Path) -> SnapshotCheck:
    """Verify a snapshot as recovery loads it: header, checksum and every chunk."""
    try:
        info, _, _ = load_snapshot(path)
    except CorruptFileError as e:
        if e.offset is None or "checksum mismatch" not in e.message:
            return SnapshotCheck(str(path), False, offset=e.offset, reason=e.message)
        # The loader names the footer, where the checksum is kept; the damage can be
        # anywhere before it.  Parse the chunks to say where, as far as that is possible.
        where = _first_unreadable_chunk(path)
        if where is None:
            why = (f"checksum mismatch: every chunk parses, so the damage is inside a key or value "
                   f"somewhere in bytes 0..{e.offset} (a checksum cannot say where)")
        else:
            why = f"checksum mismatch; the first chunk that does not parse starts at byte {where}"
        text = e.message.replace(f" at byte {e.offset}: checksum mismatch (file truncated or altered)", f": {why}")
        return SnapshotCheck(str(path), False, offset=where, reason=text)
    return SnapshotCheck(str(path), True, seq=info.seq, keys=info.keys, bytes=info.bytes)


def _first_unreadable_chunk(path: Path) -> int | None:
    """Byte offset of the first snapshot body chunk that does not parse (None: all parse).

    Only called on a file whose checksum failed; the layout is snapshot.py's.
    """
    blob = path.read_bytes()
    head = len(MAGIC) + 4
    if len(blob) < head + FOOTER.size or not blob.startswith(MAGIC):
        return 0
    start = head + int.from_bytes(blob[len(MAGIC):head], "big")
    end = len(blob) - FOOTER.size
    if start > end:
        return len(MAGIC)
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(end - start, 1))
    unpacker.feed(blob[start:end])
    at = 0
    try:
        for chunk in unpacker:
            if not isinstance(chunk, list) or not chunk or chunk[0] not in _TAGS:
                return start + at
            at = unpacker.tell()
            if chunk[0] == "END":
                return None if start + at == end else start + at
    except (ValueError, TypeError, msgpack.UnpackException):
        return start + at
    return start + at  # the body ends before its END chunk: the file was cut short
