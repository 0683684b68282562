"""What `AuthService.authenticate` remembers between requests never outlives a change.

Each request reads the token's record, the user, their roles and the role
definitions (one MGET) and reuses the Principal it made last time only when
those values are byte for byte the same.  These tests warm that memory on one
service ("gateway B"), change the state through another ("gateway A") on the
same store, and require B's very next request to see the change: a revoked
token, a disabled or removed user, a role taken away, edited or deleted.  On
every backend (embedded, atlasd, redis-server).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from helios_core.auth import Actor, AuditLog, AuthService, KeyRing, PasswordHasher
from helios_core.config import AuthConfig
from helios_core.errors import AuthenticationError
from helios_core.ratelimit import Policy, RateLimiter, RateLimitSettings
from helios_core.rbac import Role
from helios_core.store import Store

NOW = 1_800_000_000_000
ME = Actor("tester", None, "10.0.0.1")
PASSWORD = "correct-horse-battery-staple"
KEY_SPEC = "k1=" + "s" * 40


def _service(store: Store, hasher: PasswordHasher) -> AuthService:
    cfg = AuthConfig(bcrypt_cost=4)
    keys = KeyRing.from_specs([KEY_SPEC], cfg.jwt_algorithms, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience)
    return AuthService(store, cfg, keys, hasher, RateLimiter(store, RateLimitSettings(Policy(100, 1))),
                       AuditLog(store, cfg.audit_max_entries))


Change = Callable[[AuthService, str, str], Awaitable[object]]


async def _revoke_token(a: AuthService, username: str, sid: str) -> None:
    user = await a.users.require(username)
    await a.revoke_session(user.id, sid, NOW, ME, username)


async def _disable(a: AuthService, username: str, sid: str) -> None:
    await a.set_disabled(username, True, NOW, ME)


async def _disable_record(a: AuthService, username: str, sid: str) -> None:
    # The user record alone (sessions left in place): what the memo must notice is the user.
    user = await a.users.require(username)
    await a.users.update(user.id, NOW, disabled=True)


async def _remove(a: AuthService, username: str, sid: str) -> None:
    await a.remove_user(username, NOW, ME)


async def _take_role(a: AuthService, username: str, sid: str) -> None:
    await a.revoke(username, "ops", NOW, ME)


async def _edit_role(a: AuthService, username: str, sid: str) -> None:
    await a.put_role(Role.build("ops", ["kv:read"]), NOW, ME)


async def _delete_role(a: AuthService, username: str, sid: str) -> None:
    await a.delete_role("ops", NOW, ME)


CHANGES: dict[str, tuple[Change, str | None]] = {
    # change -> the 401 code B must answer next, or None: B authenticates but may no longer write
    "revoke_token": (_revoke_token, "token_revoked"),
    "disable_user": (_disable, "token_revoked"),  # disabling ends the user's sessions too
    "disable_user_record": (_disable_record, "account_disabled"),
    "remove_user": (_remove, "token_revoked"),
    "take_role": (_take_role, None),
    "edit_role": (_edit_role, None),
    "delete_role": (_delete_role, None),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_applies_to_the_next_request(run_store, change: str) -> None:
    apply, code = CHANGES[change]

    async def body(store: Store) -> None:
        hasher = PasswordHasher(4, workers=1)
        try:
            a, b = _service(store, hasher), _service(store, hasher)
            await a.roles.seed()
            await a.put_role(Role.build("ops", ["kv:read", "kv:write"]), NOW, ME)
            user, _ = await a.create_user("carol", PASSWORD, ["ops"], NOW, ME)
            pair = await a.sessions.open(user.id, NOW)
            for _ in range(3):  # warm: the second and third are answered from what B remembers
                p = await b.authenticate(pair.access_token, NOW)
                assert p.can("kv:write", "x") and p.username == "carol"
            assert pair.access_token in b._principals
            await apply(a, "carol", pair.session_id)
            if code is not None:
                with pytest.raises(AuthenticationError) as e:
                    await b.authenticate(pair.access_token, NOW)
                assert e.value.code == code
            else:
                p = await b.authenticate(pair.access_token, NOW)
                assert not p.can("kv:write", "x")
                assert p.can("kv:read", "x") == (change == "edit_role")
        finally:
            hasher.close()

    run_store(body)


def test_a_remembered_principal_is_the_same_as_a_fresh_one(run_store) -> None:
    async def body(store: Store) -> None:
        hasher = PasswordHasher(4, workers=1)
        try:
            a, b = _service(store, hasher), _service(store, hasher)
            await a.roles.seed()
            user, _ = await a.create_user("dave", PASSWORD, ["user", "worker"], NOW, ME)
            pair = await a.sessions.open(user.id, NOW)
            first = await b.authenticate(pair.access_token, NOW)
            again = await b.authenticate(pair.access_token, NOW)
            fresh = await _service(store, hasher).authenticate(pair.access_token, NOW)
            assert first == again == fresh
            # A role granted meanwhile is seen at once (the guessed roles were wrong: a second read).
            await a.grant("dave", "readonly", NOW, ME)
            assert (await b.authenticate(pair.access_token, NOW)).roles == ("user", "worker", "readonly")
            # The token's time still counts on every use.
            with pytest.raises(AuthenticationError) as e:
                await b.authenticate(pair.access_token, NOW + 10 * 86400 * 1000)
            assert e.value.code == "token_expired"
        finally:
            hasher.close()

    run_store(body)
