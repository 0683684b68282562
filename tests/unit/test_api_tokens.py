"""API tokens: long-lived, revocable access tokens (for `helios worker`), in the service and over /admin."""

from __future__ import annotations

from pathlib import Path

import pytest

from helios_core.auth import AuthService
from helios_core.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from helios_core.rbac import Role
from tests.unit.test_auth_service import ME, NOW, run, with_user
from tests.unit.test_gateway_harness import Api, run_gateway

DAY_S = 86400
DAY_MS = DAY_S * 1000


async def token_for(svc: AuthService, name: str = "alice", ttl_s: int = 30 * DAY_S, label: str | None = "worker-1",
                    now_ms: int = NOW) -> str:
    return (await svc.issue_api_token(name, ttl_s, label, now_ms, ME)).token


def test_token_authenticates_for_its_whole_lifetime_and_not_after(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        t = await svc.issue_api_token("alice", 30 * DAY_S, "worker-1", NOW, ME)
        assert t.expires_ms == NOW + 30 * DAY_MS
        access_lifetime_ms = svc.config.access_token_seconds * 1000
        for at in (NOW, NOW + access_lifetime_ms + 1000, NOW + 29 * DAY_MS):
            p = await svc.authenticate(t.token, at)
            assert p.username == "alice" and p.session_id == t.session_id
        with pytest.raises(AuthenticationError) as e:
            await svc.authenticate(t.token, NOW + 30 * DAY_MS + 1000)
        assert e.value.code == "token_expired"

    run(tmp_path, body)


def test_token_is_a_session_of_its_own_without_a_refresh_token(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        await svc.login("alice", "correct horse", NOW, ME)
        t = await svc.issue_api_token("alice", 3600, "  nightly export ", NOW, ME)
        _, sessions = await svc.sessions_of("alice")
        by_kind = {s.kind: s for s in sessions}
        login, api = by_kind["login"], by_kind["api_token"]
        assert login.kind == "login" and login.refresh
        assert api.sid == t.session_id and api.kind == "api_token" and api.label == "nightly export"
        assert api.refresh == "" and api.token_hashes() == [(await svc.authenticate(t.token, NOW)).token_hash]
        assert api.expires_ms == t.expires_ms
        assert api.public()["kind"] == "api_token" and api.public()["label"] == "nightly export"
        with pytest.raises(AuthenticationError):  # the token is no refresh token
            await svc.refresh(t.token, NOW, ME)

    run(tmp_path, body)


def test_revoking_its_session_revokes_it(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        t = await svc.issue_api_token("alice", 3600, None, NOW, ME)
        other = await token_for(svc)
        uid = (await svc.users.require("alice")).id
        await svc.revoke_session(uid, t.session_id, NOW, ME, "alice")
        with pytest.raises(AuthenticationError) as e:
            await svc.authenticate(t.token, NOW)
        assert e.value.code == "token_revoked"
        assert (await svc.authenticate(other, NOW)).username == "alice"  # only that one

    run(tmp_path, body)


def test_password_change_disable_and_remove_revoke_it(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        # the user changes their own password
        t = await token_for(svc)
        pair = await svc.login("alice", "correct horse", NOW, ME)
        await svc.change_password(await svc.authenticate(pair.access_token, NOW), "correct horse",
                                  "battery staple", NOW, ME)
        with pytest.raises(AuthenticationError, match="revoked"):
            await svc.authenticate(t, NOW)
        # an administrator sets it
        t = await token_for(svc)
        await svc.set_password("alice", None, NOW, ME)
        with pytest.raises(AuthenticationError, match="revoked"):
            await svc.authenticate(t, NOW)
        # disabled: gone for good, enabling again does not bring it back
        t = await token_for(svc)
        await svc.set_disabled("alice", True, NOW, ME)
        with pytest.raises(AuthenticationError):
            await svc.authenticate(t, NOW)
        await svc.set_disabled("alice", False, NOW, ME)
        with pytest.raises(AuthenticationError, match="revoked"):
            await svc.authenticate(t, NOW)
        # removed
        t = await token_for(svc)
        await svc.remove_user("alice", NOW, ME)
        with pytest.raises(AuthenticationError):
            await svc.authenticate(t, NOW)

    run(tmp_path, body)


def test_lifetime_and_label_are_checked(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        assert await token_for(svc, ttl_s=7200)  # the configured maximum itself is fine
        for bad in (7201, 0, -5, True, 3600.5, "3600", None):
            with pytest.raises(InvalidInputError, match=r"ttl_seconds: .*1 to 7200 \(auth.api_token_max_seconds\)"):
                await svc.issue_api_token("alice", bad, None, NOW, ME)
        for bad_label in ("x" * 101, "tab\there", 42):
            with pytest.raises(InvalidInputError, match="label"):
                await svc.issue_api_token("alice", 60, bad_label, NOW, ME)
        with pytest.raises(NotFoundError):
            await svc.issue_api_token("nobody", 60, None, NOW, ME)
        await svc.set_disabled("alice", True, NOW, ME)
        with pytest.raises(ConflictError, match="disabled"):
            await svc.issue_api_token("alice", 60, None, NOW, ME)

    run(tmp_path, body, api_token_max_seconds=7200)


def test_default_maximum_is_a_year(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        assert svc.config.api_token_max_seconds == 365 * DAY_S
        assert await token_for(svc, ttl_s=365 * DAY_S)
        with pytest.raises(InvalidInputError):
            await token_for(svc, ttl_s=365 * DAY_S + 1)

    run(tmp_path, body)


def test_issuing_is_audited(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc)
        t = await svc.issue_api_token("alice", 600, "ci", NOW, ME)
        [event], _ = await svc.audit.query(action="token.issue")
        assert event["actor"] == ME.name and event["client"] == ME.client and event["target"] == "alice"
        assert event["detail"] == {"session": t.session_id, "label": "ci", "ttl_s": 600, "expires_ms": t.expires_ms}
        assert event["result"] == "ok"

    run(tmp_path, body)


def test_nobody_mints_a_token_stronger_than_themselves(tmp_path: Path) -> None:
    async def body(svc: AuthService) -> None:
        await with_user(svc, "alice", roles=("user",))
        await with_user(svc, "root", roles=("admin",))
        await svc.roles.put(Role.build("support", ["admin:sessions", "kv:read"]), create_only=True)
        await with_user(svc, "sam", roles=("support",))
        await with_user(svc, "reader", roles=("readonly",))
        sam = await svc.authenticate((await svc.login("sam", "correct horse", NOW, ME)).access_token, NOW)
        root = await svc.authenticate((await svc.login("root", "correct horse", NOW, ME)).access_token, NOW)
        with pytest.raises(PermissionDeniedError, match=r"issue a token for root: .* sam does not hold: \*"):
            await svc.issue_api_token("root", 60, None, NOW, ME, issuer=sam)
        with pytest.raises(PermissionDeniedError, match="kv:write@users/"):
            await svc.issue_api_token("alice", 60, None, NOW, ME, issuer=sam)
        assert await svc.issue_api_token("reader", 60, None, NOW, ME, issuer=sam)  # kv:read only: sam has it
        assert await svc.issue_api_token("sam", 60, None, NOW, ME, issuer=sam)  # oneself
        assert await svc.issue_api_token("alice", 60, None, NOW, ME, issuer=root)
        assert await svc.issue_api_token("root", 60, None, NOW, ME)  # the CLI on the data directory

    run(tmp_path, body)


# -- over the admin API ------------------------------------------------------------------------


def test_admin_api_issues_tokens(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        await api.make_user("worker1", ["user"])
        r = await api.call("POST", "/admin/users/worker1/tokens", token=admin,
                           json={"ttl_seconds": 30 * DAY_S, "label": "worker on box 3"})
        assert r.code == 201, r.body
        out = r.json()
        assert set(out) == {"token", "expires_ms", "session_id"}
        assert r.headers["Cache-Control"] == "no-store"
        # Past the access token's 15 minutes the login token is dead; the API token is not.
        api.clock.advance(2 * 3600 * 1000)
        me = await api.call("GET", "/api/v1/auth/me", token=out["token"])
        assert me.code == 200 and me.json()["username"] == "worker1" and me.json()["session_id"] == out["session_id"]
        assert (await api.call("GET", "/api/v1/auth/me", token=admin)).code == 401
        admin = await api.admin_token()
        sessions = (await api.call("GET", "/admin/users/worker1/sessions", token=admin)).json()["sessions"]
        assert {"id": out["session_id"], "kind": "api_token", "label": "worker on box 3"}.items() <= next(
            s for s in sessions if s["id"] == out["session_id"]).items()
        events = (await api.call("GET", "/admin/audit?action=token.issue", token=admin)).json()["events"]
        assert events[0]["target"] == "worker1" and events[0]["actor"] == "admin"
        # Revoking the session ends it at once.
        r = await api.call("DELETE", f"/admin/users/worker1/sessions/{out['session_id']}", token=admin)
        assert r.code == 204
        r = await api.call("GET", "/api/v1/auth/me", token=out["token"])
        assert r.code == 401 and r.error_code == "token_revoked"

    run_gateway(tmp_path, body)


def test_admin_api_refuses_bad_requests_clearly(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        user = await api.make_user("plain", ["user"])
        path = "/admin/users/plain/tokens"
        r = await api.call("POST", path, token=admin, json={"ttl_seconds": 400 * DAY_S})
        assert r.code == 400 and r.error_code == "invalid_input"
        assert "ttl_seconds" in r.json()["error"]["message"]
        assert "auth.api_token_max_seconds" in r.json()["error"]["message"]
        r = await api.call("POST", path, token=admin, json={"label": "x"})
        assert r.code == 400 and "ttl_seconds: required" in r.json()["error"]["message"]
        r = await api.call("POST", path, token=admin, json={"ttl_seconds": 60, "scope": "all"})
        assert r.code == 400 and "unknown field(s) scope" in r.json()["error"]["message"]
        r = await api.call("POST", "/admin/users/ghost/tokens", token=admin, json={"ttl_seconds": 60})
        assert r.code == 404
        r = await api.call("POST", path, token=user, json={"ttl_seconds": 60})
        assert r.code == 403  # needs admin:sessions
        r = await api.call("POST", path, json={"ttl_seconds": 60})
        assert r.code == 401

    run_gateway(tmp_path, body, **{"auth.api_token_max_seconds": 365 * DAY_S})
