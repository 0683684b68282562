"""The proxy's Prometheus metrics.

- ``proxy_requests_total{route,backend,code}``: requests answered, by the status the client got
  (``backend`` is empty when the proxy answered itself: no backend available, timeouts before one
  was reached; ``route`` is "unmatched" for a 404 without a route);
- ``proxy_upstream_duration_seconds{route,backend}``: time from sending a try to a backend to the
  end of its response (failed tries included);
- ``proxy_retries_total{route}``: tries made on another backend;
- ``proxy_backend_healthy{route,backend}``: 1 when the backend can be picked now (healthy, not
  ejected, breaker not open), 0 otherwise; one series per route and each backend of the route's
  pool, since routes are what operators alert on;
- ``proxy_circuit_state{backend}``: 0 closed, 1 half-open, 2 open.

The two gauges are read from the pools' state when metrics are scraped (`refresh`), not kept up
to date on every request.  Label children are cached so a request costs two dict lookups.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.values import MutexValue

from helios_core.observability.metrics import counter, gauge, histogram, render

__all__ = ["ProxyMetrics", "CIRCUIT_STATES"]

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}


class ProxyMetrics:
    def __init__(self) -> None:
        self.requests = counter("proxy_requests_total", "Requests answered by the proxy.",
                                ("route", "backend", "code"))
        self.duration = histogram("proxy_upstream_duration_seconds",
                                  "Time from sending a try to a backend to the end of its response.",
                                  ("route", "backend"))
        self.retries = counter("proxy_retries_total", "Tries made on another backend.", ("route",))
        self.healthy = gauge("proxy_backend_healthy", "1 when the backend can be picked (healthy, not "
                             "ejected, breaker not open).", ("route", "backend"))
        self.circuit = gauge("proxy_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
                             ("backend",))
        self._requests: dict[tuple[str, str, int], Counter] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        # (route, backend, code) -> the value cells one answered try adds to: the counter's, the
        # histogram's sum and buckets, and the buckets' bounds (a bisect instead of observe's loop).
        self._answered: dict[tuple[str, str, int], tuple[MutexValue, MutexValue, list[MutexValue], list[float]]
                             | None] = {}
        self._retries: dict[str, Counter] = {}
        self._seen_health: set[tuple[str, str]] = set()
        self._seen_circuit: set[str] = set()

    def request(self, route: str, backend: str, code: int) -> None:
        key = (route, backend, code)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, backend, str(code))
        child.inc()

    def upstream(self, route: str, backend: str, code: int, seconds: float) -> None:
        key = (route, backend)
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = self.duration.labels(route, backend)
        child.observe(max(0.0, seconds))

    def answered(self, route: str, backend: str, code: int, seconds: float) -> None:
        """`upstream` and `request` at once: a backend's answer relayed to the client (the common case)."""
        key = (route, backend, code)
        try:
            fast = self._answered[key]
        except KeyError:
            fast = self._answered[key] = self._fast(route, backend, code)
        if fast is None:
            self.upstream(route, backend, code, seconds)
            self.request(route, backend, code)
            return
        count, total, buckets, bounds = fast
        if seconds < 0.0:
            seconds = 0.0
        # The cells' floats are added to directly: their inc() takes a lock per call, three a request,
        # and only this loop's thread writes them (a scrape reads a float, atomic under the GIL).
        total._value += seconds  # noqa: SLF001
        i = bisect_left(bounds, seconds)
        if i < len(buckets):
            buckets[i]._value += 1  # noqa: SLF001
        count._value += 1  # noqa: SLF001

    def _fast(self, route: str, backend: str, code: int) -> tuple[MutexValue, MutexValue, list[MutexValue],
                                                                  list[float]] | None:
        """The value cells behind the labelled children, if they are plain in-process floats (else None:
        multiprocess mode's cells live in files and must be written through their methods)."""
        key = (route, backend, code)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = self.requests.labels(route, backend, str(code))
        hist = self._durations.get((route, backend))
        if hist is None:
            hist = self._durations[(route, backend)] = self.duration.labels(route, backend)
        try:
            count = counter._value  # noqa: SLF001
            total = hist._sum  # noqa: SLF001
            buckets = list(hist._buckets)  # noqa: SLF001
            bounds = list(hist._upper_bounds)  # noqa: SLF001
        except AttributeError:
            return None
        if len(buckets) != len(bounds) or any(type(v) is not MutexValue for v in (count, total, *buckets)):
            return None
        return count, total, buckets, bounds

    def retry(self, route: str) -> None:
        child = self._retries.get(route)
        if child is None:
            child = self._retries[route] = self.retries.labels(route)
        child.inc()

    def refresh(self, routes: Iterable[Any], pool_status: Mapping[str, list[dict[str, Any]]]) -> None:
        """Set the gauges from `pool_status` (pool id -> each backend's ``status(now)``)."""
        health: set[tuple[str, str]] = set()
        circuit: set[str] = set()
        for status in pool_status.values():
            for b in status:
                self.circuit.labels(b["id"]).set(CIRCUIT_STATES.get(str(b.get("breaker")), 0))
                circuit.add(b["id"])
        for route in routes:
            for b in pool_status.get(route.pool, ()):
                self.healthy.labels(route.id, b["id"]).set(1 if b.get("available", b.get("healthy")) else 0)
                health.add((route.id, b["id"]))
        # Series of removed routes and backends go away rather than report a stale value forever.
        for key in self._seen_health - health:
            self.healthy.remove(*key)
        for backend_id in self._seen_circuit - circuit:
            self.circuit.remove(backend_id)
        self._seen_health, self._seen_circuit = health, circuit

    @staticmethod
    def render() -> bytes:
        return render()
