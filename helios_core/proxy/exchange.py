"""One request forwarded: backend choice, tries, timeouts, and the response relayed back to the client.

An `Exchange` is the `ResponseSink` of the upstream connection it uses.  A try
that fails before any response byte reached the client (connect failure,
reset, unparsable answer, read timeout, or a 502/503/504) is retried on
another backend when the method is idempotent (GET, HEAD, OPTIONS, PUT,
DELETE), no body byte has been sent yet, the route's `retries` are not used
up and the process's `RetryBudget` has room; otherwise the client gets 502
(504 for a timeout).  Once the response head went out, a failure can only cut
the client's connection.

Timeouts (the route's): `connect` bounds getting a connection (including the
wait for a pool slot), `read` the silence of the backend while the proxy waits
on it (not while the client is slow to read), `total` the whole exchange.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from helios_core.observability import tracing
from helios_core.proxy.upstream import UpstreamConnection, UpstreamUnavailable

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from helios_core.proxy.model import Route
    from helios_core.proxy.server import ClientConnection, Request
    from helios_core.proxy.state import BackendState, PoolState

__all__ = ["Exchange", "TunnelSink", "IDEMPOTENT"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_RETRYABLE_STATUS = frozenset({502, 503, 504})
_CONNECTION_PLAIN = frozenset({b"keep-alive", b"close", b"upgrade"})  # Connection values naming no header
_HOP = frozenset({b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"})

# Response header names as sent (any case) -> what to do with them; the same few names come back
# in every response, so each is lower-cased and classified once.
_R_PASS, _R_DROP, _R_CONNECTION, _R_UPGRADE, _R_LENGTH = range(5)
_RESPONSE_NAMES: dict[bytes, int] = {}
# (name, value) -> the line passed on, for headers to pass: most come back with the same value in
# every response (Server, Content-Type, Accept-Ranges, a static file's ETag), so one probe replaces
# classifying and formatting them.
_PASS_LINES: dict[tuple[bytes, bytes], bytes] = {}


def _response_kind(name: bytes) -> int:
    low = name.lower()
    if low == b"connection":
        kind = _R_CONNECTION
    elif low == b"upgrade":
        kind = _R_UPGRADE
    elif low == b"content-length":
        kind = _R_LENGTH
    elif low in _HOP or low.startswith(b"proxy-"):
        kind = _R_DROP
    else:
        kind = _R_PASS
    if len(_RESPONSE_NAMES) > 4096:  # a backend inventing names: keep the cache bounded
        _RESPONSE_NAMES.clear()
    _RESPONSE_NAMES[name] = kind
    return kind


# (status, reason, framing, HTTP/1.1 client, headers) -> what `_build_head` made of them.
_HEADS: dict[tuple[int, bytes, str, bool, tuple[tuple[bytes, bytes], ...]], tuple[bytes, str, bool]] = {}
_HEAD_CACHE_SIZE = 1024
_HEAD_CACHE_BYTES = 2048  # larger heads (cookies, long headers) are rebuilt each time: ~2 MB at most


def _build_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framing: str, http11: bool,
                upgrade: bool) -> tuple[bytes, str, bool]:
    """A backend's response head as it goes to the client, without its Connection line and final CRLF.

    Returns (head, framing to the client, whether the client connection may be kept alive): a
    close-delimited or chunked body goes to an HTTP/1.1 client chunked, to an HTTP/1.0 one as it
    comes, with the connection closed after it.
    """
    out = [b"HTTP/1.1 %d %b\r\n" % (status, reason or b"OK")]
    connection: bytes | None = None
    drop_length = framing != "length" and framing != "none"
    kinds = _RESPONSE_NAMES
    lines = _PASS_LINES
    for header in headers:
        line = lines.get(header)
        if line is not None:  # a header passed on as it was before (Server, Content-Type, ...)
            out.append(line)
            continue
        name, value = header
        kind = kinds.get(name)
        if kind is None:
            kind = _response_kind(name)
        if kind == _R_PASS:
            line = b"%b: %b\r\n" % (name, value)
            if len(value) <= 256:  # short values only (not cookies): at most ~1 MB cached
                if len(lines) > 4096:  # changing values (Date, ETag): keep the cache bounded
                    lines.clear()
                lines[header] = line
            out.append(line)
        elif kind == _R_LENGTH:
            if not drop_length:
                out.append(b"%b: %b\r\n" % (name, value))
        elif kind == _R_CONNECTION:
            connection = value
        elif kind == _R_UPGRADE and upgrade:
            out.append(b"Upgrade: %b\r\n" % value)
    if connection is not None and connection.lower() not in _CONNECTION_PLAIN:
        # Headers the backend's Connection names are hop-by-hop too (rare: filtered after the fact).
        named = {t.strip().lower() for t in connection.split(b",")} - _CONNECTION_PLAIN
        if named:
            out = out[:1] + [line for line in out[1:] if line.split(b":", 1)[0].lower() not in named]
    keep = True
    if not upgrade and (framing == "chunked" or framing == "close"):
        if http11:
            framing = "chunked"
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            keep = False
    return b"".join(out), framing, keep


class TunnelSink:
    """What an upstream connection reports once it carries a WebSocket (or other upgraded) tunnel."""

    def __init__(self, client: ClientConnection) -> None:
        self.client = client

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      framing: str) -> None:
        pass  # a tunnel has no more responses

    def response_body(self, data: bytes) -> None:
        pass

    def response_end(self) -> None:
        pass

    def upstream_upgraded(self, rest: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def upstream_failed(self, exc: BaseException) -> None:
        if self.client.transport is not None:
            self.client.transport.close()

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading_for("upstream")

    def upstream_resume_writing(self) -> None:
        self.client.resume_reading_for("upstream")


class Exchange:
    """One request forwarded: backend choice, tries, timeouts, and the response relayed back."""

    # One per request: slots make it cheaper to build and its attributes cheaper to reach.
    __slots__ = ("client", "service", "req", "route", "path", "pool_state", "conn", "backend", "tried",
                 "sent_head", "body_sent", "status", "framing", "responded", "done", "paused", "last_error",
                 "timed_out", "upstream_started", "bytes_out", "base", "netloc", "keep_alive", "expired",
                 "stale_retried", "loop", "last_activity", "deadline", "_task", "span", "__weakref__")

    def __init__(self, client: ClientConnection, req: Request, route: Route, upstream_path: str,
                 pool_state: PoolState) -> None:
        self.client = client
        self.service = client.service
        self.req = req
        self.route = route
        self.path = upstream_path
        self.pool_state = pool_state
        self.conn: UpstreamConnection | None = None
        self.backend: BackendState | None = None
        self.tried: list[str] = []
        self.sent_head = False
        self.body_sent = False
        self.status = 0
        self.framing = ""
        self.responded = False  # the response head went to the client
        self.done = False
        self.paused = False
        self.last_error = ""
        self.timed_out = False
        self.upstream_started = 0.0
        self.bytes_out = 0
        self.base = ""
        self.netloc = b""
        self.keep_alive = False
        self.expired = False  # the total timeout fired: no more tries
        self.stale_retried = False
        self.loop = loop = client.service.loop
        self.last_activity = now = loop.time()
        self.deadline = now + route.timeouts.total
        self._task: asyncio.Task[None] | None = None
        self.span: Span | None = None  # helios proxy's SERVER span, only while tracing is on
        client.service.active.add(self)

    # --- tries ---

    def start(self, now: float | None = None) -> None:
        """The first try; `now` is the clock's reading when the caller has one (one read per request)."""
        if now is None:
            now = self.service.clock()
        self.service.budget.request(now)
        self._attempt(now)

    def _attempt(self, now: float | None = None) -> None:
        service = self.service
        if now is None:
            now = service.clock()
        backend = self.pool_state.pick(now, exclude=self.tried)
        if backend is None:
            if self.tried:
                self._give_up(504 if self.timed_out else 502, self.last_error or "no backend answered")
            else:
                self._finish_error(503, f"no backend available in pool {self.route.pool!r}",
                                   service.retry_after(self.pool_state, now))
            return
        self.tried.append(backend.backend.id)
        self._use(backend, now, fresh=self.req.upgrade is not None)

    def _use(self, backend: BackendState, now: float, fresh: bool) -> None:
        """Start a try on `backend`: an idle keep-alive connection now, or a new one (a task)."""
        self.backend = backend
        backend.started(now)
        self.upstream_started = now
        up, self.base = self.service.upstream_for(backend, self.pool_state.pool)
        self.netloc = up.netloc
        if not fresh:
            conn = up.take_idle(now)
            if conn is not None:
                self._send(conn)
                return
        self._task = self.loop.create_task(self._connect(up, fresh=fresh))

    async def _connect(self, up: Any, fresh: bool) -> None:
        timeout = self.route.timeouts.connect
        try:
            conn = await (up.connect_new(timeout) if fresh else up.acquire(timeout))
        except UpstreamUnavailable as e:
            self._task = None
            if not self.done:
                self._try_failed(str(e), connect_failure=True)
            return
        self._task = None
        if self.done:
            conn.request_done = True
            up.release(conn)
            return
        self._send(conn)

    def _send(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        req = self.req
        conn.begin(self, head=req.method == "HEAD")
        target = (self.base + self.path).encode("latin-1")
        host = b"" if req.host else b"Host: %b\r\n" % self.netloc  # HTTP/1.0 clients may send none
        head = b"%b %b HTTP/1.1\r\n%b%b\r\n" % (req.method.encode(), target, host, req.fwd)
        self.sent_head = True
        if self.client.write_paused:
            self.paused = True
            conn.pause_reading()
        if req.pending:  # head and the body received so far in one write (one send on loopback)
            req.pending.insert(0, head)
            self.flush_pending()
        else:
            conn.write(head)
        if req.complete and req.upgrade is None:
            self.request_complete()
        self.last_activity = self.loop.time()

    def flush_pending(self) -> None:
        req = self.req
        if self.conn is None or not self.sent_head or not req.pending:
            return
        data = b"".join(req.pending)
        req.pending.clear()
        if req.pending_bytes:
            self.body_sent = True
        req.pending_bytes = 0
        self.last_activity = self.loop.time()
        self.conn.write(data)
        self.client.resume_reading_for("buffer")

    def write_body(self, data: bytes) -> None:
        if self.conn is not None:
            self.body_sent = True
            self.last_activity = self.loop.time()
            self.conn.write(data)

    def request_complete(self) -> None:
        if self.conn is not None and not self.req.pending:
            self.conn.request_done = True

    def _may_retry(self) -> bool:
        """Whether another try is allowed, budget aside: idempotent, body not sent, tries left."""
        if self.done or self.responded or self.body_sent or self.expired or self.client.closing:
            return False
        if self.req.method not in IDEMPOTENT or self.req.upgrade is not None:
            return False
        return len(self.tried) <= self.route.retries

    def _another_backend(self) -> bool:
        """Whether a backend not tried yet is available: else the backend's own 5xx answer is passed on."""
        now = self.service.clock()
        tried = self.tried
        return any(b.id not in tried and b.available(now) for b in self.pool_state.backends)

    def _try_failed(self, why: str, *, connect_failure: bool = False, timeout: bool = False,
                    retry: bool | None = None) -> None:
        """This try failed before any response reached the client: retry elsewhere or answer."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        self.sent_head = False
        if (conn is not None and conn.uses > 1 and conn.received == 0 and not timeout and retry is None
                and not self.stale_retried and not self.body_sent and not self.done and not self.responded
                and self.req.upgrade is None and self.backend is not None):
            # A reused keep-alive connection the backend had closed while it sat idle (the close
            # crossed our request): nothing was answered, so the request goes again on a new
            # connection to the same backend, whatever its method; not the backend's failure.
            self.stale_retried = True
            now = self.service.clock()
            self.backend.finished(now, ok=True)
            self._use(self.backend, now, fresh=True)
            return
        if self.backend is not None:
            self.backend.finished(self.service.clock(), ok=False, connect_failure=connect_failure)
            self.service.metrics.upstream(self.route.id, self.backend.backend.id, 502 if not timeout else 504,
                                          self.service.clock() - self.upstream_started)
        self.last_error = why
        self.timed_out = timeout
        if retry is None:
            retry = self._may_retry() and self.service.budget.try_retry(self.service.clock())
        if retry:
            self.service.metrics.retry(self.route.id)
            self._attempt()
        else:
            self._give_up(504 if timeout else 502, why)

    def _give_up(self, status: int, why: str) -> None:
        self._finish_error(status, why, None)

    def _finish_error(self, status: int, message: str, retry_after: int | None) -> None:
        if self.done:
            return
        self._close_timers()
        self.done = True
        self.status = status
        # The rest of a request body cannot be read past an error: the connection ends with it.
        close = not self.req.body_done
        backend_id = self.backend.backend.id if self.backend else ""
        self.service.metrics.request(self.route.id, backend_id, status)
        self.service.log_request(self.req, self.client.peer, status, self.route.id, backend_id or None,
                                 len(self.tried), 0, error=message)
        if self.span is not None:
            self._end_span(status, message)
        self.client.answer_error(self.req, status, message, retry_after=retry_after, close=close, log=False)

    # --- ResponseSink (called by UpstreamConnection) ---

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]],
                      framing: str) -> None:
        self.last_activity = self.loop.time()
        if status in _RETRYABLE_STATUS and self._may_retry() and self._another_backend() \
                and self.service.budget.try_retry(self.service.clock()):
            self.status = status
            self._try_failed(f"backend answered {status}", retry=True)
            return
        self.status = status
        req = self.req
        if status == 101:
            head, framing, keep_possible = _build_head(status, reason, headers, framing, req.http11, True)
        else:
            # A backend answers the same head again and again (a Date line apart, once a second):
            # the head as it goes to the client is looked up whole before it is rebuilt.
            key = (status, reason, framing, req.http11, tuple(headers))
            cached = _HEADS.get(key)
            if cached is None:
                cached = _build_head(status, reason, headers, framing, req.http11, False)
                if len(cached[0]) <= _HEAD_CACHE_BYTES:
                    if len(_HEADS) >= _HEAD_CACHE_SIZE:
                        _HEADS.clear()
                    _HEADS[key] = cached
            head, framing, keep_possible = cached
        # Set before the head is handed over: an embedding client (the gateway's) switches the
        # framing to "raw" when it takes the head, and Tornado frames the body itself.
        self.framing = framing
        self.keep_alive = (keep_possible and req.keep_alive and req.upgrade is None and not self.service.draining
                           and req.body_done)
        self.responded = True
        if status == 101:
            self.client.send_later(head + b"Connection: Upgrade\r\n\r\n")
        else:
            self.client.send_later(head + (b"Connection: keep-alive\r\n\r\n" if self.keep_alive
                                           else b"Connection: close\r\n\r\n"))

    def response_body(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.bytes_out += len(data)
        if self.framing == "chunked":
            if data:
                self.client.send_later(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.client.send_later(data)

    def response_end(self) -> None:
        if self.done:
            return
        if self.framing == "chunked":
            self.client.send_later(b"0\r\n\r\n")
        self._ok_end()
        self.client.finished(self.keep_alive and self.req.body_done)

    def _ok_end(self) -> None:
        self.done = True
        self._close_timers()
        now = self.service.clock()
        if self.backend is not None:
            self.backend.finished(now, ok=self.status < 500)
            backend_id = self.backend.backend.id
        else:
            backend_id = ""
        service = self.service
        service.metrics.answered(self.route.id, backend_id, self.status, now - self.upstream_started)
        if service.access_log:  # its arguments are not even gathered when there is no access log
            service.log_request(self.req, self.client.peer, self.status, self.route.id, backend_id,
                                len(self.tried), self.bytes_out)
        if self.span is not None:
            self._end_span(self.status, None)
        self.conn = None

    def _end_span(self, status: int, error: str | None) -> None:
        span, self.span = self.span, None
        if span is None:
            return
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("helios.proxy.tries", len(self.tried))
            if self.backend is not None:
                span.set_attribute("helios.proxy.backend", self.backend.backend.id)
            if status >= 500 or error:
                tracing.set_error(span, error or f"HTTP {status}")
        span.end()

    def upstream_failed(self, exc: BaseException) -> None:
        if self.done:
            return
        if not self.responded:
            self._try_failed(f"bad or broken response from the backend: {exc}")
            return
        # Mid-response: the client cannot be told with a status any more; cut its connection.
        self.done = True
        self._close_timers()
        if self.backend is not None:
            self.backend.finished(self.service.clock(), ok=False)
        self.service.log_request(self.req, self.client.peer, self.status, self.route.id,
                                 self.backend.backend.id if self.backend else None, len(self.tried),
                                 self.bytes_out, error=str(exc) or type(exc).__name__)
        if self.span is not None:
            self._end_span(self.status, str(exc) or type(exc).__name__)
        self.conn = None
        self.client.closing = True
        if self.client.transport is not None:
            self.client.transport.abort()

    def flush(self) -> None:
        self.client.flush()

    def upstream_upgraded(self, rest: bytes) -> None:
        self.client.flush()
        conn = self.conn
        self._ok_end()
        if conn is not None:
            self.client.start_tunnel(conn, rest, self.route.timeouts.read)

    def upstream_pause_writing(self) -> None:
        self.client.pause_reading_for("upstream")

    def upstream_resume_writing(self) -> None:
        self.client.resume_reading_for("upstream")

    # --- client side events ---

    def client_paused(self) -> None:
        if self.conn is not None:
            self.paused = True
            self.conn.pause_reading()

    def client_resumed(self) -> None:
        self.paused = False
        self.last_activity = self.loop.time()
        if self.conn is not None:
            self.conn.resume_reading()

    def client_lost(self) -> None:
        """The client went away mid-exchange: drop the upstream connection, not the backend's fault."""
        if self.done:
            return
        self.done = True
        self._close_timers()
        if self._task is not None:
            self._task.cancel()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.abort()
        if self.backend is not None:
            self.backend.finished(self.service.clock(), ok=True)
        self.service.log_request(self.req, self.client.peer, 499, self.route.id,
                                 self.backend.backend.id if self.backend else None, len(self.tried),
                                 self.bytes_out)
        if self.span is not None:
            self._end_span(499, "client closed the connection")

    # --- timeouts ---

    def check(self, now: float) -> None:
        """Called by the service's timeout ticker (every few tens of ms) while this exchange is active.

        One ticker for all exchanges instead of two loop timers per request: arming and
        cancelling timers was a measurable share of a small request's cost.
        """
        if self.done:
            self.service.active.discard(self)
            return
        if now >= self.deadline:
            self.expired = True
            self._timeout(f"request took over {self.route.timeouts.total:g}s")
        elif self.conn is not None and self.sent_head:
            if self.paused:  # the client is slow to read: not the backend's fault
                self.last_activity = now
            elif now - self.last_activity >= self.route.timeouts.read:
                self._timeout(f"no data from the backend for {self.route.timeouts.read:g}s")

    def _timeout(self, why: str) -> None:
        if self.responded:
            self.upstream_failed(TimeoutError(why))
            return
        if self._task is not None:  # still connecting (or waiting for a pool slot)
            self._task.cancel()
            self._task = None
            self._try_failed(why, connect_failure=True, timeout=True)
        else:
            self._try_failed(why, timeout=True)

    def _close_timers(self) -> None:
        self.service.active.discard(self)
