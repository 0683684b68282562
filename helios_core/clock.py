"""The two clocks HELIOS services read: the wall clock, and a service clock that never steps.

`wall_ms` is the system's real time (``time.time``): it is what NTP keeps in
agreement across machines, and it *steps* whenever someone or something sets
it (an NTP correction beyond the slew limit, a VM resumed after a pause, an
operator's ``date -s``).

`ServiceClock` is milliseconds since the epoch too, but it never steps.  It is
anchored to the wall clock at its first reading and then advanced by the
monotonic clock (``time.monotonic``, which no one can set).  When the wall
clock and it disagree, it *slews* toward the wall clock: it runs at most
`SLEW_PPM` faster or slower than the monotonic clock until they agree again,
as ntpd and chrony correct an offset without stepping.  With no step to absorb
it returns exactly the wall clock (NTP's own slew, at most 500 ppm, is well
inside the limit), so in normal operation the two are the same number.

The rate, 83,333 ppm (1/12, 5 s per minute), is chrony's default
``maxslewrate``: the largest correction it lets applications see.  Every
duration measured on the service clock is then within 1/12 (8.3%) of the real
one, which every user of it tolerates: a worker heartbeats a lease every third
of its visibility timeout, so a lease that runs out 8% early still gets its
heartbeat in time; a token bucket refills at most 8% faster; a delayed job
runs at most 8% early or late.  The cost is time to agree again: a one-hour
step is absorbed in 12 hours (ntpd's 500 ppm would take 83 days, far too long
to stay apart from the other machines).  A step larger than `STEP_WARN_MS`
(1 s; ntpd itself steps above 128 ms, and chrony is commonly set to step
above 1 s) is logged once, as a warning naming its size and how long the
slew will take; the service clock's return to the wall clock is logged too.

What runs on which clock, and why:

- On the service clock (the gateway's `clock`, hence `now_ms` in every handler):
  job lease deadlines, the reaper that expires them, delayed jobs and
  retry delays, job timestamps and ids, and the rate limiter's token
  buckets.  These compare a deadline or a refill time with *now* in the same
  process frame, and a step there is a disaster: a forward step longer than
  the visibility timeout expired every lease at once and delivered every
  running job a second time, a back step froze every delay and lease for its
  length.  On the service clock a step of any size moves them by at most
  1/12 of the real time that passes.
- On the wall clock: JWTs (``iat``/``exp``/``nbf``, minted and checked), API
  token and session expiry and the audit log's timestamps.  A JWT is a
  contract with every verifier, other gateways on other machines and any
  third party holding the public key, and they all check it against their
  own wall clocks (the leeway ``auth.clock_skew_seconds`` absorbs what NTP
  leaves between them); a token minted on a clock that lags the wall by the
  unslewed part of a step would be "issued in the future" or already expired
  everywhere else.  Minting and checking must stay on the same clock, so both
  stay on the wall: the gateway hands its auth path ``Gateway.wall_clock``
  (``BaseHandler.wall_ms``) beside the service clock.  Logs, the HTTP ``Date`` header (Tornado's own) and
  the access log's times are wall time too.
- atlasd, and the ATLAS engine embedded in a gateway, keep key TTLs on the
  wall clock, as Redis does: expiry times are absolute in the AOF and
  snapshots and must mean the same after a restart and on every backend
  (a redis-server store expires keys on its own wall clock anyway); a
  per-process anchor would move every TTL by the unslewed step at each restart.
- The worker and the proxy measure their own intervals (heartbeats, timeouts,
  health checks) on the monotonic clock directly: nothing they keep crosses
  a process.

Several processes on one store.  Each `ServiceClock` has its own anchor, so a
deadline written by one gateway and read by another is off by the difference
of their clocks: the NTP offset between their wall clocks when they anchored,
plus the part of any step one of them has slewed and the other has not yet.
Where the wall clocks agree (and no step is being absorbed) that is NTP's
milliseconds.  The `helios gateway --workers N` supervisor reads the clock
before it forks, so its N processes share one anchor and see a step of the
machine's clock together; a process forked again after a step starts from the
supervisor's last reading and may credit more slew than its siblings, so it
differs from them by at most the step, shrinking as both converge.  A gateway
*restarted* after a step anchors on the stepped wall clock, and the leases its
predecessor wrote move by the unslewed part of the step: a restart during a
slew does what the step would have done, in the size left.  Give a forward
step its `step / SLEW_PPM` to be absorbed before restarting, or restart every
gateway of the store together once the wall clock is right.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from helios_core.errors import ConfigError
from helios_core.observability.logging import get_logger

if TYPE_CHECKING:
    from loguru import Logger

__all__ = ["wall_ms", "ServiceClock", "service_clock", "SLEW_PPM", "STEP_WARN_MS"]

SLEW_PPM = 83_333  # 1/12: chrony's default maxslewrate (see the module docstring)
STEP_WARN_MS = 1_000  # a jump of the wall clock against the monotonic one this large is a step worth a warning
_PPM = 1_000_000
_NS_PER_MS = 1_000_000

log = get_logger("clock")


def wall_ms() -> int:
    """The wall clock in milliseconds since the epoch: it steps when the system time is set."""
    return int(time.time() * 1000)


class ServiceClock:
    """Milliseconds since the epoch that never step and never go back (see the module docstring).

    Call it for the time.  `wall` and `mono` are its sources in nanoseconds
    (``time.time_ns`` and ``time.monotonic_ns``); tests pass fakes and move
    them, so no test sleeps.  It anchors on its first reading, not when built,
    so one made at import time starts when the process first asks.

    Two properties hold between any two readings, whatever the wall clock does:
    the later is never smaller, and their difference is within `slew_ppm`
    millionths of the monotonic time between them.
    """

    def __init__(self, wall: Callable[[], int] = time.time_ns, mono: Callable[[], int] = time.monotonic_ns, *,
                 slew_ppm: int = SLEW_PPM, step_warn_ms: int = STEP_WARN_MS, logger: Logger | None = None) -> None:
        if not 0 < slew_ppm < _PPM:  # at a full 10^6 a back step would stop the clock; beyond, run it backwards
            raise ConfigError(f"must be between 1 and 999999, not {slew_ppm}", key="slew_ppm")
        self._wall = wall
        self._mono = mono
        self.slew_ppm = slew_ppm
        self._step_warn_ns = step_warn_ms * _NS_PER_MS
        self._log = logger if logger is not None else log
        self._lock = threading.Lock()  # a reading is a read-modify-write of the state below
        self._anchored = False
        self._mono_ns = 0  # the monotonic reading the state is at
        self._now_ns = 0  # the service time at _mono_ns
        self._offset_ns = 0  # wall - mono at the last reading: a jump in it is a step
        self._slewing = False

    def __call__(self) -> int:
        return self.now_ns() // _NS_PER_MS

    def now_ns(self) -> int:
        """The service time in nanoseconds since the epoch (advances the slew)."""
        with self._lock:
            w = self._wall()
            m = self._mono()
            if not self._anchored:
                self._anchored = True
                self._mono_ns, self._now_ns, self._offset_ns = m, w, w - m
                return w
            elapsed = m - self._mono_ns
            if elapsed < 0:  # a monotonic source never goes back; a fake (or a broken platform) might: no time
                elapsed = 0
            else:
                self._mono_ns = m
            ahead = self._now_ns + elapsed
            # At most slew_ppm of the time that passed: the clock keeps running forward at
            # (1 - rate) at worst, so it never goes back whatever the wall clock did.
            most = elapsed * self.slew_ppm // _PPM
            if ahead - most <= w <= ahead + most:  # the usual case: no step to absorb, the wall clock it is
                now = w
            else:
                now = ahead + most if w > ahead else ahead - most
            self._now_ns = now
            step = w - m - self._offset_ns  # how far the wall clock moved against the monotonic one
            self._offset_ns = w - m
            if step >= self._step_warn_ns or -step >= self._step_warn_ns:
                self._stepped(step, w - now)
            elif self._slewing and now == w:
                self._slewing = False
                self._log.info("service clock agrees with the wall clock again")
            return now

    def _stepped(self, step_ns: int, behind_ns: int) -> None:
        self._slewing = behind_ns != 0
        self._log.warning(
            f"the wall clock stepped {'forward' if step_ns > 0 else 'back'} by {abs(step_ns) / 1e9:.3f} s; "
            f"the service clock (job leases, delays, rate limits) does not step: it slews toward the wall "
            f"clock at {self.slew_ppm} ppm", step_s=round(step_ns / 1e9, 3),
            service_behind_wall_s=round(behind_ns / 1e9, 3),
            catch_up_s=round(abs(behind_ns) / 1e9 * _PPM / self.slew_ppm, 1))

    def _after_fork(self) -> None:
        # A fork copies the lock as it was: held, if another thread was reading at that moment.
        self._lock = threading.Lock()

    def wall_ms(self) -> int:
        """This clock's wall source, in milliseconds (what `wall_ms()` reads, or the test's fake)."""
        return self._wall() // _NS_PER_MS

    def behind_wall_ms(self) -> int:
        """How far the service clock is behind the wall clock now (negative: ahead); 0 unless slewing."""
        now = self.now_ns()
        return (self._wall() - now) // _NS_PER_MS


# The process's service clock: the gateway's default `clock`.  One per process, so every service in it
# shares one frame; `helios gateway --workers N` reads it before forking for the same reason.
service_clock = ServiceClock()
os.register_at_fork(after_in_child=service_clock._after_fork)
