"""Load balancers: choose one backend among the available candidates.

A balancer sees only candidates that are available right now (healthy, not ejected, breaker
admitting, not excluded by a retry), in the pool's configured order, and keeps whatever state its
algorithm needs between picks. Candidates need `.id`, `.in_flight` and `.weight`
(a `BackendState` has them). One balancer instance per pool per process; not thread-safe (one event loop).

- round_robin: each candidate in turn.
- least_conn: fewest in-flight requests; ties broken in rotation, so an idle pool still spreads.
- weighted: nginx's smooth weighted round-robin (ngx_http_upstream_get_peer): every pick adds each
  candidate's weight to its current weight, takes the largest, and subtracts the total from it.
  Weights 5,1,1 give a a b a c a a, not a a a a a b c.
- p2c: power of two choices: two distinct random candidates, the one with fewer in flight.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

__all__ = ["Balancer", "LeastConn", "PowerOfTwo", "RoundRobin", "SmoothWeighted", "make_balancer"]


class _Backend(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def weight(self) -> int: ...


B = TypeVar("B", bound=_Backend)


class Balancer:
    name = ""

    def pick(self, candidates: Sequence[B]) -> B | None:  # pragma: no cover - interface
        raise NotImplementedError


class RoundRobin(Balancer):
    name = "round_robin"

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[B]) -> B | None:
        if not candidates:
            return None
        choice = candidates[self._next % len(candidates)]
        self._next = (self._next + 1) % (1 << 30)
        return choice


class LeastConn(Balancer):
    name = "least_conn"

    def __init__(self) -> None:
        self._next = 0

    def pick(self, candidates: Sequence[B]) -> B | None:
        n = len(candidates)
        if not n:
            return None
        start = self._next % n
        self._next = (self._next + 1) % (1 << 30)
        best = candidates[start]
        for i in range(1, n):
            c = candidates[(start + i) % n]
            if c.in_flight < best.in_flight:
                best = c
        return best


class SmoothWeighted(Balancer):
    name = "weighted"

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def pick(self, candidates: Sequence[B]) -> B | None:
        if not candidates:
            return None
        current = self._current
        total = 0
        best: B | None = None
        best_weight = 0
        for c in candidates:
            w = current.get(c.id, 0) + c.weight
            current[c.id] = w
            total += c.weight
            if best is None or w > best_weight:
                best, best_weight = c, w
        if best is None:
            return None
        current[best.id] = best_weight - total
        if len(current) > 2 * len(candidates) + 8:  # forget backends removed by reloads
            self._current = {c.id: current.get(c.id, 0) for c in candidates}
        return best


class PowerOfTwo(Balancer):
    name = "p2c"

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, candidates: Sequence[B]) -> B | None:
        n = len(candidates)
        if n < 2:
            return candidates[0] if n else None
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1  # a second, distinct index, uniformly
        a, b = candidates[i], candidates[j]
        return b if b.in_flight < a.in_flight else a


def make_balancer(name: str, *, rng: random.Random | None = None) -> Balancer:
    """A new balancer by its config name (round_robin | least_conn | weighted | p2c)."""
    if name == "round_robin":
        return RoundRobin()
    if name == "least_conn":
        return LeastConn()
    if name == "weighted":
        return SmoothWeighted()
    if name == "p2c":
        return PowerOfTwo(rng)
    raise ValueError(f"unknown balancer {name!r}; known: round_robin, least_conn, weighted, p2c")
