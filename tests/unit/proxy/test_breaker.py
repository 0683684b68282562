"""Circuit breaker: closed → open → half-open → closed, with time passed in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.proxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from helios_core.proxy.model import Backend, BreakerConfig, Pool
from helios_core.proxy.state import PoolState

CFG = BreakerConfig(failures=3, error_ratio=0.5, window=10.0, min_requests=10, cooldown=5.0, half_open_probes=2)


def test_opens_on_consecutive_failures() -> None:
    b = CircuitBreaker(CFG)
    b.record(0.0, False)
    b.record(0.1, False)
    b.record(0.2, True)  # a success breaks the run
    b.record(0.3, False)
    b.record(0.4, False)
    assert b.state(0.4) == CLOSED and b.allow(0.4)
    b.record(0.5, False)
    assert b.state(0.5) == OPEN and not b.allow(0.5)
    assert b.retry_after(1.5) == 4.0


def test_opens_on_error_ratio_over_the_window_with_min_requests() -> None:
    cfg = BreakerConfig(failures=100, error_ratio=0.5, window=10.0, min_requests=10, cooldown=5.0)
    b = CircuitBreaker(cfg)
    for i in range(4):  # 4 of 8 failed: ratio 0.5 but fewer than min_requests
        b.record(float(i), True)
        b.record(float(i) + 0.5, False)
    assert b.state(4.0) == CLOSED
    b.record(4.0, True)
    b.record(4.5, False)  # 5 of 10 failed
    assert b.state(4.5) == OPEN


def test_old_results_leave_the_window() -> None:
    cfg = BreakerConfig(failures=100, error_ratio=0.5, window=10.0, min_requests=10, cooldown=5.0)
    b = CircuitBreaker(cfg)
    for i in range(9):
        b.record(float(i) / 10, False)  # 9 failures at t < 1
    for i in range(10):
        b.record(20.0 + i / 10, True)  # long after: the failures have left the window
    b.record(21.0, False)
    assert b.state(21.0) == CLOSED


def test_half_open_after_cooldown_admits_at_most_the_probes() -> None:
    b = CircuitBreaker(CFG)
    for i in range(3):
        b.record(float(i), False)
    assert b.state(2.0) == OPEN
    assert not b.allow(6.9)
    assert b.state(7.0) == HALF_OPEN and b.retry_after(7.0) == 0.0
    assert b.allow(7.0)
    b.begin(7.0)
    assert b.allow(7.0)  # allow() alone takes nothing
    b.begin(7.0)
    assert not b.allow(7.1)  # both probe slots taken


def test_half_open_success_closes() -> None:
    b = CircuitBreaker(CFG)
    for i in range(3):
        b.record(float(i), False)
    b.begin(8.0)
    b.record(8.5, True)
    assert b.state(8.5) == CLOSED and b.allow(8.5)
    b.record(9.0, False)
    b.record(9.0, False)
    assert b.state(9.0) == CLOSED  # counts started again from zero


def test_half_open_failure_reopens_for_another_cooldown() -> None:
    b = CircuitBreaker(CFG)
    for i in range(3):
        b.record(float(i), False)
    b.begin(8.0)
    b.record(8.5, False)
    assert b.state(8.5) == OPEN and not b.allow(13.0)
    assert b.state(13.5) == HALF_OPEN and b.opened_count == 2


def test_stragglers_while_open_change_nothing() -> None:
    b = CircuitBreaker(CFG)
    for i in range(3):
        b.record(float(i), False)
    b.record(3.0, True)  # a request sent before it opened
    assert b.state(3.0) == OPEN


def test_disabled_breaker_always_allows() -> None:
    b = CircuitBreaker(BreakerConfig(enabled=False, failures=1))
    for i in range(10):
        b.record(float(i), False)
    assert b.allow(10.0) and b.state(10.0) == CLOSED


def test_backend_state_takes_a_probe_slot_when_started() -> None:
    pool = Pool("p", (Backend("a", "http://h:1"),),
                breaker=BreakerConfig(failures=1, cooldown=1.0, half_open_probes=1))
    state = PoolState(pool)
    a = state.backends[0]
    a.started(0.0)
    a.finished(0.0, ok=False, connect_failure=True)
    assert state.pick(0.5) is None  # open
    chosen = state.pick(1.0)
    assert chosen is a
    a.started(1.0)
    assert state.pick(1.0) is None  # the one probe is out
    a.finished(1.2, ok=True)
    assert state.pick(1.2) is a and a.status(1.2)["breaker"] == "closed"


events = st.lists(st.tuples(st.sampled_from(["begin", "ok", "fail", "wait"]), st.floats(0, 3)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 4), st.integers(1, 5))
def test_never_admits_more_than_the_probes_while_half_open(steps: list[tuple[str, float]], probes: int,
                                                            failures: int) -> None:
    cfg = BreakerConfig(failures=failures, error_ratio=0.5, window=10.0, min_requests=5, cooldown=2.0,
                        half_open_probes=probes)
    b = CircuitBreaker(cfg)
    now = 0.0
    admitted_in_half_open = 0
    for action, dt in steps:
        now += dt if action == "wait" else 0.0
        state = b.state(now)
        if state != HALF_OPEN:
            admitted_in_half_open = 0
        if action == "begin":
            if b.allow(now):
                if state == HALF_OPEN:
                    admitted_in_half_open += 1
                b.begin(now)
            assert admitted_in_half_open <= probes
            assert state != OPEN or not b.allow(now)
        elif action in ("ok", "fail"):
            before = b.state(now)
            b.record(now, action == "ok")
            after = b.state(now)
            if before == HALF_OPEN:
                assert after == (CLOSED if action == "ok" else OPEN)
                admitted_in_half_open = 0
            if before == CLOSED and action == "ok":
                assert after == CLOSED  # a success never opens it
