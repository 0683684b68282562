"""Forwarding through the real `helios proxy`: headers, routing rewrites, bodies, keep-alive, upgrades."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.proxy import ProxyProcess, pool, request, route, wait_until, write_config
from tests.proxy_backend import BackendProcess


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[BackendProcess, BackendProcess]]:
    with BackendProcess("web1") as b1, BackendProcess("web2") as b2:
        yield b1, b2


@pytest.fixture(scope="module")
def proxy(backends: tuple[BackendProcess, BackendProcess], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ProxyProcess]:
    b1, b2 = backends
    cfg = write_config(tmp_path_factory.mktemp("proxy") / "proxy.yaml",
                       {"web": pool([("web1", b1.url), ("web2", b2.url)]), "one": pool([("solo1", b1.url)])},
                       [route("all", "/", "web"), route("strip", "/strip/", "one", strip_prefix=True),
                        route("rw", "/old/", "one", rewrite="/new/"),
                        route("only-get", "/get-only/", "one", methods=["GET"])])
    with ProxyProcess(cfg) as p:
        yield p


def echo(proxy: ProxyProcess, path: str = "/echo", method: str = "GET", headers: dict[str, str] | None = None,
         body: bytes | None = None) -> dict[str, object]:
    status, _, data = request(proxy.port, method, path, body=body, headers=headers)
    assert status == 200, data
    out = json.loads(data)
    out["h"] = {k.lower(): v for k, v in out.get("headers", [])}
    return out


def test_forwarded_headers_and_hop_by_hop(proxy: ProxyProcess) -> None:
    seen = echo(proxy, headers={"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1",
                                "Keep-Alive": "timeout=5", "TE": "trailers", "Proxy-Authorization": "Basic x",
                                "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https", "X-Custom": "kept"})
    h = seen["h"]
    assert isinstance(h, dict)
    for gone in ("x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert gone not in h, gone
    assert h["x-custom"] == "kept"
    assert h["x-forwarded-for"] == "127.0.0.1"  # the untrusted peer's claim is replaced
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
    assert h["host"] == f"127.0.0.1:{proxy.port}"  # Host passes unchanged
    assert h["via"] == "1.1 helios"
    assert re.fullmatch(r"[0-9a-f]{16}", h["x-request-id"])


def test_xff_kept_from_trusted_proxy_and_json_404(backends: tuple[BackendProcess, BackendProcess],
                                                  tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "trust.yaml", {"web": pool([("web1", backends[0].url)])},
                       [route("api", "/api/", "web")], trusted_proxies=["127.0.0.0/8"])
    with ProxyProcess(cfg) as p:
        h = echo(p, "/api/echo", headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
                                          "X-Forwarded-Host": "example.com", "Via": "1.1 edge"})["h"]
        status, headers, body = request(p.port, "GET", "/elsewhere")
    assert status == 404  # no route: the JSON error shape
    assert headers["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert err["code"] == "not_found" and "/elsewhere" in err["message"] and err["request_id"]
    assert isinstance(h, dict)
    assert h["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert h["x-forwarded-proto"] == "https"
    assert h["x-forwarded-host"] == "example.com"
    assert h["via"] == "1.1 edge, 1.1 helios"


def test_traceparent_kept_when_valid_else_started(proxy: ProxyProcess) -> None:
    valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    h = echo(proxy, headers={"traceparent": valid, "tracestate": "a=b"})["h"]
    assert isinstance(h, dict)
    assert h["traceparent"] == valid and h["tracestate"] == "a=b"
    for bad in ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "garbage", "00-xyz"):
        h = echo(proxy, headers={"traceparent": bad, "tracestate": "a=b"})["h"]
        assert isinstance(h, dict)
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", h["traceparent"]), h["traceparent"]
        assert not h["traceparent"].startswith("00-0000000000")
        assert "tracestate" not in h
    h = echo(proxy)["h"]
    assert isinstance(h, dict) and h["traceparent"].startswith("00-")


def test_strip_rewrite_methods_and_404(proxy: ProxyProcess) -> None:
    assert echo(proxy, "/strip/a/b?q=1")["path"] == "/a/b?q=1"
    assert echo(proxy, "/old/x?y=2")["path"] == "/new/x?y=2"
    assert echo(proxy, "/get-only/z")["path"] == "/get-only/z"
    # POST on a GET-only prefix falls back to the catch-all route, still forwarded as is.
    assert echo(proxy, "/get-only/z", method="POST", body=b"")["path"] == "/get-only/z"


def test_bodies_both_ways_chunked_and_sized(proxy: ProxyProcess) -> None:
    # Sized upload.
    assert echo(proxy, "/sink", "POST", body=b"a" * 300_000)["bytes"] == 300_000
    # Chunked upload (http.client encodes an iterator as chunks).
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    c.request("POST", "/sink", body=iter([b"x" * 1000, b"y" * 70_000, b"z"]), encode_chunked=True)
    r = c.getresponse()
    assert json.loads(r.read())["bytes"] == 71_001
    # Chunked and sized downloads.
    c.request("GET", "/stream?n=200000&chunked=1")
    r = c.getresponse()
    assert r.getheader("Transfer-Encoding") == "chunked"
    assert r.read() == b"x" * 200_000
    c.request("GET", "/stream?n=100000")
    r = c.getresponse()
    assert r.getheader("Content-Length") == "100000"
    assert r.read() == b"x" * 100_000
    # HEAD: headers only, the connection stays usable.
    c.request("HEAD", "/stream?n=5000")
    r = c.getresponse()
    assert r.status == 200 and r.read() == b""
    c.request("GET", "/echo")
    r = c.getresponse()
    assert r.status == 200 and r.read()
    # The test backend writes the body to a HEAD anyway (aiohttp's StreamResponse does, as
    # careless backends do): the upstream connection that carried the HEAD is not reused, so
    # those late bytes never become the answer to the next request.
    # Route "strip" has one backend, so the GET would go on that very connection.
    for _ in range(3):
        c.request("HEAD", "/strip/stream?n=1000&body_after=0.1")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b""
        c.request("GET", "/strip/status/204")
        r = c.getresponse()
        assert r.status == 204 and r.read() == b""
    c.close()


def test_keepalive_reuses_upstream_connections(proxy: ProxyProcess,
                                               backends: tuple[BackendProcess, BackendProcess]) -> None:
    web1 = backends[0]
    assert request(proxy.port, "GET", "/strip/warm")[0] == 200  # route "strip": backend web1 alone
    before = web1.stats()
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    for _ in range(50):
        assert request(proxy.port, "GET", "/strip/echo", conn=c)[0] == 200
    c.close()
    for _ in range(20):  # a new client connection each time: the upstream side still reuses
        assert request(proxy.port, "GET", "/strip/echo")[0] == 200
    after = web1.stats()
    assert after["requests"] - before["requests"] == 70
    assert after["connections"] - before["connections"] <= 1, (before, after)


def test_pipelined_requests_answered_in_order(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"GET /strip/one HTTP/1.1\r\nHost: x\r\n\r\nGET /strip/two HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /strip/three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200") == 3
    paths = re.findall(rb'"path": "(/[a-z]+)"', data)
    assert paths == [b"/one", b"/two", b"/three"]


def test_expect_100_continue(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        data = b""
        while b'"bytes"' not in data:
            data += s.recv(65536)
    assert b"HTTP/1.1 200" in data and b'"bytes": 5' in data


def test_websocket_upgrade_is_spliced(proxy: ProxyProcess) -> None:
    import aiohttp

    async def talk() -> list[str]:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{proxy.url}/ws") as ws:
            out = []
            for word in ("hello", "world"):
                await ws.send_str(word)
                out.append((await ws.receive(timeout=5)).data)
            await ws.send_bytes(b"\x00\x01" * 40_000)
            msg = await ws.receive(timeout=5)
            out.append(str(len(msg.data)))
            return out

    words = asyncio.run(talk())
    assert words[0].endswith(":hello") and words[1].endswith(":world") and words[2] == "80000"


def test_status_and_metrics_endpoints(proxy: ProxyProcess) -> None:
    echo(proxy)
    status = proxy.status()
    backends = {b["id"]: b for b in status["pools"]["web"]["backends"]}
    assert set(backends) == {"web1", "web2"}
    assert {"healthy", "breaker", "in_flight", "ejections"} <= set(backends["web1"])
    code, headers, body = request(proxy.port, "GET", "/_helios/proxy/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert 'proxy_requests_total{backend="web1",code="200",route="all"}' in text or \
        'proxy_requests_total{backend="web2",code="200",route="all"}' in text
    assert 'proxy_backend_healthy{backend="web1",route="all"} 1.0' in text
    assert 'proxy_circuit_state{backend="web1"} 0.0' in text
    assert "proxy_upstream_duration_seconds_bucket" in text


def test_tls_termination(backends: tuple[BackendProcess, BackendProcess], tmp_path: Path) -> None:
    import ssl

    from tests.integration.test_atlasd_tls import make_cert

    cert, key = make_cert(tmp_path)
    cfg = write_config(tmp_path / "tls.yaml", {"web": pool([("web1", backends[0].url)])}, [route("r", "/", "web")])
    with ProxyProcess(cfg, "--tls-cert", str(cert), "--tls-key", str(key)) as p:
        assert p.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        c = http.client.HTTPSConnection("127.0.0.1", p.port, timeout=10, context=ctx)
        status, _, body = request(p.port, "GET", "/echo", conn=c)
        c.close()
    assert status == 200
    h = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert h["x-forwarded-proto"] == "https"


def test_an_idle_websocket_tunnel_is_closed_after_the_routes_read_timeout(
        backends: tuple[BackendProcess, BackendProcess], tmp_path: Path) -> None:
    import aiohttp

    cfg = write_config(tmp_path / "ws.yaml", {"web": pool([("web1", backends[0].url)])},
                       [route("ws", "/", "web", timeouts={"connect": 2, "read": 1.5, "total": 60})])

    async def talk(url: str) -> tuple[int, object]:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/ws") as ws:
            # Talking keeps it open past the read timeout: the timeout is for silence, not length.
            echoed = 0
            for i in range(25):
                await ws.send_str(f"m{i}")
                assert (await ws.receive(timeout=10)).data.endswith(f":m{i}")
                echoed += 1
                await asyncio.sleep(0.1)
            # Then silence both ways: the proxy closes the tunnel (the client sees the close).
            msg = await ws.receive(timeout=30)
            return echoed, msg.type

    with ProxyProcess(cfg) as p:
        echoed, kind = asyncio.run(talk(p.url))
        assert echoed == 25
        assert kind in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR), kind
        wait_until(lambda: any(line.get("message") == "tunnel closed: idle" or
                               "tunnel closed: idle" in str(line.get("text", "")) for line in p.log_lines()), 10)
