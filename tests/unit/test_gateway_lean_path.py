"""The lean request path keeps the response the same: headers, Date, and the remembered principal.

BaseHandler.clear() builds the default headers itself (the Date formatted once a
second) and AuthService reuses a Principal made from byte-identical stored
values; neither may change what a client sees.
"""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from typing import Any

from helios_core.gateway.base import http_date
from tests.unit.test_gateway_harness import Api, run_gateway


def test_http_date_is_the_rfc_7231_date_of_now() -> None:
    before = int(time.time())
    parsed = email.utils.parsedate_to_datetime(http_date()).timestamp()
    assert before <= parsed <= time.time() + 1
    assert http_date().endswith(" GMT")


def test_default_headers_on_answers_and_errors(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        r = await api.call("PUT", "/api/v1/kv/lean/a", token=token, body=b"v" * 100)
        assert r.code == 201
        for r in (await api.call("GET", "/api/v1/kv/lean/a", token=token),
                  await api.call("GET", "/api/v1/kv/lean/missing", token=token),
                  await api.call("GET", "/api/v1/kv/lean/a")):
            h = r.headers
            assert "Server" not in h
            assert h["Cache-Control"] == "no-store" and h["X-Content-Type-Options"] == "nosniff"
            assert email.utils.parsedate_to_datetime(h["Date"]).tzname() == "UTC"
            assert h["X-Request-ID"] and h["traceparent"].startswith("00-")
        ok = await api.call("GET", "/api/v1/kv/lean/a", token=token)
        assert ok.headers["Content-Type"] == "application/octet-stream" and ok.body == b"v" * 100
        etag = ok.headers["ETag"]
        again = await api.call("GET", "/api/v1/kv/lean/a", token=token, headers={"If-None-Match": etag})
        assert again.code == 304 and again.headers["ETag"] == etag

    run_gateway(tmp_path, body)


def test_a_logged_out_token_fails_on_its_next_request(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        for _ in range(3):  # the second and third are answered from the remembered principal
            assert (await api.call("GET", "/api/v1/auth/me", token=token)).code == 200
        assert (await api.call("POST", "/api/v1/auth/logout", token=token)).code in (200, 204)
        r = await api.call("GET", "/api/v1/auth/me", token=token)
        assert r.code == 401 and r.error_code == "token_revoked"

    run_gateway(tmp_path, body)


def test_a_known_token_costs_one_store_step_and_a_change_is_seen_at_once(tmp_path: Path) -> None:
    """A token seen before: its bucket taken and its principal's keys read in ONE store call
    (read_and_run_script; no MGET or GET of its own), a KV GET's value with them.  A role granted
    changes the policy on the very next request, a disabled account is refused on the very next request."""
    async def body(api: Api) -> None:
        store = api.store
        calls = {"mget": 0, "get": 0, "read_and_run_script": 0}
        for name in calls:
            real = getattr(store, name)

            def counted(*a: Any, _real: Any = real, _name: str = name, **k: Any) -> Any:
                calls[_name] += 1
                return _real(*a, **k)
            setattr(store, name, counted)

        admin = await api.admin_token()
        carol = await api.make_user("carol", ["user"])
        for _ in range(2):
            r = await api.call("GET", "/api/v1/auth/me", token=carol)
            assert r.code == 200 and r.headers["RateLimit-Policy"] == '"user";q=50;w=60'
        before = dict(calls)
        r = await api.call("GET", "/api/v1/auth/me", token=carol)
        assert r.code == 200 and r.headers["RateLimit-Policy"] == '"user";q=50;w=60'
        assert (calls["mget"] - before["mget"], calls["read_and_run_script"] - before["read_and_run_script"]) == (0, 1)
        assert (await api.call("PUT", "/api/v1/kv/shared", token=admin, body=b"v")).code == 201
        before = dict(calls)
        r = await api.call("GET", "/api/v1/kv/shared", token=admin)
        assert r.code == 200 and r.body == b"v"
        assert {k: calls[k] - before[k] for k in calls} == {"mget": 0, "get": 0, "read_and_run_script": 1}
        r = await api.call("GET", "/api/v1/auth/me", token=carol)
        remaining = int(r.headers["X-RateLimit-Remaining"])

        assert (await api.call("PUT", "/admin/users/carol/roles/worker", token=admin)).code in (200, 201, 204)
        r = await api.call("GET", "/api/v1/auth/me", token=carol)
        assert r.code == 200 and r.headers["RateLimit-Policy"] == '"worker";q=500;w=60', r.headers
        r = await api.call("GET", "/api/v1/auth/me", token=carol)
        assert r.headers["RateLimit-Policy"] == '"worker";q=500;w=60'
        r = await api.call("GET", "/api/v1/auth/me", token=carol)
        assert int(r.headers["X-RateLimit-Remaining"]) < remaining + 450  # the same bucket, a new policy

        r = await api.call("PATCH", "/admin/users/carol", token=admin, json={"disabled": True})
        assert r.code == 200, r.body
        r = await api.call("GET", "/api/v1/auth/me", token=carol)
        assert r.code == 401 and r.error_code == "token_revoked"  # disabling ends the sessions too

    run_gateway(tmp_path, body, **{"ratelimit.roles": ["user 50 60", "worker 500 60"]})
