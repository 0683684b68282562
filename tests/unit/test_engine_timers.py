"""The engine's periodic tasks (active expiry, cron, the AOF writer's ticks) keep no handle per tick.

Before: every tick's TimerHandle was appended to a list that only `close` emptied, so a daemon held
one more handle (with its closure) per tick for as long as it ran: ~0.15 MiB a minute in the soak.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from pathlib import Path

from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig


def _live_timer_handles() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, asyncio.TimerHandle))


def test_ticks_leave_no_handles_behind(tmp_path: Path) -> None:
    async def main() -> None:
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="everysec", active_expire_hz=100))
        e.attach()
        await asyncio.sleep(0.2)
        after_start = _live_timer_handles()
        await asyncio.sleep(1.5)  # ~150 active-expiry ticks, one cron tick, the writer's ticks
        assert _live_timer_handles() <= after_start
        await e.aclose()
        assert _live_timer_handles() <= after_start

    asyncio.run(main())


def test_active_expiry_follows_a_new_hz(tmp_path: Path) -> None:
    """CONFIG SET hz (config.active_expire_hz) changes how many cycles a second run, with one timer."""
    cycles: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        e = Engine.open(tmp_path, AtlasConfig(appendfsync="everysec", active_expire_hz=1))
        run = e._active_expire
        e._active_expire = lambda: (cycles.append(loop.time()), run())[1]  # type: ignore[method-assign]
        e.attach()
        slots = len(e._timers)
        e.config = dataclasses.replace(e.config, active_expire_hz=200)
        deadline = loop.time() + 10
        while len(cycles) < 40 and loop.time() < deadline:  # (1 Hz would take 40 s)
            await asyncio.sleep(0.05)
        assert len(cycles) >= 40
        assert len(e._timers) == slots  # the 1 Hz timer stopped when the 200 Hz one started
        await e.aclose()

    asyncio.run(main())
