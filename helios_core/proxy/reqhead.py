"""A request's head on its way up: the checks it must pass and the header block sent to the backend.

What a request becomes: hop-by-hop headers (Connection, Keep-Alive, Proxy-*,
TE, Trailer, Transfer-Encoding, Upgrade and those the Connection header names)
are dropped; ``X-Forwarded-For`` gets the peer appended (an incoming one is
kept only from a trusted proxy, as are ``X-Forwarded-Proto``/``-Host``),
``Via: 1.1 helios`` is added, a valid W3C ``traceparent`` is passed on and a
missing or malformed one replaced by a new trace, an ``X-Request-Id`` is
passed on or made.  ``Host`` is passed on unchanged.  A body framed two ways
(Content-Length and Transfer-Encoding, or differing Content-Lengths) is
refused, never guessed at.

`derive` does everything that depends only on the header list and the client
connection (its address, whether it is a trusted proxy, the scheme): a
keep-alive client sends the same headers request after request, so
`server.ClientConnection` keeps the last `HeadInfo` and derives again only
when they change.  `apply` then sets a request's fields and adds what differs
every time (new request and trace ids).
"""

from __future__ import annotations

import binascii
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helios_core.proxy.server import Request

__all__ = ["BadRequest", "HeadInfo", "apply", "derive", "new_id", "next_random_hex", "retrace"]

# Request headers the proxy reads or replaces, by lower-case name (one dict probe per header).
(_K_HOST, _K_LENGTH, _K_TE, _K_CONNECTION, _K_UPGRADE, _K_EXPECT, _K_XFF, _K_XFP, _K_XFH, _K_VIA, _K_TRACEPARENT,
 _K_TRACESTATE, _K_REQUEST_ID, _K_DROP) = range(14)
_SPECIAL = {b"host": _K_HOST, b"content-length": _K_LENGTH, b"transfer-encoding": _K_TE, b"connection": _K_CONNECTION,
            b"upgrade": _K_UPGRADE, b"expect": _K_EXPECT, b"x-forwarded-for": _K_XFF, b"x-forwarded-proto": _K_XFP,
            b"x-forwarded-host": _K_XFH, b"via": _K_VIA, b"traceparent": _K_TRACEPARENT, b"tracestate": _K_TRACESTATE,
            b"x-request-id": _K_REQUEST_ID, b"keep-alive": _K_DROP, b"te": _K_DROP, b"trailer": _K_DROP}
_TRACEPARENT = re.compile(rb"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class BadRequest(Exception):
    """A request the proxy refuses itself: `status` (400, 413, 431, ...) and the client's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


# Random hex for request, trace and span ids, drawn from os.urandom 8 KB at a time: one getrandom
# call per 128 requests instead of one per request.  A forked worker starts with its own.
_RANDOM_HEX_CHARS = 64
_random_hex = b""
_random_at = 0


def next_random_hex() -> bytes:
    """64 random hex digits (32 bytes from os.urandom), ASCII."""
    global _random_hex, _random_at  # noqa: PLW0603 - one process-wide buffer, refilled in place
    at = _random_at
    end = at + _RANDOM_HEX_CHARS
    if end > len(_random_hex):
        _random_hex = binascii.hexlify(os.urandom(4096))
        at, end = 0, _RANDOM_HEX_CHARS
    _random_at = end
    return _random_hex[at:end]


def _forget_random() -> None:
    global _random_hex, _random_at  # noqa: PLW0603
    _random_hex, _random_at = b"", 0


os.register_at_fork(after_in_child=_forget_random)


def new_id() -> str:
    return os.urandom(8).hex()


def _valid_traceparent(value: bytes) -> bool:
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None:
        return False
    version, trace, span, _ = m.groups()
    return version != b"ff" and trace != b"0" * 32 and span != b"0" * 16


class HeadInfo:
    """What one header list (on one client connection) makes of a request, ids aside."""

    __slots__ = ("headers", "upgrade_asked", "http11", "host", "length", "chunked", "upgrade", "expect_continue",
                 "before", "after", "request_id", "request_id_line", "trace_id", "untraced", "parent", "tracestate")

    def __init__(self, headers: list[tuple[bytes, bytes]], upgrade_asked: bool, http11: bool) -> None:
        self.headers = headers  # the key: the next request's list is compared with it
        self.upgrade_asked = upgrade_asked
        self.http11 = http11
        self.host = b""
        self.length: int | None = None
        self.chunked = False
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.before = b""  # the forwarded lines ahead of the per-request ids
        self.after = b""  # the framing lines after them
        self.request_id: str | None = None  # the client's X-Request-Id, when usable
        self.request_id_line = True  # whether a made id goes upstream (not when the client's was too long)
        self.trace_id: str | None = None  # the client's valid traceparent's trace id
        # With tracing on (`retrace`): `before` without the traceparent/tracestate lines, the client's
        # valid traceparent (the parent of the proxy's span, "" for none) and its tracestate line.
        self.untraced = b""
        self.parent = ""
        self.tracestate = b""

    def matches(self, headers: list[tuple[bytes, bytes]], upgrade_asked: bool, http11: bool) -> bool:
        return self.headers == headers and self.upgrade_asked == upgrade_asked and self.http11 == http11


def derive(headers: list[tuple[bytes, bytes]], upgrade_asked: bool, http11: bool, peer: bytes, trusted: bool,
           scheme: bytes) -> HeadInfo:
    """Check a request head and build its forwarded header block; `BadRequest` when it is refused."""
    info = HeadInfo(headers, upgrade_asked, http11)
    length: bytes | None = None  # the Content-Length value (several must agree)
    lengths_differ = False
    te: bytes | None = None
    named: set[bytes] | None = None
    xff = xfp = xfh = via = tp = ts = rid = None
    out: list[bytes] = []  # the header lines as they go upstream
    special = _SPECIAL
    for name, value in headers:
        low = name.lower()
        kind = special.get(low)
        if kind is None:
            if not low.startswith(b"proxy-"):
                out.append(b"%b: %b\r\n" % (name, value))
        elif kind == _K_HOST:
            info.host = value
            out.append(b"%b: %b\r\n" % (name, value))
        elif kind == _K_LENGTH:
            value = value.strip()
            if length is None:
                length = value
            elif value != length:
                lengths_differ = True
        elif kind == _K_TE:
            te = value
        elif kind == _K_CONNECTION:
            if named is None:
                named = set()
            named.update(t.strip().lower() for t in value.split(b","))
        elif kind == _K_UPGRADE:
            info.upgrade = value
        elif kind == _K_EXPECT:
            info.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == _K_XFF:
            xff = value if xff is None else xff + b", " + value
        elif kind == _K_XFP:
            xfp = value
        elif kind == _K_XFH:
            xfh = value
        elif kind == _K_VIA:
            via = value if via is None else via + b", " + value
        elif kind == _K_TRACEPARENT:
            tp = value
        elif kind == _K_TRACESTATE:
            ts = value
        elif kind == _K_REQUEST_ID:
            rid = value
            out.append(b"%b: %b\r\n" % (name, value))
        # else: another hop-by-hop header (Keep-Alive, TE, Trailer): dropped
    # Request smuggling: a body framed two ways is refused, never guessed at.
    if te is not None and length is not None:
        raise BadRequest(400, "both Content-Length and Transfer-Encoding given")
    if lengths_differ:
        raise BadRequest(400, "several differing Content-Length headers")
    if te is not None:
        if te.strip().lower() != b"chunked":
            raise BadRequest(400, "unsupported Transfer-Encoding (only chunked)")
        info.chunked = True
    if length is not None:
        if not length.isdigit():
            raise BadRequest(400, "bad Content-Length")
        info.length = int(length)
    if not info.host and http11:
        raise BadRequest(400, "missing Host header")
    if named:  # headers the Connection header names are hop-by-hop too (rare: filtered after the fact)
        out = [line for line in out if line.split(b":", 1)[0].lower() not in named]
    if not upgrade_asked:
        info.upgrade = None
    if rid is not None:
        if rid and len(rid) <= 200:
            info.request_id = rid.decode("latin-1")
        info.request_id_line = False  # the client's line is in `out` already
    fwd_host = xfh if trusted and xfh else info.host
    # The X-Forwarded-* and Via lines in one formatting.
    if fwd_host:
        out.append(b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\nX-Forwarded-Host: %b\r\nVia: %b1.1 helios\r\n"
                   % (xff + b", " + peer if trusted and xff else peer,
                      xfp if trusted and xfp else scheme, fwd_host, via + b", " if via else b""))
    else:
        out.append(b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: %b\r\nVia: %b1.1 helios\r\n"
                   % (xff + b", " + peer if trusted and xff else peer,
                      xfp if trusted and xfp else scheme, via + b", " if via else b""))
    info.untraced = b"".join(out)
    if tp is not None and _valid_traceparent(tp):
        info.parent = tp.strip().decode("latin-1")
        info.tracestate = b"tracestate: %b\r\n" % ts if ts is not None else b""
        info.trace_id = info.parent[3:35]
        info.before = b"%btraceparent: %b\r\n%b" % (info.untraced, tp.strip(), info.tracestate)
    else:
        info.before = info.untraced
    if info.upgrade is not None:
        info.after = b"Connection: Upgrade\r\nUpgrade: %b\r\n" % info.upgrade
    elif info.chunked:
        info.after = b"Transfer-Encoding: chunked\r\n"
    elif info.length is not None:
        info.after = b"Content-Length: %d\r\n" % info.length
    return info


def apply(info: HeadInfo, req: Request) -> None:
    """Set `req`'s fields from `info`, with this request's ids, and its forwarded header block."""
    req.host = info.host
    req.length = info.length
    req.chunked = info.chunked
    req.upgrade = info.upgrade
    req.expect_continue = info.expect_continue
    rid, tid = info.request_id, info.trace_id
    if rid is not None and tid is not None:  # both from the client: nothing new to make
        req.request_id, req.trace_id = rid, tid
        req.fwd = info.before + info.after
        return
    rnd = next_random_hex()  # the request id, trace id and span id
    parts = [info.before]
    if rid is None:
        req.request_id = rnd[:16].decode()
        if info.request_id_line:
            parts.append(b"X-Request-Id: %b\r\n" % rnd[:16])
    else:
        req.request_id = rid
    if tid is None:
        req.trace_id = rnd[16:48].decode()
        parts.append(b"traceparent: 00-%b-%b-01\r\n" % (rnd[16:48], rnd[48:]))
    else:
        req.trace_id = tid
    parts.append(info.after)
    req.fwd = b"".join(parts)


def retrace(info: HeadInfo, req: Request, traceparent: str) -> None:
    """With tracing on: the header block `apply` made, with `traceparent` (this hop's span) sent upstream
    instead of the client's or a made-up one; the client's tracestate goes on with it."""
    parts = [info.untraced]
    if info.request_id is None and info.request_id_line:
        parts.append(b"X-Request-Id: %b\r\n" % req.request_id.encode("latin-1"))
    parts.append(b"traceparent: %b\r\n" % traceparent.encode("latin-1"))
    parts.append(info.tracestate)
    parts.append(info.after)
    req.fwd = b"".join(parts)
    req.trace_id = traceparent[3:35]
