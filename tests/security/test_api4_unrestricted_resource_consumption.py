"""API4:2023 Unrestricted Resource Consumption: unauthenticated requests cost little (issue 10, item 5).

A login with a 1 MiB username used to go whole into the durable audit log
(40 requests: +97 MiB of memory, +118 MB of disk).  Afterwards sizes are
checked before anything else, audit entries are bounded, and unauthenticated
requests, 401s included, draw from a per-address token bucket.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from helios_core.auth.audit import AUDIT_KEY, Actor, AuditLog
from tests.security.conftest import Api, run_gateway

LOGIN = "/api/v1/auth/login"
MIB = 1 << 20
MAX_EVENT_BYTES = 4096  # what one audit event may take in the store, at most


async def audit_bytes(api: Api) -> int:
    return sum(len(m) for m, _ in await api.store.zrangebyscore(AUDIT_KEY, "-inf", "+inf", offset=0, count=10_000))


def test_huge_usernames_and_passwords_are_refused_before_anything(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        before = await audit_bytes(api)
        for field, value in (("username", "a" * MIB), ("password", "p" * MIB), ("username", "a" * 129),
                             ("password", "p" * 73)):
            creds = {"username": "admin", "password": "whatever-it-is", field: value}
            r = await api.call("POST", LOGIN, json=creds)
            assert r.code == 400 and field in r.json()["error"]["message"], r.body[:300]
            assert "at most" in r.json()["error"]["message"]
        r = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": "rt_" + "x" * MIB})
        assert r.code in (400, 401) and len(r.body) < 1000
        assert await audit_bytes(api) == before  # nothing was written

    run_gateway(tmp_path, body, **{"gateway.max_body_bytes": 4 * MIB})


def test_audit_entries_have_a_bounded_size(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        log = AuditLog(api.store)
        event = await log.record(1, "auth.login", Actor("x" * 10_000, "u_1", "c" * 10_000), target="t" * MIB,
                                 result="failed", detail={"reason": "r" * MIB, "list": ["y" * 1000] * 1000})
        raw = orjson.dumps(event)
        assert len(raw) <= MAX_EVENT_BYTES
        [(stored, _)] = [(m, s) for m, s in await api.store.zrangebyscore(AUDIT_KEY, "-inf", "+inf", offset=0,
                                                                       count=1000) if b'"time_ms":1,' in m]
        assert len(stored) <= MAX_EVENT_BYTES
        doc = orjson.loads(stored)
        assert doc["target"].startswith("ttt") and doc["target"].endswith("[cut]")
        assert set(doc["cut"]) >= {"actor", "client", "target", "detail"}
        # Small events are stored as they are.
        small = await log.record(2, "auth.login", Actor("alice"), target="alice", detail={"reason": "x"})
        assert "cut" not in small and small["target"] == "alice"

    run_gateway(tmp_path, body)


def test_unauthenticated_requests_draw_from_a_per_address_bucket(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        for i in range(5):
            r = await api.call("GET", "/api/v1/kv/a", token="not-a-token")
            assert r.code == 401, (i, r.body)
        r = await api.call("GET", "/api/v1/kv/a", token="not-a-token")
        assert r.code == 429 and int(r.headers["Retry-After"]) >= 1, r.body
        r = await api.call("POST", LOGIN, json={"username": "admin", "password": "wrong-password"})
        assert r.code == 429, r.body
        api.clock.advance(60_000)  # the bucket refills
        r = await api.call("GET", "/api/v1/kv/a", token="not-a-token")
        assert r.code == 401, r.body

    run_gateway(tmp_path, body, **{"ratelimit.roles": ["unauthenticated 5 60"]})
