"""Backends failing under the proxy: retries elsewhere, health marking, 503 when none is left, timeouts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.proxy import ProxyProcess, pool, request, route, wait_until, write_config
from tests.proxy_backend import BackendProcess


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[BackendProcess, BackendProcess]]:
    with BackendProcess("a") as a, BackendProcess("b") as b:
        yield a, b


@pytest.fixture
def two(backends: tuple[BackendProcess, BackendProcess]) -> tuple[BackendProcess, BackendProcess]:
    """The module's two backends, alive and well-behaved again (a test may have killed or broken one)."""
    for b in backends:
        if b.proc is None or b.proc.poll() is not None:
            b.restart()
        b.control(fail=None, delay=0, healthy=True)
    return backends


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(p: ProxyProcess, pool_id: str, backend: str) -> bool:
    for b in p.status()["pools"][pool_id]["backends"]:
        if b["id"] == backend:
            return bool(b["healthy"])
    raise KeyError(backend)


def metric(p: ProxyProcess, prefix: str) -> float:
    text = request(p.port, "GET", "/_helios/proxy/metrics")[2].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_backend_killed_under_load(two: tuple[BackendProcess, BackendProcess], tmp_path: Path) -> None:
    a, b = two
    # Short ejection and cool-down: the restarted backend is back in rotation within the test.
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("a", a.url), ("b", b.url)],
                                                         outlier={"base_ejection": 0.5, "max_ejection": 1},
                                                         breaker={"cooldown": 0.5})},
                       [route("r", "/", "web", retries=2, timeouts={"connect": 1, "read": 5, "total": 10})],
                       retry_min_per_second=1000)
    with ProxyProcess(cfg, "--no-access-log") as p:
        errors: list[str] = []
        done = threading.Event()
        counts = {"ok": 0}

        def load() -> None:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
            while not done.is_set():
                try:
                    status, _, body = request(p.port, "GET", "/echo", conn=conn)
                    if status != 200:
                        errors.append(f"{status} {body[:200]!r}")
                    counts["ok"] += 1
                except Exception as e:  # noqa: BLE001 - any client-visible failure is the finding
                    errors.append(repr(e))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
            conn.close()

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: counts["ok"] > 100)
            a.kill()
            mark = counts["ok"]
            wait_until(lambda: counts["ok"] > mark + 150)
            wait_until(lambda: not healthy(p, "web", "a"))
            a.restart()
            wait_until(lambda: healthy(p, "web", "a"))
            wait_until(lambda: a.stats()["requests"] > 5)  # traffic came back to the restarted backend
        finally:
            done.set()
            for t in threads:
                t.join(10)
        assert errors == []


def test_retry_on_another_backend_for_503(two: tuple[BackendProcess, BackendProcess], tmp_path: Path) -> None:
    a, b = two
    a.control(fail=503)
    tried_before = a.stats()["requests"]
    cfg = write_config(tmp_path / "p.yaml",
                       {"web": pool([("a", a.url), ("b", b.url)], health={"enabled": False},
                                    outlier={"enabled": False}, breaker={"enabled": False})},
                       [route("r", "/", "web", retries=1)], retry_min_per_second=1000)
    with ProxyProcess(cfg) as p:
        for _ in range(10):
            status, _, body = request(p.port, "GET", "/echo")
            assert status == 200 and json.loads(body)["name"] == "b"
        tried_a = a.stats()["requests"]
        assert tried_a > tried_before
        assert metric(p, "proxy_retries_total{") == tried_a - tried_before  # every 503 from a: retried on b
        # Not for a POST: the 503 comes back as it is.
        statuses = {request(p.port, "POST", "/echo", body=b"x")[0] for _ in range(6)}
        assert statuses == {200, 503}
        lines = [ln for ln in p.log_lines() if ln.get("component") == "proxy.access" and ln.get("tries") == 2]
        assert lines and lines[0]["backend"] == "b"


def test_retries_bounded_by_budget(two: tuple[BackendProcess, BackendProcess], tmp_path: Path) -> None:
    a, b = two
    a.control(fail=503)
    b.control(fail=503)
    cfg = write_config(tmp_path / "p.yaml",
                       {"web": pool([("a", a.url), ("b", b.url)], health={"enabled": False},
                                    outlier={"enabled": False}, breaker={"enabled": False})},
                       [route("r", "/", "web", retries=1)], retry_budget=0.0, retry_min_per_second=0.5)
    before = a.stats()["requests"] + b.stats()["requests"]
    with ProxyProcess(cfg) as p:
        for _ in range(20):
            assert request(p.port, "GET", "/echo")[0] == 503
        # A floor of 0.5/s over the 10 s window: 5 retries, not 20.
        assert metric(p, "proxy_retries_total{") == 5
        assert a.stats()["requests"] + b.stats()["requests"] - before == 25


def test_unavailable_unreachable_and_slow_backends(two: tuple[BackendProcess, BackendProcess],
                                                   tmp_path: Path) -> None:
    """503 + Retry-After when no backend is healthy, 502 when none can be reached, 504 on timeouts."""
    down, slow = two
    down.control(healthy=False)
    no_checks = {"enabled": False}
    cfg = write_config(tmp_path / "p.yaml",
                       {"down": pool([("down", down.url)]),
                        "gone": pool([("gone", f"http://127.0.0.1:{free_port()}")], health=no_checks),
                        "slow": pool([("slow", slow.url)], health=no_checks)},
                       [route("down", "/down/", "down"), route("gone", "/gone/", "gone"),
                        route("read", "/slow", "slow", retries=0, timeouts={"connect": 1, "read": 0.3, "total": 10}),
                        route("total", "/stream", "slow", retries=0, timeouts={"connect": 1, "read": 5, "total": 0.3}),
                        route("fine", "/", "slow")])
    with ProxyProcess(cfg) as p:
        wait_until(lambda: not healthy(p, "down", "down"))
        status, headers, body = request(p.port, "GET", "/down/echo")
        assert status == 503
        assert int(headers["retry-after"]) >= 1
        err = json.loads(body)["error"]
        assert err["code"] == "unavailable" and "down" in err["message"]
        down.control(healthy=True)
        wait_until(lambda: healthy(p, "down", "down"))
        assert request(p.port, "GET", "/down/echo")[0] == 200

        status, _, body = request(p.port, "GET", "/gone/echo")
        assert status == 502 and json.loads(body)["error"]["code"] == "bad_gateway"

        status, _, body = request(p.port, "GET", "/slow?delay=3")
        assert status == 504 and json.loads(body)["error"]["code"] == "gateway_timeout"
        slow.control(delay=2)
        status, _, _ = request(p.port, "GET", "/stream?n=10")
        assert status == 504
        slow.control(delay=0)
        assert request(p.port, "GET", "/echo")[0] == 200
        # A 503 with no other backend to try is the backend's own answer, passed on as it is.
        slow.control(fail=503)
        status, _, body = request(p.port, "GET", "/echo")
        assert status == 503 and json.loads(body)["failed"] is True


def test_request_on_a_connection_the_backend_closed_goes_again(tmp_path: Path) -> None:
    """A keep-alive connection closed by the backend as the next request crosses it: sent again, not 502."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def handle(c: socket.socket) -> None:
        with c:  # answer the first request, then drop the connection when the second comes
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            c.recv(65536)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        cfg = write_config(tmp_path / "p.yaml",
                           {"web": pool([("raw", f"http://127.0.0.1:{srv.getsockname()[1]}")],
                                        health={"enabled": False})},
                           [route("r", "/", "web", retries=0)])
        with ProxyProcess(cfg) as p:
            for method in ("GET", "POST", "GET", "POST"):
                status, _, body = request(p.port, method, "/x", body=b"" if method == "POST" else None)
                assert (status, body) == (200, b"ok"), method
    finally:
        srv.close()
