"""API4:2023 Unrestricted Resource Consumption: unauthenticated requests cost little (issue 10, item 5).

A login with a 1 MiB username used to go whole into the durable audit log
(40 requests: +97 MiB of memory, +118 MB of disk).  Afterwards sizes are
checked before anything else, audit entries are bounded, and unauthenticated
requests, 401s included, draw from a per-address token bucket.

The job queue:
A plain user once made 35,000 queues with batch enqueues; then the gateway
idled at 40-55% CPU (its reaper visited every name ever used each second),
/metrics grew to 15 MB and /healthz stalled for 5 s.  Now live queues are
capped (jobs.max_queues, 429 beyond it), empty queues are forgotten so the
reaper and stats follow the queues that hold jobs, and per-queue metric labels
are capped.

Glob patterns cost bounded time:
A regex translation of `*` backtracks: KEYS with 11 stars against one
40-byte key ran 8 s with every other atlasd client blocked, and 20 stars
never finished (issue 10, 9c).  The matcher (helios_core/atlas/glob.py) is
linear in each segment it searches; these tests check that it answers
hostile patterns at all, and that it answers exactly as redis-server does.
"""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.atlas.glob import compile_glob, glob_match
from helios_core.auth.audit import AUDIT_KEY, Actor, AuditLog
from helios_core.jobs.labels import MAX_QUEUE_LABELS, OTHER
from helios_core.observability.metrics import REGISTRY
from tests.integration.test_atlasd_support import running_daemon
from tests.redis_server import RedisServer, redis_server  # noqa: F401
from tests.security.conftest import Api, run_gateway, user_with_roles
from tests.unit.atlas_harness import Atlas

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



# -- The job queue ------------------------------------------------------------

JOBS = "/api/v1/jobs"


def _batch(queues: list[str]) -> dict[str, object]:
    return {"jobs": [{"queue": q, "payload": 1} for q in queues]}


def test_a_plain_user_cannot_create_queues_without_bound(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        user = await user_with_roles(api, "flooder", ["user"])
        admin = await api.admin_token()
        for start in range(0, 20, 10):
            r = await api.call("POST", f"{JOBS}/batch", token=user,
                               json=_batch([f"f{i}" for i in range(start, start + 10)]))
            assert r.code == 201, r.body
        r = await api.call("POST", f"{JOBS}/batch", token=user, json=_batch(["f0", "f20"]))
        assert r.code == 429 and r.error_code == "too_many_queues", r.body
        message = r.json()["error"]["message"]
        assert "'f20'" in message and "jobs.max_queues is 20" in message, message
        assert len((await api.call("GET", f"{JOBS}?queue=f0", token=admin)).json()["jobs"]) == 1, "all or nothing"
        # Queues that exist take more work; a configured queue is always accepted.
        assert (await api.call("POST", JOBS, token=user, json={"queue": "f3", "payload": 2})).code == 201
        assert (await api.call("POST", JOBS, token=user, json={"queue": "reports", "payload": 2})).code == 201

        # The operator cancels the flood; once the cancelled jobs are past retention the queues are forgotten
        # by the next stats (the reaper asks every 15 s), and the reaper only visits what holds jobs.
        for i in range(20):
            listed = (await api.call("GET", f"{JOBS}?queue=f{i}", token=admin)).json()["jobs"]
            for job in listed:
                assert (await api.call("POST", f"{JOBS}/{job['id']}/cancel", token=admin)).code == 200
        api.clock.advance(60_000 + 1)
        stats = await api.call("GET", f"{JOBS}/stats", token=admin)
        assert stats.code == 200, stats.body
        assert await api.service.gateway.jobs.queues() == ["reports"]
        assert (await api.call("POST", JOBS, token=user, json={"queue": "fresh", "payload": 3})).code == 201

    run_gateway(tmp_path, body, **{"jobs.max_queues": 20, "jobs.queues": ["reports"],
                                   "jobs.done_retention_seconds": 60})


def test_per_queue_metric_labels_are_capped(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        user = await user_with_roles(api, "labeller", ["user"])
        names = [f"lbl{i}" for i in range(MAX_QUEUE_LABELS + 30)]
        for start in range(0, len(names), 100):
            r = await api.call("POST", f"{JOBS}/batch", token=user, json=_batch(names[start:start + 100]))
            assert r.code == 201, r.body
        labelled = {q for q in names if REGISTRY.get_sample_value("jobs_enqueued_total", {"queue": q})}
        assert len(labelled) <= MAX_QUEUE_LABELS, len(labelled)
        assert (REGISTRY.get_sample_value("jobs_enqueued_total", {"queue": OTHER}) or 0) >= 30
        # The reaper's depth gauges go through the same cap: the queues past it are summed into OTHER.
        await api.service.reaper.refresh_depth()
        depth = {s.labels["queue"]: s.value for m in REGISTRY.collect() if m.name == "worker_job_queue_depth"
                 for s in m.samples if s.labels["state"] == "pending"}
        assert len(depth) <= MAX_QUEUE_LABELS + 1, len(depth)
        assert depth[OTHER] >= 30 and sum(depth.values()) >= len(names)

    run_gateway(tmp_path, body)



# -- Glob patterns cost bounded time ------------------------------------------

HOSTILE = [
    b"*a" * 11 + b"b",                      # the 11-star pattern from the issue
    b"*a" * 20 + b"b",                      # 20 stars: never finished before
    b"a*" * 30 + b"?" * 5 + b"[^a]",
    b"*" + b"?*" * 40 + b"z",
    b"*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*c",
]
KEY = b"a" * 40


@pytest.mark.timeout(60)
def test_hostile_patterns_answer_and_do_not_match() -> None:
    for pattern in HOSTILE:
        assert not glob_match(pattern, KEY), pattern
        assert not glob_match(pattern, b"a" * 4000), pattern
    assert glob_match(b"*a" * 20, KEY)


@pytest.mark.timeout(60)
def test_keys_with_a_hostile_pattern_does_not_block_atlasd(tmp_path: Path) -> None:
    """Over the real daemon: the 20-star KEYS answers, and another client is served meanwhile."""
    with running_daemon(tmp_path) as d:
        path = str(d.socket_path)
        with redis.Redis(unix_socket_path=path, socket_timeout=30) as r:
            r.mset({KEY + b"%d" % i: b"v" for i in range(200)})
            pings: list[bool] = []

            def other() -> None:
                with redis.Redis(unix_socket_path=path, socket_timeout=30) as o:
                    pings.append(bool(o.ping()))

            t = threading.Thread(target=other)
            t.start()
            assert r.keys(b"*a" * 20 + b"b") == []
            assert r.scan(0, match=b"*a" * 20 + b"b", count=1000) == (0, [])
            t.join(30)
            assert pings == [True]
        assert d.stop() == 0  # SIGTERM is heard


# -- the same answers as redis-server ------------------------------------------------------

_ALPHABET = [b"a", b"b", b"A", b"-", b"]", b"^", b"\\", b"\xe9"]
_TOKENS = st.sampled_from([b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"a", b"b", b"A", b"z", b"\xe9", b"[a-b]",
                           b"[^a]", b"[b-a]", b"[a-]", b"\\*", b"[\\]]"])
_patterns = st.lists(_TOKENS, max_size=8).map(b"".join)
_keys = st.lists(st.lists(st.sampled_from(_ALPHABET), min_size=1, max_size=7).map(b"".join),
                 min_size=1, max_size=12, unique=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=_patterns, keys=_keys)
def test_keys_matches_redis(redis_server: RedisServer, tmp_path: Path,  # noqa: F811
                            pattern: bytes, keys: list[bytes]) -> None:
    r = redis.Redis(port=redis_server.port)
    r.flushall()
    r.mset({k: b"v" for k in keys})
    want = sorted(r.keys(pattern))
    got = sorted(k for k in keys if compile_glob(pattern).match(k)) if pattern != b"*" else sorted(keys)
    assert got == want, pattern


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=_patterns, keys=_keys)
def test_config_get_style_nocase_matches_redis(redis_server: RedisServer,  # noqa: F811
                                               pattern: bytes, keys: list[bytes]) -> None:
    """COMMAND LIST FILTERBY PATTERN matches case-insensitively in Redis (stringmatchlen nocase)."""
    conn = redis.Connection(port=redis_server.port)  # raw replies: redis-py reshapes COMMAND's

    def command_list(*args: bytes) -> list[bytes]:
        conn.send_command("COMMAND", "LIST", *args)
        return list(conn.read_response())

    names = command_list()
    want = sorted(command_list(b"FILTERBY", b"PATTERN", pattern))
    conn.disconnect()
    got = sorted(n for n in names if compile_glob(pattern, nocase=True).match(n))
    assert got == want, pattern


def test_keys_command_uses_the_bounded_matcher(tmp_path: Path) -> None:
    a = Atlas(tmp_path / "d")
    a("SET", KEY, "v")
    a("SET", b"x" * 40, "v")
    assert a("KEYS", b"*a" * 20 + b"b") == []
    assert a("KEYS", b"*a" * 20) == [KEY]
    assert a("SCAN", 0, "MATCH", b"*a" * 20 + b"b", "COUNT", 100) == [b"0", []]
    assert a("CONFIG", "GET", b"*a" * 20 + b"b") == {}
