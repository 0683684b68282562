"""StoreConfigSource.watch on a RemoteStore: over a real atlasd and a real redis-server.

The writer and the watcher are separate clients (as the admin CLI and a
running proxy are separate processes): the change reaches the watcher through
the store's pub/sub change notification, and, when the writer does not
publish (a lost notification), through the `proxy:version` poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from helios_core.errors import InvalidInputError
from helios_core.proxy import store_config as sc
from helios_core.proxy.model import ProxyConfig
from helios_core.store import RemoteStore
from tests.contract.conftest import atlasd_daemon  # noqa: F401  (fixture)
from tests.integration.test_atlasd_support import Daemon
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)

WEB1 = {"id": "web1", "pool": "web", "url": "http://127.0.0.1:9001"}
API = {"id": "api", "prefix": "/api/", "pool": "web"}


@pytest.fixture(params=["atlasd", "redis"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    server: Daemon | RedisServer = request.getfixturevalue(
        "atlasd_daemon" if request.param == "atlasd" else "redis_server")
    with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10,
                     password=getattr(server, "password", None)) as r:
        r.flushall()
    yield f"atlas://127.0.0.1:{server.port}" if request.param == "atlasd" else f"redis://127.0.0.1:{server.port}/0"


async def _watching(url: str, poll_interval: float, notify: bool) -> None:
    writer = RemoteStore(url, notify=notify)
    watcher = RemoteStore(url)
    source = sc.StoreConfigSource(watcher, poll_interval=poll_interval)
    seen: asyncio.Queue[ProxyConfig] = asyncio.Queue()
    task: asyncio.Future[None] | None = None
    try:
        await sc.add_backend(writer, WEB1)
        await source.load()
        task = asyncio.ensure_future(source.watch(seen.put_nowait))
        # Made maybe before the watcher's subscription is confirmed: then its first version check
        # (right after the confirmation) finds it.
        await sc.add_route(writer, API)
        config = await asyncio.wait_for(seen.get(), 10)
        assert [r.id for r in config.routes] == ["api"] and config.version == "2"
        # Surely after: with the poll at an hour, only the notification brings this one in time.
        await sc.remove_route(writer, "api")
        assert (await asyncio.wait_for(seen.get(), 10)).routes == ()
    finally:
        source.close()
        if task is not None:
            await asyncio.wait_for(task, 10)
        await writer.close()
        await watcher.close()


def test_watch_hears_a_change_published_by_another_client(url: str) -> None:
    # A poll far beyond the waits: what arrives came through pub/sub.
    asyncio.run(_watching(url, poll_interval=3600, notify=True))


def test_the_version_poll_catches_a_writer_that_does_not_publish(url: str) -> None:
    asyncio.run(_watching(url, poll_interval=0.1, notify=False))


def test_crud_on_a_remote_store_is_validated_and_versioned(url: str) -> None:
    async def main() -> None:
        store = RemoteStore(url)
        try:
            await sc.add_backend(store, WEB1)
            await sc.add_route(store, API)
            with pytest.raises(InvalidInputError):
                await sc.remove_backend(store, "web1")
            # Concurrent changes from one client, each re-validated when the version moved under it.
            await asyncio.gather(*(sc.add_route(store, {"id": f"r{i}", "prefix": f"/{i}/", "pool": "web"})
                                   for i in range(8)))
            assert len(await sc.list_routes(store)) == 9 and await store.get(sc.VERSION_KEY) == b"10"
        finally:
            await store.close()

    asyncio.run(main())
