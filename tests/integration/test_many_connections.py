"""1,000 concurrent keep-alive connections held by atlasd, the gateway and the proxy (issue 16 §3).

Each daemon runs as an operator starts it (the ``helios`` command, port 0).
The test process opens 1,000 connections to it, keeps every one open while
each exchanges several requests over it, checks that every connection got
every answer right, closes them all and waits for the daemon's open file
descriptors (/proc/PID/fd) to come back near where they started: a leaked
fd per connection would leave 1,000 behind.

The connections are raw asyncio sockets in one event loop (1,000 threads
would cost more than the daemons under test on 2 shared cores); connects are
opened at most `_CONNECTING` at a time so a listen backlog of 100-128 never
overflows into SYN retries of seconds.

The daemons' own caps, at their defaults: atlasd ``maxclients`` 10,000; the
gateway has no connection cap (only ``idle_timeout_seconds`` 60, far longer
than a round here) but its default rate limit (600 requests per 60 s per
client) would refuse most of 1,000 x N requests from one address, so it is
disabled here; the proxy has no client connection cap and at most
``max_connections`` (100) per backend upstream, past which requests wait
for a pooled connection rather than fail.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.chaos.harness import Gateway, fd_count, wait_for
from tests.integration.proxy import ProxyProcess, pool, route, write_config
from tests.integration.test_atlasd_support import Daemon
from tests.proxy_backend import BackendProcess

pytestmark = pytest.mark.slow

CONNECTIONS = 1000
ROUNDS = 3  # exchanges per connection, all connections held open throughout
_CONNECTING = 64
_IO_TIMEOUT = 120.0  # one exchange on a loaded 2-core machine with 1,000 peers: generous, never asserted on
_FD_SLACK = 16  # logs, an upstream pool connection or two, a lazily opened file: not one per client

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Exchange = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int, int], Awaitable[None]]


@pytest.fixture(autouse=True, scope="module")
def _enough_fds() -> None:
    """1,000 sockets here (and some per xdist worker): lift the soft RLIMIT_NOFILE to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < CONNECTIONS + 200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {CONNECTIONS + 200}")


async def _open(port: int, n: int, hello: Callable[[Streams], Awaitable[None]] | None) -> list[Streams]:
    gate = asyncio.Semaphore(_CONNECTING)

    async def one() -> Streams:
        async with gate:
            s = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), _IO_TIMEOUT)
            if hello is not None:
                await asyncio.wait_for(hello(s), _IO_TIMEOUT)
            return s

    return list(await asyncio.gather(*(one() for _ in range(n))))


def hold(pid: int, port: int, exchange: Exchange,
         hello: Callable[[Streams], Awaitable[None]] | None = None) -> dict[str, int]:
    """Open CONNECTIONS to `port`, run ROUNDS exchanges on each while all are open, close; fd counts."""
    before = fd_count(pid)
    result: dict[str, int] = {"before": before}

    async def main() -> None:
        conns = await _open(port, CONNECTIONS, hello)
        try:
            # Every connection is accepted and open at once: the daemon holds an fd for each (less slack:
            # `before` may still count the set-up request's connection, which the daemon closes later).
            await asyncio.to_thread(wait_for, lambda: fd_count(pid) >= before + CONNECTIONS - _FD_SLACK, 60,
                                    "the daemon to hold every connection")
            result["held"] = fd_count(pid)
            for r in range(ROUNDS):
                await asyncio.gather(*(asyncio.wait_for(exchange(rd, wr, i, r), _IO_TIMEOUT)
                                       for i, (rd, wr) in enumerate(conns)))
            result["answered"] = len(conns) * ROUNDS
        finally:
            for _, wr in conns:
                wr.close()
            await asyncio.gather(*(wr.wait_closed() for _, wr in conns), return_exceptions=True)

    asyncio.run(main())
    wait_for(lambda: fd_count(pid) <= before + _FD_SLACK, 60, f"fds back near {before} (now {fd_count(pid)})")
    result["after"] = fd_count(pid)
    return result


# -- atlasd: RESP over TCP ----------------------------------------------------------------------------


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_atlasd_holds_1000_keepalive_connections(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--appendfsync", "everysec").start()
    try:
        password = d.password
        assert d.proc is not None

        async def hello(s: Streams) -> None:
            if password:
                s[1].write(_resp(b"AUTH", password.encode()))
                assert await s[0].readexactly(5) == b"+OK\r\n"

        async def exchange(rd: asyncio.StreamReader, wr: asyncio.StreamWriter, i: int, r: int) -> None:
            key, value = b"conn:%d" % i, b"v%d-%d" % (i, r)
            wr.write(_resp(b"PING") + _resp(b"SET", key, value) + _resp(b"GET", key))
            want = b"+PONG\r\n+OK\r\n$%d\r\n%s\r\n" % (len(value), value)
            got = await rd.readexactly(len(want))
            assert got == want, (i, r, got)

        fds = hold(d.proc.pid, d.port, exchange, hello)
        with d.client() as c:
            assert c.dbsize() == CONNECTIONS
    finally:
        d.kill()
    assert fds["answered"] == CONNECTIONS * ROUNDS


# -- HTTP/1.1 keep-alive over raw sockets (gateway and proxy) -----------------------------------------


async def _http(rd: asyncio.StreamReader, wr: asyncio.StreamWriter, path: str,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET on a kept-alive connection: (status, body); the server must not close it."""
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    wr.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
    raw = await rd.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    assert "chunked" not in fields.get("transfer-encoding", ""), fields
    body = await rd.readexactly(int(fields.get("content-length", "0")))
    assert fields.get("connection", "").lower() != "close", (status, fields)
    return status, body


def test_gateway_holds_1000_keepalive_connections(tmp_path: Path) -> None:
    gw = Gateway(tmp_path, data=tmp_path / "gw").start()
    try:
        gw.login()
        code, _, _ = gw.api("PUT", "/api/v1/kv/shared", {"n": 1})
        assert code in (200, 201), code
        auth = {"Authorization": f"Bearer {gw.token}"}
        port = int(gw.url.rsplit(":", 1)[1])

        async def exchange(rd: asyncio.StreamReader, wr: asyncio.StreamWriter, i: int, r: int) -> None:
            status, body = await _http(rd, wr, "/healthz")
            assert status == 200, (i, r, status, body[:200])
            status, body = await _http(rd, wr, "/api/v1/kv/shared", auth)
            assert status == 200 and b'"n"' in body, (i, r, status, body[:200])

        fds = hold(gw.pid, port, exchange)
    finally:
        gw.stop()
    assert fds["answered"] == CONNECTIONS * ROUNDS


def test_proxy_holds_1000_keepalive_connections(tmp_path: Path) -> None:
    backend = BackendProcess("b0")
    proxy: ProxyProcess | None = None
    try:
        # The upstream pool keeps up to max_connections (100) idle connections to the backend for
        # idle_timeout: 1 s here, so after the clients go the proxy's fds return to the start too.
        cfg = write_config(tmp_path / "proxy.yaml", {"web": pool([("b0", backend.url)], idle_timeout=1)},
                           [route("r", "/", "web", timeouts={"connect": 5, "read": 60, "total": 90})])
        proxy = ProxyProcess(cfg, "--no-access-log", cli=True)

        async def exchange(rd: asyncio.StreamReader, wr: asyncio.StreamWriter, i: int, r: int) -> None:
            status, body = await _http(rd, wr, f"/echo?c={i}&r={r}")
            assert status == 200, (i, r, status, body[:200])

        fds = hold(proxy.pid, proxy.port, exchange)
    finally:
        if proxy is not None:
            proxy.stop()
        backend.kill()
    assert fds["answered"] == CONNECTIONS * ROUNDS
