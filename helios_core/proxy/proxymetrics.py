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

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Histogram

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
