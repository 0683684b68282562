"""What every handler reaches through `self.gw`: the services, the clock, the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler

from helios_core.auth.audit import AuditLog
from helios_core.auth.service import AuthService
from helios_core.clock import ServiceClock, service_clock, wall_ms
from helios_core.config import HeliosConfig
from helios_core.gateway.accesslog import AccessLog
from helios_core.gateway.base import BaseHandler
from helios_core.gateway.limits import TrustedProxies
from helios_core.gateway.storeops import StoreOps
from helios_core.jobs.queue import JobQueue, QueueStats
from helios_core.observability import metrics
from helios_core.ratelimit import RateLimiter
from helios_core.store.base import Store

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

__all__ = ["Gateway", "GatewayMetrics", "JobMetrics"]

@dataclass
class GatewayMetrics:
    requests: Counter = field(default_factory=lambda: metrics.counter(
        "helios_requests", "HTTP requests answered by the gateway.", ("method", "route", "status")))
    duration: Histogram = field(default_factory=lambda: metrics.histogram(
        "helios_request_duration_seconds", "Time from request head to response, by route.", ("route",)))
    rate_denied: Counter = field(default_factory=lambda: metrics.counter(
        "rate_limiter_denied", "Requests refused by a rate limiter (429).", ("limiter",)))
    # 0 unless the wall clock stepped and the service clock is slewing toward it (helios_core/clock.py).
    clock_behind: Gauge = field(default_factory=lambda: metrics.gauge(
        "helios_service_clock_behind_wall_seconds", "How far the service clock (job deadlines, rate limits) "
        "is behind the wall clock; 0 unless a wall-clock step is being slewed (negative: ahead)."))
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
class JobMetrics:
    """The job queue as the gateway sees it: what was enqueued, how jobs ended, how deep queues are."""

    enqueued: Counter = field(default_factory=lambda: metrics.counter(
        "jobs_enqueued", "Jobs created (dedup hits not counted).", ("queue",)))
    finished: Counter = field(default_factory=lambda: metrics.counter(
        "jobs_finished", "Deliveries that ended: done (ack), failed (into the DLQ), retried (nack with "
        "attempts left), expired (the lease ran out: back to the queue, or into the DLQ when out of attempts), "
        "cancelled.", ("queue", "outcome")))
    depth: Gauge = field(default_factory=lambda: metrics.gauge(
        "worker_job_queue_depth", "Jobs per queue and state (refreshed every 15 s by the gateway's reaper).",
        ("queue", "state")))
    # 0 unless the wall clock stepped and the service clock is slewing toward it (helios_core/clock.py).
    clock_behind: Gauge = field(default_factory=lambda: metrics.gauge(
        "helios_service_clock_behind_wall_seconds", "How far the service clock (job deadlines, rate limits) "
        "is behind the wall clock; 0 unless a wall-clock step is being slewed (negative: ahead)."))
    # labels() takes a lock and builds a key on every call: keep the children.
    _enqueued: dict[str, Any] = field(default_factory=dict)
    _finished: dict[tuple[str, str], Any] = field(default_factory=dict)

    def enqueue(self, queue: str, n: int = 1) -> None:
        child = self._enqueued.get(queue)
        if child is None:
            child = self._enqueued[queue] = self.enqueued.labels(queue)
        child.inc(n)

    def finish(self, queue: str, outcome: str, n: int = 1) -> None:
        key = (queue, outcome)
        child = self._finished.get(key)
        if child is None:
            child = self._finished[key] = self.finished.labels(queue, outcome)
        child.inc(n)

    def set_depth(self, stats: list[QueueStats], label: Callable[[str], str]) -> None:
        """Replace every depth series: forgotten queues drop out, and queues past the label cap
        (`label` maps them to one shared value) are summed into it."""
        depth: dict[tuple[str, str], int] = {}
        for s in stats:
            name = label(s.queue)
            for state, n in (("pending", s.pending), ("delayed", s.delayed), ("in_progress", s.in_progress),
                             ("done", s.done), ("failed", s.failed)):
                depth[(name, state)] = depth.get((name, state), 0) + n
        self.depth.clear()
        for (name, state), n in depth.items():
            self.depth.labels(name, state).set(n)


@dataclass
class Gateway:
    config: HeliosConfig
    store: Store
    auth: AuthService
    limiter: RateLimiter
    audit: AuditLog
    ops: StoreOps
    proxies: TrustedProxies
    jobs: JobQueue
    clock: Callable[[], int] = service_clock  # never steps: lease deadlines and buckets (helios_core/clock.py)
    # Tokens, sessions and audit times: the real wall clock, as the other gateways minting and checking
    # the same tokens read it (a token from an unstepped peer must not look issued in the future).
    # None: wall_ms beside the service clock, else the clock given (tests pass one fake time for both).
    wall_clock: Callable[[], int] | None = None
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    job_metrics: JobMetrics = field(default_factory=JobMetrics)
    inflight: int = 0
    draining: bool = False
    access: AccessLog | None = None
    # Set with `draining` by `drain()`: long polls (job leases) wait on it and end early.
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.wall_clock is None:
            self.wall_clock = wall_ms if self.clock is service_clock else self.clock
        if isinstance(self.clock, ServiceClock):
            clock = self.clock
            self.metrics.clock_behind.set_function(lambda: clock.behind_wall_ms() / 1000)
        if self.access is None:
            self.access = AccessLog(self.config.log.level, self.config.log.format)

    def wall(self) -> int:
        """Milliseconds on the wall clock (see wall_clock)."""
        return (self.wall_clock or wall_ms)()

    def drain(self) -> None:
        """Shutting down: /readyz answers 503 and long polls return what they have."""
        self.draining = True
        self.drained.set()

    def client_address(self, request: HTTPServerRequest) -> str:
        return self.proxies.client(request)

    def request_done(self, handler: RequestHandler) -> None:
        """Tornado's log_function: one metrics update and one log line per request."""
        if not isinstance(handler, BaseHandler):
            return
        request = handler.request
        method = request.method or ""
        status = handler.get_status()
        route = handler.route or "unmatched"
        seconds = request.request_time()
        self.metrics.observe(method, route, status, seconds)
        access = self.access
        if access is not None and self.config.gateway.access_log:
            p = handler.principal
            access.request(handler.request_id, method, route, request.path, status, round(seconds * 1000, 3),
                           p.username if p else None, handler.client, handler.trace_id)
