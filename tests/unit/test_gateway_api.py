"""The gateway over HTTP: error shape, probes, auth flows, KV, admin, logging."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import orjson
import pytest

from helios_core.gateway.accesslog import AccessLog
from tests.unit.test_gateway_harness import Api, run_gateway


def test_errors_have_one_json_shape(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        r = await api.call("GET", "/nope", headers={"X-Request-ID": "req-123"})
        assert r.code == 404
        assert r.json() == {"error": {"code": "not_found", "message": "no such endpoint: GET /nope",
                                      "request_id": "req-123"}}
        assert r.headers["X-Request-ID"] == "req-123"
        assert r.headers["Content-Type"] == "application/json"
        r = await api.call("DELETE", "/healthz")
        assert r.code == 405 and r.error_code == "method_not_allowed" and r.headers["Allow"] == "GET"
        r = await api.call("PROPFIND", "/healthz")
        assert r.code == 405 and r.json()["error"]["request_id"]
        r = await api.call("GET", "/api/v1/auth/me")
        assert r.code == 401 and r.error_code == "unauthenticated"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await api.call("GET", "/api/v1/auth/me", headers={"Authorization": "Basic abc"})
        assert r.code == 401 and r.error_code == "invalid_token"
        r = await api.call("POST", "/api/v1/auth/login", body=b"{not json")
        assert r.code == 400 and "invalid JSON" in r.json()["error"]["message"]
        r = await api.call("POST", "/api/v1/auth/login", body=b"[]")
        assert r.code == 400 and "JSON object" in r.json()["error"]["message"]
        bad_id = await api.call("GET", "/healthz", headers={"X-Request-ID": "bad id with spaces"})
        assert re.fullmatch(r"[0-9a-f]{32}", bad_id.headers["X-Request-ID"])

    run_gateway(tmp_path, body)


def test_internal_errors_hide_the_stack_trace(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()

        async def boom(uid: str) -> None:
            raise RuntimeError("secret internals /etc/passwd")

        api.service.gateway.auth.users.get = boom  # type: ignore[method-assign]
        r = await api.call("GET", "/api/v1/auth/me", token=token)
        assert r.code == 500
        assert r.json()["error"]["code"] == "internal"
        assert b"secret" not in r.body and b"Traceback" not in r.body

    run_gateway(tmp_path, body)


def test_trace_context_is_kept_or_made(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        r = await api.call("GET", "/healthz", headers={"traceparent": parent})
        got = r.headers["traceparent"]
        assert got.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and got.endswith("-01")
        assert got != parent  # a new span id for this hop
        made = (await api.call("GET", "/healthz", headers={"traceparent": "garbage"})).headers["traceparent"]
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", made)

    run_gateway(tmp_path, body)


def test_probes_metrics_and_document(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        assert (await api.call("GET", "/healthz")).json() == {"status": "ok"}
        assert (await api.call("GET", "/readyz")).json()["status"] == "ready"
        await api.call("GET", "/nope")
        m = (await api.call("GET", "/metrics")).body.decode()
        assert 'helios_requests_total{method="GET",route="/healthz",status="200"}' in m
        assert 'helios_requests_total{method="GET",route="unmatched",status="404"}' in m
        assert 'helios_request_duration_seconds_bucket{le="0.001",route="/healthz"}' in m
        doc = (await api.call("GET", "/api/v1/openapi.json")).json()
        assert doc["openapi"] == "3.1.0"
        api.service.gateway.draining = True
        r = await api.call("GET", "/readyz")
        assert r.code == 503 and r.json()["reason"] == "shutting down"

    run_gateway(tmp_path, body)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_request_log_line(tmp_path: Path, fmt: str) -> None:
    out = io.StringIO()

    async def body(api: Api) -> None:
        api.service.gateway.access = AccessLog("info", fmt, lambda: out)
        token = await api.admin_token()
        await api.call("GET", "/api/v1/kv/x", token=token, headers={"X-Request-ID": "log-me"})

    run_gateway(tmp_path, body)
    [text] = [x for x in out.getvalue().splitlines() if "log-me" in x]
    if fmt == "console":
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} INFO  gateway\.access request request_id=log-me method=GET "
                            r"route=/api/v1/kv/\{key\} path=/api/v1/kv/x status=404 duration_ms=[\d.]+ user=admin "
                            r"client=127\.0\.0\.1 trace_id=[0-9a-f]{32}", text), text
        return
    line = orjson.loads(text)
    assert line["component"] == "gateway.access" and line["level"] == "info" and line["time"].endswith("Z")
    assert line["method"] == "GET" and line["route"] == "/api/v1/kv/{key}" and line["status"] == 404
    assert line["user"] == "admin" and line["client"] == "127.0.0.1"
    assert isinstance(line["duration_ms"], float)


def test_login_me_sessions_logout(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        pair = await api.login("admin", api.admin_password)
        assert pair["token_type"] == "Bearer" and pair["expires_in"] == 900
        token = pair["access_token"]
        me = (await api.call("GET", "/api/v1/auth/me", token=token)).json()
        assert me["username"] == "admin" and me["roles"] == ["admin"] and me["permissions"] == ["*"]
        other = await api.login("admin", api.admin_password)
        sessions = (await api.call("GET", "/api/v1/auth/sessions", token=token)).json()["sessions"]
        assert len(sessions) == 2 and sum(s["current"] for s in sessions) == 1
        r = await api.call("DELETE", f"/api/v1/auth/sessions/{other['session_id']}", token=token)
        assert r.code == 204
        r = await api.call("GET", "/api/v1/auth/me", token=other["access_token"])
        assert r.code == 401 and r.error_code == "token_revoked"  # revocation is immediate
        assert (await api.call("DELETE", "/api/v1/auth/sessions/s_nope", token=token)).code == 404
        assert (await api.call("POST", "/api/v1/auth/logout", token=token)).code == 204
        assert (await api.call("GET", "/api/v1/auth/me", token=token)).code == 401

    run_gateway(tmp_path, body)


def test_login_failures_are_generic_then_throttled(tmp_path: Path) -> None:
    async def denied(api: Api) -> float:  # the metric is process-wide: other tests' gateways count too
        m = (await api.call("GET", "/metrics")).body.decode()
        found = re.search(r'^rate_limiter_denied_total\{limiter="login"\} (\S+)$', m, re.M)
        return float(found.group(1)) if found else 0.0

    async def body(api: Api) -> None:
        before = await denied(api)
        for name in ("admin", "nobody", "admin"):
            r = await api.call("POST", "/api/v1/auth/login", json={"username": name, "password": "x"})
            assert r.code == 401 and r.json()["error"]["message"] == "invalid username or password"
        r = await api.call("POST", "/api/v1/auth/login", json={"username": "admin", "password": api.admin_password})
        assert r.code == 429 and r.error_code == "login_throttled"
        assert int(r.headers["Retry-After"]) == 1  # from this address, after 2 failures: 1 s, then 2, 4 ...
        assert await denied(api) == before + 1
        api.clock.advance(1000)
        assert (await api.login("admin", api.admin_password))["access_token"]

    run_gateway(tmp_path, body, **{"auth.login_failures_per_user": (2, 300)})


def test_refresh_rotation_and_reuse_over_http(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        first = await api.login("admin", api.admin_password)
        r = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.code == 200
        second = r.json()
        assert second["session_id"] == first["session_id"]
        r = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.code == 401 and r.error_code == "refresh_reused"
        for t in (first["access_token"], second["access_token"]):
            assert (await api.call("GET", "/api/v1/auth/me", token=t)).code == 401
        r = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
        assert r.code == 401
        token = await api.admin_token()
        events = (await api.call("GET", "/admin/audit?action=auth.refresh", token=token)).json()["events"]
        assert events[0]["result"] == "reuse_detected"

    run_gateway(tmp_path, body)


def test_change_password_over_http(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.make_user("alice", ["user"])
        r = await api.call("POST", "/api/v1/auth/password", token=token,
                           json={"current_password": "password-123", "new_password": "brand-new-pw"})
        assert r.code == 200 and r.json() == {"sessions_revoked": 1}
        assert (await api.call("GET", "/api/v1/auth/me", token=token)).code == 401
        assert await api.login("alice", "brand-new-pw")
        r = await api.call("POST", "/api/v1/auth/password", token=await api.admin_token(),
                           json={"current_password": "nope", "new_password": "brand-new-pw"})
        assert r.code == 403 and r.error_code == "wrong_password"

    run_gateway(tmp_path, body)


def test_register_closed_by_default_and_open_by_config(tmp_path: Path) -> None:
    async def closed(api: Api) -> None:
        r = await api.call("POST", "/api/v1/auth/register", json={"username": "eve", "password": "long enough, yes"})
        assert r.code == 403 and r.error_code == "registration_closed"

    run_gateway(tmp_path / "a", closed)

    async def open_(api: Api) -> None:
        r = await api.call("POST", "/api/v1/auth/register", json={"username": "eve", "password": "long enough, yes"})
        assert r.code == 201 and r.json()["roles"] == ["user"]
        r = await api.call("POST", "/api/v1/auth/register", json={"username": "eve", "password": "long enough, yes"})
        assert r.code == 409
        r = await api.call("POST", "/api/v1/auth/register", json={"username": "x y", "password": "long enough, yes"})
        assert r.code == 400 and "username" in r.json()["error"]["message"]

    run_gateway(tmp_path / "b", open_, **{"auth.open_registration": True})


def test_kv_round_trip_binary_ttl_and_conditions(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await api.admin_token()
        blob = bytes(range(256)) * 4
        r = await api.call("PUT", "/api/v1/kv/a/b%20c", token=t, body=blob)
        assert r.code == 201 and r.json()["size"] == 1024 and r.headers["Location"] == "/api/v1/kv/a/b%20c"
        etag = r.headers["ETag"]
        r = await api.call("GET", "/api/v1/kv/a/b%20c", token=t)
        assert r.code == 200 and r.body == blob and r.headers["ETag"] == etag
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert await api.store.get("kv:a/b c") == blob
        assert (await api.call("GET", "/api/v1/kv/a/b%20c", token=t, headers={"If-None-Match": etag})).code == 304
        r = await api.call("PUT", "/api/v1/kv/a/b%20c", token=t, body=b"x", headers={"If-None-Match": "*"})
        assert r.code == 412 and r.error_code == "precondition_failed"
        r = await api.call("PUT", "/api/v1/kv/a/b%20c", token=t, body=b"x", headers={"If-Match": '"nope"'})
        assert r.code == 412
        r = await api.call("PUT", "/api/v1/kv/a/b%20c?ttl=60", token=t, body=b"x", headers={"If-Match": etag})
        assert r.code == 200 and r.json()["ttl_seconds"] == 60
        assert 55_000 < await api.store.pttl("kv:a/b c") <= 60_000
        r = await api.call("DELETE", "/api/v1/kv/a/b%20c", token=t, headers={"If-Match": etag})
        assert r.code == 412  # the value changed since that etag
        assert (await api.call("DELETE", "/api/v1/kv/a/b%20c", token=t)).code == 204
        assert (await api.call("DELETE", "/api/v1/kv/a/b%20c", token=t)).code == 404
        r = await api.call("GET", "/api/v1/kv/a/b%20c", token=t)
        assert r.code == 404 and r.error_code == "key_not_found"
        r = await api.call("PUT", "/api/v1/kv/new", token=t, body=b"", headers={"If-None-Match": "*"})
        assert r.code == 201 and (await api.call("GET", "/api/v1/kv/new", token=t)).body == b""
        for bad in ("ttl=0", "ttl=-1", "ttl=abc", "ttl=1.5"):
            r = await api.call("PUT", f"/api/v1/kv/k?{bad}", token=t, body=b"v")
            assert r.code == 400 and "ttl" in r.json()["error"]["message"]
        r = await api.call("PUT", "/api/v1/kv/k", token=t, body=b"v", headers={"If-None-Match": '"x"'})
        assert r.code == 400

    run_gateway(tmp_path, body)


def test_kv_listing_pages_with_a_cursor(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await api.admin_token()
        for i in range(25):
            await api.call("PUT", f"/api/v1/kv/list/{i:02d}", token=t, body=b"v")
        await api.call("PUT", "/api/v1/kv/other", token=t, body=b"v")
        keys: list[str] = []
        cursor = None
        while True:
            q = "prefix=list/&limit=10" + (f"&cursor={cursor}" if cursor else "")
            page = (await api.call("GET", f"/api/v1/kv?{q}", token=t)).json()
            keys += page["keys"]
            cursor = page["cursor"]
            if cursor is None:
                break
        assert keys == [f"list/{i:02d}" for i in range(25)]
        r = await api.call("GET", "/api/v1/kv?cursor=123", token=t)
        assert r.code == 400 and "cursor" in r.json()["error"]["message"]
        for bad in ("limit=0", "limit=100000", "limit=x", "cursor=-1"):
            assert (await api.call("GET", f"/api/v1/kv?{bad}", token=t)).code == 400
        # Digits str.isdigit() takes and int() refuses or reads otherwise (schemathesis sent
        # limit=%C2%B3 and got a 500), and more digits than int() converts: each a 400.
        too_long = "1" * 5000
        for bad in ("limit=%C2%B3", "limit=%D9%A3", "cursor=%C3%A6f1", "cursor=%C2%B2",
                    f"limit={too_long}", f"cursor={too_long}"):
            r = await api.call("GET", f"/api/v1/kv?{bad}", token=t)
            assert r.code == 400, (bad, r.code)
        for bad in ("ttl=%C2%B3", f"ttl={too_long}"):
            assert (await api.call("PUT", f"/api/v1/kv/x?{bad}", token=t, body=b"v")).code == 400
        for bad in ("limit=%C2%B3", "since_ms=%C2%B9"):
            assert (await api.call("GET", f"/admin/audit?{bad}", token=t)).code == 400
        assert (await api.call("GET", "/api/v1/jobs?limit=%C2%B3", token=t)).code == 400

    run_gateway(tmp_path, body)


def test_body_limit_gives_413_before_reading(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await api.admin_token()
        r = await api.call("PUT", "/api/v1/kv/big", token=t, body=b"x" * 4097)
        assert r.code == 413 and r.error_code == "payload_too_large"
        assert "gateway.max_body_bytes" in r.json()["error"]["message"]
        r = await api.call("PUT", "/api/v1/kv/big", token=t, body=b"x" * 4096)
        assert r.code == 201
        # A chunked body (no Content-Length) that grows too big.
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"PUT /api/v1/kv/chunked HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t.encode()
                     + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413")
        writer.close()
        # Answered early, the method never runs: an oversized chunked DELETE deletes nothing.
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"DELETE /api/v1/kv/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t.encode()
                     + b"\r\nTransfer-Encoding: chunked\r\n\r\n" + (b"400\r\n" + b"y" * 1024 + b"\r\n") * 5
                     + b"0\r\n\r\n")
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 413")
        writer.close()
        assert await api.store.get("kv:big") == b"x" * 4096

    run_gateway(tmp_path, body, **{"gateway.max_body_bytes": 4096})


def test_admin_users_roles_and_private_namespaces(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        r = await api.call("POST", "/admin/users", token=admin, json={"username": "bob"})
        assert r.code == 201 and r.json()["roles"] == ["user"] and len(r.json()["password"]) >= 20
        bob_pw = r.json()["password"]
        bob = (await api.login("bob", bob_pw))["access_token"]
        bob_id = (await api.call("GET", "/api/v1/auth/me", token=bob)).json()["id"]
        # The seeded user role: a private namespace under users/{id}/.
        assert (await api.call("PUT", f"/api/v1/kv/users/{bob_id}/notes", token=bob, body=b"mine")).code == 201
        r = await api.call("PUT", "/api/v1/kv/users/someone-else/notes", token=bob, body=b"x")
        assert r.code == 403 and "kv:write" in r.json()["error"]["message"]
        assert (await api.call("GET", f"/api/v1/kv?prefix=users/{bob_id}/", token=bob)).code == 200
        assert (await api.call("GET", "/api/v1/kv?prefix=users/", token=bob)).code == 403
        # A custom role, granted: applies on bob's next request, with the same token.
        r = await api.call("POST", "/admin/roles", token=admin,
                           json={"name": "shared", "permissions": ["kv:read@shared/", "kv:write@shared/"]})
        assert r.code == 201 and r.json()["builtin"] is False
        assert (await api.call("PUT", "/api/v1/kv/shared/x", token=bob, body=b"1")).code == 403
        r = await api.call("PUT", "/admin/users/bob/roles/shared", token=admin)
        assert r.code == 200 and r.json()["changed"] is True and "shared" in r.json()["roles"]
        assert (await api.call("PUT", "/api/v1/kv/shared/x", token=bob, body=b"1")).code == 201
        r = await api.call("PUT", "/admin/roles/shared", token=admin, json={"permissions": ["kv:read@shared/"]})
        assert r.code == 200
        assert (await api.call("PUT", "/api/v1/kv/shared/x", token=bob, body=b"2")).code == 403
        assert (await api.call("DELETE", "/admin/users/bob/roles/shared", token=admin)).json()["changed"] is True
        assert (await api.call("DELETE", "/admin/roles/shared", token=admin)).code == 204
        assert (await api.call("DELETE", "/admin/roles/admin", token=admin)).code == 409
        assert (await api.call("GET", "/admin/roles/shared", token=admin)).code == 404
        r = await api.call("POST", "/admin/roles", token=admin, json={"name": "Bad Name", "permissions": []})
        assert r.code == 400
        r = await api.call("POST", "/admin/roles", token=admin, json={"name": "x", "permissions": ["KV:READ"]})
        assert r.code == 400 and "bad permission" in r.json()["error"]["message"]
        # Sessions, disable, password reset, remove.
        r = await api.call("GET", "/admin/users/bob/sessions", token=admin)
        assert len(r.json()["sessions"]) == 1
        r = await api.call("PATCH", "/admin/users/bob", token=admin, json={"disabled": True})
        assert r.code == 200 and r.json()["disabled"] is True
        assert (await api.call("GET", "/api/v1/auth/me", token=bob)).code == 401
        r = await api.call("PATCH", "/admin/users/admin", token=admin, json={"disabled": True})
        assert r.code == 409  # not yourself
        r = await api.call("PATCH", "/admin/users/bob", token=admin, json={"disabled": "yes"})
        assert r.code == 400
        await api.call("PATCH", "/admin/users/bob", token=admin, json={"disabled": False})
        r = await api.call("POST", "/admin/users/bob/password", token=admin)
        assert r.code == 200 and r.json()["password"] != bob_pw
        assert await api.login("bob", r.json()["password"])
        r = await api.call("DELETE", "/admin/users/bob/sessions", token=admin)
        assert r.json() == {"sessions_revoked": 1}
        assert (await api.call("DELETE", "/admin/users/bob", token=admin)).code == 204
        assert (await api.call("GET", "/admin/users/bob", token=admin)).code == 404
        users = (await api.call("GET", "/admin/users", token=admin)).json()["users"]
        assert [u["username"] for u in users] == ["admin"]
        assert all("password_hash" not in u for u in users)

    run_gateway(tmp_path, body)


def test_admin_store_operations_and_audit(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        r = await api.call("POST", "/admin/snapshot", token=admin)
        assert r.code == 200 and r.json()["seq"] > 0
        assert (tmp_path / "data" / "dump.rdb").exists()
        r = await api.call("POST", "/admin/aof-rewrite", token=admin)
        assert r.code == 200
        stats = (await api.call("GET", "/admin/stats", token=admin)).json()
        assert stats["keys"] > 0 and stats["appendfsync"] == "always" and stats["snapshots"] >= 2
        assert stats["uptime_seconds"] >= 0 and stats["memory_rss_bytes"] > 0 and "aof_bytes" in stats
        events = (await api.call("GET", "/admin/audit?limit=3", token=admin)).json()
        actions = [e["action"] for e in events["events"]]
        assert actions[:2] == ["store.aof_rewrite", "store.snapshot"]
        assert events["cursor"]
        login = (await api.call("GET", "/admin/audit?action=auth.login&actor=admin", token=admin)).json()
        assert login["events"][0]["client"] == "127.0.0.1" and login["events"][0]["result"] == "ok"
        assert (await api.call("GET", "/admin/audit?limit=0", token=admin)).code == 400
        assert (await api.call("GET", "/admin/audit?cursor=zz", token=admin)).code == 400

    run_gateway(tmp_path, body)


def test_rate_limit_headers_and_admin_settings(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        r = await api.call("GET", "/api/v1/auth/me", token=admin)
        assert r.headers["RateLimit-Policy"] == '"default";q=3;w=60'
        assert r.headers["RateLimit"] == '"default";r=2;t=20'
        assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "2"
        assert r.headers["X-RateLimit-Reset"] == "20"
        await api.call("GET", "/api/v1/auth/me", token=admin)
        await api.call("GET", "/api/v1/auth/me", token=admin)
        r = await api.call("GET", "/api/v1/auth/me", token=admin)
        assert r.code == 429 and r.error_code == "rate_limited" and r.headers["Retry-After"] == "20"
        assert r.headers["X-RateLimit-Remaining"] == "0"
        api.clock.advance(20_000)  # one token back
        r = await api.call("PUT", "/admin/ratelimit", token=admin,
                           json={"clients": {"user:admin": {"limit": 1000, "window": 1}}})
        assert r.code == 200
        assert r.json()["effective"]["clients"]["user:admin"] == {"limit": 1000, "window": 1}
        api.clock.advance(1000)
        r = await api.call("GET", "/api/v1/auth/me", token=admin)
        assert r.code == 200 and r.headers["RateLimit-Policy"] == '"user:admin";q=1000;w=1'
        r = await api.call("PUT", "/admin/ratelimit", token=admin, json={"clients": {"bob": {"limit": 1}}})
        assert r.code == 400
        # Probes are never limited; anonymous callers are limited per address.
        for _ in range(5):
            assert (await api.call("GET", "/healthz")).code == 200
        codes = [(await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": "x"})).code
                 for _ in range(4)]
        assert codes == [401, 401, 401, 429]

    run_gateway(tmp_path, body, **{"ratelimit.default": (3, 60)})


@pytest.mark.parametrize("n", [25])
def test_rate_limit_is_exact_under_200_concurrent_requests(tmp_path: Path, n: int) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()  # the login spent nothing of the admin's bucket (per address)
        results = await asyncio.gather(*(api.call("GET", "/api/v1/kv/missing", token=token) for _ in range(200)))
        codes = [r.code for r in results]
        assert codes.count(404) == n and codes.count(429) == 200 - n

    run_gateway(tmp_path, body, **{"ratelimit.default": (25, 3600)})
