"""The engine's periodic tasks (active expiry, cron, the AOF writer's ticks) keep no handle per tick.

Before: every tick's TimerHandle was appended to a list that only `close` emptied, so a daemon held
one more handle (with its closure) per tick for as long as it ran: ~0.15 MiB a minute in the soak.
"""

from __future__ import annotations

import asyncio
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
