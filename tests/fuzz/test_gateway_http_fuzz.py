"""The gateway's HTTP handling under random requests (a real in-process gateway, real sockets).

Properties: never a 500 (an unhandled exception in a handler), never a hang
(every request with Connection: close is answered and closed within the
timeout), anonymous or as the admin, for documented paths with random
methods, parameters, headers and bodies, and for random bytes.
tests/integration/test_gateway_schemathesis.py checks documented operations
against the OpenAPI document; this file sends what the document does not
describe.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.support import fuzz, fuzz_timeout
from tests.unit.test_gateway_harness import gateway

pytestmark = [fuzz_timeout(300), pytest.mark.usefixtures("restore_logging")]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gwfuzz")
    box: dict[str, Any] = {}
    ready, stop = threading.Event(), threading.Event()

    async def main() -> None:
        async with gateway(tmp, **{"gateway.max_body_bytes": 65536,
                                   "auth.login_failures_per_user": (1000000, 1),
                                   "auth.login_failures_per_client": (1000000, 1)}) as api:
            box.update(port=api.port, token=await api.admin_token())
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(60), "gateway did not start"
    yield box
    stop.set()
    t.join(30)


def exchange(port: int, data: bytes, *, half_close: bool, limit: float = 20.0) -> bytes:
    """Send `data` and read until the gateway closes; a hang fails the test.

    Tornado closes a connection as soon as it reads the client's EOF, dropping a response still
    being computed, so a whole request (with Connection: close) is sent without one.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        out = b""
        deadline = time.monotonic() + limit
        while True:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                pytest.fail(f"no answer in {limit} s to {data[:300]!r}")
            except ConnectionResetError:
                return out
            if not chunk:
                return out
            out += chunk


def statuses(out: bytes) -> list[int]:
    return [int(line[9:12]) for line in out.split(b"\r\n") if line.startswith(b"HTTP/1.") and line[9:12].isdigit()]


def assert_no_server_error(out: bytes, data: bytes) -> None:
    bad = [s for s in statuses(out) if s == 500]
    assert not bad, f"{bad} for {data[:400]!r}:\n{out[:1000]!r}"


seg = st.one_of(st.sampled_from(["u1", "fz", "r1", "0", "-1", "%00", "%2F", "..", "a b", "\u00e9", "x" * 300,
                                 "job-1", "00000000-0000-0000-0000-000000000000", "%ff", "*", "{id}"]),
                st.text(alphabet="abcxyz0123456789-_.~%:@!$&'()*+,;=", min_size=1, max_size=10))
TEMPLATES = ["/api/v1/kv/{}", "/api/v1/kv", "/api/v1/jobs/lease", "/api/v1/jobs/ack", "/api/v1/jobs/{}/ack",
             "/api/v1/jobs/{}/extend", "/api/v1/jobs/{}/nack", "/api/v1/jobs", "/api/v1/jobs/batch",
             "/api/v1/jobs/dlq", "/api/v1/jobs/dlq/redrive", "/api/v1/jobs/stats", "/api/v1/jobs/{}",
             "/api/v1/jobs/{}/cancel", "/api/v1/jobs/{}/retry", "/healthz", "/readyz", "/metrics",
             "/api/v1/openapi.json", "/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh",
             "/api/v1/auth/me", "/api/v1/auth/sessions", "/admin/users", "/admin/users/{}",
             "/admin/users/{}/password", "/admin/users/{}/roles/{}", "/admin/users/{}/sessions",
             "/admin/users/{}/tokens", "/admin/roles", "/admin/roles/{}", "/admin/ratelimit", "/admin/stats",
             "/admin/audit", "/admin/proxy/routes", "/admin/proxy/routes/{}", "/admin/proxy/backends/{}",
             "/admin/proxy/pools/{}", "/nope", "/api/v1/", "//api/v1/kv"]
query = st.lists(st.tuples(st.sampled_from(["prefix", "cursor", "count", "limit", "queue", "state", "wait",
                                            "timeout", "after", "before", "x"]),
                           st.one_of(seg, st.integers(-2**70, 2**70).map(str), st.just(""))), max_size=3)


@st.composite
def paths(draw: st.DrawFn) -> str:
    tpl = draw(st.sampled_from(TEMPLATES))
    path = tpl.format(*[draw(seg) for _ in range(tpl.count("{}"))])
    q = draw(query)
    return path + ("?" + "&".join(f"{k}={v}" for k, v in q) if q else "")


leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False),
                 st.text(max_size=12), st.sampled_from(["admin", "u1", "kv:read", "*", "password-123", ""]))
json_value = st.recursive(leaf, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                          max_leaves=8)
FIELDS = ["username", "password", "roles", "permissions", "value", "ttl", "ttl_ms", "payload", "queue", "type",
          "max_attempts", "delay", "delay_ms", "dedup_id", "priority", "count", "lease_ms", "visibility_timeout",
          "token", "lease_token", "jobs", "ids", "new_password", "current_password", "refresh_token", "name",
          "expires_in", "disabled", "reason", "error", "result", "retry", "rate", "burst"]
body = st.one_of(
    st.just(b""),
    st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=5).map(orjson.dumps),
    json_value.map(orjson.dumps),
    st.binary(max_size=60),
    st.sampled_from([b"{", b"[" * 5000, b'{"a":' * 200 + b"1" + b"}" * 200, b"\xff\xfe", b"null",
                     # integers past what orjson encodes: the parser must refuse them with a 400
                     b'{"ttl": 18446744073709551616}', b'{"count": -99999999999999999999999}']),
)
method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "FOO"])
content_type = st.sampled_from([None, "application/json", "text/plain", "application/json; charset=latin-1",
                                "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"])


def request(method: str, path: str, body: bytes, token: str | None, ctype: str | None,
            extra: list[tuple[str, str]]) -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close", f"Content-Length: {len(body)}"]
    if token is not None:
        head.append(f"Authorization: {token}")
    if ctype is not None:
        head.append(f"Content-Type: {ctype}")
    head += [f"{k}: {v}" for k, v in extra]
    return "\r\n".join(head).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body


auth = st.sampled_from(["none", "admin", "garbage", "bearer-garbage", "basic"])
extra_headers = st.lists(st.tuples(st.sampled_from(["X-Request-Id", "traceparent", "If-Match", "If-None-Match",
                                                    "Accept", "X-Forwarded-For", "Idempotency-Key", "Prefer"]),
                                   st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                                           max_size=40)), max_size=3)


def destructive(m: str, path: str) -> bool:
    """Requests that would end the run's admin session or throttle everything after them."""
    p = path.split("?")[0]
    return (p.startswith("/admin/users/admin") and m in ("DELETE", "PATCH", "POST", "PUT")
            or p.startswith("/admin/roles/admin") and m in ("DELETE", "PUT")
            or p == "/admin/ratelimit" and m == "PUT"
            or p.startswith("/api/v1/auth/sessions") and m == "DELETE")


@fuzz(40)
@given(method, paths(), body, auth, content_type, extra_headers)
@example("PUT", "/api/v1/kv/k", b"[" * 5000, "admin", "application/json", [])
@example("POST", "/api/v1/jobs", b'{"queue": "q", "payload": 1, "delay_ms": 18446744073709551616}', "admin",
         "application/json", [])
@example("GET", "/api/v1/kv?count=99999999999999999999999", b"", "admin", None, [])
@example("POST", "/api/v1/jobs/lease", b'{"queue": "q", "wait": 1e308}', "admin", "application/json", [])
@example("GET", "/api/v1/kv/%ff", b"", "admin", None, [("traceparent", "00-" + "f" * 32 + "-" + "f" * 16 + "-ff")])
def test_random_requests_never_get_a_500(live: dict[str, Any], m: str, path: str, payload: bytes, who: str,
                                         ctype: str | None, extra: list[tuple[str, str]]) -> None:
    if who == "admin" and destructive(m, path):
        who = "none"
    token = {"none": None, "admin": f"Bearer {live['token']}", "garbage": "x" * 40,
             "bearer-garbage": "Bearer a.b.c", "basic": "Basic YWRtaW46eA=="}[who]
    data = request(m, path, payload, token, ctype, extra)
    out = exchange(live["port"], data, half_close=False)
    assert statuses(out), f"no HTTP response to {data[:300]!r}: {out[:300]!r}"
    assert_no_server_error(out, data)


@fuzz(50)
@given(st.binary(max_size=300))
@example(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
@example(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
@example(b"GET /api/v1/kv/\xff HTTP/1.1\r\nHost: x\r\n\r\n")
def test_random_bytes_never_get_a_500_or_a_hang(live: dict[str, Any], data: bytes) -> None:
    assert_no_server_error(exchange(live["port"], data, half_close=True), data)
