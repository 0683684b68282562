"""The Store contract runs against every backend.

A backend opens a Store on a fresh, empty keyspace as an async context
manager.  "embedded" opens the engine in a tmp dir; "atlasd" is the real
daemon (`helios atlasd`, a subprocess, over TCP with `appendfsync always`)
and "redis" a real redis-server, each on an unused port, started once per
session and FLUSHALLed before every test; "cluster" a local three-primary
Redis Cluster (tests/redis_cluster.py) behind a `redis+cluster://` URL.  A
backend whose server cannot be started here skips its tests.

On "cluster" a transaction or script must keep to one hash slot: a test
module whose keys do not (none today: auth, proxy and jobs keys are tagged)
is listed in NOT_ON_CLUSTER and skipped there with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from helios_core.config import AtlasConfig
from helios_core.store import EmbeddedStore, RemoteStore, Store
from helios_core.store.cluster import ClusterStore
from tests.integration.test_atlasd_support import Daemon
from tests.redis_cluster import RedisClusterGroup, redis_cluster  # noqa: F401  (the "cluster" backend's)
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (a fixture used by the "redis" backend)


@dataclass(frozen=True)
class Backend:
    """`server`: the name of the fixture giving what `open(tmp_path, server)` connects to, if any."""

    open: Callable[[Path, Any], AbstractAsyncContextManager[Store]]
    server: str | None = None


@asynccontextmanager
async def embedded(tmp_path: Path, _server: None) -> AsyncIterator[Store]:
    store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(appendfsync="always", save=()))
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def remote(url: str) -> AsyncIterator[Store]:
    store = RemoteStore(url)
    try:
        yield store
    finally:
        await store.close()


def atlasd(tmp_path: Path, daemon: Daemon) -> AbstractAsyncContextManager[Store]:
    return remote(f"atlas://127.0.0.1:{daemon.port}")


def real_redis(tmp_path: Path, server: RedisServer) -> AbstractAsyncContextManager[Store]:
    return remote(f"redis://{server.host}:{server.port}/0")


@asynccontextmanager
async def cluster(tmp_path: Path, group: RedisClusterGroup) -> AsyncIterator[Store]:
    store = ClusterStore(group.url)
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, Backend] = {
    "embedded": Backend(embedded),
    "atlasd": Backend(atlasd, server="atlasd_daemon"),
    "redis": Backend(real_redis, server="redis_server"),
    "cluster": Backend(cluster, server="redis_cluster"),
}

# Test modules whose keys are not laid out for Redis Cluster: a transaction or script of
# theirs touches keys in several hash slots (CrossSlotError).  Skipped on "cluster" only.
# A module's name skips all its tests, "module::test" one test.
NOT_ON_CLUSTER: dict[str, str] = {}


@pytest.fixture(scope="session")
def atlasd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One `helios atlasd` for the session, as an operator starts it."""
    d = Daemon(tmp_path_factory.mktemp("atlasd") / "data", "--appendfsync", "always").start()
    try:
        yield d
    finally:
        d.stop()


def _flushall(server: Any) -> None:
    if isinstance(server, RedisClusterGroup):
        server.flushall()
        return
    host = getattr(server, "host", "127.0.0.1")
    password = getattr(server, "password", None)  # atlasd requires its password on TCP
    with redis.Redis(host=host, port=server.port, socket_timeout=10, password=password) as r:
        r.flushall()


class RunStore:
    """run_store(body): open the backend on a new loop, await body(store), close it."""

    def __init__(self, backend: str, tmp_path: Path, server: Any) -> None:
        self.backend = backend
        self._tmp_path = tmp_path
        self._server = server

    def __call__(self, body: Callable[[Store], Awaitable[None]]) -> None:
        factory = BACKENDS[self.backend].open

        async def main() -> None:
            async with factory(self._tmp_path, self._server) as store:
                await asyncio.wait_for(body(store), 30)

        asyncio.run(main())


@pytest.fixture(params=sorted(BACKENDS))
def run_store(request: pytest.FixtureRequest, tmp_path: Path) -> RunStore:
    backend = BACKENDS[request.param]
    if request.param == "cluster":
        module = request.node.module.__name__.rsplit(".", 1)[-1]
        why = NOT_ON_CLUSTER.get(module) or NOT_ON_CLUSTER.get(f"{module}::{request.node.originalname}")
        if why:
            pytest.skip(f"not on Redis Cluster yet: {why}")
    server = None
    if backend.server is not None:
        server = request.getfixturevalue(backend.server)
        _flushall(server)
    return RunStore(request.param, tmp_path, server)
