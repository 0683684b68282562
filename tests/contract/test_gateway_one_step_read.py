"""A KV GET by a token seen before reads its value beside the rate-limit bucket, in one store step;
the value is speculative until every check has passed.  The attacker's view, on every backend
(embedded, atlasd, redis-server):

- a token without read permission on the key gets 403, and its value is never even read;
- an exhausted bucket gets 429, a revoked token or a disabled user 401, a role taken away 403:
  the value read beside the checks is dropped;
- the value never appears in those answers or in any log line (loguru's and the access log);
- 200 concurrent GETs on a bucket of 25 admit exactly 25 (the others 429, no 409).
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from helios_core.gateway.accesslog import AccessLog
from helios_core.observability.logging import setup_logging
from helios_core.store import Store
from tests.unit.test_gateway_harness import Api, Response, gateway

pytestmark = pytest.mark.usefixtures("restore_logging")

PASSWORD = "correct-horse-battery-staple"
SECRET_KEY = "vault/x"


class Reads:
    """Every key list the gateway's one-step read asked for (a spy on Store.read_and_run_script)."""

    def __init__(self, store: Store) -> None:
        self.calls: list[list[bytes]] = []
        real = store.read_and_run_script

        async def spy(reads: list[Any], *a: Any, **k: Any) -> Any:
            self.calls.append([r if isinstance(r, bytes) else r.encode() for r in reads])
            return await real(reads, *a, **k)

        store.read_and_run_script = spy  # type: ignore[method-assign]

    def of(self, key: str) -> int:
        k = ("kv:" + key).encode()
        return sum(k in c for c in self.calls)


@asynccontextmanager
async def logged_gateway(store: Store, tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Api, io.StringIO]]:
    """A gateway on `store`, every log line (debug and up, and the access log) into one buffer."""
    out = io.StringIO()
    setup_logging("debug", "json", stream=out)
    async with gateway(tmp_path, store=store, **{"log.level": "debug", **overrides}) as api:
        api.service.gateway.access = AccessLog("debug", "json", lambda: out)
        yield api, out


async def user(api: Api, admin: str, name: str, permissions: list[str]) -> str:
    """`name` holding exactly `permissions` (through role `<name>-role`); an access token of theirs."""
    r = await api.call("PUT", f"/admin/roles/{name}-role", token=admin,
                       json={"name": f"{name}-role", "permissions": permissions})
    assert r.code in (200, 201), r.body
    r = await api.call("POST", "/admin/users", token=admin,
                       json={"username": name, "password": PASSWORD, "roles": [f"{name}-role"]})
    assert r.code == 201, r.body
    return str((await api.login(name, PASSWORD))["access_token"])


def refused(r: Response, status: int, code: str | None, secret: bytes) -> None:
    assert r.code == status, (r.code, r.body)
    if code is not None:
        assert r.error_code == code, r.body
    assert secret not in r.body
    assert all(secret.decode() not in v for _, v in r.headers.get_all())


Attack = Callable[[Api, str, str, str], Awaitable[None]]  # (api, admin token, username, their token)


async def _revoke(api: Api, admin: str, name: str, token: str) -> None:
    assert (await api.call("POST", "/api/v1/auth/logout", token=token)).code in (200, 204)


async def _disable(api: Api, admin: str, name: str, token: str) -> None:
    assert (await api.call("PATCH", f"/admin/users/{name}", token=admin, json={"disabled": True})).code == 200


async def _disable_record(api: Api, admin: str, name: str, token: str) -> None:
    # The user record alone, sessions left in place (another gateway's write, say).
    auth = api.service.gateway.auth
    u = await auth.users.require(name)
    await auth.users.update(u.id, api.clock(), disabled=True)


async def _take_role(api: Api, admin: str, name: str, token: str) -> None:
    r = await api.call("DELETE", f"/admin/users/{name}/roles/{name}-role", token=admin)
    assert r.code in (200, 204), r.body


async def _exhaust(api: Api, admin: str, name: str, token: str) -> None:
    r = await api.call("PUT", "/admin/ratelimit", token=admin, json={"clients": {f"user:{name}": {"limit": 1,
                                                                                                  "window": 3600}}})
    assert r.code == 200, r.body
    r = await api.call("GET", f"/api/v1/kv/{SECRET_KEY}", token=token)  # the new policy's one token
    assert r.code == 200


ATTACKS: dict[str, tuple[Attack, int, str]] = {
    "revoked_token": (_revoke, 401, "token_revoked"),
    "disabled_user": (_disable, 401, "token_revoked"),  # disabling ends the user's sessions too
    "disabled_user_record": (_disable_record, 401, "account_disabled"),
    "role_taken_away": (_take_role, 403, "forbidden"),
    "exhausted_bucket": (_exhaust, 429, "rate_limited"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_refused_caller_never_gets_the_value_read_beside_its_checks(run_store, tmp_path: Path,
                                                                      attack: str) -> None:
    change, status, code = ATTACKS[attack]
    secret = b"S3CR3T-" + secrets.token_hex(8).encode()

    async def body(store: Store) -> None:
        async with logged_gateway(store, tmp_path) as (api, out):
            reads = Reads(store)
            admin = await api.admin_token()
            assert (await api.call("PUT", f"/api/v1/kv/{SECRET_KEY}", token=admin, body=secret)).code == 201
            token = await user(api, admin, "eve", ["kv:read"])
            for _ in range(3):  # the third is answered by the one-step path: the value read with the checks
                r = await api.call("GET", f"/api/v1/kv/{SECRET_KEY}", token=token)
                assert r.code == 200 and r.body == secret
            await change(api, admin, "eve", token)
            before = reads.of(SECRET_KEY)
            refused(await api.call("GET", f"/api/v1/kv/{SECRET_KEY}", token=token), status, code, secret)
            assert reads.of(SECRET_KEY) == before + 1, "the refused request did not take the one-step path"
            await asyncio.sleep(0.05)  # (the access log writes in batches)
            api.service.gateway.access.writer.flush()  # type: ignore[union-attr]
        logs = out.getvalue()
        assert "eve" in logs and secret.decode() not in logs

    run_store(body)


def test_a_caller_without_read_permission_never_has_the_value_read(run_store, tmp_path: Path) -> None:
    secret = b"S3CR3T-" + secrets.token_hex(8).encode()

    async def body(store: Store) -> None:
        async with logged_gateway(store, tmp_path) as (api, out):
            reads = Reads(store)
            admin = await api.admin_token()
            assert (await api.call("PUT", f"/api/v1/kv/{SECRET_KEY}", token=admin, body=secret)).code == 201
            assert (await api.call("PUT", "/api/v1/kv/public/a", token=admin, body=b"hello")).code == 201
            token = await user(api, admin, "mallory", ["kv:read@public/"])
            for _ in range(3):  # from the third on, the one-step path reads public/a with the checks
                r = await api.call("GET", "/api/v1/kv/public/a", token=token)
                assert r.code == 200 and r.body == b"hello"
            assert reads.of("public/a") == 1
            for _ in range(3):
                refused(await api.call("GET", f"/api/v1/kv/{SECRET_KEY}", token=token), 403, "forbidden", secret)
            assert reads.of(SECRET_KEY) == 0  # not even read: the remembered principal may not see it
            # Unknown and malformed tokens never reach the one-step path.
            refused(await api.call("GET", f"/api/v1/kv/{SECRET_KEY}", token=token[:-4] + "AAAA"), 401, None,
                    secret)
            refused(await api.call("GET", f"/api/v1/kv/{SECRET_KEY}", token="x.y.z"), 401, None, secret)
            assert reads.of(SECRET_KEY) == 0
            await asyncio.sleep(0.05)
            api.service.gateway.access.writer.flush()  # type: ignore[union-attr]
        logs = out.getvalue()
        assert "mallory" in logs and secret.decode() not in logs

    run_store(body)


def test_two_hundred_concurrent_gets_admit_exactly_the_bucket(run_store, tmp_path: Path) -> None:
    async def body(store: Store) -> None:
        async with logged_gateway(store, tmp_path, **{"ratelimit.default": (25, 3600)}) as (api, _):
            admin = await api.admin_token()  # the login spends the address's bucket, not the admin's
            assert (await api.call("PUT", "/api/v1/kv/hot", token=admin, body=b"v")).code == 201  # 1 of 25
            assert (await api.call("GET", "/api/v1/kv/hot", token=admin)).code == 200  # 2: now remembered
            results = await asyncio.gather(*(api.call("GET", "/api/v1/kv/hot", token=admin) for _ in range(200)))
            codes = [r.code for r in results]
            assert codes.count(200) == 23 and codes.count(429) == 177, sorted(set(codes))
            assert all(r.body == b"v" for r in results if r.code == 200)
            assert all(b'"v"' not in r.body and r.body != b"v" for r in results if r.code == 429)

    run_store(body)
