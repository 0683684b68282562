"""What every handler reaches through `self.gw`: the services, the clock, the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler

from helios_core.auth.audit import AuditLog
from helios_core.auth.service import AuthService
from helios_core.config import HeliosConfig
from helios_core.gateway.accesslog import AccessLog
from helios_core.gateway.limits import TrustedProxies
from helios_core.gateway.storeops import StoreOps
from helios_core.observability import metrics
from helios_core.ratelimit import RateLimiter
from helios_core.store.base import Store

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

__all__ = ["Gateway", "GatewayMetrics", "wall_ms"]

def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class GatewayMetrics:
    requests: Counter = field(default_factory=lambda: metrics.counter(
        "helios_requests", "HTTP requests answered by the gateway.", ("method", "route", "status")))
    duration: Histogram = field(default_factory=lambda: metrics.histogram(
        "helios_request_duration_seconds", "Time from request head to response, by route.", ("route",)))
    rate_denied: Counter = field(default_factory=lambda: metrics.counter(
        "rate_limiter_denied", "Requests refused by a rate limiter (429).", ("limiter",)))
    # labels() takes a lock and builds a key on every call: keep the children.
    _children: dict[tuple[str, str, int], tuple[Any, Any]] = field(default_factory=dict)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(method, route, str(status)),
                                           self.duration.labels(route))
        child[0].inc()
        child[1].observe(seconds)


@dataclass
class Gateway:
    config: HeliosConfig
    store: Store
    auth: AuthService
    limiter: RateLimiter
    audit: AuditLog
    ops: StoreOps
    proxies: TrustedProxies
    clock: Callable[[], int] = wall_ms
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    inflight: int = 0
    draining: bool = False
    access: AccessLog | None = None

    def __post_init__(self) -> None:
        if self.access is None:
            self.access = AccessLog(self.config.log.level, self.config.log.format)

    def client_address(self, request: HTTPServerRequest) -> str:
        return self.proxies.client(request)

    def request_done(self, handler: RequestHandler) -> None:
        """Tornado's log_function: one metrics update and one log line per request."""
        from helios_core.gateway.base import BaseHandler

        status = handler.get_status()
        method = handler.request.method or ""
        if isinstance(handler, BaseHandler):
            route = handler.route or "unmatched"
            seconds = handler.request.request_time()
            self.metrics.observe(method, route, status, seconds)
            if self.config.gateway.access_log and self.access is not None:
                p = handler.principal
                self.access.write({"request_id": handler.request_id, "method": method, "route": route,
                                   "path": handler.request.path, "status": status,
                                   "duration_ms": round(seconds * 1000, 3), "user": p.username if p else None,
                                   "client": handler.client, "trace_id": handler.trace_id})
