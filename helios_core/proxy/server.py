"""The proxy's client side: one `asyncio.Protocol` per client connection.

`ClientConnection` parses requests with `httptools.HttpRequestParser`, routes
them (`Router`), and hands each to an `Exchange` (exchange.py), which picks a
backend (`PoolState.pick`), takes a keep-alive connection from that backend's
`UpstreamPool` (upstream.py) and relays the request and the response.  Bodies are never
held whole: bytes go straight from one transport to the other, and when one
side's write buffer fills the other side's reading pauses (a 1 GB upload or
download keeps memory flat).  One request is forwarded at a time per client
connection; pipelined requests wait (parsed, their bodies buffered up to a
bound, then reading pauses).

What a request becomes on the way up (hop-by-hop headers dropped,
``X-Forwarded-*``, ``Via`` and ``traceparent``; smuggling refused) is
reqhead.py's.  ``Expect: 100-continue`` is answered by the proxy itself.
WebSocket (any ``Upgrade``) requests get a fresh upstream connection; after
the backend's 101, bytes are spliced both ways until either side closes or
nothing passed either way for the route's ``timeouts.read`` (as nginx applies
``proxy_read_timeout`` to WebSockets, and as the gateway's tunnels do).

With tracing on (``tracing.exporter`` not none) each routed request is a
SERVER span ``METHOD route-id``, child of the client's ``traceparent`` (or a
new trace), sent upstream as the backend's parent; the exchange ends it with
the status.  Off, the only cost is one attribute check per request.

Answers of the proxy itself use HELIOS's JSON error shape and close the
connection when the request was bad: 400 (malformed, conflicting
Content-Length/Transfer-Encoding), 431 (header block over `max_header_bytes`),
404 (no route), 408 (request head not complete within the header timeout),
413 (over `max_body_bytes`), 502 (connect failure, reset, unparsable
response), 503 with ``Retry-After`` (no backend available), 504 (read or total
timeout).  Idle keep-alive client connections are closed after a minute.

Two endpoints are served by the proxy and never forwarded, and only to
loopback peers (anyone else gets 404): ``GET /_helios/proxy/status`` (JSON:
config version and every backend's state) and ``GET /_helios/proxy/metrics``
(Prometheus text).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools
import orjson

from helios_core.observability import tracing
from helios_core.observability.logging import get_logger
from helios_core.proxy.exchange import Exchange, TunnelSink
from helios_core.proxy.reqhead import BadRequest as _BadRequest
from helios_core.proxy.reqhead import HeadInfo, apply, derive, new_id, retrace
from helios_core.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from helios_core.proxy.router import Match, Router
    from helios_core.proxy.service import ProxyService

__all__ = ["ClientConnection", "Request", "error_body", "STATUS_PATH", "METRICS_PATH"]

log = get_logger("proxy")

STATUS_PATH = b"/_helios/proxy/status"
METRICS_PATH = b"/_helios/proxy/metrics"
_LOCAL_PREFIX = b"/_helios/proxy/"

_PENDING_LIMIT = 256 * 1024  # buffered request body bytes before the client's reading pauses
_CODES = {400: "bad_request", 404: "not_found", 408: "request_timeout", 413: "payload_too_large",
          431: "headers_too_large", 500: "internal", 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}
_REASONS = {400: b"Bad Request", 404: b"Not Found", 408: b"Request Timeout", 413: b"Payload Too Large",
            431: b"Request Header Fields Too Large", 500: b"Internal Server Error", 502: b"Bad Gateway",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}


def error_body(code: str, message: str, request_id: str) -> bytes:
    """The gateway's error shape (helios_core.gateway.base.error_body), without importing Tornado."""
    return orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})


# (host, target, method) -> the router's answer, for the router it came from: a client asks for the
# same few URLs again and again, and matching decodes, splits and normalises every time.  Rebuilt
# when the config (so the router) changes; bounded, and long targets are not kept.
_ROUTE_CACHE_SIZE = 4096
_ROUTE_CACHE_URL = 512
_route_router: Router | None = None
_route_cache: dict[tuple[bytes, bytes, str], Match | None] = {}


def _route(router: Router, host: bytes, url: bytes, method: str) -> Match | None:
    global _route_router  # noqa: PLW0603 - one cache per process, for the router in use
    if router is not _route_router:
        _route_cache.clear()
        _route_router = router
    key = (host, url, method)
    try:
        return _route_cache[key]
    except KeyError:
        pass
    match = router.match(host.decode("latin-1"), url.decode("latin-1"), method)
    if len(url) <= _ROUTE_CACHE_URL and len(host) <= _ROUTE_CACHE_URL:
        if len(_route_cache) >= _ROUTE_CACHE_SIZE:
            _route_cache.clear()
        _route_cache[key] = match
    return match


class Request:
    """One parsed request: its head, what goes upstream, and its body bytes until a connection takes them."""

    __slots__ = ("method", "url", "headers", "http11", "keep_alive", "upgrade", "chunked", "length",
                 "complete", "host", "fwd", "pending", "pending_bytes", "exchange", "expect_continue",
                 "request_id", "trace_id", "header_bytes", "started", "body_bytes", "head")

    def __init__(self) -> None:
        self.method = "GET"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http11 = True
        self.keep_alive = True
        self.upgrade: bytes | None = None
        self.chunked = False
        self.length: int | None = None
        self.complete = False
        self.host = b""
        self.fwd = b""  # the forwarded header block (without request line and framing)
        self.pending: list[bytes] = []  # framed body bytes not yet written upstream
        self.pending_bytes = 0
        self.exchange: Exchange | None = None
        self.expect_continue = False
        self.request_id = ""
        self.trace_id = ""
        self.header_bytes = 0
        self.started = 0.0
        self.body_bytes = 0
        self.head: HeadInfo | None = None  # kept only while tracing is on: `retrace` needs it

    @property
    def body_done(self) -> bool:
        """No more request bytes to read from the client (a GET is done at its headers)."""
        return self.complete or (self.upgrade is None and not self.chunked and not self.length)


class ClientConnection(asyncio.Protocol):
    """One client's connection: parse, route, forward one request at a time, keep alive."""

    def __init__(self, service: ProxyService) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.peer_bytes = b""
        self.trusted = False
        self.loopback = False
        self.parser = httptools.HttpRequestParser(self)
        self.req: Request | None = None  # the request being parsed
        self.queue: deque[Request] = deque()  # parsed (or being parsed), not yet started
        self.exchange: Exchange | None = None
        self.closing = False
        self.write_paused = False
        self.read_pauses: set[str] = set()
        self.tunnel: UpstreamConnection | None = None
        self.tunnel_idle = 0.0  # the upgraded route's timeouts.read: a silent tunnel is closed after it
        self._tunnel_timer: asyncio.TimerHandle | None = None
        self.upgrade_pending: Request | None = None  # an upgrade request waiting for its 101
        self._bad: _BadRequest | None = None
        self._head: HeadInfo | None = None  # what the last request's headers made (reqhead.derive)
        self.out: list[bytes] = []  # response bytes of one upstream read, sent with one write
        self.last_seen = self.head_started = service.loop.time()  # for the idle and header timeouts
        self._in_headers = False
        self._raw_header_bytes = 0

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "127.0.0.1"  # a unix socket peer is local
        self.peer_bytes = self.peer.encode()  # X-Forwarded-For of every request on this connection
        try:
            addr = ipaddress.ip_address(self.peer)
            self.loopback = addr.is_loopback
            self.trusted = any(addr in net for net in self.service.trusted_networks)
        except ValueError:
            self.loopback = True
        self.service.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.service.loop.time()
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.upgrade_pending is not None:
            self.upgrade_pending.pending.append(data)  # tunnel bytes sent before the 101 came
            exchange = self.upgrade_pending.exchange
            if exchange is not None:
                exchange.flush_pending()
            return
        if self.closing:
            return
        was_in_headers = self._in_headers
        if was_in_headers:
            self._raw_header_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as up:
            req = self.req
            if req is not None and req.upgrade is not None:
                self.upgrade_pending = req
                rest = data[up.args[0]:]
                if rest:
                    req.pending.append(rest)
                    if req.exchange is not None:
                        req.exchange.flush_pending()
                return
            self._reject(400, "unexpected protocol upgrade")
        except httptools.HttpParserCallbackError as e:
            if self._bad is None:  # not a refusal of ours: a bug, which must not pass for bad input
                log.opt(exception=e.__context__ or e).error("request handling failed")
            bad = self._bad or _BadRequest(500, "internal error")
            self._reject(bad.status, bad.message)
        except httptools.HttpParserError as e:
            text = str(e) or "malformed request"
            self._reject(400, f"malformed request: {text}")
        else:
            # llhttp keeps an unfinished header line to itself (no callback until it ends), so an
            # endless one is caught here, by the raw bytes received since the request began.
            if self._in_headers:
                if not was_in_headers:
                    self._raw_header_bytes = len(data)
                if self._raw_header_bytes > self.service.config.max_header_bytes:
                    self._reject(431, "request header block too large")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.service.connections.discard(self)
        if self._tunnel_timer is not None:
            self._tunnel_timer.cancel()
            self._tunnel_timer = None
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None
        if self.exchange is not None:
            self.exchange.client_lost()
            self.exchange = None
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.client_paused()
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.client_resumed()
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        self.req = Request()
        self.req.started = self.service.clock()
        self.head_started = self.service.loop.time()
        self._in_headers = True
        self._raw_header_bytes = 0

    def on_url(self, url: bytes) -> None:
        req = self.req
        if req is not None:
            req.url += url
            req.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        if req is None:
            return
        req.headers.append((name, value))
        req.header_bytes += len(name) + len(value) + 4
        if req.header_bytes > self.service.config.max_header_bytes:
            self._bad = _BadRequest(431, "request header block too large")
            raise self._bad

    def on_headers_complete(self) -> None:
        self._in_headers = False
        req = self.req
        if req is None:
            return
        parser = self.parser
        req.method = parser.get_method().decode("latin-1")
        req.http11 = parser.get_http_version() == "1.1"
        req.keep_alive = parser.should_keep_alive()
        try:
            self._prepare(req, parser.should_upgrade())
        except _BadRequest as bad:
            self._bad = bad
            raise
        if self.exchange is None and not self.queue and not self.closing:
            # The usual case (nothing pipelined ahead of it): no trip through the queue, and the
            # clock read when the request began serves as the exchange's start.
            self._start(req, req.started)
        else:
            self.queue.append(req)
            if self.exchange is None:
                self._start_next()

    def on_body(self, body: bytes) -> None:
        req = self.req
        if req is None:
            return
        if req.chunked:
            # A chunked body has no length to refuse up front: it is counted as it comes.
            req.body_bytes += len(body)
            limit = self.service.config.max_body_bytes
            if limit is not None and req.body_bytes > limit:
                self._bad = _BadRequest(413, f"request body over {limit} bytes")
                raise self._bad
            body = b"%x\r\n%b\r\n" % (len(body), body)
        self._body(req, body)

    def on_message_complete(self) -> None:
        req = self.req
        if req is None:
            return
        req.complete = True
        if req.chunked:
            self._body(req, b"0\r\n\r\n")
        elif req.exchange is not None:
            req.exchange.request_complete()

    # --- request handling ---

    def _prepare(self, req: Request, upgrade: bool) -> None:
        """Check the head (smuggling, sizes) and build the header block sent upstream (reqhead.py)."""
        info = self._head
        if info is None or not info.matches(req.headers, upgrade, req.http11):
            # A keep-alive client sends the same headers again and again: derived once per change.
            info = self._head = derive(req.headers, upgrade, req.http11, self.peer_bytes, self.trusted,
                                       self.service.scheme)
        limit = self.service.config.max_body_bytes
        if limit is not None and info.length is not None and info.length > limit:
            raise _BadRequest(413, f"request body over {limit} bytes")
        apply(info, req)
        if tracing.state.on:
            req.head = info

    def _body(self, req: Request, framed: bytes) -> None:
        exchange = req.exchange
        if exchange is not None and exchange.conn is not None and exchange.sent_head:
            exchange.write_body(framed)
            if req.complete:
                exchange.request_complete()
            return
        req.pending.append(framed)
        req.pending_bytes += len(framed)
        if req.pending_bytes > _PENDING_LIMIT:
            self.pause_reading_for("buffer")

    def _start_next(self) -> None:
        while self.queue and self.exchange is None and not self.closing:
            req = self.queue.popleft()
            self._start(req)

    def _start(self, req: Request, now: float | None = None) -> None:
        service = self.service
        path = req.url
        if path.startswith(_LOCAL_PREFIX):
            self._local(req)
            return
        match = _route(service.router, req.host, path, req.method)
        if match is None:
            service.metrics.request("unmatched", "", 404)
            self.answer_error(req, 404, f"no route for {req.method} {path.decode('latin-1', 'replace')[:200]}")
            return
        pool_state = service.pools.get(match.route.pool)
        if pool_state is None:
            self.answer_error(req, 503, f"pool {match.route.pool!r} is not configured", retry_after=1)
            return
        if req.expect_continue and req.http11 and not req.complete:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        exchange = Exchange(self, req, match.route, match.upstream_path, pool_state)
        self.exchange = exchange
        req.exchange = exchange
        if req.head is not None:  # tracing on: set before the first try sends the head
            self._trace(req, req.head, exchange)
        exchange.start(now)

    @staticmethod
    def _trace(req: Request, info: HeadInfo, exchange: Exchange) -> None:
        """This request's SERVER span, child of the client's traceparent (or a new trace), sent upstream
        as the parent; the exchange ends it with the status."""
        route = exchange.route
        span = tracing.start_span(f"{req.method} {route.id}", kind=tracing.SpanKind.SERVER, parent=info.parent,
                                  attributes={"http.request.method": req.method, "http.route": route.id,
                                              "url.path": req.url.split(b"?", 1)[0].decode("latin-1")[:2000],
                                              "helios.request_id": req.request_id})
        exchange.span = span
        traceparent = tracing.traceparent_of(span)
        if traceparent:
            retrace(info, req, traceparent)

    def _local(self, req: Request) -> None:
        path = req.url.split(b"?", 1)[0]
        if not self.loopback or path not in (STATUS_PATH, METRICS_PATH):
            self.answer_error(req, 404, "no such endpoint")
            return
        if path == STATUS_PATH:
            body, ctype = orjson.dumps(self.service.status(), option=orjson.OPT_INDENT_2), b"application/json"
        else:
            body, ctype = self.service.render_metrics(), b"text/plain; version=0.0.4; charset=utf-8"
        self.answer(req, 200, b"OK", body, ctype)

    # --- answering ---

    def write(self, data: bytes) -> None:
        if self.out:
            self.out.append(data)
            self.flush()
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_later(self, data: bytes) -> None:
        """Response bytes to send at the next `flush` (the end of the upstream read that produced them).

        On loopback every send costs a trip through the receiver's TCP stack: a small response
        whose head and body came in one read goes out in one write, not two or three.
        """
        self.out.append(data)

    def flush(self) -> None:
        if not self.out:
            return
        data = self.out[0] if len(self.out) == 1 else b"".join(self.out)
        self.out.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def answer(self, req: Request, status: int, reason: bytes, body: bytes, ctype: bytes,
               extra: bytes = b"", close: bool = False, log: bool = True) -> None:
        keep = (req.keep_alive and not close and req.body_done and req.upgrade is None
                and not self.service.draining)
        head = (b"HTTP/1.1 %d %b\r\nContent-Type: %b\r\nContent-Length: %d\r\n%bConnection: %b\r\n\r\n"
                % (status, reason, ctype, len(body), extra, b"keep-alive" if keep else b"close"))
        self.write(head if req.method == "HEAD" else head + body)
        if log:
            self.service.log_request(req, self.peer, status, None, None, 0)
        self.finished(keep)

    def answer_error(self, req: Request, status: int, message: str, retry_after: int | None = None,
                     close: bool = False, log: bool = True) -> None:
        extra = b"Retry-After: %d\r\n" % retry_after if retry_after is not None else b""
        self.answer(req, status, _REASONS.get(status, b"Error"),
                    error_body(_CODES.get(status, "error"), message, req.request_id), b"application/json",
                    extra, close, log)

    def _reject(self, status: int, message: str) -> None:
        """Bad input: answer it in the JSON shape with Connection: close, and stop reading."""
        if self.closing:
            return
        self.closing = True
        if self.exchange is not None and self.exchange.responded:
            self.exchange.client_lost()
            self.exchange = None
            if self.transport is not None:
                self.transport.abort()
            return
        rid = new_id()
        body = error_body(_CODES.get(status, "error"), message, rid)
        self.write(b"HTTP/1.1 %d %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n%b" % (status, _REASONS.get(status, b"Error"), len(body), body))
        self.service.log_bad_request(self.peer, status, message)
        if self.exchange is not None:
            self.exchange.client_lost()
            self.exchange = None
        if self.transport is not None:
            self.transport.close()

    def finished(self, keep_alive: bool) -> None:
        """The current exchange (or local answer) is over; go on with the next request or close."""
        self.flush()
        exchange = self.exchange
        if exchange is not None:
            # Break the request <-> exchange cycle: both are then freed by reference counting at
            # once instead of waiting for (and feeding) the cyclic garbage collector every request.
            exchange.req.exchange = None
            self.exchange = None
        if self.read_pauses:
            self.resume_reading_for("upstream")
        if not keep_alive or self.service.draining:
            self.closing = True
            if self.transport is not None:
                self.transport.close()
            return
        if self.queue:
            self._start_next()

    # --- flow control ---

    def pause_reading_for(self, why: str) -> None:
        if why not in self.read_pauses:
            self.read_pauses.add(why)
            if len(self.read_pauses) == 1 and self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()

    def resume_reading_for(self, why: str) -> None:
        if why in self.read_pauses:
            self.read_pauses.discard(why)
            if not self.read_pauses and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def start_tunnel(self, conn: UpstreamConnection, rest: bytes, idle_timeout: float = 0.0) -> None:
        """After a 101: from now on bytes go both ways untouched, until `idle_timeout` s pass silent (0: never)."""
        self.exchange = None
        self.upgrade_pending = None
        self.tunnel = conn
        conn.sink = TunnelSink(self)
        conn.tunnel = self._from_backend
        loop = self.service.loop
        self.last_seen = loop.time()
        self.tunnel_idle = idle_timeout
        if idle_timeout > 0:
            self._tunnel_timer = loop.call_later(idle_timeout, self._check_tunnel)
        self.read_pauses.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        if rest:
            self.write(rest)
        if self.write_paused:
            conn.pause_reading()

    def _from_backend(self, data: bytes) -> None:
        self.last_seen = self.service.loop.time()
        self.write(data)

    def _check_tunnel(self) -> None:
        """The tunnel's idle timer: close both sides once nothing passed for `tunnel_idle` seconds."""
        self._tunnel_timer = None
        tunnel = self.tunnel
        if tunnel is None or self.closing:
            return
        now = self.service.loop.time()
        if self.write_paused:  # bytes wait for a slow client: busy, not idle
            self.last_seen = now
        quiet = now - self.last_seen
        if quiet < self.tunnel_idle:
            self._tunnel_timer = self.service.loop.call_later(self.tunnel_idle - quiet, self._check_tunnel)
            return
        log.info("tunnel closed: idle", client=self.peer, idle_s=self.tunnel_idle)
        self.closing = True
        self.tunnel = None
        tunnel.close()
        if self.transport is not None:
            self.transport.close()

    def check(self, now: float) -> None:
        """The service's sweep (every second): close idle keep-alive connections, cut slow headers.

        A client that opens connections and never finishes a request head (slowloris) would hold
        them forever otherwise.
        """
        service = self.service
        if self.transport is None or self.closing:
            return
        if self._in_headers and now - self.head_started > service.header_timeout:
            self._reject(408, f"request head not received within {service.header_timeout:g}s")
        elif self.idle() and now - self.last_seen > service.client_idle_timeout:
            self.closing = True
            self.transport.close()

    def idle(self) -> bool:
        """Between requests (a draining proxy may close it now)."""
        return (self.exchange is None and self.tunnel is None and self.upgrade_pending is None
                and not self.queue and not self._in_headers and (self.req is None or self.req.complete))
