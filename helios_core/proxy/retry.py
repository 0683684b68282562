"""Retry budget: retries may add at most a share of the request rate (Finagle's RetryBudget idea).

Per-route retry counts alone multiply an outage: with retries=2 every failing request becomes
three. The budget caps retries over a sliding window at ``share × requests`` in that window, with
a floor of ``min_per_second × window`` so a quiet proxy can still retry at all. `request(now)` is
called once per client request (not per try); `try_retry(now)` before each retry spends one if
the budget has it. Pure logic: `now` is monotonic seconds. One budget per process.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RetryBudget"]

_BUCKETS = 10


class RetryBudget:
    def __init__(self, share: float, min_per_second: float, *, window: float = 10.0) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"retry budget share must be within 0..1, got {share!r}")
        if min_per_second < 0 or window <= 0:
            raise ValueError("min_per_second must be >= 0 and window > 0")
        self.share = share
        self.min_per_second = min_per_second
        self.window = window
        self._width = window / _BUCKETS
        self._buckets: deque[list[int]] = deque()  # [bucket index, requests, retries]
        self._requests = 0
        self._retries = 0
        self._current: list[int] = [0, 0, 0]  # the newest bucket, and the time it ends: counted
        self._current_end = 0.0  # into directly until then (no expiry can happen within it)
        self.refused = 0  # retries refused for lack of budget, for metrics

    def configure(self, share: float, min_per_second: float) -> None:
        """Change the limits (a config reload) keeping the counts."""
        self.share, self.min_per_second = share, min_per_second

    def _bucket(self, now: float) -> list[int]:
        index = int(now // self._width)
        while self._buckets and self._buckets[0][0] <= index - _BUCKETS:
            _, requests, retries = self._buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not self._buckets or self._buckets[-1][0] < index:
            self._buckets.append([index, 0, 0])
        self._current = bucket = self._buckets[-1]
        self._current_end = (bucket[0] + 1) * self._width
        return bucket

    def request(self, now: float) -> None:
        # Once per client request: while the newest bucket lasts, one increment (no expiry to do).
        bucket = self._current if now < self._current_end else self._bucket(now)
        bucket[1] += 1
        self._requests += 1

    def available(self, now: float) -> int:
        """Retries that would be allowed now."""
        self._bucket(now)
        allowed = max(self.share * self._requests, self.min_per_second * self.window)
        return max(0, int(allowed + 1e-9) - self._retries)

    def try_retry(self, now: float) -> bool:
        """Spend one retry if the budget allows it."""
        if self.available(now) <= 0:
            self.refused += 1
            return False
        self._bucket(now)[2] += 1
        self._retries += 1
        return True
