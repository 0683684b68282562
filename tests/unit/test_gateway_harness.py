"""A real gateway on an unused port over an embedded store in a tmp dir, and an HTTP client for it.

Not a test module: the other test_gateway_* modules import `gateway` from here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.testing import bind_unused_port

from helios_core.config import HeliosConfig, load_config
from helios_core.gateway import GatewayService
from helios_core.store import EmbeddedStore, Store

SECRET = "k1=" + "t" * 48


class Clock:
    """Wall time that a test can move forward (never back: the store's TTLs run on real time)."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset

    def advance(self, ms: int) -> None:
        self.offset += ms


@dataclass
class Response:
    code: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error_code(self) -> str:
        return str(self.json()["error"]["code"])


@dataclass
class Api:
    base: str
    port: int
    service: GatewayService
    store: Any  # EmbeddedStore unless the test gave another Store
    admin_password: str
    clock: Clock
    client: AsyncHTTPClient = field(default_factory=lambda: AsyncHTTPClient(force_instance=True, max_clients=300))

    async def call(self, method: str, path: str, *, token: str | None = None, json: Any = None,
                   body: bytes | None = None, headers: dict[str, str] | None = None) -> Response:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        if json is not None:
            body = orjson.dumps(json)
            h.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        req = HTTPRequest(self.base + path, method=method, headers=h, body=body, allow_nonstandard_methods=True,
                          request_timeout=30, follow_redirects=False)
        r: HTTPResponse = await self.client.fetch(req, raise_error=False)
        if r.code == 599:
            raise r.error  # type: ignore[misc]
        return Response(r.code, r.headers, r.body or b"")

    async def login(self, username: str, password: str) -> dict[str, Any]:
        r = await self.call("POST", "/api/v1/auth/login", json={"username": username, "password": password})
        assert r.code == 200, r.body
        return r.json()  # type: ignore[no-any-return]

    async def admin_token(self) -> str:
        return str((await self.login("admin", self.admin_password))["access_token"])

    async def make_user(self, name: str, roles: list[str], password: str = "password-123") -> str:
        """Create a user through the admin API; returns an access token of theirs."""
        r = await self.call("POST", "/admin/users", token=await self.admin_token(),
                            json={"username": name, "password": password, "roles": roles})
        assert r.code == 201, r.body
        return str((await self.login(name, password))["access_token"])


def test_config(**overrides: Any) -> HeliosConfig:
    base: dict[str, Any] = {"auth.bcrypt_cost": 4, "atlas.save": [], "auth.jwt_keys": [SECRET],
                            "ratelimit.default": (100000, 60), "log.level": "warn"}
    return load_config(env={}, overrides={**base, **overrides})


test_config.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


@asynccontextmanager
async def gateway(tmp_path: Path, *, clock: Clock | None = None, wall_clock: Callable[[], int] | None = None,
                  store: Store | None = None, **overrides: Any) -> AsyncIterator[Api]:
    """`store`: a store of the caller's (an empty keyspace, left open), instead of an embedded one in tmp_path."""
    config = test_config(**overrides)
    own = store is None
    if store is None:
        store = await EmbeddedStore.open(tmp_path / "data", config.atlas)
    clock = clock or Clock()
    service = GatewayService(config, store, key_specs=list(config.auth.jwt_keys), clock=clock,
                             wall_clock=wall_clock)
    sock, port = bind_unused_port()
    api = None
    try:
        password = await service.start()
        assert password is not None
        service.listen([sock])
        api = Api(f"http://127.0.0.1:{port}", port, service, store, password, clock)
        yield api
    finally:
        if api is not None:
            api.client.close()
        await service.shutdown(1)
        if own:
            await store.close()


def run_gateway(tmp_path: Path, body: Callable[[Api], Awaitable[None]], timeout: float = 120,
                **overrides: Any) -> None:
    async def main() -> None:
        async with gateway(tmp_path, **overrides) as api:
            await asyncio.wait_for(body(api), timeout)

    asyncio.run(main())
