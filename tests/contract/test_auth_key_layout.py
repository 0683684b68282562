"""Auth keys under the `{auth}` hash tag on every backend, and stores of the older names moved (auth/migrate.py).

A store as the previous version left it (made here by running the current
code, then putting every auth key back under its older name with its TTL) is
moved by the gateway's start (`AuthService.bootstrap`): the admin logs in with
its password, a token issued before still works, roles, settings, login
failures and the audit log are where the code looks, TTLs kept, nothing else
touched; a later start moves nothing; two at once move each key once.  On
Redis Cluster the older layout cannot exist (its transactions were
cross-slot): there the test is that auth runs.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from helios_core.auth import Actor, migrate
from helios_core.auth.audit import AUDIT_KEY
from helios_core.errors import AuthenticationError
from helios_core.ratelimit import SETTINGS_KEY, Policy
from helios_core.store import Store
from tests.contract.test_auth_backends import _service

NOW = 1_800_000_000_000
ME = Actor("tester", None, "10.0.0.1")
PASSWORD = "correct-horse-battery-staple"
TAG = b"{auth}:"


async def _back_to_older_names(s: Store) -> int:
    """Every tagged auth key under the name the previous version gave it (TTL kept); how many."""
    n = 0
    for key in [*await s.scan_all("auth:{auth}:"), *await s.scan_all("rbac:{auth}:"), *await s.scan_all("rate:{auth}:"),
                SETTINGS_KEY.encode()]:
        if key == migrate.FORMAT_KEY.encode():
            await s.delete(key)
            continue
        raw, ttl = await s.get(key), await s.pttl(key)
        if raw is None:
            continue
        await s.delete(key)
        await s.set(key.replace(TAG, b""), raw, px=ttl if ttl > 0 else None)
        n += 1
    entries = await s.zrangebyscore(AUDIT_KEY)
    await s.transact(lambda t: (t.zadd("audit:log", dict(entries)), t.delete(AUDIT_KEY)))
    migrate._CURRENT.discard(s)
    return n


def _skip_on_cluster(run_store) -> None:  # type: ignore[no-untyped-def]
    if run_store.backend == "cluster":
        pytest.skip("the older layout cannot exist on a Redis Cluster (its transactions were cross-slot)")


def test_an_older_store_is_moved_at_the_gateways_start(run_store) -> None:  # type: ignore[no-untyped-def]
    _skip_on_cluster(run_store)

    async def body(s: Store) -> None:
        svc, hasher = _service(s, Policy(100, 60))
        try:
            password = await svc.bootstrap(NOW)
            assert password is not None
            pair = await svc.login("admin", password, NOW, ME)
            await svc.create_user("bob", PASSWORD, ["user"], NOW, ME)
            await svc.limiter.update_overrides({"default": {"limit": 5, "window": 60}})
            with pytest.raises(AuthenticationError):  # (a failed login: a counter with a TTL)
                await svc.login("bob", "wrong-password-0", NOW, ME)
            await s.set("kv:users/x", b"data")  # not auth
            moved_back = await _back_to_older_names(s)
            assert moved_back >= 8 and await s.get("auth:username:bob") is not None
            assert await s.zcard("audit:log") >= 2

            assert await svc.bootstrap(NOW) is None  # the older store: moved, and not empty
            assert [k for k in await s.scan_all("auth:") if TAG not in k] == []
            assert [k for k in await s.scan_all("rbac:") if TAG not in k] == []
            assert await s.get("config:ratelimit") is None and await s.zcard("audit:log") == 0
            assert orjson.loads(await s.get(SETTINGS_KEY) or b"")["default"]["limit"] == 5
            assert await s.zcard(AUDIT_KEY) >= 2
            failures = await s.scan_all("auth:{auth}:login_failures:")
            assert failures and 0 < await s.pttl(failures[0])
            assert await s.get("kv:users/x") == b"data"
            assert await s.scan_all("rate:") and not await s.scan_all("rate:{auth}:")  # buckets: left to expire

            assert (await svc.authenticate(pair.access_token, NOW)).username == "admin"  # issued before
            assert (await svc.authenticate((await svc.login("bob", PASSWORD, NOW, ME)).access_token,
                                           NOW)).username == "bob"
            migrate._CURRENT.discard(s)  # another process starting later
            assert await migrate.ensure_current(s) == 0
        finally:
            hasher.close()

    run_store(body)


def test_two_migrations_at_once_move_each_key_once(run_store) -> None:  # type: ignore[no-untyped-def]
    _skip_on_cluster(run_store)

    async def body(s: Store) -> None:
        svc, hasher = _service(s, Policy(100, 60))
        try:
            password = await svc.bootstrap(NOW)
            assert password is not None
            pair = await svc.login("admin", password, NOW, ME)
            moved_back = await _back_to_older_names(s)
            moved = await asyncio.gather(migrate.ensure_current(s), migrate.ensure_current(s))
            # Each string key once (rate buckets are not moved), and the audit log once.
            buckets = len(await s.scan_all("rate:"))
            assert sum(moved) == moved_back - buckets + 1
            assert (await svc.authenticate(pair.access_token, NOW)).username == "admin"
        finally:
            hasher.close()

    run_store(body)


def test_auth_runs_on_every_backend(run_store) -> None:  # type: ignore[no-untyped-def]
    async def body(s: Store) -> None:
        svc, hasher = _service(s, Policy(100, 60))
        try:
            password = await svc.bootstrap(NOW)
            assert password is not None
            pair = await svc.login("admin", password, NOW, ME)
            assert (await svc.authenticate(pair.access_token, NOW)).username == "admin"
            await svc.create_user("bob", PASSWORD, ["user"], NOW, ME)
            await svc.grant("bob", "readonly", NOW, ME)
            await svc.set_disabled("bob", True, NOW, ME)
            await svc.remove_user("bob", NOW, ME)
            await svc.logout(await svc.authenticate(pair.access_token, NOW), NOW, ME)
        finally:
            hasher.close()

    run_store(body)
