"""The proxy inside the gateway (proxy.enabled): a real gateway in process (unused port, embedded store),
real backends (`tests.proxy_backend` subprocesses), routes from the gateway's store or a YAML file.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_backend import BackendProcess
from tests.security.conftest import Api, Response, run_gateway, user_with

pytestmark = pytest.mark.usefixtures("restore_logging")

FAST_HEALTH = {"path": "/healthz", "interval": 0.2, "timeout": 1, "rise": 1, "fall": 1}
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _served(api: Api, path: str, *, token: str | None = None, timeout: float = 3.0,
                  want: int = 200) -> float:
    """Seconds until `path` answers `want` (AssertionError past `timeout`)."""
    start = time.monotonic()
    while True:
        r = await api.call("GET", path, token=token)
        if r.code == want:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{path} not served in {timeout}s: {r.code} {r.body[:300]!r}")
        await asyncio.sleep(0.02)


async def _setup(api: Api, backend_url: str, routes: list[dict[str, Any]], pool: str = "web") -> str:
    """Backend, pool and routes through /admin/proxy as the bootstrap admin; returns the admin token."""
    admin = await api.admin_token()
    r = await api.call("POST", "/admin/proxy/backends", token=admin,
                       json={"id": f"{pool}1", "pool": pool, "url": backend_url})
    assert r.code == 201, r.body
    # The 502s a killed backend gives before its health check notices open its breaker: a short
    # cool-down lets a test see it come back.
    r = await api.call("PUT", f"/admin/proxy/pools/{pool}", token=admin,
                       json={"health": FAST_HEALTH, "breaker": {"cooldown": 0.3}})
    assert r.code in (200, 201), r.body
    for route in routes:
        r = await api.call("POST", "/admin/proxy/routes", token=admin, json=route)
        assert r.code == 201, r.body
    return admin


def _headers_seen(r: Response) -> dict[str, str]:
    return {k.lower(): v for k, v in r.json()["headers"]}


def _assert_error(r: Response, code: int, error_code: str | None = None) -> None:
    assert r.code == code, (r.code, r.body)
    doc = r.json()
    assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message", "request_id"}, doc
    if error_code is not None:
        assert doc["error"]["code"] == error_code, doc


def test_routes_forward_with_auth_permissions_and_rate_limits(tmp_path: Path) -> None:
    backend = BackendProcess("web1")

    async def body(api: Api) -> None:
        routes: list[dict[str, Any]] = [
            {"id": "pub", "prefix": "/pub/", "pool": "web", "strip_prefix": True},
            {"id": "private", "prefix": "/private/", "pool": "web", "require_auth": True},
            {"id": "orders", "prefix": "/orders/", "pool": "web", "require_auth": True,
             "permissions": ["orders:read"]},
            {"id": "limited", "prefix": "/limited/", "pool": "web", "rate_limit": "3/min"},
        ]
        await _setup(api, backend.url, routes)
        # Pushed by the store's change notification: well before the 5 s safety-net poll.
        assert await _served(api, "/pub/echo?x=1") < 3

        # A public route: forwarded, prefix stripped, query kept, forwarding headers set.
        r = await api.call("GET", "/pub/echo?x=1", headers={"traceparent": TRACE, "Connection": "X-Drop",
                                                            "X-Drop": "1", "X-Keep": "yes"})
        assert r.code == 200, r.body
        doc = r.json()
        assert doc["name"] == "web1" and doc["path"] == "/echo?x=1"
        seen = _headers_seen(r)
        assert seen["x-forwarded-for"] == "127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert seen["x-forwarded-host"] == f"127.0.0.1:{api.port}"
        assert seen["via"] == "1.1 helios"
        assert seen["x-keep"] == "yes" and "x-drop" not in seen
        assert seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
        assert seen["traceparent"] != TRACE  # the gateway's span is the backend's parent
        assert seen["x-request-id"] == r.headers["X-Request-ID"]
        assert r.headers["Content-Type"].startswith("application/json")

        # HTTP/1.0 without a Host header: the backend gets its own host:port as Host.
        def bare(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET /pub/echo HTTP/1.0\r\n\r\n")
                out = b""
                while chunk := s.recv(65536):
                    out += chunk
                return out

        raw = await asyncio.to_thread(bare, api.port)
        assert raw.startswith(b"HTTP/1.0 200") or raw.startswith(b"HTTP/1.1 200"), raw[:200]
        seen = {k.lower(): v for k, v in json.loads(raw.partition(b"\r\n\r\n")[2])["headers"]}
        assert seen["host"] == backend.url.removeprefix("http://")

        # require_auth: 401 without a token; with one, forwarded without the Authorization header.
        _assert_error(await api.call("GET", "/private/x"), 401)
        token = await user_with(api, "alice", ["kv:read"])
        r = await api.call("GET", "/private/x", token=token)
        assert r.code == 200, r.body
        assert "authorization" not in _headers_seen(r)
        r = await api.call("GET", "/pub/y", token=token)  # a public route drops it too
        assert r.code == 200 and "authorization" not in _headers_seen(r)

        # permissions: 403 to a caller without them, forwarded for one with them.
        _assert_error(await api.call("GET", "/orders/1", token=token), 403, "forbidden")
        _assert_error(await api.call("GET", "/orders/1"), 401)
        buyer = await user_with(api, "bob", ["orders:read"])
        r = await api.call("GET", "/orders/1", token=buyer)
        assert r.code == 200 and r.json()["path"] == "/orders/1", r.body

        # rate_limit: 3 a minute per caller on this route, then 429 with Retry-After.
        codes = [(await api.call("GET", "/limited/z")).code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = await api.call("GET", "/limited/z")
        _assert_error(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) >= 1
        assert (await api.call("GET", "/pub/z")).code == 200  # other routes keep their own buckets

        # The gateway's own paths stay its own; a path no route matches is a JSON 404.
        r = await api.call("GET", "/api/v1/openapi.json")
        assert r.code == 200 and "openapi" in r.json()
        assert "/{proxied}" not in r.json()["paths"] and not any("proxy" == p for p in r.json()["paths"])
        _assert_error(await api.call("GET", "/api/v1/nope"), 404, "not_found")
        assert (await api.call("GET", "/healthz")).code == 200
        _assert_error(await api.call("GET", "/elsewhere"), 404, "not_found")

        # The proxy's metrics are on the gateway's /metrics.
        r = await api.call("GET", "/metrics")
        assert r.code == 200
        lines = [line for line in r.body.decode().splitlines() if line.startswith("proxy_requests_total{")]
        assert any('route="pub"' in line and 'backend="web1"' in line and 'code="200"' in line
                   for line in lines), lines

        # Keep-alive to the backend: many requests, few upstream connections.
        before = backend.stats()["connections"]
        for _ in range(20):
            assert (await api.call("GET", "/pub/echo")).code == 200
        assert backend.stats()["connections"] - before <= 3

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def test_a_route_added_through_the_admin_api_serves_and_a_removed_one_stops(tmp_path: Path) -> None:
    backend = BackendProcess("web1")

    async def body(api: Api) -> None:
        admin = await _setup(api, backend.url, [])
        _assert_error(await api.call("GET", "/new/echo"), 404)
        r = await api.call("POST", "/admin/proxy/routes", token=admin,
                           json={"id": "new", "prefix": "/new/", "pool": "web"})
        assert r.code == 201, r.body
        assert await _served(api, "/new/echo") < 3
        r = await api.call("DELETE", "/admin/proxy/routes/new", token=admin)
        assert r.code == 204
        await _served(api, "/new/echo", want=404)

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def test_a_backend_down_gives_502_or_503_in_json(tmp_path: Path) -> None:
    backend = BackendProcess("web1")

    async def body(api: Api) -> None:
        admin = await _setup(api, backend.url, [{"id": "pub", "prefix": "/", "pool": "web"}])
        # A pool whose only backend listens nowhere: connect refused.
        r = await api.call("POST", "/admin/proxy/backends", token=admin,
                           json={"id": "gone1", "pool": "gone", "url": f"http://127.0.0.1:{_free_port()}"})
        assert r.code == 201, r.body
        r = await api.call("POST", "/admin/proxy/routes", token=admin,
                           json={"id": "gone", "prefix": "/gone/", "pool": "gone", "retries": 0})
        assert r.code == 201, r.body
        # The same backend in a pool of its own for the faults below (they count against its breaker).
        r = await api.call("POST", "/admin/proxy/backends", token=admin,
                           json={"id": "flaky1", "pool": "flaky", "url": backend.url})
        assert r.code == 201, r.body
        for rid, prefix in (("slow", "/slow"), ("bad", "/bad")):
            r = await api.call("POST", "/admin/proxy/routes", token=admin,
                               json={"id": rid, "prefix": prefix, "pool": "flaky", "retries": 0,
                                     "timeouts": {"connect": 1, "read": 0.3, "total": 5}})
            assert r.code == 201, r.body
        await _served(api, "/ok")
        # A backend silent past the route's read timeout: 504; an unparsable answer: 502.
        deadline = time.monotonic() + 3
        while (r := await api.call("GET", "/slow?delay=2")).code == 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # until the route is applied ("/" serves it before, slowly)
        _assert_error(r, 504, "gateway_timeout")
        _assert_error(await api.call("GET", "/bad"), 502, "bad_gateway")
        deadline = time.monotonic() + 3
        while True:  # until the new route is applied ("/" serves /gone/x before)
            r = await api.call("GET", "/gone/x")
            if r.code in (502, 503) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert r.code in (502, 503), r.body
        _assert_error(r, r.code, "bad_gateway" if r.code == 502 else "unavailable")

        # The working backend killed: its health check marks it down, then 503 with Retry-After.
        backend.kill()
        r = await api.call("GET", "/ok")
        assert r.code in (502, 503), r.body
        _assert_error(r, r.code)
        await _served(api, "/ok", want=503)
        r = await api.call("GET", "/ok")
        _assert_error(r, 503, "unavailable")
        assert int(r.headers["Retry-After"]) >= 1
        # The backend's return: healthy again, served again.
        backend.restart()
        await _served(api, "/ok", timeout=5)

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _upload(port: int, path: str, size: int, *, chunked: bool) -> tuple[int, bytes]:
    """A streamed upload from a plain socket (the client holds 64 KiB at a time)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{framing}\r\n\r\n".encode())
        block = b"u" * 65536
        left = size
        while left > 0:
            piece = block[:left]
            s.sendall(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            left -= len(piece)
        if chunked:
            s.sendall(b"0\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += s.recv(65536)
        return status, rest


def test_a_streamed_50_mb_upload_keeps_memory_flat(tmp_path: Path) -> None:
    backend = BackendProcess("web1")
    size = 50 << 20

    async def body(api: Api) -> None:
        await _setup(api, backend.url, [{"id": "pub", "prefix": "/pub/", "pool": "web", "strip_prefix": True}])
        await _served(api, "/pub/echo")
        peak = 0
        done = threading.Event()
        result: dict[str, tuple[int, bytes]] = {}

        def run(chunked: bool) -> None:
            result["r"] = _upload(api.port, "/pub/sink", size, chunked=chunked)
            done.set()

        for chunked in (False, True):
            done.clear()
            base = _rss_kib()
            thread = threading.Thread(target=run, args=(chunked,), daemon=True)
            thread.start()
            while not done.is_set():
                peak = max(peak, _rss_kib() - base)
                await asyncio.sleep(0.01)
            thread.join()
            status, answer = result["r"]
            assert status == 200, answer
            assert json.loads(answer) == {"name": "web1", "bytes": size}
            print(f"50 MB upload ({'chunked' if chunked else 'Content-Length'}): RSS growth peak {peak} KiB")
            assert peak < 24 << 10, f"RSS grew {peak} KiB while streaming {size >> 20} MB"

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def test_routes_from_a_yaml_file_and_reload(tmp_path: Path) -> None:
    backend = BackendProcess("web1")
    config = tmp_path / "proxy.yaml"

    def write(prefix: str) -> None:
        config.write_text(json.dumps({
            "pools": {"web": {"backends": [{"id": "web1", "url": backend.url}], "health": FAST_HEALTH}},
            "routes": [{"id": "site", "prefix": prefix, "pool": "web"}]}))

    write("/one/")

    async def body(api: Api) -> None:
        proxy = api.service.proxy
        assert proxy is not None
        assert (await api.call("GET", "/one/x")).code == 200
        write("/two/")
        await proxy.reload()  # what SIGHUP does in `helios gateway`
        assert (await api.call("GET", "/two/x")).code == 200
        _assert_error(await api.call("GET", "/one/x"), 404)
        config.write_text("routes: [{id: bad, prefix: nope, pool: web}]")
        await proxy.reload()  # refused: the running config stays
        assert (await api.call("GET", "/two/x")).code == 200

    try:
        overrides: dict[str, Any] = {"proxy.enabled": True, "proxy.config_file": str(config)}
        run_gateway(tmp_path, body, **overrides)
    finally:
        backend.kill()


def _session(port: int, calls: list[tuple[str, str, bytes | None]]) -> list[tuple[int, dict[str, str], bytes]]:
    """Several requests on one client connection (keep-alive), from a thread."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for method, path, data in calls:
            conn.request(method, path, body=data)
            r = conn.getresponse()
            out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()))
    finally:
        conn.close()
    return out


def test_bodies_both_ways_on_one_keep_alive_client_connection(tmp_path: Path) -> None:
    backend = BackendProcess("web1")
    big = 20 << 20

    async def body(api: Api) -> None:
        await _setup(api, backend.url, [{"id": "pub", "prefix": "/", "pool": "web"}])
        await _served(api, "/echo")
        calls: list[tuple[str, str, bytes | None]] = [
            ("GET", "/echo", None),
            ("POST", "/sink", b"p" * 100000),
            ("HEAD", "/stream?n=1000", None),
            ("GET", "/status/204", None),
            ("GET", f"/stream?n={big}", None),
            ("GET", f"/stream?n={big}&chunked=1", None),
            ("PUT", "/echo", b"small"),
            ("GET", "/status/404", None),
            ("DELETE", "/echo", None),
        ]
        got = await asyncio.to_thread(_session, api.port, calls)
        codes = [g[0] for g in got]
        assert codes == [200, 200, 200, 204, 200, 200, 200, 404, 200], codes
        assert json.loads(got[1][2])["bytes"] == 100000
        assert got[2][2] == b"" and got[2][1]["content-length"] == "1000"
        assert got[3][2] == b""
        assert len(got[4][2]) == big and got[4][1]["content-length"] == str(big)
        assert len(got[5][2]) == big and got[5][1].get("transfer-encoding") == "chunked"
        assert json.loads(got[6][2])["body_bytes"] == 5 and json.loads(got[6][2])["method"] == "PUT"
        assert json.loads(got[7][2]) == {"name": "web1"}  # the backend's 404, passed as it is
        assert json.loads(got[8][2])["method"] == "DELETE"

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def _download(port: int, path: str) -> tuple[int, int]:
    """GET `path`, reading and dropping the body (HTTP/1.0: the body ends with the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        head, _, rest = head.partition(b"\r\n\r\n")
        n = len(rest)
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            n += len(chunk)
        return int(head.split(b" ", 2)[1]), n


def test_a_streamed_50_mb_download_keeps_memory_flat(tmp_path: Path) -> None:
    backend = BackendProcess("web1")
    size = 50 << 20

    async def body(api: Api) -> None:
        await _setup(api, backend.url, [{"id": "pub", "prefix": "/", "pool": "web"}])
        await _served(api, "/echo")
        for query in ("", "&chunked=1"):
            base = _rss_kib()
            peak = 0
            task = asyncio.ensure_future(asyncio.to_thread(_download, api.port, f"/stream?n={size}{query}"))
            while not task.done():
                peak = max(peak, _rss_kib() - base)
                await asyncio.sleep(0.01)
            status, n = task.result()
            assert (status, n) == (200, size)
            print(f"50 MB download ({'chunked' if query else 'Content-Length'}): RSS growth peak {peak} KiB")
            assert peak < 24 << 10, f"RSS grew {peak} KiB while streaming {size >> 20} MB"

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def test_a_client_that_leaves_mid_download_frees_the_backend_connection(tmp_path: Path) -> None:
    backend = BackendProcess("web1")

    def leave_early(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET /stream?n={200 << 20} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            return s.recv(65536)

    async def body(api: Api) -> None:
        await _setup(api, backend.url, [{"id": "pub", "prefix": "/", "pool": "web"}])
        await _served(api, "/echo")
        first = await asyncio.to_thread(leave_early, api.port)
        assert first.startswith(b"HTTP/1.1 200")
        service = api.service.proxy.service if api.service.proxy else None
        assert service is not None
        deadline = time.monotonic() + 5
        while any(b.in_flight for ps in service.pools.values() for b in ps.backends):
            assert time.monotonic() < deadline, "the exchange never ended"
            await asyncio.sleep(0.02)
        assert (await api.call("GET", "/echo")).code == 200

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def test_helios_gateway_process_proxies_and_rereads_its_file_on_sighup(tmp_path: Path) -> None:
    """As an operator runs it: `helios gateway` with HELIOS_PROXY__* set, SIGHUP, SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    helios = str(Path(sys.executable).parent / "helios")
    backend = BackendProcess("web1")
    config = tmp_path / "proxy.yaml"

    def write(prefix: str) -> None:
        config.write_text(json.dumps({
            "pools": {"web": {"backends": [{"id": "web1", "url": backend.url}], "health": FAST_HEALTH}},
            "routes": [{"id": "site", "prefix": prefix, "pool": "web"}]}))

    def get(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    write("/one/")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env.update({"HELIOS_PROXY__ENABLED": "true", "HELIOS_PROXY__CONFIG_FILE": str(config),
                "HELIOS_AUTH__BCRYPT_COST": "4"})
    proc = subprocess.Popen([helios, "gateway", "--data", str(tmp_path / "data"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if "listening on" in line:
                url = line.split("listening on ")[1].split()[0]
                break
        assert url, f"gateway did not start: {proc.wait(10)}"
        assert get(f"{url}/one/x") == 200
        assert get(f"{url}/healthz") == 200
        write("/two/")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while get(f"{url}/two/x") != 200:
            assert time.monotonic() < deadline, "SIGHUP did not reload proxy.config_file"
            time.sleep(0.05)
        assert get(f"{url}/one/x") == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        backend.kill()


def test_a_backend_answering_before_the_upload_ends_is_answered_at_once(tmp_path: Path) -> None:
    """A backend refusing a 200 MB upload early: the client gets its answer, the rest is not read."""
    backend = BackendProcess("web1")

    def upload_until_answered(port: int) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"POST /status/413 HTTP/1.1\r\nHost: x\r\nContent-Length: {200 << 20}\r\n\r\n".encode())
            s.setblocking(False)
            sent, data = 0, b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    sent += s.send(b"u" * 65536)
                except (BlockingIOError, ConnectionError):
                    pass
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                except ConnectionError:
                    break
                if not chunk:
                    break
                data += chunk
            return sent, data

    async def body(api: Api) -> None:
        await _setup(api, backend.url, [{"id": "pub", "prefix": "/", "pool": "web"}])
        await _served(api, "/echo")
        sent, data = await asyncio.to_thread(upload_until_answered, api.port)
        assert data.startswith(b"HTTP/1.1 413 "), data[:300]
        assert data.endswith(b'{"name": "web1"}')
        assert sent < 100 << 20
        assert (await api.call("GET", "/echo")).code == 200

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        backend.kill()


def test_route_rate_limit_spellings() -> None:
    from helios_core.errors import HeliosError
    from helios_core.gateway.proxied import route_policy
    from helios_core.ratelimit import Policy, RateLimitSettings

    settings = RateLimitSettings(Policy(600, 60), roles={"proxy-api": Policy(50, 10, "proxy-api")})
    cases = {"100/s": (100, 1), "600/min": (600, 60), "10/5s": (10, 5), "1000/h": (1000, 3600),
             "100 per 10s": (100, 10), "7 30": (7, 30), " 3/minute ": (3, 60), "proxy-api": (50, 10)}
    for spec, (limit, window) in cases.items():
        p = route_policy(spec, settings)
        assert (p.limit, p.window_s) == (limit, window), spec
    for bad in ("fast", "10/fortnight", "/s", "unknown-policy"):
        with pytest.raises(HeliosError, match="rate_limit"):
            route_policy(bad, settings)
