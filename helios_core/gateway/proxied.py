"""The proxy inside the gateway (``proxy.enabled``): authenticate, limit and balance in one process.

With ``proxy.enabled: true`` `GatewayService` mounts `ProxiedHandler` after
every other route, for every path outside ``/api/`` and ``/admin/`` (the ops
endpoints ``/healthz``, ``/readyz`` and ``/metrics`` match their own handlers
first).  A request there is matched against the proxy's routes (`Router`,
the same as `helios proxy`), then, per route, as a gateway handler's declared
need is checked in `BaseHandler.prepare()`:

- ``require_auth``: a valid bearer token (401 otherwise);
- ``rate_limit``: a token bucket per route and caller (user, else address) in
  the gateway's `RateLimiter` (429 with ``Retry-After``); the spelling is
  ``"LIMIT/WINDOW"`` (``100/s``, ``600/min``, ``10/5s``, ``1000/h``),
  ``"LIMIT SECONDS"``, or the name of a policy in ``ratelimit.roles``;
- ``permissions``: every one granted to the caller (403), as RBAC checks a
  handler's permission.

No route: 404; every refusal is in the gateway's JSON error shape.

Forwarding reuses the proxy's data plane: one `ProxyService` per gateway
process holds the router, the `PoolState`s (balancing, breaker, outlier
ejection), the retry budget, the keep-alive `UpstreamPool`s and the health
checker; each request is an `Exchange`, whose client is a `TornadoClient`
adapter (helios_core/proxy/tornado_client.py) standing where
`server.ClientConnection` stands in `helios proxy`.  The exchange writes
HTTP/1.1 bytes for a raw transport; the adapter parses the response head it
is handed back into Tornado's status and headers, and turns the exchange's
body framing off, so Tornado frames the body for the client.  Bodies stream both ways: the request body arrives through
`data_received` (``@stream_request_body``) and goes straight upstream; when
the backend's socket buffer fills, `data_received` returns a future that
holds Tornado's reading; when the client reads slowly, the upstream
connection's reading pauses until Tornado's write buffer drains.

What goes upstream: hop-by-hop headers dropped, ``X-Forwarded-For`` (the
incoming one kept only from ``gateway.trusted_proxies``), ``-Proto``,
``-Host``, ``Via: 1.1 helios``, the gateway's request id and its
``traceparent`` (this hop's span as the parent).  ``Authorization`` is
dropped: the gateway's JWT is not the backend's business (the route model has
no field to pass it on).

WebSocket (any ``Upgrade``) requests pass the same checks first, so a route
with ``require_auth`` refuses an unauthenticated upgrade with 401 and no
upgrade.  The exchange then takes a fresh upstream connection and sends the
head with ``Connection: Upgrade`` and ``Upgrade`` kept.  A 101 answer is not
Tornado's to send: the handler detaches the client's stream from Tornado
(``RequestHandler.detach()``), writes the backend's 101 on it and a
`StreamTunnel` (helios_core/proxy/tunnel.py) splices bytes both ways until
either side closes or nothing passed for the route's ``timeouts.read``.  Any
other answer is relayed as a normal response.  Open tunnels are closed when
the gateway stops.

Config: the gateway's own store (`StoreConfigSource`: ``/admin/proxy/*`` and
``helios proxy route add`` apply within a second), or ``proxy.config_file``
(helios proxy's YAML; re-read on SIGHUP, see `GatewayProxy.reload`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tornado.web import URLSpec, stream_request_body

from helios_core.digits import plain_int
from helios_core.errors import (
    AofWriteError,
    AuthenticationError,
    CommandError,
    ConfigError,
    HeliosError,
    PermissionDeniedError,
    RateLimitedError,
)
from helios_core.gateway.base import PROBE, BaseHandler, error_body
from helios_core.observability.logging import get_logger
from helios_core.proxy.exchange import Exchange
from helios_core.proxy.model import ProxyConfig, Route
from helios_core.proxy.server import Request
from helios_core.proxy.service import FileConfigSource, ProxyService
from helios_core.proxy.store_config import StoreConfigSource
from helios_core.proxy.tornado_client import TornadoClient
from helios_core.proxy.tunnel import StreamTunnel
from helios_core.ratelimit import Policy, RateLimitSettings

if TYPE_CHECKING:
    from helios_core.config import HeliosConfig
    from helios_core.gateway.context import Gateway
    from helios_core.store.base import Store

__all__ = ["GatewayProxy", "ProxiedHandler", "PROXIED_PATTERN", "proxied_url_spec", "route_policy"]

log = get_logger("gateway.proxy")

# Everything outside /api/ and /admin/; the ops endpoints are matched by their own handlers first.
PROXIED_PATTERN = r"(?!/api/|/admin/).*"

_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")
_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
                  "proxy-authorization", "proxy-authenticate", "proxy-connection"})
# Made again for this hop, or the gateway's own business.
_REPLACED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "traceparent",
                       "x-request-id", "authorization", "content-length", "expect"})
GAUGE_INTERVAL = 2.0  # seconds between refreshes of the proxy's health and breaker gauges
_PENDING_LIMIT = 256 * 1024  # request body bytes held while the upstream connection is being made
_UNLIMITED_BODY = 1 << 62
_CODES = {413: "payload_too_large", 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}
_WINDOWS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
            "d": 86400, "day": 86400}
_RATE_RE = re.compile(r"\s*(\d+)\s*(?:/|per\s+)\s*(\d*)\s*([a-z]+)\s*")
_PAIR_RE = re.compile(r"\s*(\d+)\s+(\d+)\s*")


def route_policy(spec: str, settings: RateLimitSettings) -> Policy:
    """The `Policy` a route's ``rate_limit`` names; HeliosError (500) when it names nothing known.

    ``"100/s"``, ``"600/min"``, ``"10/5s"``, ``"1000/h"``, ``"100 per 10s"``, ``"100 60"`` (LIMIT SECONDS,
    as in ``ratelimit.*``), or a policy name from ``ratelimit.roles`` (as the example config's
    ``rate_limit: proxy-api``).
    """
    text = spec.strip().lower()
    m = _RATE_RE.fullmatch(text)
    if m is not None and m.group(3) in _WINDOWS:
        count = int(m.group(2)) if m.group(2) else 1
        return Policy(max(1, int(m.group(1))), max(1, count * _WINDOWS[m.group(3)]), f"route {spec.strip()}")
    m = _PAIR_RE.fullmatch(text)
    if m is not None:
        return Policy(max(1, int(m.group(1))), max(1, int(m.group(2))), f"route {spec.strip()}")
    named = settings.roles.get(spec.strip())
    if named is not None:
        return named
    raise HeliosError(f"rate_limit {spec!r} is neither LIMIT/WINDOW (e.g. 100/s) nor a policy in "
                      f"ratelimit.roles", code="bad_config", status=500)


class GatewayProxy:
    """The proxy state of one gateway process: a `ProxyService` (router, pools, health) and its config source."""

    def __init__(self, config: HeliosConfig, store: Store, *, poll_interval: float = 5.0) -> None:
        self.config_file = config.proxy.config_file
        self.store = store
        self.source: FileConfigSource | StoreConfigSource = (
            FileConfigSource(self.config_file) if self.config_file
            else StoreConfigSource(store, poll_interval=poll_interval))
        self.service: ProxyService | None = None
        self._watch: asyncio.Task[None] | None = None
        self._gauges: asyncio.Task[None] | None = None
        self._reloads: set[asyncio.Task[None]] = set()
        self.tunnels: set[StreamTunnel] = set()  # upgraded connections (WebSockets) open now

    async def start(self) -> None:
        """Load the routes and start the health checker and the config watch.

        An invalid file refuses the start (as ``helios proxy --config``); an invalid config in the
        store starts with no routes (every proxied path 404) until a valid one is stored.
        """
        if self.service is not None:
            return
        try:
            config = await self.source.load()
        except ConfigError as e:
            if self.config_file:
                raise
            log.error("proxy config in the store not applied; proxying no routes until it is fixed",
                      error=e.message)
            config = ProxyConfig()
        # The gateway writes its own access log line per request: the proxy's would be a second one.
        self.service = ProxyService(config, access_log=False)
        self.service.start()
        self._watch = asyncio.create_task(self.source.watch(self.apply), name="helios-gateway-proxy-watch")
        self._gauges = asyncio.create_task(self._refresh_gauges(), name="helios-gateway-proxy-gauges")
        log.info("gateway proxy enabled", source=self.source.describe(), routes=len(config.routes),
                 pools=len(config.pools), version=config.version)

    def apply(self, config: ProxyConfig) -> None:
        if self.service is not None:
            self.service.apply(config)
            log.info("proxy config applied", version=config.version, routes=len(config.routes),
                     pools=len(config.pools))

    async def reload(self) -> None:
        """Re-read the config now (SIGHUP); an invalid one is logged and the running one stays."""
        try:
            self.apply(await self.source.load())
        except ConfigError as e:
            log.error("proxy config reload refused, the running config stays: {}", e.message)
        except Exception as e:  # a store hiccup must not end the gateway
            log.error("proxy config reload failed, the running config stays: {}", e)

    def reload_soon(self) -> None:
        """For a signal handler: schedule `reload` on the running loop."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _refresh_gauges(self, interval: float = GAUGE_INTERVAL) -> None:
        """proxy_backend_healthy and proxy_circuit_state, read from the pools' state.

        `helios proxy` sets them when its metrics are scraped; the gateway's /metrics handler renders
        the registry without asking the proxy, so here they are refreshed on a timer instead.
        """
        while True:
            service = self.service
            if service is not None:
                try:
                    now = service.clock()
                    service.metrics.refresh(service.config.routes,
                                            {pid: ps.status(now) for pid, ps in service.pools.items()})
                except Exception as e:  # a gauge must never end the loop
                    log.warning("proxy gauges not refreshed", error=str(e))
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        self.source.close()
        for task in (self._watch, self._gauges):
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: S110 - ending anyway
                    pass
        self._watch = self._gauges = None
        for tunnel in list(self.tunnels):  # detached from Tornado: its connection closing misses them
            tunnel.close()
        service, self.service = self.service, None
        if service is not None:
            await service.stop()


@stream_request_body
class ProxiedHandler(BaseHandler):
    """Every path outside /api/ and /admin/: the route's checks, then forwarded through the proxy."""

    route = "proxy"  # the metrics label; not a path of the OpenAPI document (not in routes.HANDLERS)
    needs = {m: PROBE for m in _METHODS}

    def initialize(self, gateway: Gateway, proxy: GatewayProxy) -> None:  # type: ignore[override]
        super().initialize(gateway)
        self.proxy = proxy
        self.exchange: Exchange | None = None
        self.req: Request | None = None
        self.adapter: TornadoClient | None = None
        self.answered = False
        self._holds: set[str] = set()
        self._held: asyncio.Future[None] | None = None
        self._received = 0  # body bytes of a Content-Length request seen so far
        self._over: asyncio.Future[None] | None = None
        self.tunnel: StreamTunnel | None = None  # after a 101, until the stream is detached

    def set_default_headers(self) -> None:
        del self._headers["Server"]

    def compute_etag(self) -> str | None:
        return None  # the backend's response, not ours to tag (Tornado would hash an empty buffer)

    # -- checks ------------------------------------------------------------------------

    async def prepare(self) -> None:
        gw = self.gw
        gw.inflight += 1
        self._tracked = True
        self.sticky_header("X-Request-ID", self.request_id)
        # This hop's span (tracing on) or ids, child of the caller's trace or a new one: sent upstream
        # as the parent.
        self._start_trace()

        service = self.proxy.service
        if service is None:
            raise HeliosError("the proxy is not running", code="unavailable", status=503)
        method = self.request.method or "GET"
        match = service.router.match(self.request.host or "", self.request.uri or "/", method)
        if match is None:
            raise HeliosError(f"no route for {method} {self.request.path[:200]}", code="not_found", status=404)
        route = match.route
        if self._span is not None:  # named "GET proxy" until the route was known
            self._span.update_name(f"{method} {route.id}")
            self._span.set_attribute("http.route", route.id)
        if route.require_auth:
            try:
                await self._authenticate()
            except AuthenticationError:
                if route.rate_limit:
                    await self._route_limit(route)  # guessing tokens is limited like anything else
                raise
        if route.rate_limit:
            await self._route_limit(route)
        if route.permissions:
            p = self.me()
            missing = [name for name in route.permissions if not p.can(name)]
            if missing:
                raise PermissionDeniedError(f"permission {', '.join(missing)} (route {route.id}) is not granted "
                                            f"to {p.username} (roles: {', '.join(p.roles) or 'none'})")
        pool_state = service.pools.get(route.pool)
        if pool_state is None:
            raise HeliosError(f"pool {route.pool!r} is not configured", code="unavailable", status=503)
        self._start(service, route, match.upstream_path, pool_state)

    async def _route_limit(self, route: Route) -> None:
        gw = self.gw
        p = self.principal
        who = f"user:{p.user_id}" if p is not None else f"ip:{self.client}"
        try:
            policy = route_policy(route.rate_limit or "", await gw.limiter.settings())
            d = await gw.limiter.hit_policy(f"proxy:{route.id}:{who}", policy, self.now_ms())
        except (CommandError, AofWriteError) as e:
            log.warning("rate limiter unavailable; request let through", error=str(e))
            return
        reset_s = -(-d.reset_ms // 1000)
        self.sticky_header("RateLimit-Policy", f'"{route.id}";q={policy.limit};w={policy.window_s}')
        self.sticky_header("RateLimit", f'"{route.id}";r={d.remaining};t={reset_s}')
        if not d.allowed:
            gw.metrics.rate_denied.labels("proxy").inc()
            raise RateLimitedError(f"rate limit of route {route.id} ({policy.limit} requests per "
                                   f"{policy.window_s} s) exceeded", retry_after_ms=d.retry_after_ms)

    # -- forwarding --------------------------------------------------------------------

    def _start(self, service: ProxyService, route: Route, upstream_path: str, pool_state: Any) -> None:
        request = self.request
        headers = request.headers
        req = Request()
        req.method = request.method or "GET"
        req.url = (request.uri or "/").encode("latin-1")
        req.http11 = True
        req.keep_alive = True
        # The Host header as sent (Tornado's request.host falls back to 127.0.0.1 without one; the
        # exchange then sends the backend's own host:port instead).
        req.host = headers.get("Host", "").encode("latin-1")
        req.request_id = self.request_id
        req.trace_id = self.trace_id
        req.started = service.clock()
        te = headers.get("Transfer-Encoding")
        length = headers.get("Content-Length")
        req.chunked = te is not None
        req.length = plain_int(length, 18)
        limit = service.config.max_body_bytes
        if limit is not None and req.length is not None and req.length > limit:
            request.connection.set_max_body_size(req.length)  # type: ignore[union-attr]  # drained, not 400
            raise HeliosError(f"request body over {limit} bytes", code="payload_too_large", status=413)
        # The gateway's body limits are for its own API: a proxied body is bounded by the proxy config.
        request.connection.set_max_body_size(limit if limit is not None else _UNLIMITED_BODY)  # type: ignore[union-attr]
        request.connection.set_body_timeout(route.timeouts.total)  # type: ignore[union-attr]
        req.complete = not req.chunked and not req.length
        upgrade = headers.get("Upgrade")
        if upgrade and "upgrade" in headers.get("Connection", "").lower():
            req.upgrade = upgrade.encode("latin-1")
        req.fwd = self._forwarded_headers(req)
        self.req = req
        self.adapter = adapter = TornadoClient(self, service)
        exchange = Exchange(adapter, req, route, upstream_path, pool_state)  # type: ignore[arg-type]
        adapter.exchange = self.exchange = req.exchange = exchange
        self._over = asyncio.get_running_loop().create_future()
        exchange.start()

    def _forwarded_headers(self, req: Request) -> bytes:
        request = self.request
        headers = request.headers
        named = {t.strip().lower() for t in headers.get("Connection", "").split(",") if t.strip()}
        out = []
        for name, value in headers.get_all():
            low = name.lower()
            if low in _HOP or low in _REPLACED or low in named or low.startswith("proxy-"):
                continue
            out.append(f"{name}: {value}\r\n")
        peer = request.remote_ip or ""
        trusted = self.gw.proxies.trusted(peer)  # X-Forwarded-* believed only from gateway.trusted_proxies
        xff = ", ".join(headers.get_list("X-Forwarded-For")) if trusted else ""
        out.append(f"X-Request-Id: {self.request_id}\r\n")
        out.append(f"X-Forwarded-For: {xff + ', ' + peer if xff else peer}\r\n")
        proto = headers.get("X-Forwarded-Proto") if trusted else None
        out.append(f"X-Forwarded-Proto: {proto or request.protocol}\r\n")
        fwd_host = (headers.get("X-Forwarded-Host") if trusted else None) or request.host
        if fwd_host:
            out.append(f"X-Forwarded-Host: {fwd_host}\r\n")
        via = ", ".join(headers.get_list("Via"))
        out.append(f"Via: {via + ', ' if via else ''}1.1 helios\r\n")
        out.append(f"traceparent: {self.traceparent}\r\n")
        if req.upgrade is not None:
            out.append(f"Connection: Upgrade\r\nUpgrade: {req.upgrade.decode('latin-1')}\r\n")
        if req.chunked:
            out.append("Transfer-Encoding: chunked\r\n")
        elif req.length is not None:
            out.append(f"Content-Length: {req.length}\r\n")
        return "".join(out).encode("latin-1")

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        req, exchange = self.req, self.exchange
        if self._finished or req is None or exchange is None or exchange.done:
            return None  # answered already: the rest of the body is dropped
        self._body(b"%x\r\n%b\r\n" % (len(chunk), chunk) if req.chunked else chunk)
        if req.length is not None and not req.chunked:
            self._received += len(chunk)
            if self._received >= req.length and not req.complete:
                # The whole body is here: the request is complete now, not when Tornado calls put()
                # a moment later.  A backend answering in between would otherwise look like one that
                # answered mid-body, and the client's keep-alive connection would be closed.
                req.complete = True
                exchange.request_complete()
        return self._held

    def _body(self, framed: bytes) -> None:
        req, exchange = self.req, self.exchange
        if req is None or exchange is None:
            return
        if exchange.conn is not None and exchange.sent_head:
            exchange.write_body(framed)
            return
        req.pending.append(framed)
        req.pending_bytes += len(framed)
        if req.pending_bytes > _PENDING_LIMIT:
            self.hold_body("buffer")

    async def _forward(self) -> None:
        req, exchange = self.req, self.exchange
        if req is None or exchange is None or self._over is None:
            return
        if not req.complete:
            req.complete = True
            if req.chunked:
                self._body(b"0\r\n\r\n")
            if not exchange.done:
                exchange.request_complete()
        await self._over
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None and not tunnel.closed:
            self._upgrade(tunnel)

    def _upgrade(self, tunnel: StreamTunnel) -> None:
        """Take the client's connection from Tornado and splice it to the backend's (after its 101)."""
        self.set_status(101)
        self._untrack()  # a WebSocket may live for hours: not a request the gateway's shutdown waits for
        stream = self.detach()
        self.gw.request_done(self)  # the request's metrics and access log line, as finish() would
        self._end_trace()  # on_finish never runs for a detached request
        tunnel.attach(stream)

    async def get(self) -> None:
        await self._forward()

    async def head(self) -> None:
        await self._forward()

    async def post(self) -> None:
        await self._forward()

    async def put(self) -> None:
        await self._forward()

    async def patch(self) -> None:
        await self._forward()

    async def delete(self) -> None:
        await self._forward()

    async def options(self) -> None:
        await self._forward()

    # -- called by the adapter ---------------------------------------------------------

    def hold_body(self, why: str) -> None:
        """Stop reading the request body (Tornado waits on the future `data_received` returns)."""
        self._holds.add(why)
        if self._held is None:
            self._held = asyncio.get_running_loop().create_future()

    def release_body(self, why: str) -> None:
        self._holds.discard(why)
        if not self._holds and self._held is not None:
            held, self._held = self._held, None
            if not held.done():
                held.set_result(None)

    def exchange_over(self) -> None:
        self._holds.clear()
        self.release_body("")
        if self._over is not None and not self._over.done():
            self._over.set_result(None)
        req = self.req
        if self.answered and not self._finished and req is not None and not req.complete:
            # The backend answered before the request body ended: answer now; Tornado then closes the
            # connection rather than read the rest of the body for nothing.
            self.finish()

    def answer_error(self, status: int, message: str, retry_after: int | None) -> None:
        if not self._finished and not self.answered:
            if retry_after is not None:
                self._sticky["Retry-After"] = str(retry_after)
            self.send_error(status, exc_info=(HeliosError, HeliosError(message, code=_CODES.get(status, "error"),
                                                                       status=status), None))
        self.exchange_over()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.answered:  # the backend's head went out already: nothing more can be said
            return
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, HeliosError) and status_code >= 500 and status_code != 503:
            # The gateway's write_error hides 5xx details (they are its bugs); a proxy's 502/504 is not.
            for name, value in self._sticky.items():
                self.set_header(name, value)
            self.set_header("Content-Type", "application/json")
            self.finish(error_body(exc.code, exc.message, self.request_id))
            return
        super().write_error(status_code, **kwargs)

    def on_connection_close(self) -> None:
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is not None:  # the client left between the 101 and the detach
            tunnel.close()
        exchange = self.exchange
        if exchange is not None and not exchange.done:
            if self.adapter is not None:
                self.adapter.closing = True
            exchange.client_lost()
        self.exchange_over()
        super().on_connection_close()


def proxied_url_spec(gateway: Gateway, proxy: GatewayProxy) -> URLSpec:
    """The catch-all route; mount it after every other one."""
    return URLSpec(PROXIED_PATTERN, ProxiedHandler, {"gateway": gateway, "proxy": proxy}, name="ProxiedHandler")

