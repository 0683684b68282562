"""The reverse proxy's HTTP request handling under random input (helios_core/proxy/server.py, reqhead.py).

A real `ProxyService` serves on 127.0.0.1 (port 0) from a loop in a thread,
forwarding to a real backend process; generated requests (well-framed heads
with random methods, targets, headers and bodies, then random bytes) go
through real sockets.  Properties: the proxy never answers with its own
internal error (500, code "internal", the path a bug takes), its loop
reports no exception, a request whose head arrived is answered or the
connection closed (never a hang), and it still serves a plain request after
every case.  tests/integration/proxy/test_proxy_bad_input.py has the named
bad inputs; this file generates the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from loguru import logger

from helios_core.proxy.loader import load_text
from helios_core.proxy.service import ProxyService
from tests.fuzz.support import fuzz, fuzz_timeout
from tests.proxy_backend import BackendProcess

pytestmark = fuzz_timeout(300)


class LiveProxy:
    """ProxyService on a loop in a thread; `errors` collects what its loop and its error log report."""

    def __init__(self, backend_url: str) -> None:
        self.config = load_text(json.dumps({
            "pools": {"web": {"backends": [{"id": "b1", "url": backend_url}], "balancer": "round_robin"}},
            "routes": [{"id": "r", "prefix": "/", "pool": "web", "retries": 0,
                        "timeouts": {"connect": 2, "read": 10, "total": 20}}],
            "max_header_bytes": 8192, "max_body_bytes": 100_000,
        }))
        self.errors: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sink = logger.add(lambda m: self.errors.append(str(m)), level="ERROR")
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.thread.start()
        assert self._ready.wait(30), "proxy did not start"

    async def _main(self) -> None:
        loop = self.loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _l, ctx: self.errors.append(f"loop: {ctx.get('message')} "
                                                                       f"{ctx.get('exception')!r}"))
        self._stop = asyncio.Event()
        service = ProxyService(self.config, access_log=False, health_checks=False, header_timeout=5.0)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(service.protocol, sock=sock)
        service.start()
        self.port = sock.getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        await service.drain(1)
        await service.stop()

    def close(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)
        with contextlib.suppress(ValueError):  # a test that resets logging removed it already
            logger.remove(self._sink)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveProxy]:
    with_backend = BackendProcess("fz")
    try:
        proxy = LiveProxy(with_backend.url)
        try:
            yield proxy
        finally:
            proxy.close()
    finally:
        with_backend.kill()


def exchange(port: int, data: bytes, *, half_close: bool, quiet: float = 0.5,
             limit: float = 15.0) -> tuple[bytes, bool]:
    """Send `data`; read until the proxy closes, or until `quiet` s pass without bytes once a response
    began.  (received, closed by the proxy)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy may close first (a refused head): what it sent is still readable
        out = b""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            s.settimeout(quiet if out else min(2.0, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if out or not half_close:
                    return out, False
                continue
            except ConnectionResetError:
                return out, True
            if not chunk:
                return out, True
            out += chunk
        return out, False


def assert_healthy(live: LiveProxy, got: bytes) -> None:
    assert b'"code":"internal"' not in got, got[:500]
    assert b"HTTP/1.1 500" not in got, got[:500]
    assert not live.errors, live.errors
    out, _ = exchange(live.port, b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", half_close=False)
    assert out.startswith(b"HTTP/1.1 200"), out[:300]


token = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCZ", min_size=1, max_size=8)
method = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT",
                                    "TRACE", "PRI", "get"]), token)
target = st.one_of(
    st.binary(max_size=30).map(lambda b: b"/f" + b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"*", b"/", b"//", b"/f/../../etc", b"/f?a=%zz", b"http://x/f", b"https://x:99999/f",
                     b"x.example:443", b"/f#frag", b"/f%00", b"/f/%2e%2e/", b"/f;p", b"/" + b"a" * 9000]),
)
header_name = st.one_of(st.sampled_from([
    "Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade", "Expect", "traceparent",
    "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id", "Forwarded", "Keep-Alive",
    "TE", "Trailer", "Proxy-Connection", "Cookie", "Content-Type"]), token)
header_value = st.one_of(
    st.sampled_from([b"0", b"5", b"-1", b"99999999999999999999", b"chunked", b"gzip, chunked", b"close",
                     b"keep-alive", b"upgrade", b"websocket", b"h2c", b"100-continue", b"x", b"",
                     b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", b"00-" + b"0" * 32 + b"-" + b"0" * 16
                     + b"-01", b"1.2.3.4, ::1, garbage", b"\xff\xfe", b" padded ", b"a\tb"]),
    st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
version = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1", b"HTTP/0.9", b"HTTP/2.0", b"http/1.1", b""])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    head = b"%s %s %s\r\n" % (draw(method).encode(), draw(target), draw(version))
    headers = draw(st.lists(st.tuples(header_name, header_value), max_size=6))
    if draw(st.booleans()):
        headers.insert(0, ("Host", b"x"))
    head += b"".join(b"%s: %s\r\n" % (n.encode(), v) for n, v in headers)
    body = draw(st.one_of(st.just(b""), st.binary(max_size=40),
                          st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n", b"0\r\n\r\n", b"3\r\nab"])))
    return head + b"\r\n" + body


@fuzz(40)
@given(requests(), st.booleans())
@example(b"GET /f HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", True)
@example(b"POST /f HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", True)
@example(b"GET /f HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", True)
@example(b"GET /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", True)
@example(b"GET /f HTTP/1.1\r\nHost: x\r\ntraceparent: \xff\xfe\r\n\r\n", True)
@example(b"GET /f HTTP/1.1\r\nHost: \xff\r\n\r\n", True)
@example(b"CONNECT x.example:443 HTTP/1.1\r\nHost: x.example:443\r\n\r\n", True)
def test_generated_requests_never_meet_an_internal_error(live: LiveProxy, data: bytes, keep_open: bool) -> None:
    got, _ = exchange(live.port, data, half_close=not keep_open)
    assert_healthy(live, got)


@fuzz(60)
@given(st.binary(max_size=300))
@example(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS ClientHello on the plain port
@example(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
@example(b"GET /f HTTP/1.1\r\nHost: x\r\n\r\nGET /f HTTP/1.1\r\nHost: x\r\n\r\n\x00\x00")
def test_random_bytes_never_meet_an_internal_error_or_a_hang(live: LiveProxy, data: bytes) -> None:
    got, closed = exchange(live.port, data, half_close=True)
    assert closed, f"the proxy kept a half-closed connection open: {data!r}"
    assert_healthy(live, got)


@fuzz(20)
@given(st.lists(requests(), min_size=2, max_size=4), st.lists(st.integers(1, 200), max_size=4))
def test_pipelined_requests_cut_anywhere(live: LiveProxy, reqs: list[bytes], cuts: list[int]) -> None:
    data = b"".join(reqs)
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as s:
        at = 0
        try:
            for cut in sorted(c % (len(data) + 1) for c in cuts):
                s.sendall(data[at:cut])
                at = cut
                time.sleep(0.001)
            s.sendall(data[at:])
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        got = b""
        s.settimeout(15)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError) as e:
            if isinstance(e, TimeoutError):
                pytest.fail(f"no close 15 s after the client's EOF: {data[:300]!r}")
    assert_healthy(live, got)


