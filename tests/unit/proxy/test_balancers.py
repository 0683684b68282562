"""Balancers: round robin, least connections, nginx's smooth weighted round robin, power of two choices."""

from __future__ import annotations

import random
from collections import Counter, deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_core.proxy.balancers import make_balancer
from helios_core.proxy.model import Backend, HealthCheck, Pool
from helios_core.proxy.state import BackendState, PoolState


def pool(balancer: str, *weights: int, health: bool = True) -> Pool:
    backends = tuple(Backend(f"b{i}", f"http://127.0.0.1:{9000 + i}", w) for i, w in enumerate(weights))
    return Pool("p", backends, balancer, health=HealthCheck(enabled=health))


def picks(state: PoolState, n: int, now: float = 0.0) -> list[str]:
    out = []
    for _ in range(n):
        b = state.pick(now)
        assert b is not None
        out.append(b.id)
    return out


def test_weighted_three_to_one_over_4000_picks() -> None:
    counts = Counter(picks(PoolState(pool("weighted", 3, 1)), 4000))
    assert abs(counts["b0"] / 4000 - 0.75) <= 0.05
    assert abs(counts["b1"] / 4000 - 0.25) <= 0.05
    assert counts == {"b0": 3000, "b1": 1000}  # smooth WRR is exact over whole cycles


def test_weighted_is_smooth_as_nginx() -> None:
    # The sequence nginx documents for weights 5, 1, 1 (ngx_http_upstream_round_robin.c).
    state = PoolState(pool("weighted", 5, 1, 1))
    assert "".join("abc"[int(i[1])] for i in picks(state, 14)) == "aabacaa" * 2
    state = PoolState(pool("weighted", 3, 1))
    assert picks(state, 8) == ["b0", "b0", "b1", "b0"] * 2


@given(st.lists(st.integers(1, 20), min_size=1, max_size=6), st.integers(1, 5))
def test_weighted_exact_shares_property(weights: list[int], cycles: int) -> None:
    state = PoolState(pool("weighted", *weights))
    counts = Counter(picks(state, sum(weights) * cycles))
    assert counts == {f"b{i}": w * cycles for i, w in enumerate(weights)}


@given(st.lists(st.integers(1, 20), min_size=2, max_size=6))
def test_weighted_every_prefix_stays_close_to_the_shares(weights: list[int]) -> None:
    """Smoothness: after any n picks each backend is within 1.5 of n * w / total.

    (A plain weight-expanded round robin, e.g. c c c c c c c c a b for 1, 1, 8, is not: it is 1.6 off.)
    """
    state = PoolState(pool("weighted", *weights))
    total = sum(weights)
    counts: Counter[str] = Counter()
    for n, chosen in enumerate(picks(state, total * 2), start=1):
        counts[chosen] += 1
        for i, w in enumerate(weights):
            assert abs(counts[f"b{i}"] - n * w / total) <= 1.5


def test_round_robin_cycles_and_respects_exclude() -> None:
    state = PoolState(pool("round_robin", 1, 1, 1))
    assert picks(state, 6) == ["b0", "b1", "b2"] * 2
    for _ in range(10):
        chosen = state.pick(0.0, exclude={"b1"})
        assert chosen is not None and chosen.id != "b1"
    assert state.pick(0.0, exclude={"b0", "b1", "b2"}) is None


@given(st.integers(1, 8), st.integers(1, 50))
def test_round_robin_even_property(n: int, rounds: int) -> None:
    state = PoolState(pool("round_robin", *([1] * n)))
    assert set(Counter(picks(state, n * rounds)).values()) == {rounds}


def test_least_conn_avoids_the_busy_backend() -> None:
    state = PoolState(pool("least_conn", 1, 1, 1))
    busy = state.backends[0]
    for _ in range(5):
        busy.started()
    assert "b0" not in picks(state, 20)
    # Ties rotate, so an idle pool still spreads.
    idle = PoolState(pool("least_conn", 1, 1, 1))
    assert set(picks(idle, 3)) == {"b0", "b1", "b2"}


def test_p2c_avoids_the_busy_backend() -> None:
    balancer = make_balancer("p2c", rng=random.Random(7))
    state = PoolState(pool("p2c", 1, 1, 1), balancer=balancer)
    state.backends[2].started()
    state.backends[2].started()
    # The busiest of three can never win a pair: it always meets one with fewer in flight.
    assert "b2" not in picks(state, 300)


@pytest.mark.parametrize("name", ["least_conn", "p2c"])
def test_least_request_balancers_steer_away_from_a_slow_backend(name: str) -> None:
    """Simulated time: b0 answers in 10 ticks, b1 and b2 in 1. Two new requests per tick."""
    state = PoolState(pool(name, 1, 1, 1), balancer=make_balancer(name, rng=random.Random(1)))
    latency = {"b0": 10, "b1": 1, "b2": 1}
    pending: deque[tuple[int, BackendState]] = deque()
    counts: Counter[str] = Counter()
    for tick in range(2000):
        while pending and pending[0][0] <= tick:
            _, done = pending.popleft()
            done.finished(float(tick), ok=True)
        for _ in range(2):
            b = state.pick(float(tick))
            assert b is not None
            b.started(float(tick))
            counts[b.id] += 1
            pending.append((tick + latency[b.id], b))
            pending = deque(sorted(pending, key=lambda p: p[0]))
    share = counts["b0"] / sum(counts.values())
    assert share < 0.2, counts  # round robin would give it a third
    rr = Counter(picks(PoolState(pool("round_robin", 1, 1, 1)), 300))
    assert rr["b0"] == 100


def test_unavailable_backends_are_skipped() -> None:
    state = PoolState(pool("weighted", 3, 1))
    b0 = state.backends[0]
    for i in range(b0.pool.health.fall):
        b0.health_result(float(i), ok=False)
    assert set(picks(state, 10)) == {"b1"}
    for i in range(b0.pool.health.rise):
        b0.health_result(10.0 + i, ok=True)
    assert set(picks(state, 10)) == {"b0", "b1"}


def test_empty_pool_and_unknown_balancer() -> None:
    for name in ("round_robin", "least_conn", "weighted", "p2c"):
        assert make_balancer(name).pick([]) is None
        assert PoolState(Pool("p", (), name)).pick(0.0) is None
    with pytest.raises(ValueError, match="unknown balancer"):
        make_balancer("random")


def test_update_keeps_state_of_unchanged_backends() -> None:
    old = pool("round_robin", 1, 1)
    state = PoolState(old)
    kept = state.backends[0]
    kept.started()
    changed_url = Backend("b1", "http://127.0.0.1:9999")
    new = Pool("p", (Backend("b0", "http://127.0.0.1:9000", 5), changed_url, Backend("b2", "http://h:1")),
               "weighted")
    state.update(new)
    assert state.backends[0] is kept and kept.in_flight == 1 and kept.weight == 5
    assert state.backends[1].backend.url == "http://127.0.0.1:9999" and state.backends[1].in_flight == 0
    assert [b.id for b in state.backends] == ["b0", "b1", "b2"]
    assert state.balancer.name == "weighted"
    state.update(Pool("p", (Backend("b2", "http://h:1"),), "weighted"))
    assert [b.id for b in state.backends] == ["b2"]
