"""RESP2/RESP3: an incremental request parser and the reply encoder.

The parser turns bytes from a socket into argv lists (multibulk and inline
requests, any pipelining depth) and enforces Redis's limits.  It never
raises: malformed input sets `error` to the Redis error text ("ERR Protocol
error: ...") after returning every command that came before the damage; the
caller replies with it and closes the connection, since the stream cannot
be resynchronised.

State survives between `feed` calls, so a command split across reads is not
re-parsed from its start, and a large bulk is collected as a list of chunks
and joined once (not copied on every read).

The encoder maps the engine's Python replies onto the wire:

    bytes/str -> bulk        int -> integer        None -> nil
    float     -> bulk (RESP2) / double (RESP3), "%.17g" like Redis 7.0
    Simple    -> status      CommandError (any exception) -> error
    list      -> array       dict -> map (RESP3) / flat array (RESP2)
    Pairs     -> flat array (RESP2) / array of [member, score] (RESP3)
    Push      -> push (RESP3) / array (RESP2)
    NULL_ARRAY -> "*-1" (RESP2) / "_" (RESP3): EXEC aborted by WATCH
"""

from __future__ import annotations

from typing import Any

from helios_core.atlas.commands.table import Simple
from helios_core.atlas.commands.zsets import Pairs

__all__ = [
    "RespParser", "Push", "Replies", "OrderedSet", "BigNumber", "Verbatim", "HumanFloat", "NULL_ARRAY", "encode",
    "encode_error", "split_inline",
    "MAX_MULTIBULK", "MAX_INLINE", "MAX_QUERY_BUFFER", "QUERY_BUFFER_EXCEEDED",
]

MAX_MULTIBULK = 1024 * 1024          # most arguments in one request (Redis: 1M)
MAX_INLINE = 64 * 1024               # longest inline request / header line (PROTO_INLINE_MAX_SIZE)
MAX_QUERY_BUFFER = 1024 * 1024 * 1024  # client-query-buffer-limit
UNAUTH_MAX_MULTIBULK = 10
UNAUTH_MAX_BULK = 16 * 1024
_BIG_BULK = 32 * 1024                # bulks at least this long are gathered as chunks

# The canonical headers of small requests, to check a split request against with
# C-level lookups instead of formatting each header: "*3" -> 3, len 16 -> "$16".
_MBULK_N = {b"*%d" % i: i for i in range(1, 1025)}
_BULK_HDR = tuple(b"$%d" % i for i in range(4096))


def _bulk_headers(args: list[bytes]) -> list[bytes]:
    """["$len(a)" for a in args]: what a well-formed request has before each argument."""
    try:
        return [_BULK_HDR[len(a)] for a in args]
    except IndexError:  # an argument of 4 KiB or more
        return [b"$%d" % len(a) for a in args]


# Set as `error` when the unparsed input outgrows the query buffer limit.  Redis
# closes such a client without a reply; so does the server.
QUERY_BUFFER_EXCEEDED = "query buffer limit exceeded"

_E_MBULK = "ERR Protocol error: invalid multibulk length"
_E_BULK = "ERR Protocol error: invalid bulk length"
_E_UNAUTH_MBULK = "ERR Protocol error: unauthenticated multibulk length"
_E_UNAUTH_BULK = "ERR Protocol error: unauthenticated bulk length"
_E_BIG_MBULK = "ERR Protocol error: too big mbulk count string"
_E_BIG_BULK = "ERR Protocol error: too big bulk count string"
_E_BIG_INLINE = "ERR Protocol error: too big inline request"
_E_QUOTES = "ERR Protocol error: unbalanced quotes in request"


def _parse_len(raw: bytes) -> int | None:
    """A length as Redis's string2ll reads it: no sign but '-', no spaces, no leading zeros."""
    if len(raw) > 20:
        return None
    if raw.isdigit():
        return int(raw) if raw[0] != 48 or len(raw) == 1 else None
    if raw[:1] == b"-" and raw[1:].isdigit() and raw[1] != 48:
        return -int(raw[1:])
    return None


class RespParser:
    """Incremental request parser; `feed(data)` returns the complete commands in it."""

    __slots__ = ("buf", "args", "left", "bulk", "argbytes", "chunks", "chunked", "need",
                 "max_bulk", "max_count", "max_inline", "max_query", "error", "idle", "unauth")

    def __init__(self, max_bulk: int = 512 * 1024 * 1024, max_count: int = MAX_MULTIBULK,
                 max_inline: int = MAX_INLINE, max_query: int = MAX_QUERY_BUFFER) -> None:
        self.buf = b""                 # bytes not consumed yet
        self.args: list[bytes] | None = None  # the multibulk being read
        self.left = 0                  # bulks it still expects
        self.bulk = -1                 # length of the bulk being read; -1: its "$" header is next
        self.argbytes = 0              # bytes held in `args` (counts toward the query buffer)
        self.chunks: list[bytes] | None = None  # a big bulk arriving in pieces
        self.chunked = 0
        self.need = 0
        self.max_bulk = max_bulk
        self.max_count = max_count
        self.max_inline = max_inline
        self.max_query = max_query
        self.error: str | None = None
        self.idle = True               # nothing partial held: the fast path may run
        self.unauth = False            # the tighter limits for clients not yet authenticated apply

    def set_unauthenticated(self, on: bool, max_bulk: int) -> None:
        """Before AUTH, Redis accepts at most 10 arguments of 16 KiB each: a stranger cannot make it
        buffer much.  `max_bulk` is the limit to return to once authenticated."""
        self.unauth = on
        self.max_count = UNAUTH_MAX_MULTIBULK if on else MAX_MULTIBULK
        self.max_bulk = min(max_bulk, UNAUTH_MAX_BULK) if on else max_bulk

    def buffered(self) -> int:
        """Bytes received but not yet returned as commands (the query buffer)."""
        return len(self.buf) + self.chunked + self.argbytes

    def feed(self, data: bytes) -> list[list[bytes]]:
        """The commands completed by `data` (check `error` afterwards)."""
        if not self.idle or data[:1] != b"*" or self.unauth:
            return self._feed(data)
        # Fast path: whole multibulk commands whose bulks hold no CRLF, checked on
        # one C-level split.  One command alone (no pipelining: the most common
        # read) is checked in bulk: "*N", then exactly "$len(arg)" before each arg.
        # The parts hold no CRLF, so this reading is the only one a byte-by-byte
        # parse could make.
        parts = data.split(b"\r\n")
        last = len(parts) - 1  # parts[last] follows the final CRLF (b"" when data ends on one)
        n = _MBULK_N.get(parts[0], -1)
        if 2 * n + 1 == last and not parts[last] and n <= self.max_count and len(data) <= self.max_bulk:
            args = parts[2:last:2]
            try:
                heads = [_BULK_HDR[len(a)] for a in args]  # _bulk_headers, inlined for the common case
            except IndexError:
                heads = _bulk_headers(args)
            if parts[1:last:2] == heads:
                return [args]
        return self._feed_pipeline(data, parts, last)

    def _feed_pipeline(self, data: bytes, parts: list[bytes], last: int) -> list[list[bytes]]:
        """Several commands (a pipeline), still on the split.

        At the first thing this path does not vouch for (a bulk containing
        CRLF, a partial command, anything malformed), the rest goes to the
        general parser, which produces the same result or Redis's error.
        """
        out: list[list[bytes]] = []
        max_bulk = self.max_bulk
        max_count = self.max_count
        small = len(data) <= max_bulk  # then no bulk in it can be over the limit
        mbulk_n = _MBULK_N.get
        hdr = _BULK_HDR
        i = 0
        while i < last:
            n = mbulk_n(parts[i])  # "*N" as written by every client (N <= 1024); else the general parser
            if n is None:
                break
            end = i + 1 + 2 * n
            if end > last or n > max_count:
                break
            args = parts[i + 2:end:2]
            try:
                heads = [hdr[len(a)] for a in args]  # _bulk_headers, inlined for the common case
            except IndexError:
                heads = _bulk_headers(args)
            if parts[i + 1:end:2] != heads or (not small and max(map(len, args)) > max_bulk):
                break
            out.append(args)
            i = end
        if i == last and not parts[last]:
            return out
        consumed = sum(map(len, parts[:i])) + 2 * i
        return out + self._feed(data[consumed:])

    def _feed(self, data: bytes) -> list[list[bytes]]:
        if self.error is not None:
            return []
        chunks = self.chunks
        if chunks is not None:
            chunks.append(data)
            self.chunked += len(data)
            if self.chunked < self.need:
                if self.chunked + self.argbytes > self.max_query:
                    self.error = QUERY_BUFFER_EXCEEDED
                return []
            buf = b"".join(chunks)
            self.chunks, self.chunked = None, 0
        elif self.buf:
            buf = self.buf + data
        else:
            buf = data
        out: list[list[bytes]] = []
        n = len(buf)
        pos = 0
        args = self.args
        left = self.left
        bulk = self.bulk
        find = buf.find
        while True:
            if args is None:
                if pos >= n:
                    break
                if buf[pos] != 42:  # not "*": an inline command
                    nl = find(b"\n", pos)
                    if nl < 0:
                        if n - pos > self.max_inline:
                            self.error = _E_BIG_INLINE
                        break
                    line = buf[pos:nl]
                    pos = nl + 1
                    if len(line) > self.max_inline:
                        self.error = _E_BIG_INLINE
                        break
                    argv = split_inline(line)
                    if argv is None:
                        self.error = _E_QUOTES
                        break
                    if argv:
                        out.append(argv)
                        if self.unauth:
                            break  # as Redis: what follows AUTH is read under the limits AUTH leaves
                    continue
                nl = find(b"\r\n", pos)
                if nl < 0:
                    if n - pos > self.max_inline:
                        self.error = _E_BIG_MBULK
                    break
                count = _parse_len(buf[pos + 1:nl])
                if count is None or count > self.max_count:
                    self.error = _E_MBULK if count is None or not self.unauth else _E_UNAUTH_MBULK
                    break
                pos = nl + 2
                if count <= 0:  # "*0" / "*-1": nothing to run (as Redis)
                    continue
                args = []
                left = count
                self.argbytes = 0
            # Inside a multibulk: read `left` more bulks.
            if bulk < 0:
                if pos >= n:
                    break
                if buf[pos] != 36:  # "$"
                    got = chr(buf[pos])
                    self.error = f"ERR Protocol error: expected '$', got '{got}'"
                    break
                nl = find(b"\r\n", pos)
                if nl < 0:
                    if n - pos > self.max_inline:
                        self.error = _E_BIG_BULK
                    break
                size = _parse_len(buf[pos + 1:nl])
                if size is None or size < 0 or size > self.max_bulk:
                    self.error = _E_BULK if size is None or size < 0 or not self.unauth else _E_UNAUTH_BULK
                    break
                bulk = size
                pos = nl + 2
            end = pos + bulk
            if end + 2 > n:
                if bulk >= _BIG_BULK:
                    # Gather the rest of this bulk as chunks; join once it is all here.
                    self.chunks = [buf[pos:]]
                    self.chunked = n - pos
                    self.need = bulk + 2
                    pos = n
                break
            args.append(buf[pos:end])
            self.argbytes += bulk
            pos = end + 2  # like Redis, the two bytes after a bulk are not checked
            bulk = -1
            left -= 1
            if left == 0:
                out.append(args)
                args = None
                self.argbytes = 0
                if self.unauth:
                    break  # as Redis: what follows AUTH is read under the limits AUTH leaves
        self.args, self.left, self.bulk = args, left, bulk
        if self.error is not None:
            self.buf = b""
            self.args = self.chunks = None
            self.idle = False
            return out
        self.buf = buf[pos:] if pos < n else b""
        if len(self.buf) + self.chunked + self.argbytes > self.max_query:
            self.error = QUERY_BUFFER_EXCEEDED
        self.idle = not self.buf and args is None and self.chunks is None and self.error is None
        return out


# -- inline commands ---------------------------------------------------------------

_SPACE = b" \t\r\n\v\f"
_HEX = b"0123456789abcdefABCDEF"
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def split_inline(line: bytes) -> list[bytes] | None:
    """Split an inline request like Redis's sdssplitargs; None for unbalanced quotes."""
    if b'"' not in line and b"'" not in line and b"\0" not in line:
        return line.split()
    out: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n or line[i] == 0:
            return out
        cur = bytearray()
        inq = insq = False
        while True:
            if i >= n:
                if inq or insq:
                    return None
                break
            c = line[i]
            if inq:
                if c == 92 and i + 3 < n and line[i + 1] == 120 and line[i + 2] in _HEX and line[i + 3] in _HEX:
                    cur.append(int(line[i + 2:i + 4], 16))  # \xHH
                    i += 3
                elif c == 92 and i + 1 < n:
                    i += 1
                    cur.append(_ESCAPES.get(line[i], line[i]))
                elif c == 34:  # closing quote must be followed by a space or the end
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    cur.append(c)
            elif insq:
                if c == 92 and i + 1 < n and line[i + 1] == 39:
                    i += 1
                    cur.append(39)
                elif c == 39:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    cur.append(c)
            elif c in b" \n\r\t\0":
                break
            elif c == 34:
                inq = True
            elif c == 39:
                insq = True
            else:
                cur.append(c)
            i += 1
        out.append(bytes(cur))


# -- replies -----------------------------------------------------------------------

class Push(list):
    """An out-of-band message (pub/sub): a RESP3 push, a plain array in RESP2."""


class OrderedSet(list):
    """A set reply (`~` in RESP3) whose members go out in this order (CLIENT TRACKINGINFO's flags)."""


class BigNumber(bytes):
    """A RESP3 big number (`(`); a bulk string to a RESP2 client (a script's {big_number=})."""


class Verbatim(bytes):
    """A RESP3 verbatim string (`=`, with its 3-character format); a bulk string in RESP2."""

    fmt: bytes

    def __new__(cls, text: bytes, fmt: bytes) -> Verbatim:
        self = super().__new__(cls, text)
        self.fmt = (fmt[:3] + b"   ")[:3]
        return self


class HumanFloat(float):
    """A double Redis sends in its long double "human" form (GEOPOS's coordinates: %.17Lf, trailing
    zeros cut): a bulk string in RESP2, a RESP3 double with that text."""

    def text(self) -> bytes:
        s = b"%.17f" % self
        if b"." in s:
            s = s.rstrip(b"0").rstrip(b".")
        return b"0" if s == b"-0" else s


class Replies(list):
    """Several replies to one command (SUBSCRIBE a b: one confirmation per channel)."""


class _NullArray:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NULL_ARRAY"


NULL_ARRAY = _NullArray()

_OK = b"+OK\r\n"
_NIL2 = b"$-1\r\n"
_NIL3 = b"_\r\n"


def encode_error(exc: BaseException | str) -> bytes:
    """An error line; newlines in the text would break the stream, so they become spaces."""
    text = str(exc)
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    if not text:
        text = "ERR"
    return b"-%s\r\n" % text.encode("utf-8", "replace")


def encode(reply: Any, resp3: bool = False) -> bytes:
    """The wire form of one reply (the common shapes are handled without recursion)."""
    t = type(reply)
    if t is bytes:
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if t is Simple:
        return _OK if reply == "OK" else b"+%s\r\n" % reply.encode()
    if reply is None:
        return _NIL3 if resp3 else _NIL2
    if t is int:
        return b":%d\r\n" % reply
    out: list[bytes] = []
    if t is list:  # (LRANGE, HGETALL in RESP2 ...: bulk items without a call each)
        out.append(b"*%d\r\n" % len(reply))
        for item in reply:
            if type(item) is bytes:
                out.append(b"$%d\r\n%s\r\n" % (len(item), item))
            else:
                _encode_into(item, resp3, out)
    else:
        _encode_into(reply, resp3, out)
    return b"".join(out)


def _encode_into(r: Any, resp3: bool, out: list[bytes]) -> None:
    t = type(r)
    if t is bytes:
        out.append(b"$%d\r\n%s\r\n" % (len(r), r))
    elif t is int:
        out.append(b":%d\r\n" % r)
    elif r is None:
        out.append(_NIL3 if resp3 else _NIL2)
    elif t is Simple:
        out.append(b"+%s\r\n" % r.encode())
    elif t is float:
        if resp3:
            out.append(b",%.17g\r\n" % r)
        else:
            s = b"%.17g" % r
            out.append(b"$%d\r\n%s\r\n" % (len(s), s))
    elif t is Pairs:
        if resp3:
            out.append(b"*%d\r\n" % len(r))
            for member, score in r:
                out.append(b"*2\r\n$%d\r\n%s\r\n,%.17g\r\n" % (len(member), member, score))
        else:
            out.append(b"*%d\r\n" % (2 * len(r)))
            for member, score in r:
                s = b"%.17g" % score
                out.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(member), member, len(s), s))
    elif t is list or t is tuple or t is Push:
        out.append(b"%c%d\r\n" % (62 if resp3 and t is Push else 42, len(r)))
        for item in r:
            if type(item) is bytes:
                out.append(b"$%d\r\n%s\r\n" % (len(item), item))
            else:
                _encode_into(item, resp3, out)
    elif t is Replies:
        for item in r:
            _encode_into(item, resp3, out)
    elif t is dict:
        out.append(b"%%%d\r\n" % len(r) if resp3 else b"*%d\r\n" % (2 * len(r)))
        for k, v in r.items():
            _encode_into(k, resp3, out)
            _encode_into(v, resp3, out)
    elif t is bool:
        out.append((b"#t\r\n" if r else b"#f\r\n") if resp3 else (b":1\r\n" if r else b":0\r\n"))
    elif isinstance(r, str):  # other str subclasses: a bulk string
        b = r.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    elif r is NULL_ARRAY:
        out.append(_NIL3 if resp3 else b"*-1\r\n")
    elif isinstance(r, BaseException):
        out.append(encode_error(r))
    elif isinstance(r, set | frozenset | OrderedSet):
        out.append(b"%c%d\r\n" % (126 if resp3 else 42, len(r)))
        for item in r:
            _encode_into(item, resp3, out)
    elif isinstance(r, list | tuple):
        out.append(b"*%d\r\n" % len(r))
        for item in r:
            _encode_into(item, resp3, out)
    elif isinstance(r, dict):
        _encode_into(dict(r), resp3, out)
    elif isinstance(r, int):
        out.append(b":%d\r\n" % r)
    elif t is HumanFloat:
        s = r.text()
        out.append(b",%s\r\n" % s if resp3 else b"$%d\r\n%s\r\n" % (len(s), s))
    elif isinstance(r, float):
        _encode_into(float(r), resp3, out)
    elif t is BigNumber:
        out.append(b"(%s\r\n" % r if resp3 else b"$%d\r\n%s\r\n" % (len(r), r))
    elif t is Verbatim:
        if resp3:
            out.append(b"=%d\r\n%s:%s\r\n" % (len(r) + 4, r.fmt, r))
        else:
            out.append(b"$%d\r\n%s\r\n" % (len(r), r))
    elif isinstance(r, bytes | bytearray | memoryview):
        _encode_into(bytes(r), resp3, out)
    else:
        raise TypeError(f"cannot encode a {type(r).__name__} reply")
