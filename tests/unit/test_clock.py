"""helios_core/clock.py: the service clock never steps, never goes back, and slews onto the wall clock.

Its wall and monotonic sources are fakes moved by the test (nanoseconds), so
nothing here sleeps or reads the real time.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

from helios_core.clock import SLEW_PPM, ServiceClock, service_clock, wall_ms
from helios_core.errors import ConfigError

MS = 1_000_000  # ns
S = 1_000 * MS
HOUR = 3_600 * S
T0 = 1_900_000_000 * S


class Source:
    """A fake clock source in nanoseconds, moved by hand."""

    def __init__(self, t: int) -> None:
        self.t = t
        self.reads = 0

    def __call__(self) -> int:
        self.reads += 1
        return self.t


class Sources:
    """The wall and monotonic fakes together: `run(s)` lets real time pass, `step(s)` sets the wall clock."""

    def __init__(self) -> None:
        self.wall = Source(T0)
        self.mono = Source(12_345 * S)

    def run(self, ns: int) -> None:
        self.wall.t += ns
        self.mono.t += ns

    def step(self, ns: int) -> None:
        self.wall.t += ns


@pytest.fixture
def src() -> Sources:
    return Sources()


@pytest.fixture
def logs() -> Iterator[list[Any]]:
    """The clock's log records (loguru), as (level, message, extra)."""
    seen: list[Any] = []
    hid = logger.add(lambda m: seen.append((m.record["level"].name, m.record["message"], m.record["extra"])),
                     level="DEBUG", filter=lambda r: r["extra"].get("component") == "clock-test")
    yield seen
    logger.remove(hid)


def clock_on(src: Sources, **kw: Any) -> ServiceClock:
    return ServiceClock(src.wall, src.mono, logger=logger.bind(component="clock-test"), **kw)


def test_anchors_on_first_reading_not_when_built(src: Sources) -> None:
    c = clock_on(src)
    assert src.wall.reads == 0 and src.mono.reads == 0
    src.run(5 * S)
    assert c() == T0 // MS + 5_000


def test_equals_the_wall_clock_when_nothing_steps(src: Sources) -> None:
    c = clock_on(src)
    for i in range(1, 200):
        src.run(1_234 * MS)
        # NTP slewing the wall clock itself (500 ppm) is tracked exactly, not smoothed.
        src.step(617_000 * (1 if i % 3 else -1))
        assert c.now_ns() == src.wall.t
    assert c.behind_wall_ms() == 0


def test_forward_step_slews_instead_of_jumping(src: Sources, logs: list[Any]) -> None:
    c = clock_on(src)
    before = c()
    src.step(HOUR)
    src.run(1 * S)
    after = c()
    # One second of real time moves the service clock by one second plus at most 1/12 s.
    assert 1_000 <= after - before <= 1_000 + 1_000 * SLEW_PPM // 1_000_000 + 1
    assert c.behind_wall_ms() > HOUR // MS - 1_000
    warnings = [x for x in logs if x[0] == "WARNING"]
    assert len(warnings) == 1 and "forward by 3600.000 s" in warnings[0][1]
    assert warnings[0][2]["step_s"] == 3600.0
    # ~12 hours to catch up at 1/12, a minute at a time: the clock gains 5 s a minute, logs nothing more.
    minutes = 0
    while c.behind_wall_ms() > 0:
        src.run(60 * S)
        minutes += 1
        assert minutes < 13 * 60
    assert 11 * 60 < minutes <= 12 * 60 + 1
    assert c() == src.wall.t // MS
    assert [x[0] for x in logs] == ["WARNING", "INFO"], "one warning for the step, one note once caught up"


def test_back_step_never_goes_back(src: Sources, logs: list[Any]) -> None:
    c = clock_on(src)
    last = c()
    src.step(-HOUR)
    for _ in range(12 * 60 + 5):
        src.run(60 * S)
        now = c()
        # A minute of real time is at least 55 s on the service clock (11/12 speed), never less.
        assert now - last >= 60_000 - 60_000 * SLEW_PPM // 1_000_000 - 1
        last = now
    assert c() == src.wall.t // MS, "caught up with the wall clock within 12 h"
    warnings = [x for x in logs if x[0] == "WARNING"]
    assert len(warnings) == 1 and "back by 3600.000 s" in warnings[0][1]
    assert warnings[0][2]["service_behind_wall_s"] < 0


def test_small_steps_are_slewed_without_a_warning(src: Sources, logs: list[Any]) -> None:
    c = clock_on(src)
    c()
    src.step(400 * MS)  # under STEP_WARN_MS
    src.run(1 * S)
    assert c.behind_wall_ms() > 0
    src.run(10 * S)
    assert c.behind_wall_ms() == 0
    assert not [x for x in logs if x[0] == "WARNING"]


def test_each_step_is_warned_once(src: Sources, logs: list[Any]) -> None:
    c = clock_on(src)
    c()
    src.step(10 * S)
    for _ in range(5):
        src.run(1 * S)
        c()
    src.step(-30 * S)
    for _ in range(5):
        src.run(1 * S)
        c()
    warnings = [x[1] for x in logs if x[0] == "WARNING"]
    assert len(warnings) == 2
    assert "forward by 10.000 s" in warnings[0] and "back by 30.000 s" in warnings[1]


def test_a_monotonic_source_going_back_counts_no_time(src: Sources) -> None:
    c = clock_on(src)
    first = c()
    src.mono.t -= 5 * S
    assert c() == first
    src.mono.t += 6 * S  # one second past the highest reading so far
    src.wall.t += 1 * S
    assert c() == first + 1_000


def test_rejects_a_rate_that_could_stop_or_reverse_it(src: Sources) -> None:
    for ppm in (0, 1_000_000, 2_000_000, -5):
        with pytest.raises(ConfigError):
            ServiceClock(src.wall, src.mono, slew_ppm=ppm)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600 * S), st.integers(-2 * HOUR, 2 * HOUR) | st.just(0)),
                min_size=1, max_size=60))
def test_never_back_and_rate_bounded_whatever_the_wall_does(moves: list[tuple[int, int]]) -> None:
    src = Sources()
    c = ServiceClock(src.wall, src.mono, logger=logger.bind(component="clock-test"))
    last, last_mono = c.now_ns(), src.mono.t
    for elapsed, step in moves:
        src.run(elapsed)
        src.step(step)
        now = c.now_ns()
        real = src.mono.t - last_mono
        assert now >= last, "the service clock went back"
        assert abs((now - last) - real) <= real * SLEW_PPM // 1_000_000 + 1, "slewed faster than its rate"
        # It never overshoots: it moves toward the wall clock, not past it.
        if now != src.wall.t:
            assert abs(src.wall.t - now) <= abs(src.wall.t - (last + real))
        last, last_mono = now, src.mono.t


def test_real_sources_agree_with_the_wall_clock() -> None:
    c = ServiceClock()
    assert abs(c() - wall_ms()) < 5_000  # the same clock when nothing steps (a busy box may pause between reads)


def test_gateway_services_default_to_the_service_clock() -> None:
    from helios_core.gateway.app import GatewayService
    from helios_core.gateway.context import Gateway

    assert inspect.signature(GatewayService).parameters["clock"].default is service_clock
    assert inspect.signature(Gateway).parameters["clock"].default is service_clock
