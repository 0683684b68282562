"""Waking a long poll when keys change, without polling the store.

A `Waker` subscribes (`Store.subscribe`) to each key of interest and sets one
event when any of them changes.  The long poll clears the event, tries, and
waits on it with a timeout; a change between the try and the wait leaves the
event set, so it is never missed.
"""

from __future__ import annotations

import asyncio

from helios_core.store.base import Store, Subscription

__all__ = ["Waker"]


class Waker:
    """Wakes a long poll when one of `keys` changes: one Store subscription per key, one event."""

    def __init__(self, store: Store, keys: list[str]) -> None:
        self.keys = {k.encode() for k in keys}
        self.event = asyncio.Event()
        self.subs: list[Subscription] = []
        self.tasks: list[asyncio.Task[None]] = []
        try:
            for key in keys:
                sub = store.subscribe(key)
                self.subs.append(sub)
                self.tasks.append(asyncio.ensure_future(self._pump(sub)))
        except BaseException:
            self.close()
            raise

    async def _pump(self, sub: Subscription) -> None:
        async for key in sub:
            # A subscription is by prefix: only the exact keys wake the poll.
            if key is None or key in self.keys:
                self.event.set()

    async def ready(self, timeout_s: float) -> None:
        """Until every subscription is active (remote stores confirm asynchronously); bounded."""
        try:
            await asyncio.wait_for(asyncio.gather(*(s.ready() for s in self.subs)), timeout_s)
        except TimeoutError:
            pass  # the timed wake-ups still bound the wait

    def clear(self) -> None:
        self.event.clear()

    async def wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout_s)
        except TimeoutError:
            pass

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for sub in self.subs:
            sub.close()
