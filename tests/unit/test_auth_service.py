"""Authentication flows on a real embedded store: bootstrap, login, throttling, refresh, revocation, audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from helios_core.auth import Actor, AuditLog, AuthService, KeyRing, PasswordHasher
from helios_core.config import AtlasConfig, AuthConfig
from helios_core.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from helios_core.ratelimit import Policy, RateLimiter, RateLimitSettings
from helios_core.store import EmbeddedStore

NOW = 1_800_000_000_000
ME = Actor("tester", None, "10.0.0.1")


@asynccontextmanager
async def service(tmp_path: Path, **auth: object) -> AsyncIterator[AuthService]:
    store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(save=()))
    cfg = AuthConfig(**{"bcrypt_cost": 4, **auth})  # type: ignore[arg-type]
    keys = KeyRing.from_specs(["k1=" + "s" * 40], cfg.jwt_algorithms, issuer=cfg.jwt_issuer,
                              audience=cfg.jwt_audience, leeway_s=0)
    hasher = PasswordHasher(cfg.bcrypt_cost, workers=2)
    svc = AuthService(store, cfg, keys, hasher, RateLimiter(store, RateLimitSettings(Policy(100, 1))),
                      AuditLog(store, cfg.audit_max_entries))
    try:
        yield svc
    finally:
        hasher.close()
        await store.close()


def run(tmp_path: Path, body: Callable[[AuthService], Awaitable[None]], **auth: object) -> None:
    async def main() -> None:
        async with service(tmp_path, **auth) as svc:
            await asyncio.wait_for(body(svc), 60)

    asyncio.run(main())


async def with_user(svc: AuthService, name: str = "alice", password: str = "correct horse",
                    roles: tuple[str, ...] = ("user",)) -> None:
    await svc.roles.seed()
    await svc.create_user(name, password, roles, NOW, ME)


def test_bootstrap_creates_admin_once(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        password = await svc.bootstrap(NOW)
        assert password and len(password) >= 20
        assert await svc.bootstrap(NOW) is None
        pair = await svc.login("admin", password, NOW, ME)
        p = await svc.authenticate(pair.access_token, NOW)
        assert p.username == "admin" and p.roles == ("admin",) and p.can("admin:users")
        assert {r.name for r in await svc.roles.list()} == {"admin", "user", "readonly", "worker"}

    run(tmp_path, body)


def test_login_and_per_request_authentication(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        pair = await svc.login("Alice", "correct horse", NOW, ME, "curl/8")  # usernames ignore case
        p = await svc.authenticate(pair.access_token, NOW)
        assert p.username == "alice" and p.session_id == pair.session_id
        assert p.can("kv:write", f"users/{p.user_id}/x") and not p.can("kv:write", "users/other/x")
        [sess] = await svc.sessions.list(p.user_id)
        assert sess.client == "10.0.0.1" and sess.user_agent == "curl/8"
        # A role change applies to the next authentication.
        await svc.grant("alice", "readonly", NOW, ME)
        assert (await svc.authenticate(pair.access_token, NOW)).can("kv:read", "anything")

    run(tmp_path, body)


def test_wrong_password_and_unknown_user_look_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted, not timed: each login runs exactly one bcrypt check against a hash of the same
    # cost, so an unknown name takes as long as a wrong password (no early return).
    checks: list[bytes] = []
    real = PasswordHasher.verify_sync

    def counting(password: str, hashed: bytes) -> bool:
        checks.append(hashed[:7])
        return real(password, hashed)

    monkeypatch.setattr(PasswordHasher, "verify_sync", staticmethod(counting))

    async def body(svc: AuthService) -> None:
        await with_user(svc)
        await svc.hasher.warm_up()
        checks.clear()
        with pytest.raises(AuthenticationError, match="invalid username or password") as wrong:
            await svc.login("alice", "wrong password", NOW, ME)
        assert checks == [b"$2b$08$"]
        with pytest.raises(AuthenticationError, match="invalid username or password") as unknown:
            await svc.login("mallory", "wrong password", NOW, ME)
        assert checks == [b"$2b$08$", b"$2b$08$"]
        assert wrong.value.code == unknown.value.code == "invalid_credentials"
        assert str(wrong.value) == str(unknown.value)

    run(tmp_path, body, bcrypt_cost=8)


def test_failed_logins_are_throttled_per_username_and_address_and_per_address(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                await svc.login("alice", "nope", NOW, ME)
        with pytest.raises(RateLimitedError) as e:
            await svc.login("alice", "correct horse", NOW, ME)  # even the right password: it waits
        assert e.value.retry_after_ms == 1000  # 1 s after the third failure, then 2, 4 ...
        # Another address is not throttled for this username: no lock-out.
        assert await svc.login("alice", "correct horse", NOW, Actor(None, None, "10.0.0.2"))
        assert await svc.login("alice", "correct horse", NOW + 1000, ME)
        # Per address: 5 failures over any usernames.
        for i in range(5):
            with pytest.raises(AuthenticationError):
                await svc.login(f"user{i}", "nope", NOW, Actor(None, None, "10.9.9.9"))
        with pytest.raises(RateLimitedError):
            await svc.login("alice", "correct horse", NOW, Actor(None, None, "10.9.9.9"))
        # Throttled attempts are counted, not each written: the count rides on the next event.
        assert (await svc.audit.query(action="auth.login", result="throttled"))[0] == []
        other = Actor(None, None, "10.0.0.3")
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                await svc.login("alice", "nope", NOW, other)
        for _ in range(2):
            with pytest.raises(RateLimitedError):
                await svc.login("alice", "nope", NOW, other)
        with pytest.raises(AuthenticationError):
            await svc.login("alice", "nope", NOW + 1000, other)
        events, _ = await svc.audit.query(action="auth.login", result="failed", limit=1)
        assert events[0]["detail"]["throttled_attempts"] == 2

    run(tmp_path, body, login_failures_per_user=(3, 300), login_failures_per_client=(5, 300))


def test_success_forgives_earlier_failures(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        for _ in range(4):
            with pytest.raises(AuthenticationError):
                await svc.login("alice", "nope", NOW, ME)
            await svc.login("alice", "correct horse", NOW, ME)

    run(tmp_path, body, login_failures_per_user=(2, 300))


def test_refresh_rotates_and_reuse_revokes_the_family(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        first = await svc.login("alice", "correct horse", NOW, ME)
        second = await svc.refresh(first.refresh_token, NOW + 1000, ME)
        assert second.session_id == first.session_id and second.refresh_token != first.refresh_token
        assert await svc.authenticate(second.access_token, NOW + 1000)
        assert await svc.authenticate(first.access_token, NOW + 1000)  # still live until it expires
        # The spent token comes back: someone copied it.  The whole family dies.
        with pytest.raises(AuthenticationError, match="reuse detected"):
            await svc.refresh(first.refresh_token, NOW + 2000, ME)
        for token in (first.access_token, second.access_token):
            with pytest.raises(AuthenticationError, match="revoked"):
                await svc.authenticate(token, NOW + 2000)
        with pytest.raises(AuthenticationError):
            await svc.refresh(second.refresh_token, NOW + 2000, ME)
        events, _ = await svc.audit.query(action="auth.refresh")
        assert events[0]["result"] == "reuse_detected"
        # Other sessions of the same user are untouched.
        other = await svc.login("alice", "correct horse", NOW, ME)
        assert await svc.authenticate(other.access_token, NOW + 3000)

    run(tmp_path, body)


def test_refresh_rejects_junk_and_access_tokens(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        pair = await svc.login("alice", "correct horse", NOW, ME)
        for junk in ("rt_nope", pair.access_token, ""):
            with pytest.raises(AuthenticationError):
                await svc.refresh(junk, NOW, ME)
        with pytest.raises(InvalidInputError):
            await svc.refresh(None, NOW, ME)
        with pytest.raises(AuthenticationError, match="invalid token"):
            # A refresh token is not a bearer token.
            await svc.authenticate(pair.refresh_token, NOW)

    run(tmp_path, body)


def test_logout_revokes_immediately(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        pair = await svc.login("alice", "correct horse", NOW, ME)
        p = await svc.authenticate(pair.access_token, NOW)
        await svc.logout(p, NOW, ME)
        with pytest.raises(AuthenticationError, match="revoked"):
            await svc.authenticate(pair.access_token, NOW)
        with pytest.raises(AuthenticationError):
            await svc.refresh(pair.refresh_token, NOW, ME)

    run(tmp_path, body)


def test_change_password_revokes_every_session(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        a = await svc.login("alice", "correct horse", NOW, ME)
        b = await svc.login("alice", "correct horse", NOW, ME)
        p = await svc.authenticate(a.access_token, NOW)
        with pytest.raises(PermissionDeniedError, match="current_password"):
            await svc.change_password(p, "wrong", "new password, longer", NOW, ME)
        with pytest.raises(InvalidInputError, match="at least 12"):
            await svc.change_password(p, "correct horse", "short", NOW, ME)
        assert await svc.change_password(p, "correct horse", "new password, longer", NOW, ME) == 2
        for pair in (a, b):
            with pytest.raises(AuthenticationError):
                await svc.authenticate(pair.access_token, NOW)
        with pytest.raises(AuthenticationError):
            await svc.login("alice", "correct horse", NOW, ME)
        assert await svc.login("alice", "new password, longer", NOW, ME)

    run(tmp_path, body)


def test_disabled_and_removed_users(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        await with_user(svc, "bob")
        a = await svc.login("alice", "correct horse", NOW, ME)
        b = await svc.login("bob", "correct horse", NOW, ME)
        await svc.set_disabled("alice", True, NOW, ME)
        with pytest.raises(AuthenticationError):
            await svc.authenticate(a.access_token, NOW)
        with pytest.raises(AuthenticationError, match="invalid username or password"):  # as a wrong password
            await svc.login("alice", "correct horse", NOW, ME)
        await svc.set_disabled("alice", False, NOW, ME)
        assert await svc.login("alice", "correct horse", NOW, ME)
        await svc.remove_user("bob", NOW, ME)
        with pytest.raises(AuthenticationError):
            await svc.authenticate(b.access_token, NOW)
        with pytest.raises(NotFoundError):
            await svc.remove_user("bob", NOW, ME)
        assert [u["username"] for u in await svc.list_users()] == ["alice"]

    run(tmp_path, body)


def test_removed_user_token_fails_even_if_the_token_record_survived(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        pair = await svc.login("alice", "correct horse", NOW, ME)
        user = await svc.users.require("alice")
        await svc.users.delete(user)  # bypass the session revocation remove_user does
        with pytest.raises(AuthenticationError, match="no longer exists"):
            await svc.authenticate(pair.access_token, NOW)

    run(tmp_path, body)


def test_register_closed_and_open(tmp_path: Path) -> None:
    async def closed(svc: AuthService) -> None:
        with pytest.raises(PermissionDeniedError, match="closed"):
            await svc.register("eve", "long enough, yes", NOW, ME)

    run(tmp_path / "a", closed)

    async def open_(svc: AuthService) -> None:
        await svc.roles.seed()
        user = await svc.register("Eve", "long enough, yes", NOW, ME)
        assert user.username == "eve"
        assert list(await svc.roles.roles_of(user.id)) == ["user"]
        with pytest.raises(ConflictError):
            await svc.register("eve", "long enough, yes", NOW, ME)
        with pytest.raises(InvalidInputError, match="username"):
            await svc.register("bad name!", "long enough, yes", NOW, ME)
        with pytest.raises(InvalidInputError, match="72 bytes"):
            await svc.register("fred", "x" * 80, NOW, ME)

    run(tmp_path / "b", open_, open_registration=True)


def test_create_user_generates_a_password_and_checks_roles(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await svc.roles.seed()
        user, generated = await svc.create_user("carol", None, ["readonly"], NOW, ME)
        assert generated and await svc.login("carol", generated, NOW, ME)
        with pytest.raises(NotFoundError, match="nope"):
            await svc.create_user("dave", None, ["nope"], NOW, ME)
        assert await svc.users.by_name("dave") is None  # nothing half-created
        _, pw = await svc.set_password("carol", None, NOW, ME)
        assert pw and pw != generated

    run(tmp_path, body)


def test_audit_log_is_newest_first_with_cursor_and_trimmed(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        log = AuditLog(svc.store, max_entries=100)
        for i in range(250):
            await log.record(NOW + i // 3, "test.event", ME, target=str(i))  # 3 events per ms: ties
        events, cursor = await log.query(limit=1000)
        assert cursor is None
        assert 100 <= len(events) <= 101
        assert [int(e["target"]) for e in events] == sorted((int(e["target"]) for e in events), reverse=True) \
            or events[0]["time_ms"] >= events[-1]["time_ms"]
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = await log.query(limit=7, cursor=cursor)
            seen += [e["id"] for e in page]
            if cursor is None:
                break
        assert seen == [e["id"] for e in events]  # pages join up exactly, ties included
        with pytest.raises(InvalidInputError, match="cursor"):
            await log.query(cursor="junk")

    run(tmp_path, body)
