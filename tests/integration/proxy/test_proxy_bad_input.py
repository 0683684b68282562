"""Bad input on either side: clear 4xx for the client's mistakes, 502 for the backend's, never a hang."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.proxy import ProxyProcess, pool, raw_exchange, request, route, write_config
from tests.proxy_backend import BackendProcess


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyProcess, BackendProcess]]:
    with BackendProcess("web1") as b:
        cfg = write_config(tmp_path_factory.mktemp("bad") / "proxy.yaml",
                           {"web": pool([("web1", b.url)])},
                           [route("r", "/", "web", retries=0, timeouts={"connect": 1, "read": 5, "total": 10})],
                           max_header_bytes=4096, max_body_bytes=1_000_000)
        with ProxyProcess(cfg) as p:
            yield p, b


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response[9:12])


def json_error(response: bytes) -> dict[str, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower()
    return json.loads(body)["error"]


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
])
def test_malformed_requests_get_400_and_close(setup: tuple[ProxyProcess, BackendProcess], data: bytes) -> None:
    out = raw_exchange(setup[0].port, data)
    assert status_of(out) == 400
    assert b"connection: close" in out.lower()
    assert json_error(out)["code"] == "bad_request"


def test_oversize_header_block_is_431(setup: tuple[ProxyProcess, BackendProcess]) -> None:
    big = b"X-Big: " + b"a" * 5000 + b"\r\n"
    out = raw_exchange(setup[0].port, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert status_of(out) == 431
    assert json_error(out)["code"] == "headers_too_large"
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(600))
    assert status_of(raw_exchange(setup[0].port, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")) == 431
    # A header line that never ends is cut off too, not buffered forever.
    out = raw_exchange(setup[0].port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"b" * 20000)
    assert status_of(out) == 431


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: gzip\r\n",
])
def test_request_smuggling_shapes_are_400(setup: tuple[ProxyProcess, BackendProcess], framing: bytes) -> None:
    before = setup[1].stats()["requests"]
    out = raw_exchange(setup[0].port, b"POST /sink HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\nhello")
    assert status_of(out) == 400
    assert b"connection: close" in out.lower()
    assert setup[1].stats()["requests"] == before  # nothing reached the backend


def test_body_over_limit_is_413(setup: tuple[ProxyProcess, BackendProcess]) -> None:
    out = raw_exchange(setup[0].port, b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\nabc")
    assert status_of(out) == 413
    # Chunked: counted as it streams, cut when it passes the limit.
    chunk = b"%x\r\n%b\r\n" % (300_000, b"c" * 300_000)
    out = raw_exchange(setup[0].port, b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       + chunk * 4 + b"0\r\n\r\n")
    assert status_of(out) == 413 and b"connection: close" in out.lower()


def test_garbage_from_backend_is_502(setup: tuple[ProxyProcess, BackendProcess]) -> None:
    status, _, body = request(setup[0].port, "GET", "/bad")
    assert status == 502
    assert json.loads(body)["error"]["code"] == "bad_gateway"
    # The proxy is fine afterwards.
    assert request(setup[0].port, "GET", "/echo")[0] == 200


def test_backend_closing_mid_response_cuts_the_client(setup: tuple[ProxyProcess, BackendProcess]) -> None:
    out = raw_exchange(setup[0].port, b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1000" in head.lower()
    assert len(body) < 1000  # the client sees a short body and a closed connection, never a hang
    assert request(setup[0].port, "GET", "/echo")[0] == 200


def test_missing_host_on_http11_is_400(setup: tuple[ProxyProcess, BackendProcess]) -> None:
    assert status_of(raw_exchange(setup[0].port, b"GET / HTTP/1.1\r\n\r\n")) == 400
    # HTTP/1.0 needs none, and gets its connection closed after the answer.
    out = raw_exchange(setup[0].port, b"GET /echo HTTP/1.0\r\n\r\n")
    assert status_of(out) == 200


def test_slow_heads_and_idle_connections_are_closed() -> None:
    """In process, with short limits: a head that never completes gets 408; an idle keep-alive client is closed."""
    import asyncio

    from helios_core.proxy.model import ProxyConfig
    from helios_core.proxy.service import ProxyService

    async def run() -> tuple[bytes, bytes]:
        service = ProxyService(ProxyConfig(), health_checks=False, client_idle_timeout=0.5, header_timeout=0.5)
        service.start()
        server = await asyncio.get_running_loop().create_server(service.protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            r1, w1 = await asyncio.open_connection("127.0.0.1", port)
            w1.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and nothing more
            slow = await asyncio.wait_for(r1.read(), 5)
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            w2.write(b"GET /_helios/proxy/status HTTP/1.1\r\nHost: x\r\n\r\n")
            idle = await asyncio.wait_for(r2.read(), 5)  # EOF once the connection sat idle
            w1.close()
            w2.close()
            return slow, idle
        finally:
            server.close()
            await service.stop()

    slow, idle = asyncio.run(run())
    assert status_of(slow) == 408 and json_error(slow)["code"] == "request_timeout"
    assert idle.startswith(b"HTTP/1.1 200") and b"connection: keep-alive" in idle.lower()
