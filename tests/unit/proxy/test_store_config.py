"""The proxy's config in the store (embedded engine): CRUD, the version key, refusals, caps, the live source."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from helios_core.config import AtlasConfig
from helios_core.errors import ConfigError, ConflictError, HeliosError, InvalidInputError, NotFoundError
from helios_core.proxy import store_config as sc
from helios_core.proxy.model import ProxyConfig
from helios_core.store import EmbeddedStore, Store, Subscription

WEB1 = {"id": "web1", "pool": "web", "url": "http://127.0.0.1:9001", "weight": 3}
WEB2 = {"id": "web2", "pool": "web", "url": "http://127.0.0.1:9002"}
API = {"id": "api", "prefix": "/api/", "pool": "web", "strip_prefix": True, "methods": ["GET"]}


def run(tmp_path: Path, body: Callable[[EmbeddedStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(appendfsync="always", save=()))
        try:
            await asyncio.wait_for(body(store), 30)
        finally:
            await store.close()

    asyncio.run(main())


async def snapshot(store: Store) -> dict[bytes, bytes | None]:
    """Every proxy key and its value: to show that a refused change wrote nothing."""
    _, keys = await store.scan(sc.PREFIX, "0", 10000)
    return dict(zip(keys, await store.mget(list(keys)), strict=True)) if keys else {}


async def version(store: Store) -> int:
    raw = await store.get(sc.VERSION_KEY)
    return int(raw) if raw is not None else 0


def test_crud_and_every_change_increments_the_version(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        assert await sc.list_routes(store) == [] and await version(store) == 0
        await sc.add_backend(store, WEB1)
        await sc.add_backend(store, WEB2)
        assert await version(store) == 2
        assert await sc.add_route(store, API) == API
        assert await version(store) == 3
        assert orjson.loads(await store.get("proxy:{proxy}:route:api") or b"") == API
        assert await sc.get_route(store, "api") == API
        assert [b["id"] for b in await sc.list_backends(store)] == ["web1", "web2"]
        assert await sc.get_backend(store, "web1") == WEB1

        # PUT replaces (False: existed) or creates (True).
        assert await sc.put_route(store, {**API, "prefix": "/v2/"}) is False
        assert (await sc.get_route(store, "api"))["prefix"] == "/v2/"
        assert await sc.put_route(store, {"id": "all", "prefix": "/", "pool": "web"}) is True
        assert [r["id"] for r in await sc.list_routes(store)] == ["all", "api"]
        assert await version(store) == 5

        # A pool exists once a backend names it; settings are optional and kept apart.
        assert await sc.list_pools(store) == [{"id": "web", "backends": ["web1", "web2"]}]
        pool = await sc.add_pool(store, {"id": "web", "balancer": "weighted", "health": {"path": "/healthz"}})
        assert pool == {"id": "web", "balancer": "weighted", "health": {"path": "/healthz"},
                        "backends": ["web1", "web2"]}
        assert await version(store) == 6

        with pytest.raises(ConflictError) as e:
            await sc.add_route(store, API)
        assert e.value.status == 409 and "exists already" in e.value.message
        with pytest.raises(NotFoundError):
            await sc.get_route(store, "nope")
        with pytest.raises(NotFoundError):
            await sc.remove_route(store, "nope")
        with pytest.raises(NotFoundError):
            await sc.get_pool(store, "nope")
        assert await version(store) == 6

        await sc.remove_route(store, "all")
        await sc.remove_pool(store, "web")  # the settings go; the pool stays while backends name it
        assert await sc.get_pool(store, "web") == {"id": "web", "backends": ["web1", "web2"]}
        with pytest.raises(NotFoundError) as nf:
            await sc.remove_pool(store, "web")
        assert "backends name it" in nf.value.message
        await sc.remove_backend(store, "web2")
        assert await version(store) == 9
        assert await store.get("proxy:{proxy}:route:all") is None
        assert await store.get("proxy:{proxy}:backend:web2") is None

    run(tmp_path, body)


def test_load_assembles_the_yaml_shape(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB2)
        await sc.add_backend(store, WEB1)
        await sc.add_backend(store, {"id": "img1", "pool": "img", "url": "http://127.0.0.1:9100/static"})
        await sc.add_pool(store, {"id": "web", "balancer": "weighted", "breaker": {"failures": 2}})
        await sc.add_route(store, API)
        await sc.add_route(store, {"id": "img", "prefix": "/img/", "pool": "img", "hosts": ["cdn.example.com"]})
        source = sc.StoreConfigSource(store)
        config = await source.load()
        assert config.version == "6" and source.version == 6
        web = config.pools["web"]
        assert [(b.id, b.weight) for b in web.backends] == [("web1", 3), ("web2", 1)]
        assert web.balancer == "weighted" and web.breaker.failures == 2
        assert config.pools["img"].backends[0].base_path == "/static"
        routes = {r.id: r for r in config.routes}
        assert routes["api"].strip_prefix and routes["api"].methods == ("GET",)
        assert routes["img"].hosts == ("cdn.example.com",)

    run(tmp_path, body)


@pytest.mark.parametrize(("change", "words"), [
    (lambda s: sc.add_route(s, {"id": "x", "prefix": "/x/", "pool": "nope"}),
     ["route 'x'", "pool", "unknown pool 'nope'"]),
    (lambda s: sc.add_route(s, {"id": "x", "prefix": "x/", "pool": "web"}), ["route 'x'", "prefix", "'/'"]),
    (lambda s: sc.add_route(s, {"id": "x", "prefix": "/x/", "pool": "web", "colour": "red"}), ["colour"]),
    (lambda s: sc.add_route(s, {**API, "id": "api2"}), ["route 'api2'", "same prefix"]),
    (lambda s: sc.add_backend(s, {"id": "web3", "pool": "web", "url": "ftp://127.0.0.1"}),
     ["backend 'web3'", "url", "ftp"]),
    (lambda s: sc.add_backend(s, {"id": "web3", "pool": "web", "url": "http://127.0.0.1:1", "weight": 0}),
     ["backend 'web3'", "weight"]),
    (lambda s: sc.put_pool(s, {"id": "web", "balancer": "random"}), ["pool 'web'", "balancer", "random"]),
    # What is left would not load: the route still needs the pool the last backends make.
    (lambda s: sc.remove_backend(s, "web1"), []),
])
def test_an_invalid_change_is_refused_and_nothing_is_written(
        tmp_path: Path, change: Callable[[Store], Awaitable[object]], words: list[str]) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        await sc.add_route(store, API)
        before = await snapshot(store)
        with pytest.raises(InvalidInputError) as e:
            await change(store)
        assert e.value.status == 400 and e.value.code == "invalid_proxy_config"
        assert "the proxy config would be invalid" in e.value.message
        for word in words:
            assert word in e.value.message, e.value.message
        assert await snapshot(store) == before

    run(tmp_path, body)


def test_removing_the_last_backend_names_the_route_that_needs_it(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        await sc.add_route(store, API)
        with pytest.raises(InvalidInputError) as e:
            await sc.remove_backend(store, "web1")
        assert e.value.message.startswith("backend 'web1' not removed") and "route 'api': pool" in e.value.message
        await sc.remove_route(store, "api")
        await sc.remove_backend(store, "web1")
        assert await sc.list_pools(store) == []

    run(tmp_path, body)


@pytest.mark.parametrize(("kind", "record", "words"), [
    ("route", ["not", "an", "object"], "expected a JSON object"),
    ("route", {"prefix": "/", "pool": "web"}, "id: expected 1-64"),
    ("route", {"id": "a/b", "prefix": "/", "pool": "web"}, "id: expected 1-64"),
    ("route", {"id": "x" * 65, "prefix": "/", "pool": "web"}, "id: expected 1-64"),
    ("backend", {"id": "b", "url": "http://127.0.0.1:1"}, "pool: required"),
    ("backend", {"id": "b", "pool": "a b", "url": "http://127.0.0.1:1"}, "pool: expected 1-64"),
    ("pool", {"id": "web", "backends": []}, "backends: not part of a pool's settings"),
    ("route", {"id": "big", "prefix": "/", "pool": "web", "permissions": ["kv:read"] * 3000}, "exceeds the limit"),
])
def test_bad_records_are_refused_before_anything_is_read(tmp_path: Path, kind: str, record: object,
                                                         words: str) -> None:
    add = {"route": sc.add_route, "backend": sc.add_backend, "pool": sc.add_pool}[kind]

    async def body(store: EmbeddedStore) -> None:
        with pytest.raises(InvalidInputError) as e:
            await add(store, record)  # type: ignore[operator]
        assert words in e.value.message, e.value.message
        assert await snapshot(store) == {}

    run(tmp_path, body)


def test_caps_bound_what_one_admin_can_store(tmp_path: Path) -> None:
    assert sc.MAX_ROUTES == sc.MAX_BACKENDS == sc.MAX_POOLS == 1000

    async def body(store: EmbeddedStore) -> None:
        for i in range(3):
            await sc.add_backend(store, {"id": f"b{i}", "pool": f"p{i}", "url": f"http://127.0.0.1:{9000 + i}"},
                                 cap=3)
        with pytest.raises(ConflictError) as e:
            await sc.add_backend(store, {"id": "b3", "pool": "p0", "url": "http://127.0.0.1:9003"}, cap=3)
        assert e.value.code == "too_many_backends" and "at most 3" in e.value.message
        await sc.add_route(store, {"id": "r0", "prefix": "/0/", "pool": "p0"}, cap=1)
        with pytest.raises(ConflictError) as e:
            await sc.add_route(store, {"id": "r1", "prefix": "/1/", "pool": "p0"}, cap=1)
        assert e.value.code == "too_many_routes" and "remove one first" in e.value.message
        # Replacing an existing record is not growth: allowed at the cap.
        assert await sc.put_route(store, {"id": "r0", "prefix": "/zero/", "pool": "p0"}, cap=1) is False
        # A backend may not bring a new pool into being beyond the pool cap either.
        with pytest.raises(ConflictError) as e:
            await sc.add_backend(store, {"id": "b9", "pool": "p9", "url": "http://127.0.0.1:9009"}, cap=3)
        assert e.value.code in ("too_many_backends", "too_many_pools")

    run(tmp_path, body)


def test_concurrent_changes_all_land_each_validated(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        await asyncio.gather(*(sc.add_route(store, {"id": f"r{i}", "prefix": f"/{i}/", "pool": "web"})
                               for i in range(10)))
        assert len(await sc.list_routes(store)) == 10 and await version(store) == 11

    run(tmp_path, body)


def test_a_removal_is_allowed_from_an_already_invalid_config(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        # Written around the CRUD (by hand, or by an older release): a route with no pool.
        await store.set("proxy:{proxy}:route:lost", orjson.dumps({"id": "lost", "prefix": "/", "pool": "gone"}))
        with pytest.raises(ConfigError) as e:
            await sc.StoreConfigSource(store).load()
        assert "route 'lost': pool: unknown pool 'gone'" in e.value.message
        with pytest.raises(InvalidInputError):  # adding to it is refused: the result is still invalid
            await sc.add_backend(store, WEB1)
        await sc.remove_route(store, "lost")
        assert (await sc.StoreConfigSource(store).load()).routes == ()

    run(tmp_path, body)


class _Deliveries:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[ProxyConfig] = asyncio.Queue()

    def __call__(self, config: ProxyConfig) -> None:
        self.queue.put_nowait(config)

    async def next(self, timeout: float = 5.0) -> ProxyConfig:
        return await asyncio.wait_for(self.queue.get(), timeout)


def test_watch_delivers_a_change_pushed_by_the_store(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        # A poll far beyond the wait below: what arrives was pushed by the notification.
        source = sc.StoreConfigSource(store, poll_interval=3600)
        await source.load()
        got = _Deliveries()
        task = asyncio.ensure_future(source.watch(got))
        await asyncio.sleep(0)
        await sc.add_route(store, API)
        config = await got.next()
        assert [r.id for r in config.routes] == ["api"] and config.version == "2"
        await sc.remove_route(store, "api")
        assert (await got.next()).routes == ()
        assert got.queue.empty()
        source.close()
        await asyncio.wait_for(task, 5)  # close() ends watch: it returns

    run(tmp_path, body)


def test_watch_without_a_load_first_delivers_the_current_config(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        source = sc.StoreConfigSource(store, poll_interval=3600)
        got = _Deliveries()
        task = asyncio.ensure_future(source.watch(got))
        assert list((await got.next()).pools) == ["web"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(tmp_path, body)


def deafen(store: EmbeddedStore) -> None:
    """The same store, whose change notification gets lost (as with a dropped pub/sub connection)."""
    store.subscribe = lambda prefix: Subscription(b"proxy:")  # type: ignore[method-assign]  # never delivers


def test_the_version_poll_catches_a_change_whose_notification_was_lost(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        deafen(store)
        source = sc.StoreConfigSource(store, poll_interval=0.05)
        await source.load()
        got = _Deliveries()
        task = asyncio.ensure_future(source.watch(got))
        await sc.add_route(store, API)
        assert [r.id for r in (await got.next()).routes] == ["api"]
        source.close()
        await asyncio.wait_for(task, 5)

    run(tmp_path, body)


def test_watch_skips_an_invalid_stored_config_and_keeps_going(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        source = sc.StoreConfigSource(store, poll_interval=3600)
        await source.load()
        got = _Deliveries()
        task = asyncio.ensure_future(source.watch(got))
        await asyncio.sleep(0)
        # Around the CRUD: invalid, and announced by a version bump.
        await store.transact(lambda t: (t.set("proxy:{proxy}:route:bad", b'{"prefix": "/", "pool": "gone"}'),
                                        t.incrby(sc.VERSION_KEY, 1)))
        with pytest.raises(TimeoutError):
            await got.next(timeout=0.3)
        assert source.config is not None and source.config.routes == ()  # the running config stays
        await store.delete("proxy:{proxy}:route:bad")
        await sc.add_route(store, API)
        # The delete alone leaves a valid config (no routes), which a slow machine may deliver
        # before the route is added: any such delivery is that config, then comes the route.
        while not (routes := [r.id for r in (await got.next()).routes]):
            pass
        assert routes == ["api"]
        source.close()
        await asyncio.wait_for(task, 5)

    run(tmp_path, body)


def test_watch_outlives_unreadable_records_and_applies_the_repair(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore) -> None:
        await sc.add_backend(store, WEB1)
        source = sc.StoreConfigSource(store, poll_interval=3600)
        await source.load()
        got = _Deliveries()
        task = asyncio.ensure_future(source.watch(got))
        await asyncio.sleep(0)
        await store.set("proxy:{proxy}:route:junk", b"not json")  # written around the CRUD
        with pytest.raises(HeliosError) as e:
            await sc.list_routes(store)
        assert e.value.code == "bad_proxy_store" and "proxy:{proxy}:route:junk" in e.value.message
        with pytest.raises(TimeoutError):
            await got.next(timeout=0.3)
        assert not task.done()  # logged, still watching
        await store.delete("proxy:{proxy}:route:junk")
        await sc.add_route(store, API)
        assert [r.id for r in (await got.next()).routes] == ["api"]
        source.close()
        await asyncio.wait_for(task, 5)

    run(tmp_path, body)
