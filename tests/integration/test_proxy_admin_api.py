"""/admin/proxy on a real gateway (in process, unused port): CRUD, admin:proxy, refusals, audit, live reload.

The last test runs the gateway on a redis-server and `helios proxy --store` on the same one: a route
POSTed to the gateway is served by the running proxy, no restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tornado.testing import bind_unused_port

from helios_core.gateway import GatewayService
from helios_core.proxy.model import ProxyConfig
from helios_core.proxy.store_config import StoreConfigSource
from helios_core.store import RemoteStore
from tests.integration.test_proxy_admin_cli import StoreProxy, served_within
from tests.proxy_backend import BackendProcess
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.security.conftest import Api, Clock, run_gateway, test_config, user_with, user_with_roles

pytestmark = pytest.mark.usefixtures("restore_logging")

WEB1 = {"id": "web1", "pool": "web", "url": "http://127.0.0.1:9001", "weight": 3}
API = {"id": "api", "prefix": "/api/", "pool": "web", "methods": ["GET"]}
ENDPOINTS = [("GET", "/admin/proxy/routes"), ("POST", "/admin/proxy/routes"), ("GET", "/admin/proxy/routes/api"),
             ("PUT", "/admin/proxy/routes/api"), ("DELETE", "/admin/proxy/routes/api"),
             ("GET", "/admin/proxy/backends"), ("POST", "/admin/proxy/backends"),
             ("GET", "/admin/proxy/backends/web1"), ("PUT", "/admin/proxy/backends/web1"),
             ("DELETE", "/admin/proxy/backends/web1"), ("GET", "/admin/proxy/pools"), ("POST", "/admin/proxy/pools"),
             ("GET", "/admin/proxy/pools/web"), ("PUT", "/admin/proxy/pools/web"),
             ("DELETE", "/admin/proxy/pools/web")]


def test_a_holder_of_admin_proxy_adds_lists_replaces_and_removes(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await user_with(api, "netops", ["admin:proxy"])
        r = await api.call("POST", "/admin/proxy/backends", token=t, json=WEB1)
        assert r.code == 201 and r.json() == WEB1, r.body
        r = await api.call("POST", "/admin/proxy/routes", token=t, json=API)
        assert r.code == 201 and r.json() == API, r.body
        r = await api.call("POST", "/admin/proxy/routes", token=t, json=API)
        assert r.code == 409 and r.error_code == "exists"

        r = await api.call("GET", "/admin/proxy/routes", token=t)
        assert r.code == 200 and r.json() == {"routes": [API]}
        assert (await api.call("GET", "/admin/proxy/routes/api", token=t)).json() == API
        assert (await api.call("GET", "/admin/proxy/backends", token=t)).json() == {"backends": [WEB1]}
        assert (await api.call("GET", "/admin/proxy/pools", token=t)).json() == {
            "pools": [{"id": "web", "backends": ["web1"]}]}

        # PUT: the id is the path's; 200 when replaced, 201 when created.
        r = await api.call("PUT", "/admin/proxy/routes/api", token=t, json={"prefix": "/v1/", "pool": "web"})
        assert r.code == 200 and r.json() == {"id": "api", "prefix": "/v1/", "pool": "web"}
        r = await api.call("PUT", "/admin/proxy/routes/all", token=t, json={"prefix": "/", "pool": "web"})
        assert r.code == 201
        r = await api.call("PUT", "/admin/proxy/pools/web", token=t,
                           json={"balancer": "least_conn", "health": {"path": "/healthz", "interval": 2}})
        assert r.code == 201 and r.json() == {"id": "web", "balancer": "least_conn",
                                              "health": {"path": "/healthz", "interval": 2}, "backends": ["web1"]}
        r = await api.call("POST", "/admin/proxy/pools", token=t, json={"id": "img", "balancer": "p2c"})
        assert r.code == 201 and r.json() == {"id": "img", "balancer": "p2c", "backends": []}
        r = await api.call("PUT", "/admin/proxy/backends/web2", token=t,
                           json={"pool": "img", "url": "http://127.0.0.1:9002"})
        assert r.code == 201 and r.json()["pool"] == "img"

        for path in ("/admin/proxy/routes/all", "/admin/proxy/routes/api", "/admin/proxy/pools/img",
                     "/admin/proxy/backends/web2"):
            r = await api.call("DELETE", path, token=t)
            assert r.code == 204, (path, r.body)
        assert (await api.call("GET", "/admin/proxy/routes/api", token=t)).code == 404
        assert (await api.call("DELETE", "/admin/proxy/routes/api", token=t)).code == 404
        assert (await api.call("GET", "/admin/proxy/pools/img", token=t)).code == 404
        assert (await api.call("GET", "/admin/proxy/routes", token=t)).json() == {"routes": []}

        # Every change is audited, under the caller's name.
        r = await api.call("GET", "/admin/audit?action=proxy.route.add", token=await api.admin_token())
        events = r.json()["events"]
        assert [(e["actor"], e["target"]) for e in events] == [("netops", "api")]
        r = await api.call("GET", "/admin/audit?action=proxy.backend.remove", token=await api.admin_token())
        assert [e["target"] for e in r.json()["events"]] == ["web2"]

    run_gateway(tmp_path, body)


def test_without_admin_proxy_every_operation_is_forbidden(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        users_admin = await user_with(api, "hr", ["admin:users", "admin:roles", "admin:store"])
        plain = await user_with_roles(api, "pat", ["user"])
        for token, who in ((users_admin, "hr"), (plain, "pat")):
            for method, path in ENDPOINTS:
                r = await api.call(method, path, token=token,
                                   json={"id": "x", "prefix": "/", "pool": "web"} if method in ("POST", "PUT")
                                   else None)
                assert r.code == 403 and r.error_code == "forbidden", (who, method, path, r.body)
                assert "admin:proxy" in r.json()["error"]["message"]
        for method, path in ENDPOINTS[:2]:
            assert (await api.call(method, path, json={} if method == "POST" else None)).code == 401
        # Nothing was written by any of it.
        assert await api.store.get("proxy:{proxy}:version") is None

    run_gateway(tmp_path, body)


@pytest.mark.parametrize(("method", "path", "raw", "code", "words"), [
    ("POST", "/admin/proxy/routes", b"", "invalid_input", "expected a JSON object, got nothing"),
    ("POST", "/admin/proxy/routes", b"{not json", "invalid_input", "invalid JSON"),
    ("POST", "/admin/proxy/routes", b"[1, 2]", "invalid_input", "expected a JSON object"),
    ("POST", "/admin/proxy/routes", b'{"prefix": "/x/", "pool": "web"}', "invalid_input", "id: expected 1-64"),
    ("POST", "/admin/proxy/routes", b'{"id": "x", "prefix": "/x/", "pool": "nope"}', "invalid_proxy_config",
     "route 'x': pool: unknown pool 'nope'"),
    ("POST", "/admin/proxy/routes", b'{"id": "x", "prefix": "/x/", "pool": "web", "colour": 1}',
     "invalid_proxy_config", "colour"),
    ("POST", "/admin/proxy/routes", b'{"id": "x", "prefix": "/x/", "pool": "web", "retries": "many"}',
     "invalid_proxy_config", "route 'x': retries"),
    ("POST", "/admin/proxy/backends", b'{"id": "b", "url": "http://127.0.0.1:1"}', "invalid_input", "pool: required"),
    ("POST", "/admin/proxy/backends", b'{"id": "b", "pool": "web", "url": "127.0.0.1:1"}', "invalid_proxy_config",
     "backend 'b': url"),
    ("POST", "/admin/proxy/pools", b'{"id": "web", "backends": []}', "invalid_input", "not part of a pool"),
    ("POST", "/admin/proxy/pools", b'{"id": "web", "balancer": "fastest"}', "invalid_proxy_config",
     "pool 'web': balancer"),
    ("PUT", "/admin/proxy/routes/api", b'{"id": "other", "prefix": "/", "pool": "web"}', "invalid_input",
     "must match the route in the path"),
    ("GET", "/admin/proxy/routes/bad%20id", None, "invalid_input", "id: expected 1-64"),
    ("DELETE", "/admin/proxy/backends/web1", None, "invalid_proxy_config",
     "backend 'web1' not removed: the proxy config would be invalid: route 'api': pool"),
])
def test_bad_bodies_are_400_and_change_nothing(tmp_path: Path, method: str, path: str, raw: bytes | None,
                                               code: str, words: str) -> None:
    async def body(api: Api) -> None:
        t = await user_with(api, "netops", ["admin:proxy"])
        assert (await api.call("POST", "/admin/proxy/backends", token=t, json=WEB1)).code == 201
        assert (await api.call("POST", "/admin/proxy/routes", token=t, json=API)).code == 201
        r = await api.call(method, path, token=t, body=raw, headers={"Content-Type": "application/json"})
        assert r.code == 400 and r.error_code == code, r.body
        assert words in r.json()["error"]["message"], r.body
        assert await api.store.get("proxy:{proxy}:version") == b"2"

    run_gateway(tmp_path, body)


def test_a_change_through_the_api_reaches_a_watching_proxy(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await user_with(api, "netops", ["admin:proxy"])
        assert (await api.call("POST", "/admin/proxy/backends", token=t, json=WEB1)).code == 201
        # What `helios proxy --data` runs, on the gateway's store; a poll far beyond the wait.
        source = StoreConfigSource(api.store, poll_interval=3600)
        await source.load()
        seen: asyncio.Queue[ProxyConfig] = asyncio.Queue()
        task = asyncio.ensure_future(source.watch(seen.put_nowait))
        try:
            await asyncio.sleep(0)
            assert (await api.call("POST", "/admin/proxy/routes", token=t, json=API)).code == 201
            config = await asyncio.wait_for(seen.get(), 5)
            assert [r.id for r in config.routes] == ["api"] and config.pools["web"].backends[0].weight == 3
        finally:
            source.close()
            await asyncio.wait_for(task, 5)

    run_gateway(tmp_path, body)


def test_a_route_added_through_the_api_serves_at_once_on_a_running_proxy(redis_server: RedisServer,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    """Gateway and `helios proxy --store` on one redis: POST a route, the proxy serves it, no restart."""
    import redis

    with redis.Redis(host=redis_server.host, port=redis_server.port) as r:
        r.flushall()
    url = f"redis://{redis_server.host}:{redis_server.port}/0"

    async def main(web1: BackendProcess, proxy: StoreProxy) -> None:
        config = test_config()
        store = RemoteStore(url)
        service = GatewayService(config, store, key_specs=list(config.auth.jwt_keys), clock=Clock())
        sock, port = bind_unused_port()
        api = None
        try:
            password = await service.start()
            assert password is not None
            service.listen([sock])
            api = Api(f"http://127.0.0.1:{port}", port, service, store, password, Clock())  # type: ignore[arg-type]
            t = await api.admin_token()
            r = await api.call("POST", "/admin/proxy/backends", token=t,
                               json={"id": "web1", "pool": "web", "url": web1.url})
            assert r.code == 201, r.body
            assert (await api.call("POST", "/admin/proxy/routes", token=t, json=API)).code == 201
            assert await asyncio.to_thread(served_within, proxy.port, "/api/x", 200, 3.0), \
                proxy.log_path.read_text(errors="replace")
            assert (await api.call("DELETE", "/admin/proxy/routes/api", token=t)).code == 204
            assert await asyncio.to_thread(served_within, proxy.port, "/api/x", 404, 3.0)
        finally:
            if api is not None:
                api.client.close()
            await service.shutdown(1)
            await store.close()

    with BackendProcess("web1") as web1:
        proxy = StoreProxy(url, tmp_path / "proxy.log")
        try:
            asyncio.run(main(web1, proxy))
            assert proxy.proc.poll() is None
        finally:
            proxy.stop()
