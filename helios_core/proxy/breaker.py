"""Per-backend circuit breaker: closed → open → half-open → closed. Pure logic, `now` passed in.

- closed: every request is allowed. It opens after `failures` failures in a row, or when the last
  `window` seconds hold at least `min_requests` results of which `error_ratio` or more failed.
- open: nothing is allowed until `cooldown` has passed since it opened; then it is half-open.
- half-open: at most `half_open_probes` requests are admitted (each `begin()` takes one slot).
  The first success closes it; a failure opens it again for another cooldown.

`allow(now)` is a question without side effects (a balancer asks it of every candidate);
`begin(now)` is called for the request actually sent. The window is kept as ten time buckets so a
result costs O(1) and memory stays fixed however busy the backend is.
"""

from __future__ import annotations

from collections import deque

from helios_core.proxy.model import BreakerConfig

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_BUCKETS = 10


class CircuitBreaker:
    def __init__(self, cfg: BreakerConfig) -> None:
        self.cfg = cfg
        self._state = CLOSED
        self._opened_at = 0.0
        self._consecutive = 0
        self._probes = 0  # half-open slots taken in this half-open period
        self._buckets: deque[list[float]] = deque()  # [bucket index, total, failures]
        self._total = 0
        self._failed = 0
        self._current: list[float] = [0, 0, 0]  # the newest bucket, counted into directly until
        self._current_end = 0.0  # it ends (0: no bucket yet, or the window was cleared)
        self.opened_count = 0  # times it opened, for status and metrics

    # ---------------------------------------------------------------- questions

    def state(self, now: float) -> str:
        """closed | open | half_open (open turns half-open by itself once the cooldown is over)."""
        if self._state == OPEN and now >= self._opened_at + self.cfg.cooldown:
            self._state = HALF_OPEN
            self._probes = 0
        return self._state

    def allow(self, now: float) -> bool:
        """Would a request be admitted now? No slot is taken."""
        if not self.cfg.enabled:
            return True
        state = self.state(now)
        if state == CLOSED:
            return True
        if state == HALF_OPEN:
            return self._probes < self.cfg.half_open_probes
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until an open breaker half-opens (0 when it is not open)."""
        if self.state(now) != OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.cfg.cooldown - now)

    # ---------------------------------------------------------------- events

    def begin(self, now: float | None = None) -> None:
        """A request is being sent: in half-open it takes a probe slot."""
        if self._state == CLOSED:
            return  # the usual case: nothing to take
        state = self._state if now is None else self.state(now)
        if state == HALF_OPEN:
            self._probes += 1

    def record(self, now: float, ok: bool) -> None:
        """The result of a request (ok False: connect failure, timeout, or a 5xx the caller counts)."""
        if not self.cfg.enabled:
            return
        state = self.state(now)
        if state == HALF_OPEN:
            if ok:
                self._close()
            else:
                self._open(now)
            return
        if state == OPEN:
            return  # a straggler sent before it opened: the cooldown decides, not this
        self._count(now, ok)
        if ok:
            self._consecutive = 0
            return  # only a failure trips it: a success opening the breaker would be a surprise
        self._consecutive += 1
        if self._consecutive >= self.cfg.failures:
            self._open(now)
        elif self._total >= self.cfg.min_requests and self._failed >= self.cfg.error_ratio * self._total:
            self._open(now)

    def success(self, now: float) -> None:
        """`record(now, True)`; in the usual case (closed, within the newest bucket) a few increments."""
        if self._state == CLOSED and now < self._current_end:
            self._current[1] += 1
            self._total += 1
            self._consecutive = 0
            return
        self.record(now, True)

    def reset(self) -> None:
        self._close()

    # ---------------------------------------------------------------- internals

    def _count(self, now: float, ok: bool) -> None:
        width = self.cfg.window / _BUCKETS
        index = int(now // width)
        while self._buckets and self._buckets[0][0] <= index - _BUCKETS:
            _, total, failed = self._buckets.popleft()
            self._total -= int(total)
            self._failed -= int(failed)
        if not self._buckets or self._buckets[-1][0] != index:
            self._buckets.append([index, 0, 0])
        self._current = bucket = self._buckets[-1]
        self._current_end = (index + 1) * width
        bucket[1] += 1
        self._total += 1
        if not ok:
            bucket[2] += 1
            self._failed += 1

    def _open(self, now: float) -> None:
        self._state = OPEN
        self._opened_at = now
        self.opened_count += 1
        self._clear()

    def _close(self) -> None:
        self._state = CLOSED
        self._clear()

    def _clear(self) -> None:
        self._consecutive = 0
        self._probes = 0
        self._buckets.clear()
        self._total = self._failed = 0
        self._current_end = 0.0
