"""Runtime state of a pool and its backends, per process: health, breaker, ejection, in-flight.

The data plane calls, for each try of a request::

    backend = pool_state.pick(now, exclude=tried_ids)   # None: answer 503
    backend.started()                                   # in_flight += 1; takes a half-open slot
    ...
    backend.finished(now, ok, connect_failure=...)      # in_flight -= 1; feeds breaker + outlier

`ok` is False for a connect failure, a timeout, or a 5xx the caller counts against the backend
(502/503/504 at least). The HealthChecker calls `health_result`. A config reload calls
`PoolState.update(pool)`, which keeps the state of every backend whose id and url are unchanged.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from helios_core.proxy.balancers import Balancer, make_balancer
from helios_core.proxy.breaker import CLOSED, CircuitBreaker
from helios_core.proxy.health import HealthState, OutlierState, ejection_allowed
from helios_core.proxy.model import Backend, Pool

__all__ = ["BackendState", "PoolState"]


class BackendState:
    """One backend's state. Hashed by identity (the HealthChecker keys its schedule on it)."""

    def __init__(self, backend: Backend, pool: Pool, pool_state: PoolState | None = None) -> None:
        self.backend = backend
        self.pool = pool
        self.id = backend.id  # plain attributes, not properties: balancers read them on every pick
        self.weight = backend.weight
        self.in_flight = 0
        self.health = HealthState(pool.health)
        self.breaker = CircuitBreaker(pool.breaker)
        self.outlier = OutlierState(pool.outlier)
        self.requests = 0
        self.failures = 0
        self._pool_state = pool_state

    def reconfigure(self, backend: Backend, pool: Pool) -> None:
        """New settings (weight, thresholds) for the same backend; counters and states are kept."""
        self.backend, self.pool = backend, pool
        self.id, self.weight = backend.id, backend.weight
        self.health.configure(pool.health)
        self.breaker.cfg = pool.breaker
        self.outlier.cfg = pool.outlier

    def available(self, now: float) -> bool:
        """Healthy, not ejected, and the breaker admits a request."""
        # Asked of every backend on every pick: the common answers are read without method calls.
        if not self.health.healthy:
            return False
        if now < self.outlier.ejected_until and self.outlier.cfg.enabled:
            return False
        breaker = self.breaker
        return breaker._state == CLOSED or breaker.allow(now)

    def started(self, now: float | None = None) -> None:
        self.in_flight += 1
        self.requests += 1
        self.breaker.begin(now)

    def finished(self, now: float, ok: bool, connect_failure: bool = False) -> None:
        """The try ended. A connect failure is always a failure, whatever `ok` says."""
        if self.in_flight > 0:
            self.in_flight -= 1
        if ok and not connect_failure:
            # The usual case, made cheap: the breaker counts a success in its window, and a success
            # only resets the outlier's run of failures (what OutlierState.record does with it).
            self.breaker.success(now)
            self.outlier.consecutive = 0
            return
        self.failures += 1
        self.breaker.record(now, False)
        may_eject = self._pool_state.may_eject if self._pool_state is not None else None
        self.outlier.record(now, False, may_eject)

    def health_result(self, now: float, ok: bool) -> bool:
        """An active check's result; True when it changed healthy/unhealthy."""
        return self.health.result(now, ok)

    def status(self, now: float) -> dict[str, Any]:
        ejected = self.outlier.ejected(now)
        return {
            "id": self.backend.id,
            "url": self.backend.url,
            "weight": self.backend.weight,
            "healthy": self.health.healthy,
            "available": self.available(now),
            "breaker": self.breaker.state(now),
            "in_flight": self.in_flight,
            "ejections": self.outlier.ejections,
            "ejected_until": self.outlier.ejected_until if ejected else None,
            "requests": self.requests,
            "failures": self.failures,
        }


class PoolState:
    def __init__(self, pool: Pool, *, balancer: Balancer | None = None) -> None:
        self.pool = pool
        self.balancer = balancer or make_balancer(pool.balancer)
        self.backends: list[BackendState] = [BackendState(b, pool, self) for b in pool.backends]

    @property
    def id(self) -> str:
        return self.pool.id

    def may_eject(self, now: float) -> bool:
        """Whether one more backend may be ejected without passing max_ejected_share."""
        ejected = sum(1 for b in self.backends if b.outlier.ejected(now))
        return ejection_allowed(ejected, len(self.backends), self.pool.outlier.max_ejected_share)

    def pick(self, now: float, exclude: Collection[str] = ()) -> BackendState | None:
        """A backend for the next try, among the available ones not in `exclude` (ids); None if none."""
        if exclude:
            candidates = [b for b in self.backends if b.id not in exclude and b.available(now)]
        else:
            candidates = [b for b in self.backends if b.available(now)]
        return self.balancer.pick(candidates)

    def retry_after(self, now: float) -> float:
        """Seconds until some backend's breaker half-opens or ejection ends (for Retry-After); 0 if unknown."""
        waits = [b.breaker.retry_after(now) for b in self.backends if b.breaker.state(now) == "open"]
        waits += [b.outlier.ejected_until - now for b in self.backends if b.outlier.ejected(now)]
        return min(waits) if waits else 0.0

    def update(self, pool: Pool) -> None:
        """Apply a new config for this pool, keeping the state of backends with the same id and url."""
        old = {(b.backend.id, b.backend.url): b for b in self.backends}
        backends = []
        for backend in pool.backends:
            state = old.get((backend.id, backend.url))
            if state is None:
                state = BackendState(backend, pool, self)
            else:
                state.reconfigure(backend, pool)
            backends.append(state)
        if pool.balancer != self.pool.balancer:
            self.balancer = make_balancer(pool.balancer)
        self.pool = pool
        self.backends = backends

    def status(self, now: float) -> list[dict[str, Any]]:
        return [b.status(now) for b in self.backends]
