"""The Store contract runs against every backend.

A backend is an async context manager yielding an open Store on a fresh,
empty keyspace.  The atlasd issue adds "atlasd" (over TCP) and "redis" (a
real redis-server on an unused port) to BACKENDS; each skips itself when its
server cannot be started here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from helios_core.config import AtlasConfig
from helios_core.store import EmbeddedStore, Store


@asynccontextmanager
async def embedded(tmp_path: Path) -> AsyncIterator[Store]:
    store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(appendfsync="always", save=()))
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, Callable[[Path], object]] = {"embedded": embedded}


@pytest.fixture(params=sorted(BACKENDS))
def run_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Callable[[Store], Awaitable[None]]], None]:
    """run_store(body): open the backend on a loop, await body(store), close it."""
    factory = BACKENDS[request.param]

    def run(body: Callable[[Store], Awaitable[None]]) -> None:
        async def main() -> None:
            async with factory(tmp_path) as store:  # type: ignore[operator]
                await asyncio.wait_for(body(store), 30)

        asyncio.run(main())

    return run
