"""DUMP/RESTORE payloads in Redis's own format: one RDB-encoded value, the RDB version (2 bytes,
little-endian) and a CRC-64 (Jones, reflected; 8 bytes, little-endian) of everything before it.

ATLAS writes RDB version 10 (Redis 7.0's), so its payloads restore on Redis 7.0 and later:
strings byte for byte as Redis 7.0 dumps them (small integers as RDB integers, strings over
20 bytes LZF-compressed by the same algorithm when that pays), and collections in the
encoding Redis 7.0 holds them in: hashes, sets and zsets in the one they have (hashtype.py,
packed.set_encoding, zset.py: a hashtable or skiplist that shrank is dumped as one, as Redis
dumps it); listpack hashes and zsets (16, 17), intsets (11), small lists as one
quicklist node (18), so their payloads are Redis's too; the others in the plain RDB encodings
Redis still loads (list 1, set 2, zset 5 with binary scores, hash 4), whose element order is
ATLAS's own.  Reading accepts those and what
Redis 7.0 itself dumps: LZF strings, intsets (11), listpack hashes and zsets (16, 17)
and quicklist-2 lists (18).  Streams both ways in Redis 7.0's encoding (19).  Anything else
is refused with Redis's own errors.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from typing import Any

from helios_core.atlas.hashtype import LISTPACK, Hash
from helios_core.atlas.listvalue import List
from helios_core.atlas.packed import INTSET, LIMITS, as_int64, set_encoding
from helios_core.atlas.streamtype import NACK, U64, Consumer, Group, Node, Stream
from helios_core.atlas.zset import LISTPACK as ZSET_LP
from helios_core.atlas.zset import SKIPLIST, ZSet

__all__ = ["dump_value", "load_payload", "PayloadError", "BadFormat", "RDB_VERSION", "crc64", "lzf_compress",
           "lzf_decompress", "dump_functions", "load_functions"]

RDB_VERSION = 10

T_STRING, T_LIST, T_SET, T_ZSET, T_HASH, T_ZSET_2 = 0, 1, 2, 3, 4, 5
T_SET_INTSET, T_HASH_LISTPACK, T_ZSET_LISTPACK, T_LIST_QUICKLIST_2 = 11, 16, 17, 18
T_STREAM_LISTPACKS_2 = 19  # Redis 7.0's stream encoding


class PayloadError(ValueError):
    """Wrong RDB version or checksum ("ERR DUMP payload version or checksum are wrong")."""


class BadFormat(ValueError):
    """A payload whose checksum is right but whose content ATLAS cannot read ("ERR Bad data format")."""


def _crc64_table() -> list[int]:
    poly = 0x95AC9329AC4BC9B5  # 0xad93d23594c935a9 (Jones) bit-reflected
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc64_table()


def crc64(data: bytes, crc: int = 0) -> int:
    """Redis's crc64 (crc64_jones): check value 0xe9c6d914c4b8d9ca for b"123456789"."""
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


# -- writing --------------------------------------------------------------------------------

def _len(n: int) -> bytes:
    if n < 1 << 6:
        return bytes((n,))
    if n < 1 << 14:
        return bytes((0x40 | (n >> 8), n & 0xFF))
    if n < 1 << 32:
        return b"\x80" + struct.pack(">I", n)
    return b"\x81" + struct.pack(">Q", n)


_HSIZE = 1 << 16  # Redis builds liblzf with HLOG 16, VERY_FAST 1, ULTRA_FAST 0
_MAX_LIT, _MAX_OFF, _MAX_REF = 1 << 5, 1 << 13, (1 << 8) + (1 << 3)


def lzf_compress(data: bytes, out_len: int) -> bytes | None:
    """liblzf 3.6's lzf_compress step for step (Redis's settings), so a payload is Redis's byte for
    byte; None when the result would not fit in `out_len` bytes (Redis then stores the string plain)."""
    n = len(data)
    if not n or not out_len:
        return None
    htab: dict[int, int] = {}  # slot -> input position (Redis leaves the table uninitialised)
    out = bytearray(b"\0")  # op starts one past a literal-run header
    lit_at = 0  # where the current literal run's header byte is
    lit = 0
    ip = 0
    hval = (data[0] << 8) | data[1] if n > 1 else 0
    while ip < n - 2:
        hval = ((hval << 8) | data[ip + 2]) & 0xFFFFFF
        slot = ((hval >> 8) - hval * 5) & (_HSIZE - 1)
        ref = htab.get(slot)
        htab[slot] = ip
        if (ref is not None and ref < ip and ip - ref - 1 < _MAX_OFF and ref > 0
                and data[ref + 2] == data[ip + 2] and data[ref:ref + 2] == data[ip:ip + 2]):
            off = ip - ref - 1
            maxlen = min(n - ip - 2, _MAX_REF)
            op = len(out)
            if op + 4 >= out_len and op - (not lit) + 4 >= out_len:
                return None
            out[lit_at] = (lit - 1) & 0xFF
            if not lit:
                del out[-1]
            if maxlen > 16:
                length = 2
                for _ in range(16):
                    length += 1
                    if data[ref + length] != data[ip + length]:
                        break
                else:
                    length += 1
                    while length < maxlen and data[ref + length] == data[ip + length]:
                        length += 1
            else:
                length = 3
                while length < maxlen and data[ref + length] == data[ip + length]:
                    length += 1
            length -= 2
            ip += 1
            if length < 7:
                out.append(((off >> 8) + (length << 5)) & 0xFF)
            else:
                out.append(((off >> 8) + (7 << 5)) & 0xFF)
                out.append((length - 7) & 0xFF)
            out.append(off & 0xFF)
            lit_at = len(out)
            out.append(0)
            lit = 0
            ip += length + 1
            if ip >= n - 2:
                break
            ip -= 2
            hval = (data[ip] << 8) | data[ip + 1]
            for _ in range(2):
                hval = ((hval << 8) | data[ip + 2]) & 0xFFFFFF
                htab[((hval >> 8) - hval * 5) & (_HSIZE - 1)] = ip
                ip += 1
        else:
            if len(out) >= out_len:
                return None
            lit += 1
            out.append(data[ip])
            ip += 1
            if lit == _MAX_LIT:
                out[lit_at] = lit - 1
                lit = 0
                lit_at = len(out)
                out.append(0)
    if len(out) + 3 > out_len:
        return None
    while ip < n:
        lit += 1
        out.append(data[ip])
        ip += 1
        if lit == _MAX_LIT:
            out[lit_at] = lit - 1
            lit = 0
            lit_at = len(out)
            out.append(0)
    out[lit_at] = (lit - 1) & 0xFF
    if not lit:
        del out[-1]
    return bytes(out)


def _string(s: bytes) -> bytes:
    # As rdbSaveRawString: a short string that is exactly an integer's text goes as an integer,
    # one over 20 bytes LZF-compressed when that saves more than 4 bytes (rdbcompression yes).
    if len(s) > 20:
        packed = lzf_compress(s, len(s) - 4)
        if packed is not None:
            return b"\xc3" + _len(len(packed)) + _len(len(s)) + packed
    if len(s) <= 11 and s[:1] != b"+":
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is not None and b"%d" % v == s:
            if -(1 << 7) <= v < 1 << 7:
                return b"\xc0" + struct.pack("<b", v)
            if -(1 << 15) <= v < 1 << 15:
                return b"\xc1" + struct.pack("<h", v)
            if -(1 << 31) <= v < 1 << 31:
                return b"\xc2" + struct.pack("<i", v)
    return _len(len(s)) + s


def _backlen(n: int) -> bytes:
    """lpEncodeBacklen: 1 to 5 bytes, the high 7-bit group first, the ones after it flagged 128."""
    if n <= 127:
        return bytes((n,))
    k = 2 if n < 16383 else 3 if n < 2097151 else 4 if n < 268435455 else 5
    return bytes(((n >> (7 * (k - 1 - i))) & 127) | (128 if i else 0) for i in range(k))


def _lp_entry(s: bytes) -> bytes:
    v = as_int64(s)
    if v is not None:
        if 0 <= v <= 127:
            enc = bytes((v,))
        elif -4096 <= v <= 4095:
            u = v & 0x1FFF
            enc = bytes((0xC0 | (u >> 8), u & 0xFF))
        elif -(1 << 15) <= v < 1 << 15:
            enc = b"\xf1" + v.to_bytes(2, "little", signed=True)
        elif -(1 << 23) <= v < 1 << 23:
            enc = b"\xf2" + v.to_bytes(3, "little", signed=True)
        elif -(1 << 31) <= v < 1 << 31:
            enc = b"\xf3" + v.to_bytes(4, "little", signed=True)
        else:
            enc = b"\xf4" + v.to_bytes(8, "little", signed=True)
    elif len(s) < 64:
        enc = bytes((0x80 | len(s),)) + s
    elif len(s) < 4096:
        enc = bytes((0xE0 | (len(s) >> 8), len(s) & 0xFF)) + s
    else:
        enc = b"\xf0" + struct.pack("<I", len(s)) + s
    return enc + _backlen(len(enc))


def listpack(entries: list[bytes]) -> bytes:
    """A listpack as Redis 7.0 builds one (header, entries with back-lengths, 0xFF)."""
    body = b"".join(_lp_entry(e) for e in entries)
    return struct.pack("<IH", 6 + len(body) + 1, min(len(entries), 65535)) + body + b"\xff"


def _score_text(score: float) -> bytes:
    """d2string: an integral score below 2**52 as an integer, else %.17g (inf, -inf, -0)."""
    if score == 0:
        return b"-0" if math.copysign(1.0, score) < 0 else b"0"
    if -4503599627370495 < score < 4503599627370496 and score == int(score):
        return b"%d" % int(score)
    return b"%.17g" % score


# Redis 7.0's default for the list encoding (what DUMP writes is what the value is stored as).
LIST_NODE_BYTES = 8192


def _collection(value: Any) -> bytes:
    t = type(value)
    if t is Hash:
        if value.encoding == LISTPACK:
            return bytes((T_HASH_LISTPACK,)) + _string(listpack([x for fv in value.items() for x in fv]))
        return bytes((T_HASH,)) + _len(len(value)) + b"".join(_string(f) + _string(v) for f, v in value.items())
    if t is ZSet:
        if value.encoding == ZSET_LP:
            entries = [x for s, m in value.items() for x in (m, _score_text(s))]
            return bytes((T_ZSET_LISTPACK,)) + _string(listpack(entries))
        return bytes((T_ZSET_2,)) + _len(len(value)) + b"".join(
            _string(m) + struct.pack("<d", s) for s, m in value.items())
    if t is set:
        if set_encoding(value) == INTSET:
            nums = sorted(int(m) for m in value)
            width = 2 if all(-(1 << 15) <= i < 1 << 15 for i in nums) else (
                4 if all(-(1 << 31) <= i < 1 << 31 for i in nums) else 8)
            blob = struct.pack("<II", width, len(nums)) + b"".join(i.to_bytes(width, "little", signed=True)
                                                                   for i in nums)
            return bytes((T_SET_INTSET,)) + _string(blob)
        return bytes((T_SET,)) + _len(len(value)) + b"".join(_string(x) for x in value)
    # A list: one quicklist node while it is small (Redis splits larger ones by its own rules).
    lp = listpack(list(value))
    if len(lp) + 8 <= LIST_NODE_BYTES:
        return bytes((T_LIST_QUICKLIST_2,)) + _len(1) + _len(2) + _string(lp)
    return bytes((T_LIST,)) + _len(len(value)) + b"".join(_string(x) for x in value)


# -- streams (RDB type 19, Redis 7.0) ---------------------------------------------------------
# Nodes: the 16-byte big-endian master id and a listpack: count, deleted, the master fields, 0,
# then per entry flags, ms-diff, seq-diff, [num-fields, field, value ... | the values when its
# fields are the master's], lp-count.  Then length, last id, first id, max deleted id, entries
# added, and the groups: name, last id, entries read, PEL (16-byte raw ids, delivery time as 8
# bytes little-endian, count), consumers (name, seen time, the ids of their PEL).  ATLAS writes
# each node's live entries only (deleted 0): Redis keeps deleted ones until a node goes.

_SAMEFIELDS, _DELETED = 2, 1


def _i64(v: int) -> int:
    v &= U64
    return v - (1 << 64) if v >= 1 << 63 else v


def _stream_node(s: Stream, master: tuple[int, int], node: Node) -> bytes:
    names = list(node.fields)
    items: list[bytes] = [b"%d" % node.live, b"0", b"%d" % len(names), *names, b"0"]
    for sid in s.entries.irange(master, node.last):
        fields = s.entries[sid]
        n = len(fields) // 2
        same = fields[0::2] == names
        items += [b"%d" % (_SAMEFIELDS if same else 0), b"%d" % _i64(sid[0] - master[0]),
                  b"%d" % _i64(sid[1] - master[1])]
        if same:
            items += fields[1::2]
            items.append(b"%d" % (n + 3))
        else:
            items.append(b"%d" % n)
            items += fields
            items.append(b"%d" % (2 * n + 4))
    return listpack(items)


def _raw_string(b: bytes) -> bytes:
    return _len(len(b)) + b


def _stream(s: Stream) -> bytes:
    out = [_len(len(s.nodes))]
    for master, node in s.nodes.items():
        out.append(_raw_string(struct.pack(">QQ", *master)))
        out.append(_raw_string(_stream_node(s, master, node)))
    first = s.first_id
    for v in (len(s), *s.last_id, *first, *s.max_deleted, s.entries_added, len(s.groups)):
        out.append(_len(v))
    for name, g in sorted(s.groups.items()):
        out += [_raw_string(name), _len(g.last_id[0]), _len(g.last_id[1]), _len(g.entries_read & U64),
                _len(len(g.pel))]
        for sid, nack in g.pel.items():
            out += [struct.pack(">QQ", *sid), struct.pack("<q", nack.time), _len(nack.count)]
        out.append(_len(len(g.consumers)))
        for cname, c in sorted(g.consumers.items()):
            out += [_raw_string(cname), struct.pack("<q", c.seen), _len(len(c.pel))]
            out += [struct.pack(">QQ", *sid) for sid in c.pel]
    return b"".join(out)


def _load_stream(r: _Reader) -> Stream:
    s = Stream()
    prev: tuple[int, int] | None = None
    for _ in range(r.plain_length()):
        key = r.string()
        if len(key) != 16:
            raise BadFormat("stream node key")
        master = struct.unpack(">QQ", key)
        blob = r.string()
        ints = _listpack(blob)
        try:
            count, deleted, nfields = int(ints[0]), int(ints[1]), int(ints[2])
            names = ints[3:3 + nfields]
            if len(names) != nfields or ints[3 + nfields] != b"0":
                raise BadFormat("stream master entry")
            i = 4 + nfields
            live = total = 0
            last = master
            while i < len(ints):
                flags, dms, dseq = int(ints[i]), int(ints[i + 1]), int(ints[i + 2])
                i += 3
                if flags & _SAMEFIELDS:
                    values = ints[i:i + nfields]
                    i += nfields
                    fields = [x for pair in zip(names, values, strict=True) for x in pair]
                else:
                    n = int(ints[i])
                    fields = ints[i + 1:i + 1 + 2 * n]
                    if len(fields) != 2 * n:
                        raise BadFormat("stream entry")
                    i += 1 + 2 * n
                i += 1  # lp-count
                sid = ((master[0] + dms) & U64, (master[1] + dseq) & U64)
                if prev is not None and sid <= prev:
                    raise BadFormat("stream ids out of order")
                prev = last = sid
                total += 1
                if not flags & _DELETED:
                    live += 1
                    s.entries[sid] = fields
                    s.nbytes += sum(map(len, fields))
        except (ValueError, IndexError) as e:
            raise BadFormat(f"stream listpack ({e})") from None
        if i != len(ints) or live != count or total != count + deleted or not live:
            raise BadFormat("stream node counts")
        s.nodes[master] = Node(live, total, last, tuple(names), len(blob))
    length = r.plain_length()
    last_id = (r.plain_length(), r.plain_length())
    r.plain_length(), r.plain_length()  # the first id: computed from the entries here
    s.max_deleted = (r.plain_length(), r.plain_length())
    s.entries_added = r.plain_length()
    s.last_id = last_id
    if length != len(s.entries) or (s.entries and s.entries.peekitem(-1)[0] > last_id):
        raise BadFormat("stream length or last id")
    for _ in range(r.plain_length()):
        name = r.string()
        g_last = (r.plain_length(), r.plain_length())
        read = r.plain_length()
        g = s.groups[name] = Group(g_last, -1 if read == U64 else read)
        for _ in range(r.plain_length()):
            sid = struct.unpack(">QQ", r.take(16))
            time = struct.unpack("<q", r.take(8))[0]
            g.pel[sid] = NACK(b"", time, r.plain_length())
        for _ in range(r.plain_length()):
            cname = r.string()
            c = g.consumers[cname] = Consumer(cname, struct.unpack("<q", r.take(8))[0])
            for _ in range(r.plain_length()):
                sid = struct.unpack(">QQ", r.take(16))
                nack = g.pel.get(sid)
                if nack is None or nack.consumer:
                    raise BadFormat("consumer PEL entry not in the group PEL")
                nack.consumer = cname
                c.pel[sid] = nack
        if any(not n.consumer for n in g.pel.values()):
            raise BadFormat("group PEL entry without a consumer")
    return s


def dump_value(value: Any) -> bytes:
    """The DUMP payload of a keyspace value."""
    t = type(value)
    if t is bytes:
        body = bytes((T_STRING,)) + _string(value)
    elif t is Hash or t is set or t is List or t is ZSet:
        body = _collection(value)
    elif t is Stream:
        body = bytes((T_STREAM_LISTPACKS_2,)) + _stream(value)
    else:  # pragma: no cover - every keyspace type is above
        raise TypeError(f"cannot dump {t.__name__}")
    body += struct.pack("<H", RDB_VERSION)
    return body + struct.pack("<Q", crc64(body))


# -- reading --------------------------------------------------------------------------------

class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BadFormat("truncated")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def length(self) -> tuple[int, bool]:
        """(length, is it an encoded-string marker)."""
        b = self.byte()
        kind = b >> 6
        if kind == 0:
            return b & 0x3F, False
        if kind == 1:
            return ((b & 0x3F) << 8) | self.byte(), False
        if kind == 3:
            return b & 0x3F, True
        if b == 0x80:
            return int(struct.unpack(">I", self.take(4))[0]), False
        if b == 0x81:
            return int(struct.unpack(">Q", self.take(8))[0]), False
        raise BadFormat("bad length")

    def plain_length(self) -> int:
        n, encoded = self.length()
        if encoded:
            raise BadFormat("encoded length")
        return n

    def string(self) -> bytes:
        n, encoded = self.length()
        if not encoded:
            return self.take(n)
        if n == 0:
            return b"%d" % struct.unpack("<b", self.take(1))[0]
        if n == 1:
            return b"%d" % struct.unpack("<h", self.take(2))[0]
        if n == 2:
            return b"%d" % struct.unpack("<i", self.take(4))[0]
        if n == 3:
            clen = self.plain_length()
            ulen = self.plain_length()
            return lzf_decompress(self.take(clen), ulen)
        raise BadFormat("unknown string encoding")


def lzf_decompress(data: bytes, out_len: int) -> bytes:
    """LZF (liblzf's lzf_decompress), as Redis compresses long strings in RDB payloads."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # a literal run of ctrl + 1 bytes
            run = ctrl + 1
            if i + run > n:
                raise BadFormat("lzf literal past the end")
            out += data[i:i + run]
            i += run
        else:  # a back reference
            length = ctrl >> 5
            if length == 7:
                if i >= n:
                    raise BadFormat("lzf truncated")
                length += data[i]
                i += 1
            if i >= n:
                raise BadFormat("lzf truncated")
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            if ref < 0:
                raise BadFormat("lzf reference before the start")
            for _ in range(length + 2):  # may overlap what it writes, byte by byte
                out.append(out[ref])
                ref += 1
    if len(out) != out_len:
        raise BadFormat("lzf length mismatch")
    return bytes(out)


def _listpack(blob: bytes) -> list[bytes]:
    """The entries of a listpack, each as bytes (integers as their decimal text)."""
    if len(blob) < 7:
        raise BadFormat("listpack too short")
    total = struct.unpack("<I", blob[:4])[0]
    if total != len(blob) or blob[-1] != 0xFF:
        raise BadFormat("listpack size")
    out: list[bytes] = []
    i, end = 6, len(blob) - 1
    while i < end:
        b = blob[i]
        start = i
        if b < 0x80:
            out.append(b"%d" % b)
            i += 1
        elif b >> 6 == 2:
            n = b & 0x3F
            out.append(blob[i + 1:i + 1 + n])
            i += 1 + n
        elif b >> 5 == 6:
            v = ((b & 0x1F) << 8) | blob[i + 1]
            out.append(b"%d" % (v - (1 << 13) if v >= 1 << 12 else v))
            i += 2
        elif b >> 4 == 0xE:
            n = ((b & 0x0F) << 8) | blob[i + 1]
            out.append(blob[i + 2:i + 2 + n])
            i += 2 + n
        elif b == 0xF0:
            n = struct.unpack("<I", blob[i + 1:i + 5])[0]
            out.append(blob[i + 5:i + 5 + n])
            i += 5 + n
        elif b in (0xF1, 0xF2, 0xF3, 0xF4):
            width = {0xF1: 2, 0xF2: 3, 0xF3: 4, 0xF4: 8}[b]
            out.append(b"%d" % int.from_bytes(blob[i + 1:i + 1 + width], "little", signed=True))
            i += 1 + width
        else:
            raise BadFormat("bad listpack entry")
        size = i - start
        i += 1 if size <= 127 else 2 if size < 16383 else 3 if size < 2097151 else 4 if size < 268435455 else 5
    if i != end:
        raise BadFormat("listpack entries overrun")
    return out


def _intset(blob: bytes) -> list[bytes]:
    if len(blob) < 8:
        raise BadFormat("intset too short")
    width, count = struct.unpack("<II", blob[:8])
    if width not in (2, 4, 8) or len(blob) != 8 + width * count:
        raise BadFormat("intset size")
    return [b"%d" % int.from_bytes(blob[8 + k * width:8 + (k + 1) * width], "little", signed=True)
            for k in range(count)]


def _score(raw: bytes) -> float:
    try:
        v = float(raw)
    except ValueError as e:
        raise BadFormat("bad score") from e
    if v != v:
        raise BadFormat("NaN score")
    return v


def load_payload(payload: bytes) -> Any:
    """The value a DUMP payload holds.  PayloadError: version or checksum; BadFormat: content."""
    if len(payload) < 10:
        raise PayloadError("too short")
    version, crc = struct.unpack("<H", payload[-10:-8])[0], payload[-8:]
    if version > RDB_VERSION or struct.pack("<Q", crc64(payload[:-8])) != crc:
        raise PayloadError("version or checksum")
    # Redis reads the value from the whole payload, footer included: a value whose lengths run
    # past its body takes footer bytes as content, and RESTORE accepts it.  So does ATLAS.
    r = _Reader(payload)
    try:
        return _load(r, r.byte())
    except (IndexError, struct.error) as e:
        raise BadFormat(str(e)) from e


def _load(r: _Reader, t: int) -> Any:
    if t == T_STRING:
        return r.string()
    if t == T_LIST:
        items = deque(r.string() for _ in range(r.plain_length()))
        return _nonempty(items)
    if t == T_SET:
        return _nonempty({r.string() for _ in range(r.plain_length())})
    if t == T_HASH:
        n = r.plain_length()
        h: dict[bytes, bytes] = {}
        for _ in range(n):
            f = r.string()
            h[f] = r.string()
        return _nonempty(h)
    if t in (T_ZSET, T_ZSET_2):
        z = ZSet()
        for _ in range(r.plain_length()):
            m = r.string()
            if t == T_ZSET_2:
                s = struct.unpack("<d", r.take(8))[0]
                if s != s:
                    raise BadFormat("NaN score")
            else:  # the old text score: a length byte, 253/254/255 for nan/inf/-inf
                n = r.byte()
                if n == 253:
                    raise BadFormat("NaN score")
                s = float("inf") if n == 254 else float("-inf") if n == 255 else _score(r.take(n))
            z.add(m, s + 0.0)
        z.skiplist = z.loaded_encoding() == SKIPLIST  # (rdbLoadObject converts by content)
        return _nonempty(z)
    if t == T_SET_INTSET:
        return _nonempty(set(_intset(r.string())))
    if t == T_HASH_LISTPACK or t == T_ZSET_LISTPACK:
        entries = _listpack(r.string())
        if len(entries) % 2:
            raise BadFormat("odd listpack")
        if t == T_HASH_LISTPACK:
            return _nonempty(dict(zip(entries[::2], entries[1::2], strict=True)))
        z = ZSet()
        for m, s in zip(entries[::2], entries[1::2], strict=True):
            z.add(m, _score(s) + 0.0)
        z.skiplist = len(z) > LIMITS.zset_entries  # (a listpack payload converts by its length alone)
        return _nonempty(z)
    if t == T_STREAM_LISTPACKS_2:
        return _load_stream(r)
    if t == T_LIST_QUICKLIST_2:
        lst: deque[bytes] = deque()
        for _ in range(r.plain_length()):
            container = r.plain_length()
            blob = r.string()
            if container == 1:  # PLAIN: one large item
                lst.append(blob)
            elif container == 2:  # PACKED: a listpack
                lst.extend(_listpack(blob))
            else:
                raise BadFormat("bad quicklist container")
        return _nonempty(lst)
    raise BadFormat(f"RDB type {t} not supported")


def _nonempty(value: Any) -> Any:
    if not value:
        raise BadFormat("empty collection")
    return value


# -- function libraries (FUNCTION DUMP / FUNCTION RESTORE) ---------------------------------------

RDB_OPCODE_FUNCTION2, RDB_OPCODE_FUNCTION_PRE_GA = 245, 246


def dump_functions(codes: list[bytes]) -> bytes:
    """FUNCTION DUMP's payload, as Redis 7.0's rdbSaveFunctions writes it: each library's code
    after an RDB_OPCODE_FUNCTION2, then the RDB version and the CRC-64."""
    body = b"".join(bytes((RDB_OPCODE_FUNCTION2,)) + _string(code) for code in codes)
    body += struct.pack("<H", RDB_VERSION)
    return body + struct.pack("<Q", crc64(body))


def load_functions(payload: bytes) -> list[bytes]:
    """The library codes of a FUNCTION DUMP payload; PayloadError for its version or checksum,
    BadFormat with Redis 7.0's words ("given type is not a function", ...) for its content."""
    if len(payload) < 10:
        raise PayloadError("too short")
    version, crc = struct.unpack("<H", payload[-10:-8])[0], payload[-8:]
    if version > RDB_VERSION or struct.pack("<Q", crc64(payload[:-8])) != crc:
        raise PayloadError("version or checksum")
    r = _Reader(payload)  # (the whole payload, footer included, as Redis reads it)
    codes = []
    while len(payload) - r.pos > 10:
        t = r.byte()
        if t == RDB_OPCODE_FUNCTION_PRE_GA:
            raise BadFormat("Pre-GA function format not supported")
        if t != RDB_OPCODE_FUNCTION2:
            raise BadFormat("given type is not a function")
        try:
            codes.append(r.string())
        except (BadFormat, IndexError, struct.error):
            raise BadFormat("Failed loading library payload") from None
    return codes
