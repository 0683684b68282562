"""Health: rise/fall, outlier ejection, and the HealthChecker against a real HTTP server on an unused port."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from helios_core.proxy.health import HealthChecker, HealthState, OutlierState, ejection_allowed, probe
from helios_core.proxy.model import Backend, HealthCheck, Outlier, Pool, UpstreamTLS
from helios_core.proxy.state import PoolState

# ------------------------------------------------------------------ rise / fall


def test_fall_then_rise() -> None:
    h = HealthState(HealthCheck(rise=2, fall=3))
    assert h.healthy  # traffic flows before the first check
    assert not h.result(0.0, False) and not h.result(1.0, False) and h.healthy
    assert h.result(2.0, False) and not h.healthy
    assert not h.result(3.0, True) and not h.healthy
    assert not h.result(4.0, False)  # a failure resets the passes
    assert not h.result(5.0, True) and not h.healthy
    assert h.result(6.0, True) and h.healthy
    assert h.last_check == 6.0


def test_disabled_checks_mean_healthy() -> None:
    h = HealthState(HealthCheck(enabled=False, fall=1))
    h.result(0.0, False)
    assert h.healthy


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 5), st.integers(1, 5))
def test_rise_fall_property(results: list[bool], rise: int, fall: int) -> None:
    """Healthy flips only after `fall` failures in a row, back only after `rise` passes in a row."""
    h = HealthState(HealthCheck(rise=rise, fall=fall))
    healthy, run_ok, run_bad = True, 0, 0
    for i, ok in enumerate(results):
        run_ok, run_bad = (run_ok + 1, 0) if ok else (0, run_bad + 1)
        if healthy and run_bad >= fall:
            healthy = False
        elif not healthy and run_ok >= rise:
            healthy = True
        h.result(float(i), ok)
        assert h.healthy == healthy


# ------------------------------------------------------------------ outlier ejection


def test_ejection_time_is_base_times_count_capped() -> None:
    o = OutlierState(Outlier(consecutive_failures=2, base_ejection=10.0, max_ejection=25.0))
    now = 0.0
    expected = [10.0, 20.0, 25.0, 25.0]
    for want in expected:
        assert not o.record(now, False)
        assert o.record(now, False)
        assert o.ejected(now) and o.ejected_until == now + want
        now = o.ejected_until  # back in service
        assert not o.ejected(now)
    assert o.ejections == 4


def test_success_resets_the_run_and_a_quiet_spell_the_count() -> None:
    o = OutlierState(Outlier(consecutive_failures=3, base_ejection=10.0, max_ejection=30.0))
    for ok in (False, False, True, False, False):
        assert not o.record(0.0, ok)
    assert o.record(0.0, False) and o.ejected_until == 10.0
    # Ejected again soon after: the multiplier grows.
    for _ in range(3):
        o.record(11.0, False)
    assert o.ejected_until == 31.0 and o.ejections == 2
    # After max_ejection seconds in service the multiplier starts over.
    for _ in range(3):
        o.record(31.0 + 30.0, False)
    assert o.ejected_until == 71.0 and o.ejections == 1


def test_never_more_than_the_share_of_a_pool_is_ejected() -> None:
    outlier = Outlier(consecutive_failures=1, base_ejection=10.0, max_ejected_share=0.5)
    pool = Pool("p", tuple(Backend(f"b{i}", f"http://h:{i + 1}") for i in range(4)), outlier=outlier)
    state = PoolState(pool)
    for b in state.backends:
        b.started(0.0)
        b.finished(0.0, ok=False)
    ejected = [b.id for b in state.backends if b.outlier.ejected(0.0)]
    assert ejected == ["b0", "b1"]
    assert {b.id for b in state.backends if b.available(0.0)} <= {"b2", "b3"}
    # Once the first ones are back, the others may be ejected in turn.
    state.backends[2].finished(10.0, ok=False)
    assert state.backends[2].outlier.ejected(10.0)


def test_a_single_backend_pool_is_never_ejected_at_half_share() -> None:
    pool = Pool("p", (Backend("only", "http://h:1"),), outlier=Outlier(consecutive_failures=1))
    state = PoolState(pool)
    for _ in range(5):
        state.backends[0].finished(0.0, ok=False)
    assert not state.backends[0].outlier.ejected(0.0)


@given(st.integers(0, 20), st.integers(1, 20), st.floats(0, 1))
def test_ejection_allowed_property(ejected: int, total: int, share: float) -> None:
    if ejection_allowed(ejected, total, share):
        assert (ejected + 1) <= share * total + 1e-6


def test_ejection_allowed_exact_shares() -> None:
    assert ejection_allowed(2, 10, 0.3) and not ejection_allowed(3, 10, 0.3)
    assert not ejection_allowed(0, 1, 0.5) and ejection_allowed(0, 1, 1.0)
    assert not ejection_allowed(0, 5, 0.0)


# ------------------------------------------------------------------ the checker, against real sockets


class Backend0:
    """A tiny HTTP server on 127.0.0.1:0 whose status (or silence) the test controls."""

    def __init__(self) -> None:
        self.status = 200
        self.silent = False
        self.paths: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.paths.append(head.split(b" ", 2)[1].decode())
            if self.silent:
                await asyncio.sleep(30)
            writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def run(fn: Callable[[Backend0], Awaitable[None]]) -> None:
    async def main() -> None:
        server = Backend0()
        await server.start()
        try:
            await fn(server)
        finally:
            await server.close()

    asyncio.run(main())


def pool_for(port: int, **health: object) -> Pool:
    cfg = HealthCheck(**{"path": "/healthz", "interval": 0.05, "timeout": 0.5, "rise": 2, "fall": 2,
                         "expect": ((200, 299),), **health})  # type: ignore[arg-type]
    return Pool("p", (Backend("b", f"http://127.0.0.1:{port}"),), health=cfg)


def test_probe_statuses_refusal_and_timeout() -> None:
    async def body(server: Backend0) -> None:
        pool = pool_for(server.port, timeout=0.2)
        backend = pool.backends[0]
        assert await probe(backend, pool.health)
        assert server.paths == ["/healthz"]
        server.status = 503
        assert not await probe(backend, pool.health)
        server.status = 204
        assert await probe(backend, pool.health)
        server.silent = True
        started = time.monotonic()
        assert not await probe(backend, pool.health)  # times out
        assert time.monotonic() - started < 5
        await server.close()
        assert not await probe(backend, pool.health)  # refused

    run(body)


def test_check_all_marks_down_and_up_again() -> None:
    async def body(server: Backend0) -> None:
        state = PoolState(pool_for(server.port))
        checker = HealthChecker(lambda: [state], time.monotonic)
        b = state.backends[0]
        await checker.check_all()
        assert b.health.healthy
        server.status = 500
        await checker.check_all()
        assert b.health.healthy  # fall is 2
        await checker.check_all()
        assert not b.health.healthy and not b.available(time.monotonic())
        assert state.pick(time.monotonic()) is None
        server.status = 200
        await checker.check_all()
        await checker.check_all()
        assert b.health.healthy and state.pick(time.monotonic()) is b

    run(body)


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def test_running_checker_follows_a_backend_that_dies_and_returns() -> None:
    async def body(server: Backend0) -> None:
        state = PoolState(pool_for(server.port, fall=1, rise=1))
        checker = HealthChecker(lambda: [state], time.monotonic, tick=0.02)
        checker.start()
        try:
            b = state.backends[0]
            await _until(lambda: len(server.paths) >= 1)
            assert b.health.healthy
            port = server.port
            await server.close()  # the backend dies: connections refused
            await _until(lambda: not b.health.healthy)
            server.server = await asyncio.start_server(server._serve, "127.0.0.1", port)  # it returns
            await _until(lambda: b.health.healthy)
        finally:
            await checker.stop()
        assert not checker._probes and checker._task is None

    run(body)


def test_checker_follows_reloads_and_skips_disabled_pools() -> None:
    async def body(server: Backend0) -> None:
        state = PoolState(pool_for(server.port, enabled=False))
        pools = [state]
        checker = HealthChecker(lambda: pools, time.monotonic, tick=0.02)
        checker.start()
        try:
            await asyncio.sleep(0.15)
            assert server.paths == []  # checks disabled
            state.update(pool_for(server.port))
            await _until(lambda: len(server.paths) >= 2)
            pools.clear()
            await asyncio.sleep(0.1)
            assert not checker._due
        finally:
            await checker.stop()

    run(body)


def test_probe_sends_host_and_connection_close() -> None:
    async def body(server: Backend0) -> None:
        seen: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        other = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = other.sockets[0].getsockname()[1]
        try:
            assert await probe(Backend("b", f"http://127.0.0.1:{port}"), HealthCheck(path="/ping"))
        finally:
            other.close()
            await other.wait_closed()
        head = seen[0].decode()
        assert head.startswith("GET /ping HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{port}\r\n" in head and "Connection: close\r\n" in head

    run(body)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy health test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_probe_over_tls_verifies_unless_told_not_to(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main() -> None:
        server = Backend0()
        tls_server = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=server_ctx)
        port = tls_server.sockets[0].getsockname()[1]
        backend = Backend("b", f"https://127.0.0.1:{port}")
        cfg = HealthCheck(path="/healthz", timeout=2.0)
        try:
            assert not await probe(backend, cfg)  # self-signed: refused by the system CAs
            assert await probe(backend, cfg, UpstreamTLS(verify=False))
            assert await probe(backend, cfg, UpstreamTLS(ca_file=str(cert)))
            assert not await probe(backend, cfg, UpstreamTLS(ca_file=str(cert), server_name="other.example"))
            assert not await probe(backend, cfg, UpstreamTLS(ca_file=str(tmp_path / "missing.pem")))
        finally:
            tls_server.close()
            await tls_server.wait_closed()
        assert server.paths.count("/healthz") >= 2

    asyncio.run(main())
