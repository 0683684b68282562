"""Retry budget: retries stay within a share of the requests, with a per-second floor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_core.proxy.retry import RetryBudget


def test_share_of_requests() -> None:
    budget = RetryBudget(0.2, 0.0)
    for i in range(100):
        budget.request(i / 100)
    allowed = sum(budget.try_retry(1.0) for _ in range(50))
    assert allowed == 20
    assert budget.refused == 30
    assert budget.available(1.0) == 0


def test_floor_lets_a_quiet_proxy_retry() -> None:
    budget = RetryBudget(0.2, 1.0)  # 1/s over a 10 s window: 10 retries even with no traffic
    assert sum(budget.try_retry(0.0) for _ in range(15)) == 10


def test_window_slides() -> None:
    budget = RetryBudget(0.5, 0.0, window=10.0)
    for _ in range(10):
        budget.request(0.0)
    assert sum(budget.try_retry(0.0) for _ in range(10)) == 5
    assert not budget.try_retry(5.0)
    # Ten seconds later the old requests and retries have both left the window.
    assert budget.available(10.5) == 0
    for _ in range(4):
        budget.request(10.5)
    assert budget.available(10.5) == 2


def test_zero_share_zero_floor_never_retries() -> None:
    budget = RetryBudget(0.0, 0.0)
    for _ in range(100):
        budget.request(0.0)
    assert not budget.try_retry(0.0)


def test_configure_and_validation() -> None:
    budget = RetryBudget(0.1, 0.0)
    for _ in range(10):
        budget.request(0.0)
    budget.configure(0.5, 0.0)
    assert budget.available(0.0) == 5
    with pytest.raises(ValueError):
        RetryBudget(1.5, 0.0)
    with pytest.raises(ValueError):
        RetryBudget(0.5, -1.0)


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 2)), max_size=300), st.floats(0, 1))
def test_retries_never_exceed_the_share_in_any_window_property(events: list[tuple[bool, float]],
                                                               share: float) -> None:
    """With no floor, a retry is granted only while the window's retries stay within share x its requests.

    Checked against a brute-force window of the raw events (bucketed at window / 10 like the budget).
    """
    budget = RetryBudget(share, 0.0, window=10.0)
    now = 0.0
    log: list[tuple[int, bool]] = []  # (bucket, is_request) of requests and granted retries
    for is_request, dt in events:
        now += dt
        bucket = int(now // 1.0)
        if is_request:
            budget.request(now)
            log.append((bucket, True))
        elif budget.try_retry(now):
            log.append((bucket, False))
            recent = [r for b, r in log if b > bucket - 10]
            assert recent.count(False) <= share * recent.count(True) + 1e-6
