"""The one base handler: every request's cross-cutting work, in one place and one order.

`BaseHandler.prepare()` does, in order:

1. request id (``X-Request-ID`` kept when sane, else made) and W3C trace
   context (``traceparent`` continued, or a new trace started; with tracing on
   this is the request's OpenTelemetry SERVER span, named by the route
   template, and the response's ``traceparent`` names that span);
2. the method check (405 with ``Allow``) and the body-size check (413 before
   the body is read: bodies are streamed in, so an oversized one never sits
   in memory);
3. authentication (bearer JWT -> `Principal`, 401);
4. rate limiting (token bucket per user or address, 429);
5. the permission the handler declares for the method (403).

For a token seen before, 3 and 4 are one store step, and a method that reads
one key (`Need.prefetch`) has that read in the same step when the caller it
remembers may read the key: one round trip on a store server instead of two.
That value is speculative until every check has passed: a refused request (a
401, 403 or 429, or a principal that changed) drops it unlooked-at, so it is
never sent or logged; the handler takes it through `read()`.

`write_error()` renders every error, including 404, 405, 413 and 500, as
``{"error": {"code", "message", "request_id"}}``; a stack trace is logged,
never sent.  Requests too malformed to reach a handler (a bad request line,
Host header or chunk size, a head over the limit) get the same shape from
the HTTP layer: see `limits.GatewayHTTPServer`.  Handlers declare what they need per method in `needs`, which is
also what the RBAC matrix test and the OpenAPI document read.
"""

from __future__ import annotations

import email.utils
import functools
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from tornado.web import HTTPError, RequestHandler, stream_request_body

from helios_core.auth.audit import Actor
from helios_core.auth.service import Principal
from helios_core.digits import plain_int
from helios_core.errors import (
    AofWriteError,
    AuthenticationError,
    CommandError,
    HeliosError,
    InvalidInputError,
    PermissionDeniedError,
    RateLimitedError,
)
from helios_core.gateway import headers as hdr
from helios_core.observability import tracing
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from helios_core.gateway.context import Gateway
    from helios_core.ratelimit import Decision, Policy

__all__ = ["BaseHandler", "Need", "PUBLIC", "PROBE", "AUTHENTICATED", "perm", "NotFoundHandler", "error_body",
           "request_id_of"]

log = get_logger("gateway")

# Matched with fullmatch: `$` would let a trailing "\n" through.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
UNAUTHENTICATED_ROLES = ("unauthenticated",)
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 411: "length_required", 412: "precondition_failed",
                 413: "payload_too_large", 415: "unsupported_media_type", 429: "rate_limited",
                 431: "headers_too_large",
                 500: "internal", 501: "not_implemented", 503: "unavailable"}


@dataclass(frozen=True)
class Need:
    """What one method of a handler requires before it runs."""

    permission: str | None = None  # None: being authenticated is enough (if `authenticate`)
    authenticate: bool = True
    resource: str | None = None  # path argument the permission's key scope applies to
    resource_query: str | None = None  # ... or query argument (a listing prefix)
    rate_limited: bool = True
    # The method reads the store key `prefetch + resource` (a KV GET): for a token seen before, that
    # read goes out with the checks, in the same round trip (`BaseHandler.read`).
    prefetch: str | None = None


PUBLIC = Need(authenticate=False)  # anyone, rate-limited per address (login, register, refresh)
PROBE = Need(authenticate=False, rate_limited=False)  # health checks, metrics, the API document
AUTHENTICATED = Need()


def perm(permission: str, **kw: Any) -> Need:
    return Need(permission, **kw)


def _hex(bits: int) -> str:
    # Request, trace and span ids must be unique, not secret: no syscall per id.
    return f"{random.getrandbits(bits):0{bits // 4}x}"


def request_id_of(given: str | None) -> str:
    """The caller's X-Request-ID when it is sane, else a new one."""
    return given if given and _REQUEST_ID_RE.fullmatch(given) else _hex(128)


def error_body(code: str, message: str, request_id: str) -> bytes:
    """The one error shape, for handlers (`write_error`) and the HTTP layer (`limits`) alike."""
    return orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})


_date: tuple[int, str] = (0, "")
# Per rate-limit policy, its RateLimit-Policy and X-RateLimit-Limit values (made once).
_POLICY_HEADERS: dict[Policy, tuple[str, str]] = {}


def http_date() -> str:
    """The ``Date`` header's value, formatted once a second rather than per response.

    Tornado formats it through email.utils for every handler it builds: that was as
    much CPU as our whole permission check, for a value that changes once a second.
    """
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def _unless_answered(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: BaseHandler, *args: Any, **kwargs: Any) -> Any:
        if self._finished:
            return None
        return fn(self, *args, **kwargs)

    method._unless_answered = True  # type: ignore[attr-defined]
    return method


@stream_request_body
class BaseHandler(RequestHandler):
    route: ClassVar[str] = ""  # the OpenAPI path template, e.g. "/api/v1/kv/{key}"
    needs: ClassVar[dict[str, Need]] = {}

    gw: Gateway
    # Per-request state starts at these class values (a handler is made per request: nine fewer
    # attribute stores each time); assigning one makes it the instance's.
    principal: Principal | None = None
    _size = 0
    _request_id: str | None = None
    _trace: tuple[str, str, str] | None = None
    _span: Span | None = None  # only while tracing is on (tracing.state.on)
    _client: str | None = None
    _tracked = False
    _prefetched: tuple[str, bytes | None] | None = None  # (store key, value) read with the checks
    _granted: tuple[Principal, str] | None = None  # (who, resource): need.permission checked already

    def __init_subclass__(cls, **kw: Any) -> None:
        # Tornado calls the method once the body is complete even if we answered
        # while it streamed in (a chunked body over the limit): make that a no-op,
        # so a DELETE with an oversized body gets 413 and deletes nothing.
        super().__init_subclass__(**kw)
        for method in cls.needs:
            fn = cls.__dict__.get(method.lower())
            if fn is not None and not getattr(fn, "_unless_answered", False):
                setattr(cls, method.lower(), _unless_answered(fn))

    def initialize(self, gateway: Gateway) -> None:
        self.gw = gateway
        self._chunks: list[bytes] = []
        self._sticky: dict[str, str] = {}

    # -- identity of the request -------------------------------------------------------

    @property
    def request_id(self) -> str:
        if self._request_id is None:
            self._request_id = request_id_of(hdr.get(self.request.headers, "X-Request-ID"))
        return self._request_id

    @property
    def trace_id(self) -> str:
        return self._trace[0] if self._trace else ""

    @property
    def traceparent(self) -> str:
        """This hop's W3C traceparent, for calls this request makes downstream."""
        if self._trace is None:
            return ""
        trace_id, span_id, flags = self._trace
        return f"00-{trace_id}-{span_id}-{flags}"

    @property
    def client(self) -> str:
        if self._client is None:
            self._client = self.gw.client_address(self.request)
        return self._client

    def actor(self) -> Actor:
        p = self.principal
        return Actor(p.username if p else None, p.user_id if p else None, self.client)

    def me(self) -> Principal:
        """The authenticated caller (handlers whose need authenticates always have one)."""
        if self.principal is None:
            raise AuthenticationError("authentication required", code="unauthenticated")
        return self.principal

    def now_ms(self) -> int:
        """The service clock (never steps): job deadlines, rate-limit buckets."""
        return self.gw.clock()

    def wall_ms(self) -> int:
        """The wall clock: token and session times, audit entries (see Gateway.wall_clock)."""
        return self.gw.wall()

    def sticky_header(self, name: str, value: str) -> None:
        """A header that survives an error response (send_error clears the others).

        Only for values this module makes (ids, numbers): they are set without
        set_header's per-value checks, which showed up in profiles of the hot path.
        """
        name = hdr.normalized(name)
        self._sticky[name] = value
        headers = self._headers
        headers._as_list[name] = [value]  # hdr.put, the name normalized already
        headers._combined_cache[name] = value

    # -- the pipeline ------------------------------------------------------------------

    async def prepare(self) -> None:
        gw = self.gw
        gw.inflight += 1
        self._tracked = True
        self.sticky_header("X-Request-ID", self.request_id)
        self._start_trace()

        need = self.needs.get(self.request.method or "")
        if need is None:
            raise HTTPError(405)
        self._check_length()
        limited = need.rate_limited and gw.config.ratelimit.enabled
        read: tuple[str, bytes | None] | None = None
        try:
            if need.authenticate:
                try:
                    if limited:
                        done, read = await self._authenticate_and_limit(need)
                        if done:
                            limited = False  # done, in one round trip
                        else:
                            await self._authenticate()
                    else:
                        await self._authenticate()
                except AuthenticationError:
                    # A 401 costs a bucket token too: unauthenticated work is drawn from the
                    # caller's address bucket, so guessing tokens is as limited as anything else.
                    if limited:
                        await self._rate_limit()
                    raise
            if limited:
                await self._rate_limit()
            if need.permission is not None:
                self._authorize(need)
        except BaseException:
            read = None  # refused: the speculative read is dropped (not even kept in the traceback's frame)
            raise
        self._prefetched = read

    def _start_trace(self) -> None:
        """This hop's trace context: a child of the caller's ``traceparent`` or a new trace, sent back
        (and on, to the job record or a backend) as ``traceparent``.

        With tracing on it is the request's SERVER span, current for the rest of the request's task
        (store calls become its children).  Off, the ids are made here, as cheaply as before tracing.
        """
        headers = self.request.headers
        if tracing.state.on:
            method = self.request.method or ""
            attrs = {"http.request.method": method, "url.path": self.request.path}
            if self.route:
                attrs["http.route"] = self.route
            # Named by the route template, never the path (one name per endpoint, not per key).
            name = f"{method} {self.route}" if self.route else method
            span = tracing.start_span(name, kind=tracing.SpanKind.SERVER,
                                      parent=headers.get("traceparent", ""), attributes=attrs)
            self._span = span
            tracing.activate(span)
            self._trace = tracing.ids_of(span)
            if self._trace is not None:
                self.sticky_header("traceparent", self.traceparent)
                return
        given = hdr.get(headers, "traceparent")
        m = _TRACEPARENT_RE.fullmatch(given) if given else None
        if m and m.group(1) != "0" * 32:
            self._trace = (m.group(1), _hex(64), m.group(3))
        else:
            ids = _hex(192)  # a new trace id and this hop's span id, from one draw
            self._trace = (ids[:32], ids[32:], "01")
        self.sticky_header("traceparent", self.traceparent)

    def _end_trace(self) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        status = self.get_status()
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            p = self.principal
            if p is not None:
                span.set_attribute("enduser.id", p.user_id)  # who, never the token
            if status >= 500:
                tracing.set_error(span, f"HTTP {status}")
        span.end()

    def link_traces(self, traceparents: Iterable[str | None]) -> None:
        """Link this request's span to other traces (a lease or ack to the jobs' enqueue spans)."""
        if self._span is not None:
            tracing.add_links(self._span, traceparents)

    def _check_length(self) -> None:
        limit = self.gw.config.gateway.max_body_bytes
        length = hdr.get(self.request.headers, "Content-Length")
        if length is None:
            return
        declared = plain_int(length, 18)
        if declared is None:
            raise InvalidInputError("Content-Length: not a number (ASCII digits, at most 18)")
        if declared > limit:
            # Let the server drain the declared body quietly instead of answering a second
            # (raw) 400 after ours; the connection closes as soon as our 413 is out.
            self.request.connection.set_max_body_size(declared)  # type: ignore[union-attr]
            raise HeliosError(f"request body of {length} bytes exceeds the limit of {limit} bytes "
                              f"(gateway.max_body_bytes)", code="payload_too_large", status=413)

    def _bearer(self) -> str:
        header = hdr.get(self.request.headers, "Authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header:
            raise AuthenticationError("authentication required: send Authorization: Bearer <access token>",
                                      code="unauthenticated")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("Authorization must be 'Bearer <access token>'", code="invalid_token")
        return token.strip()

    async def _authenticate(self) -> None:
        self.principal = await self.gw.auth.authenticate(self._bearer(), self.wall_ms())

    async def _authenticate_and_limit(self, need: Need) -> tuple[bool, tuple[str, bytes | None] | None]:
        """The common case in one store round trip: a token seen before.  Its bucket is taken under the
        policy of the principal it made last time, and the keys that principal was made from are read in
        the same step; the same bytes mean the same principal (no stale answer: a revoked token, a
        disabled user or a changed role changes a byte read here).  With them goes the method's own read
        (`Need.prefetch`) when that principal may read the key.

        Returns (done, (key, value) or None).  The value is returned only when every check made here
        passed (the same principal, within its limit); the caller still authorizes before using it.
        Not done (a token not seen yet, the store refusing writes): the caller takes the usual steps."""
        gw = self.gw
        token = self._bearer()
        memo = gw.auth.remembered(token, self.wall_ms())
        if memo is None:
            return False, None
        keys, last, p = memo
        extra = self._prefetch_key(need, p)
        names, roles = (f"user:{p.username}",), p.roles
        try:
            d, values = await gw.limiter.hit_reading(f"user:{p.user_id}", lambda s: s.policy_for(names, roles),
                                                     self.now_ms(), keys if extra is None else [*keys, extra])
        except (CommandError, AofWriteError):
            return False, None  # _rate_limit says so, and lets the request through
        n = len(keys)
        read = None if extra is None else (extra, values[n])
        raws, values = values[:n], []
        if raws == last:
            self.principal = p
        else:
            read = None  # read for someone it may no longer be: never used
            # Something it was made from changed: authenticate afresh (a 401 raises from here).  The
            # bucket taken stands when the principal is the same person with the same roles; else
            # the policy may differ: take again under the right one (this request counts twice).
            self.principal = await gw.auth.authenticate(token, self.wall_ms())
            fresh = self.principal
            if (fresh.user_id, fresh.username, fresh.roles) != (p.user_id, p.username, p.roles):
                await self._rate_limit()
                return True, None
        if not d.allowed:
            read = None
        self._limit_decided(d)
        return True, read

    def _prefetch_key(self, need: Need, p: Principal) -> str | None:
        """The store key the method will read, if it declares one and `p` may read it."""
        if need.prefetch is None or need.resource is None:
            return None
        resource = self.path_kwargs.get(need.resource)
        if not resource or (need.permission is not None and not p.can(need.permission, resource)):
            return None
        self._granted = (p, resource)  # `_authorize` need not ask again for this very principal
        return need.prefetch + resource

    async def read(self, key: str) -> bytes | None:
        """`store.get(key)`, or the value read with this request's checks (once)."""
        got, self._prefetched = self._prefetched, None
        if got is not None and got[0] == key:
            return got[1]
        return await self.gw.store.get(key)

    async def _rate_limit(self) -> None:
        p = self.principal
        if p is not None:
            client_id, names, roles = f"user:{p.user_id}", (f"user:{p.username}",), p.roles
        else:
            # Unauthenticated (public endpoints, and every 401): per address, under the
            # pseudo-role "unauthenticated" when ratelimit.roles names it, else the default.
            client_id, names, roles = f"ip:{self.client}", (f"ip:{self.client}",), UNAUTHENTICATED_ROLES
        try:
            d = await self.gw.limiter.hit(client_id, lambda s: s.policy_for(names, roles), self.now_ms())
        except (CommandError, AofWriteError) as e:
            # The store refuses writes (disk full): serve reads rather than refuse everyone.
            log.warning("rate limiter unavailable; request let through", error=str(e))
            return
        self._limit_decided(d)

    def _limit_decided(self, d: Decision) -> None:
        """The rate-limit headers of decision `d`; RateLimitedError when it refused."""
        pol = d.policy
        reset_s = -(-d.reset_ms // 1000)
        fixed = _POLICY_HEADERS.get(pol)
        if fixed is None:
            if len(_POLICY_HEADERS) > 1024:  # policies come from config: a handful
                _POLICY_HEADERS.clear()
            fixed = _POLICY_HEADERS[pol] = (f'"{pol.name}";q={pol.limit};w={pol.window_s}', str(pol.limit))
        # Each header set as sticky_header would, by its name already in Tornado's case.
        # (hdr.put without its call and name lookup: five headers on every rate-limited request)
        sticky, headers, remaining, reset = self._sticky, self._headers, str(d.remaining), str(reset_s)
        as_list, combined = headers._as_list, headers._combined_cache
        for name, value in (("Ratelimit-Policy", fixed[0]), ("Ratelimit", f'"{pol.name}";r={remaining};t={reset}'),
                            ("X-Ratelimit-Limit", fixed[1]), ("X-Ratelimit-Remaining", remaining),
                            ("X-Ratelimit-Reset", reset)):
            sticky[name] = combined[name] = value
            as_list[name] = [value]
        if not d.allowed:
            self.gw.metrics.rate_denied.labels("request").inc()
            raise RateLimitedError(f"rate limit of {pol.limit} requests per {pol.window_s} s exceeded",
                                   retry_after_ms=d.retry_after_ms)

    def _authorize(self, need: Need) -> None:
        p = self.me()  # a permission is never checked without a caller (401, not a silent pass)
        if need.permission is None:
            return
        resource = None
        if need.resource is not None:
            resource = self.path_kwargs.get(need.resource)
        elif need.resource_query is not None:
            resource = self.get_query_argument(need.resource_query, "")
        granted = self._granted
        if granted is not None and granted[0] is p and granted[1] == resource:
            return  # asked in `_prefetch_key`, of the same Principal object (a re-authenticated caller is another)
        if not p.can(need.permission, resource):
            where = f" on {resource!r}" if resource is not None else ""
            raise PermissionDeniedError(f"permission {need.permission}{where} is not granted to "
                                        f"{p.username} (roles: {', '.join(p.roles) or 'none'})")

    # -- the body ----------------------------------------------------------------------

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._finished:
            return None  # answered already (401, 413 ...): the rest of the body is dropped
        self._size += len(chunk)
        if self._size <= self.gw.config.gateway.max_body_bytes:
            self._chunks.append(chunk)
            return None
        # A chunked body (no Content-Length) grew too big: answer now; the
        # connection closes once the answer is out, and the method never runs.
        self._chunks = []
        try:
            _ = self.body
        except HeliosError as e:
            self.send_error(413, exc_info=(type(e), e, None))
        return None

    @property
    def body(self) -> bytes:
        limit = self.gw.config.gateway.max_body_bytes
        if self._size > limit:
            raise HeliosError(f"request body exceeds the limit of {limit} bytes (gateway.max_body_bytes)",
                              code="payload_too_large", status=413)
        return b"".join(self._chunks)

    def json_body(self) -> dict[str, Any]:
        raw = self.body
        if not raw:
            raise InvalidInputError("request body: expected a JSON object, got nothing")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise InvalidInputError(f"request body: invalid JSON ({e})") from None
        if not isinstance(doc, dict):
            raise InvalidInputError("request body: expected a JSON object")
        return doc

    # -- responses ---------------------------------------------------------------------

    def clear(self) -> None:
        # RequestHandler.clear() as tornado has it, with our defaults in place of its
        # Server header, and the Date formatted once a second (`http_date`).  A subclass with
        # defaults of its own (the proxied handler's) gets tornado's clear() and its own.
        if type(self).set_default_headers is not BaseHandler.set_default_headers:
            super().clear()
            return
        self._headers = hdr.fresh({"Content-Type": "text/html; charset=UTF-8", "Date": http_date(),
                                   "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
        self._write_buffer: list[bytes] = []
        self._status_code = 200
        self._reason = "OK"

    def set_default_headers(self) -> None:
        h = self._headers
        h["Cache-Control"] = "no-store"
        h["X-Content-Type-Options"] = "nosniff"
        h.pop("Server", None)

    def write_json(self, doc: Any, status: int = 200) -> None:
        self.set_status(status)
        hdr.put(self._headers, "Content-Type", "application/json")  # a constant: no set_header checks
        self.finish(orjson.dumps(doc))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HeliosError):
            status_code = exc.status
            if isinstance(exc, CommandError) and exc.message.startswith("MISCONF"):
                status_code = 503
        super().send_error(status_code, **kwargs)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        for name, value in self._sticky.items():
            self.set_header(name, value)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        code = _STATUS_CODES.get(status_code, "error")
        message = HTTPStatus(status_code).phrase if status_code in HTTPStatus._value2member_map_ else "error"
        if isinstance(exc, CommandError) and status_code == 503:
            code, message = "store_read_only", "the store refuses writes (disk error); reads still work"
        elif isinstance(exc, HeliosError) and (status_code < 500 or status_code == 503):
            code, message = exc.code, exc.message
        elif isinstance(exc, HTTPError):
            if status_code == 404:
                message = f"no such endpoint: {self.request.method} {self.request.path}"
            elif status_code == 405:
                message = f"method {self.request.method} not allowed on {self.request.path}"
            elif exc.reason:
                message = exc.reason
        if status_code == 405:
            self.set_header("Allow", ", ".join(sorted(self.needs)))
        if isinstance(exc, RateLimitedError):
            self.set_header("Retry-After", str(max(1, -(-exc.retry_after_ms // 1000))))
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="helios", error="invalid_token"')
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(code, message, self.request_id))

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        if isinstance(value, HTTPError) or (isinstance(value, HeliosError) and value.status < 500):
            return  # an answer, not a fault: the request log line has the status
        if self._span is not None and value is not None:
            tracing.set_error(self._span, f"{type(value).__name__}", value)
        log.opt(exception=(typ, value, tb)).error("request failed", request_id=self.request_id,
                                                  method=self.request.method, path=self.request.path)

    def on_finish(self) -> None:
        self._untrack()
        self._end_trace()

    def on_connection_close(self) -> None:
        # The client went away (or the server cut a slow body): this request is
        # no longer in flight even though it may never finish.
        super().on_connection_close()
        self._untrack()
        self._end_trace()

    def _untrack(self) -> None:
        if self._tracked:
            self._tracked = False
            self.gw.inflight -= 1

    def duration_ms(self) -> float:
        return round(self.request.request_time() * 1000, 3)


class NotFoundHandler(BaseHandler):
    """Every path no route matches: the same JSON 404 as everything else."""

    route = ""
    needs = {m: PROBE for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}

    async def prepare(self) -> None:
        self.sticky_header("X-Request-ID", self.request_id)
        raise HTTPError(404)

