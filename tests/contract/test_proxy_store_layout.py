"""The proxy's config keys on every backend: one hash tag (`{proxy}`), and stores in the older layout moved.

Every change writes its record and `proxy:{proxy}:version` in one transaction:
one slot on Redis Cluster, so the proxy config works there.  A store written
before the tag (`proxy:route:ID` ... `proxy:version`, here written key by key
as the older code left them) is moved by the first read (`ensure_current`):
records under their new names, the version above the old one, nothing else
touched, and twice at once moves each record once.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from helios_core.proxy import store_config as sc
from helios_core.store import Store

WEB1 = {"id": "web1", "pool": "web", "url": "http://127.0.0.1:9001", "weight": 3}
API = {"id": "api", "prefix": "/api/", "pool": "web", "strip_prefix": True, "methods": ["GET"]}
POOL = {"id": "web", "balancer": "round_robin"}


async def _old_layout(s: Store) -> None:
    await s.set("proxy:backend:web1", orjson.dumps(WEB1))
    await s.set("proxy:route:api", orjson.dumps(API))
    await s.set("proxy:version", b"7")
    await s.set("proxy:later_kind:x", b"{}")  # not a record kind this version knows: left alone
    await s.set("rate:proxy:api:user:1", b"1:2")  # a rate bucket, not config


def _no_old_data_on_cluster(run_store) -> None:  # type: ignore[no-untyped-def]
    if run_store.backend == "cluster":
        pytest.skip("the older layout cannot exist on a Redis Cluster (its changes were cross-slot)")


def test_changes_keep_to_one_slot_on_every_backend(run_store) -> None:  # type: ignore[no-untyped-def]
    async def body(s: Store) -> None:
        await sc.add_backend(s, WEB1)
        await sc.add_route(s, API)
        assert [r["id"] for r in await sc.list_routes(s)] == ["api"]
        assert await s.get("proxy:{proxy}:version") == b"2"
        assert orjson.loads(await s.get("proxy:{proxy}:route:api") or b"") == API
        await sc.remove_route(s, "api")
        assert await sc.list_routes(s) == []

    run_store(body)


def test_a_store_in_the_older_layout_is_moved_once(run_store) -> None:  # type: ignore[no-untyped-def]
    _no_old_data_on_cluster(run_store)

    async def body(s: Store) -> None:
        await _old_layout(s)
        assert [r["id"] for r in await sc.list_routes(s)] == ["api"]  # the first read moves them
        assert await sc.get_backend(s, "web1") == WEB1
        assert await s.mget(["proxy:backend:web1", "proxy:route:api", "proxy:version"]) == [None] * 3
        assert int(await s.get(sc.VERSION_KEY) or 0) > 7  # a watcher sees a change
        assert await s.get("proxy:later_kind:x") == b"{}" and await s.get("rate:proxy:api:user:1") == b"1:2"
        sc._CURRENT.discard(s)  # another process starting later
        assert await sc.ensure_current(s) == 0
        await sc.add_route(s, {**API, "id": "api2", "prefix": "/v2/"})  # and it goes on from there
        assert [r["id"] for r in await sc.list_routes(s)] == ["api", "api2"]

    run_store(body)


def test_two_migrations_at_once_move_each_record_once(run_store) -> None:  # type: ignore[no-untyped-def]
    _no_old_data_on_cluster(run_store)

    async def body(s: Store) -> None:
        await _old_layout(s)
        await s.set("proxy:{proxy}:route:api", orjson.dumps({**API, "prefix": "/new/"}))  # written since: it wins
        moved = await asyncio.gather(sc.ensure_current(s), sc.ensure_current(s))
        assert sum(moved) == 3  # two records and the version, each by one of the two
        assert (await sc.get_route(s, "api"))["prefix"] == "/new/"
        assert await s.get("proxy:route:api") is None
        assert int(await s.get(sc.VERSION_KEY) or 0) > 7

    run_store(body)
