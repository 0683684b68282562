"""Connection limits, the answer to input the HTTP layer refuses, and who the client is.

Tornado enforces the limits on its HTTP server: the request head's size,
`idle_connection_timeout` for the whole head (so a slowloris client that
trickles header bytes is cut off, as is an idle keep-alive connection) and
`body_timeout` for the body.  The body *size* is checked by `BaseHandler`
so an oversized body gets the JSON 413; the server's own cap sits well above
it only to bound chunked bodies that never say their size (the handler
answers 413 as soon as one passes the limit).

Malformed requests.  Tornado's HTTP/1 layer refuses some input before any
handler runs: a bad request line or header line, a bad ``Host`` header, a bad
``Content-Length``/``Transfer-Encoding`` or chunk size.  It raises
``HTTPInputError`` and `HTTP1Connection._read_message` answers a bare
``HTTP/1.1 400 Bad Request`` with no body; a head over ``max_header_size``
gets no answer at all (IOStream closes the socket itself when a read cannot
be satisfied).  Tornado has no hook for either answer, so `GatewayHTTPServer`
serves its connections with a subclass of `HTTP1Connection` (`_Connection`)
that raises its own `_Refused` instead, at the only places the error comes
from on a server: `_parse_headers` (request line, header lines, and the head
size: the stream is let read `_HEAD_SLACK` more than the limit so that an
oversized head arrives whole and can be answered 431), `_can_keep_alive`
(Transfer-Encoding on HTTP/1.0), `_read_body` (Content-Length,
Transfer-Encoding, chunks) and the Host check of `HTTPServerRequest`
(`_HostGuard`).  `_Connection.read_response` answers a `_Refused` in the
gateway's JSON error shape, unless the handler has answered already, and
closes the connection, as Tornado does.  Only our server uses these classes;
tests/unit/test_gateway_http_errors.py pins the Tornado (6.6) internals they
rely on, with raw sockets.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import socket
import time
from collections.abc import Awaitable, Iterable
from http import HTTPStatus
from typing import Any

from tornado.concurrent import Future, future_add_done_callback
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters, HTTP1ServerConnection, parse_int
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.httputil import (
    HTTPHeaders,
    HTTPInputError,
    HTTPMessageDelegate,
    HTTPServerConnectionDelegate,
    HTTPServerRequest,
    RequestStartLine,
    ResponseStartLine,
    format_timestamp,
    parse_request_start_line,
)
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError
from tornado.log import gen_log

from helios_core.config import GatewayConfig
from helios_core.errors import ConfigError
from helios_core.gateway import headers as hdr
from helios_core.gateway.base import error_body, request_id_of
from helios_core.gateway.stream import ServerStream
from helios_core.observability.logging import get_logger

__all__ = ["server_settings", "GatewayHTTPServer", "TrustedProxies"]

log = get_logger("gateway")

_CHUNKED_SLACK = 16 << 20
# How far past gateway.max_header_bytes the stream itself reads a head.  A head
# up to that size is read whole and answered 431 in JSON; a larger one makes
# IOStream close the socket on its own, unanswered (it closes before anyone can
# write).  IOStream reads up to 64 KiB per recv anyway, so this at most doubles
# what one connection can make the server buffer.
_HEAD_SLACK = 64 << 10
_MAX_MESSAGE = 200


def server_settings(cfg: GatewayConfig) -> dict[str, Any]:
    """Keyword arguments for `GatewayHTTPServer` (or tornado's HTTPServer)."""
    return {
        "max_header_size": cfg.max_header_bytes,
        "idle_connection_timeout": cfg.idle_timeout_seconds,
        "body_timeout": cfg.body_timeout_seconds,
        "max_body_size": 2 * cfg.max_body_bytes + _CHUNKED_SLACK,
        "xheaders": False,  # X-Forwarded-For is believed only from trusted proxies, below
    }


# -- malformed requests --------------------------------------------------------------------


class _Refused(Exception):
    """A request the HTTP layer will not pass on: answered with the JSON error, then the connection closes.

    Deliberately not an HTTPInputError: Tornado catches those inside
    `_read_message` and writes its own bare 400.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message[:_MAX_MESSAGE]


def _malformed(message: str) -> _Refused:
    return _Refused(400, "malformed_request", message)


# Tornado's HTTPInputError texts quote the input ("Invalid header value 'Bearer ...'",
# "Unsupported Transfer-Encoding gzip"): only the fixed part before the quote is said.
_TORNADO_REASONS = (
    "Malformed HTTP header line", "Invalid header name", "Invalid header value", "no colon in header line",
    "header line cannot start with whitespace", "Multiple unequal Content-Lengths",
    "Only integer Content-Length is allowed", "Message with both Transfer-Encoding and Content-Length",
    "Unsupported Transfer-Encoding", "Unsupported Content-Encoding", "invalid chunk size",
    "improperly terminated chunk", "Missing Host header", "Invalid Host header", "Multiple host headers",
)


def _what_tornado_said(e: HTTPInputError) -> str:
    """Tornado's reason without the input it quotes: a refusal names what was wrong, it does not
    echo (or log) what the client sent, which may be a token or a cookie."""
    text = str(e)
    for reason in _TORNADO_REASONS:
        if text.startswith(reason):
            return reason
    return "invalid request framing"


def _framing(e: HTTPInputError, what: str = "malformed Content-Length or Transfer-Encoding") -> _Refused:
    text = str(e)
    if text in ("Content-Length too long", "chunked body too large"):
        return _Refused(413, "payload_too_large", "request body too large (gateway.max_body_bytes)")
    return _malformed(f"{what}: {_what_tornado_said(e)}")


def _host_refusal(headers: HTTPHeaders) -> _Refused:
    hosts = headers.get_list("Host")
    if not hosts:
        return _malformed("missing Host header (HTTP/1.1 requires one)")
    if len(hosts) > 1 or "," in hosts[0]:
        return _malformed("malformed Host header: more than one host")
    return _malformed("malformed Host header: expected host[:port]")


def _error_response(r: _Refused, headers: HTTPHeaders | None) -> bytes:
    rid = request_id_of(headers.get("X-Request-ID") if headers is not None else None)
    body = error_body(r.code, r.message, rid)
    head = (f"HTTP/1.1 {r.status} {HTTPStatus(r.status).phrase}\r\n"
            f"Date: {format_timestamp(time.time())}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
            f"X-Request-ID: {rid}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


class _HostGuard(HTTPMessageDelegate):
    """Wraps the application's delegate to catch the Host check of `HTTPServerRequest`.

    Anything but HTTPInputError raised from here would be logged by Tornado as
    a crash, so the refusal is kept on the connection and raised from
    `_read_body`, the next method Tornado calls on a server connection.
    """

    __slots__ = ("inner", "conn")

    def __init__(self, inner: HTTPMessageDelegate, conn: _Connection) -> None:
        self.inner = inner
        self.conn = conn

    def headers_received(self, start_line: RequestStartLine | ResponseStartLine,
                         headers: HTTPHeaders) -> Awaitable[None] | None:
        try:
            return self.inner.headers_received(start_line, headers)
        except HTTPInputError:
            self.conn.refusal = _host_refusal(headers)
            return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.conn.body_read()
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.conn.body_read()
        self.inner.on_connection_close()


class _Connection(HTTP1Connection):
    """One request on a server connection; malformed input is answered in JSON, not with a bare 400."""

    def __init__(self, stream: IOStream, params: HTTP1ConnectionParameters, context: object,
                 head_limit: int, fields_memo: list[Any] | None = None, head_wait: _HeadWait | None = None) -> None:
        super().__init__(stream, False, params, context)
        self.head_limit = head_limit
        self.refusal: _Refused | None = None
        # [header text, {name: values}] of the last request on this TCP connection (_ServerConnection's)
        self.fields_memo = fields_memo if fields_memo is not None else []
        # The connection's timer on the wait for this request's head (params.header_timeout is None then)
        self.head_wait = head_wait
        self.own_body_timeout = False  # the handler set this request's body timeout (the proxy)
        self.body_timer: asyncio.TimerHandle | None = None  # the body's deadline (`_read_body`)

    async def read_response(self, delegate: HTTPMessageDelegate) -> bool:
        try:
            return await super().read_response(_HostGuard(delegate, self))
        except _Refused as r:
            await self._refuse(r)
            return False

    def _parse_headers(self, data: bytes) -> tuple[str, HTTPHeaders]:
        if self.head_wait is not None:
            self.head_wait.arrived()
        if len(data) > self.head_limit:
            raise _Refused(431, "headers_too_large", f"request head of {len(data)} bytes is larger than "
                                                     f"gateway.max_header_bytes ({self.head_limit} bytes)")
        # HTTP1Connection._parse_headers (Tornado 6.6): the request line, then the header lines
        # (from the first newline on) through HTTPHeaders.parse.
        text = data.decode("latin1").lstrip("\r\n")
        eol = text.find("\n")
        start_line, fields = text[:eol].rstrip("\r"), text[eol:]
        memo = self.fields_memo
        if memo and memo[0] == fields:
            # The same header lines as the previous request on this connection (a client on a
            # keep-alive connection sends the same Host, Authorization, User-Agent ... each time):
            # the same HTTPHeaders, without parsing and checking each line again (~5 us a line in
            # Tornado, most of it the header-value regex over a bearer token).  A copy: a handler
            # may change its request's headers.
            headers = HTTPHeaders.__new__(HTTPHeaders)
            headers._as_list = {name: list(values) for name, values in memo[1].items()}
            headers._combined_cache = {}
        else:
            try:
                headers = HTTPHeaders.parse(fields)
            except HTTPInputError as e:
                raise _malformed(f"malformed header line ({_what_tornado_said(e)}); "
                                 f"expected 'Name: value'") from None
            memo[:] = [fields, {name: list(values) for name, values in headers._as_list.items()}]
        try:
            parse_request_start_line(start_line)  # Tornado parses it again next: a failure is ours to answer
        except HTTPInputError:
            raise _malformed("malformed request line: expected 'METHOD /target HTTP/1.1'") from None
        return start_line, headers

    def write_headers(self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders,
                      chunk: bytes | None = None) -> Future[None]:
        """`HTTP1Connection.write_headers` (Tornado 6.6) for a response, with the head built as one
        string and checked for CR/LF once: Tornado encodes and regex-checks each header line apart,
        about a microsecond a line, and a gateway answer has fourteen.  The same bytes go out, and
        the same ValueError stops a header with a line break in it."""
        req = self._request_start_line
        if self.is_client or req is None or not isinstance(start_line, ResponseStartLine):
            return super().write_headers(start_line, headers, chunk)
        self._response_start_line = start_line
        code = start_line.code
        http11 = req.version == "HTTP/1.1"
        # (HTTPHeaders' own dict of name -> values: its names are in Http-Header-Case already,
        # and ``in``/``[]`` on the HTTPHeaders would normalize the name again each time; see headers.py)
        values = headers._as_list
        length = values.get("Content-Length")
        self._chunking_output = (http11 and req.method != "HEAD" and code not in (204, 304)
                                 and (code < 100 or code >= 200) and length is None)
        if http11 and self._disconnect_on_finish:
            headers["Connection"] = "close"
        if (req.version == "HTTP/1.0" and self._request_headers is not None
                and (hdr.get(self._request_headers, "Connection") or "").lower() == "keep-alive"):
            headers["Connection"] = "Keep-Alive"
        if self._chunking_output:
            headers["Transfer-Encoding"] = "chunked"
        if req.method == "HEAD" or code == 304:
            self._expected_content_remaining = 0
        elif length is not None:
            self._expected_content_remaining = parse_int(",".join(length))
        else:
            self._expected_content_remaining = None
        lines = [f"HTTP/1.1 {code:d} {start_line.reason}"]
        for name, vals in values.items():
            for value in vals:
                if type(value) is not str or type(name) is not str:  # bytes slipped in: Tornado's way
                    return super().write_headers(start_line, headers, chunk)
                lines.append(f"{name}: {value}")
        head = "\r\n".join(lines)
        if head.count("\r") != len(lines) - 1 or head.count("\n") != len(lines) - 1:
            bad = next(line for line in lines if "\r" in line or "\n" in line)
            raise ValueError(f"Illegal characters (CR or LF) in header: {bad.encode('latin1')!r}")
        future = self._write_future = Future()
        if self.stream.closed():
            future.set_exception(StreamClosedError())
            future.exception()
            return future
        data = (head + "\r\n\r\n").encode("latin1")
        if chunk:
            data += self._format_chunk(chunk)
        self._pending_write = self.stream.write(data)
        future_add_done_callback(self._pending_write, self._on_write_complete)
        return future

    def _can_keep_alive(self, start_line: RequestStartLine, headers: HTTPHeaders) -> bool:
        try:
            return super()._can_keep_alive(start_line, headers)
        except HTTPInputError as e:  # HTTP/1.0 with a Transfer-Encoding it cannot use
            raise _framing(e) from None

    def _read_body(self, code: int, headers: HTTPHeaders,
                   delegate: HTTPMessageDelegate) -> Awaitable[None] | None:
        if self.refusal is not None:
            raise self.refusal
        try:
            body = super()._read_body(code, headers, delegate)
        except HTTPInputError as e:
            raise _framing(e) from None
        if body is None:
            return None
        if "Content-Length" not in headers._as_list:
            # A body of a declared length is read as it comes, nothing in it parsed: no
            # HTTPInputError can come from reading it (Tornado 6.6 `_read_fixed_body`).
            body = self._framed(body)
        timeout = self._body_timeout
        if timeout is not None and not self.own_body_timeout:
            # Tornado (6.6 `_read_message_inner`) awaits the body, right after this returns, through
            # `gen.with_timeout`: a Task made for the body's coroutine (one more event-loop pass), a
            # chained future, a timer set and cancelled and three callbacks, ~45 Python calls per PUT.
            # Here one timer from the same moment to the same deadline does that job, and Tornado
            # awaits the coroutine itself.  At the deadline the stream is closed, as Tornado closes it
            # (with its log line): the pending read fails and the connection's loop ends, the
            # handler told through on_connection_close.  That is the same only for a handler whose
            # data_received never waits (BaseHandler's): a read must be pending for the close to end
            # the body at once.  The proxy's data_received waits on the backend, and Tornado's
            # timeout abandons that wait at the deadline: a handler that sets its own body timeout
            # (the proxy does, per route: `set_body_timeout`) keeps Tornado's way.
            self._body_timeout = None
            loop = asyncio.get_running_loop()
            self.body_timer = loop.call_at(loop.time() + timeout, self._body_due)
        return body

    def set_body_timeout(self, timeout: float) -> None:
        super().set_body_timeout(timeout)
        self.own_body_timeout = True

    def _body_due(self) -> None:
        self.body_timer = None
        if self._read_finished or self.stream is None or self.stream.closed():
            return
        gen_log.info("Timeout reading body from %s", self.context)
        self.stream.close()

    def body_read(self) -> None:
        """The body is in, or the request is over (the delegate's finish or on_connection_close)."""
        timer = self.body_timer
        if timer is not None:
            self.body_timer = None
            timer.cancel()

    async def _framed(self, body: Awaitable[None]) -> None:
        try:
            await body
        except HTTPInputError as e:  # a bad chunk size or terminator, found while reading
            raise _framing(e, "malformed chunked body") from None

    async def _refuse(self, r: _Refused) -> None:
        log.info("malformed request refused", client=str(self.context), status=r.status, reason=r.message)
        try:
            if self._response_start_line is None:
                await self.stream.write(_error_response(r, self._request_headers))
            else:
                # The handler answered already (413, 401 ...) while the body came in:
                # let that answer go out, and do not send a second one.
                await self.stream.write(b"")
        except StreamClosedError:
            pass
        self.close()


class _HeadWait:
    """The idle timeout on a keep-alive connection's wait for the next request head, as one timer per
    connection instead of one per request.

    Tornado wraps each head read in `gen.with_timeout` (a future chained to the read, a timer set and
    cancelled, four callbacks): ~40 Python calls, 5 % of a KV GET's, for a timer that almost never fires.
    Here each wait only notes its deadline; the timer, set when a wait finds none pending, checks
    when it fires whether a head is still awaited, and if that wait's deadline is later (a newer
    wait) sets itself again for it.  A head not in by its deadline closes the connection, unanswered,
    exactly then, as Tornado's timeout does.
    """

    __slots__ = ("loop", "timeout", "deadline", "conn", "handle")

    def __init__(self, timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.timeout = timeout
        self.deadline = 0.0
        self.conn: _Connection | None = None  # the one awaiting its head, if any
        self.handle: asyncio.TimerHandle | None = None

    def awaiting(self, conn: _Connection) -> None:
        self.conn = conn
        self.deadline = self.loop.time() + self.timeout
        if self.handle is None:
            self.handle = self.loop.call_at(self.deadline, self._due)

    def arrived(self) -> None:
        self.conn = None

    def _due(self) -> None:
        self.handle = None
        conn = self.conn
        if conn is None:
            return  # no head awaited: the next wait sets the timer again
        if self.loop.time() < self.deadline:
            self.handle = self.loop.call_at(self.deadline, self._due)
            return
        self.conn = None
        conn.close()  # the pending read fails with StreamClosedError: the connection's loop ends

    def cancel(self) -> None:
        self.conn = None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class _ServerConnection(HTTP1ServerConnection):
    def __init__(self, stream: IOStream, params: HTTP1ConnectionParameters, context: object,
                 head_limit: int) -> None:
        super().__init__(stream, params, context)
        self.head_limit = head_limit
        self.head_wait: _HeadWait | None = None
        self.conn_params = params
        if params.header_timeout is not None:  # kept by _HeadWait, not by each request's connection
            self.head_wait = _HeadWait(params.header_timeout)
            self.conn_params = copy.copy(params)
            self.conn_params.header_timeout = None

    async def _server_request_loop(self, delegate: HTTPServerConnectionDelegate) -> None:
        # Tornado 6.6's loop with `_Connection` for each request (the class is not a parameter
        # there), minus its ``await asyncio.sleep(0)`` after each request: one more event-loop pass
        # per request, there so that a client pipelining requests cannot keep the loop to itself.
        # Here every request yields anyway: its handler runs as a task of its own, which the
        # connection waits for (`_finish_future`, or the prepared future of a streamed body).
        fields_memo: list[Any] = []  # the last request's header lines (`_Connection._parse_headers`)
        head_wait = self.head_wait
        try:
            while True:
                conn = _Connection(self.stream, self.conn_params, self.context, self.head_limit, fields_memo,
                                   head_wait)
                request_delegate = delegate.start_request(self, conn)
                if head_wait is not None:
                    head_wait.awaiting(conn)  # read_response reads the head first, in this very step
                try:
                    ret = await conn.read_response(request_delegate)
                except (StreamClosedError, UnsatisfiableReadError, asyncio.CancelledError):
                    return
                except Exception:
                    gen_log.error("Uncaught exception", exc_info=True)
                    conn.close()
                    return
                if not ret:
                    return
        finally:
            if head_wait is not None:
                head_wait.cancel()
            delegate.on_close(self)


class GatewayHTTPServer(HTTPServer):
    """Tornado's HTTPServer whose connections answer malformed requests in the gateway's JSON shape.

    ``max_header_size`` is the limit a head is held to (431 above it); the
    stream reads up to `_HEAD_SLACK` more so that it can still answer.
    """

    def initialize(self, request_callback: Any, max_header_size: int | None = None,  # type: ignore[override]
                   **kwargs: Any) -> None:
        self.head_limit = max_header_size or 65536
        super().initialize(request_callback, max_header_size=self.head_limit + _HEAD_SLACK, **kwargs)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        # HTTPServer.handle_stream, with our server connection.
        if type(stream) is IOStream:  # (not a TLS one)
            if stream.socket.family in (socket.AF_INET, socket.AF_INET6):
                stream.set_nodelay(True)
            stream.__class__ = ServerStream  # Nagle off for good, read interest kept (stream.py)
        context = _HTTPRequestContext(stream, address, self.protocol, self.trusted_downstream)
        conn = _ServerConnection(stream, self.conn_params, context, self.head_limit)
        self._connections.add(conn)
        conn.start_serving(self)


# -- who the client is ---------------------------------------------------------------------


class TrustedProxies:
    """The client address: the peer, or what a trusted proxy says in X-Forwarded-For."""

    def __init__(self, entries: Iterable[str]) -> None:
        nets = []
        for e in entries:
            try:
                nets.append(ipaddress.ip_network(e.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"{e!r} is not an IP address or CIDR network",
                                  key="gateway.trusted_proxies") from None
        self.networks = tuple(nets)

    def trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def client(self, request: HTTPServerRequest) -> str:
        peer = request.remote_ip or "unknown"
        if not self.networks or not self.trusted(peer):
            return peer
        forwarded = request.headers.get("X-Forwarded-For", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        # Walk from the nearest hop back; the first address we do not trust is the client.
        for hop in reversed(hops):
            if not self.trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a proxy we trust passed garbage: fall back to what we know
        return hops[0] if hops else peer
