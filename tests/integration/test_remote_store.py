"""RemoteStore behaviour beyond the shared contract, against atlasd and a real redis-server.

The contract itself (tests/contract) runs against both already; here are the
remote-only parts: WATCH retries and their limit, errors inside EXEC,
connection loss, credentials, and change notification between stores.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from helios_core.errors import CommandError, ConflictError, HeliosError
from helios_core.store import RemoteStore, Txn
from helios_core.store.remote import CHANNEL_PREFIX
from tests.integration.test_atlasd_support import Daemon, unused_port
from tests.redis_server import RedisServer, redis_server  # noqa: F401


@dataclass
class Server:
    name: str
    url: str
    port: int
    password: str | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10, password=self.password)


@pytest.fixture(scope="module")
def atlasd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("remote") / "data", "--appendfsync", "always").start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(params=["atlasd", "redis"])
def server(request: pytest.FixtureRequest) -> Server:
    if request.param == "atlasd":
        d: Daemon = request.getfixturevalue("atlasd_daemon")
        s = Server("atlasd", f"atlas://127.0.0.1:{d.port}", d.port, d.password)
    else:
        r: RedisServer = request.getfixturevalue("redis_server")
        s = Server("redis", f"redis://127.0.0.1:{r.port}/0", r.port)
    with s.client() as c:
        c.flushall()
    return s


def run(url: str, body: Callable[[RemoteStore], Awaitable[None]], **kw: object) -> None:
    async def main() -> None:
        store = RemoteStore(url, **kw)  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(body(store), 30)
        finally:
            await store.close()

    asyncio.run(main())


def test_a_changed_read_reruns_the_function_on_the_new_state(server: Server) -> None:
    outside = server.client()
    outside.set("c", 1)
    runs: list[int] = []

    async def body(s: RemoteStore) -> None:
        async def fn(t: Txn) -> int:
            cur = int(await t.get("c") or 0)
            runs.append(cur)
            if len(runs) == 1:
                await asyncio.to_thread(outside.incr, "c")  # another client wins the race once
            t.set("c", cur * 10)
            return cur

        assert await s.transact(fn) == 2
        assert runs == [1, 2]
        assert await s.get("c") == b"20"

    run(server.url, body)
    outside.close()


def test_retries_are_bounded_with_a_clear_error(server: Server) -> None:
    outside = server.client()

    async def body(s: RemoteStore) -> None:
        async def always_loses(t: Txn) -> None:
            await t.get("hot")
            await asyncio.to_thread(outside.incr, "hot")
            t.set("hot", "mine")

        with pytest.raises(ConflictError) as e:
            await s.transact(always_loses)
        assert e.value.code == "transaction_conflict"
        assert "3 attempts" in str(e.value) and "b'hot'" in str(e.value)
        assert await s.get("hot") == b"3"

    run(server.url, body, max_attempts=3)
    outside.close()


def test_a_failing_write_names_its_command(server: Server) -> None:
    async def body(s: RemoteStore) -> None:
        await s.set("text", "abc")
        with pytest.raises(CommandError) as e:
            await s.transact(lambda t: (t.set("before", "1"), t.incrby("text", 1)))
        assert "INCRBY b'text'" in str(e.value) and "not an integer" in str(e.value)
        # Neither Redis nor atlasd rolls back the rest of an EXEC (the embedded engine does).
        assert await s.get("before") == b"1"
        assert await s.get("text") == b"abc"

    run(server.url, body)


def test_a_raising_function_leaves_nothing_behind(server: Server) -> None:
    async def body(s: RemoteStore) -> None:
        async def fn(t: Txn) -> None:
            await t.get("w")
            t.set("w", "never")
            raise ValueError("domain rule")

        for _ in range(3):
            with pytest.raises(ValueError):
                await s.transact(fn)
        assert await s.get("w") is None
        # The connection went back to the pool UNWATCHed: a later transaction that only writes the
        # key is not aborted by a stale WATCH when someone else changes it first.
        await s.transact(lambda t: t.set("w", "ok"))
        assert await s.get("w") == b"ok"

    run(server.url, body)


def test_reads_outside_transactions_and_raw_commands(server: Server) -> None:
    async def body(s: RemoteStore) -> None:
        await s.set("n", 41, durable=False)  # accepted; the server's fsync policy decides
        assert await s.execute("INCR", "n") == 42
        assert await s.get("n") == b"42"
        assert await s.mget([]) == []
        with pytest.raises(CommandError, match="WRONGTYPE"):
            await s.zcard("n")

    run(server.url, body)


def test_other_stores_see_changes_but_plain_clients_are_not_announced(server: Server) -> None:
    async def body(s: RemoteStore) -> None:
        other = RemoteStore(server.url)
        sub = s.subscribe("job:")
        twice = s.subscribe("job:")
        try:
            await sub.ready(5)  # `other` is another store: its writes do not wait for our PSUBSCRIBE
            await twice.ready(5)
            await other.set("job:7", "x")  # another process's store: announced
            assert await sub.get(timeout=5) == b"job:7"
            assert await twice.get(timeout=5) == b"job:7"
            twice.close()
            await other.delete("job:7", "job:8")
            assert [await sub.get(timeout=5), await sub.get(timeout=5)] == [b"job:7", b"job:8"]
            # redis-cli and other non-HELIOS writers do not announce their writes (atlasd has no
            # keyspace notifications): documented in helios_core/store/remote.py.
            with server.client() as plain:
                plain.set("job:9", "x")
                with pytest.raises(asyncio.TimeoutError):
                    await sub.get(timeout=0.2)
                # ...unless they publish on the channel RemoteStore uses.
                plain.publish(CHANNEL_PREFIX + b"job:9", b"")
            assert await sub.get(timeout=5) == b"job:9"
            with pytest.raises(asyncio.TimeoutError):
                await twice.get(timeout=0.1)
        finally:
            sub.close()
            await other.close()

    run(server.url, body)


def test_prefixes_with_glob_characters_match_literally(server: Server) -> None:
    async def body(s: RemoteStore) -> None:
        sub = s.subscribe("a*[b]")
        try:
            await s.set("aXb", "1")
            await s.set("a*[b]1", "1")
            assert await sub.get(timeout=5) == b"a*[b]1"
            with pytest.raises(asyncio.TimeoutError):
                await sub.get(timeout=0.1)
        finally:
            sub.close()

    run(server.url, body)


def test_a_lost_subscription_connection_says_re_read_and_recovers(server: Server) -> None:
    async def body(s: RemoteStore) -> None:
        sub = s.subscribe("cfg:")
        try:
            await s.set("cfg:1", "a")
            assert await sub.get(timeout=5) == b"cfg:1"
            with server.client() as admin:
                # By id: atlasd's CLIENT KILL takes ID/ADDR/SKIPME filters, not TYPE.
                (feed,) = admin.client_list(_type="pubsub")
                assert admin.client_kill_filter(_id=feed["id"]) == 1
            assert await sub.get(timeout=5) is None  # messages may have been missed: re-read everything
            await s.set("cfg:2", "b")  # waits until the feed is subscribed again
            assert await sub.get(timeout=5) == b"cfg:2"
        finally:
            sub.close()

    run(server.url, body)


def test_a_restarted_server_is_reconnected_to(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--appendfsync", "always").start()
    try:
        async def body(s: RemoteStore) -> None:
            await s.set("k", "1")
            await asyncio.to_thread(d.stop)
            with pytest.raises(HeliosError) as e:
                await s.get("k")
            assert e.value.code == "store_unavailable" and f"127.0.0.1:{d.port}" in str(e.value)
            await asyncio.to_thread(d.start)
            assert await s.get("k") == b"1"  # stale pooled connections are replaced
            assert await s.transact(lambda t: t.incrby("n", 1)) is None

        run(f"atlas://127.0.0.1:{d.port}", body)
    finally:
        d.kill()


def test_credentials(tmp_path: Path) -> None:
    d = Daemon(tmp_path / "data", "--requirepass", "s3cret").start()
    try:
        async def ok(s: RemoteStore) -> None:
            await s.set("a", "1")
            assert await s.get("a") == b"1"

        run(f"atlas://:s3cret@127.0.0.1:{d.port}", ok)
        run(f"unix://{d.socket_path}?password=s3cret", ok)

        async def refused(s: RemoteStore) -> None:
            with pytest.raises(HeliosError) as e:
                await s.get("a")
            assert e.value.code == "store_auth" and "s3cret" not in str(e.value) and "wrong" not in str(e.value)

        run(f"atlas://:wrong@127.0.0.1:{d.port}", refused)
        run(f"atlas://127.0.0.1:{d.port}", ok)  # this user's atlasd: the password is found (issue 10)
    finally:
        d.kill()


def test_nothing_listening() -> None:
    async def body(s: RemoteStore) -> None:
        with pytest.raises(HeliosError) as e:
            await s.transact(lambda t: t.set("a", "1"))
        assert e.value.code == "store_unavailable"

    run(f"atlas://127.0.0.1:{unused_port()}?connect_timeout=2", body)


def test_a_connection_reset_while_connecting_is_store_unavailable_on_uvloop() -> None:
    """A peer that resets each connection at once (a partition's "reset" fault): under uvloop, the
    connect's handshake can hit "unable to perform operation on <TCPTransport closed=True>", a
    RuntimeError; it must still be the 503 store_unavailable, never a 500 (found by make chaos)."""
    import struct
    import threading

    import uvloop

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    stop = threading.Event()

    def resetter() -> None:
        lsock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = lsock.accept()
            except OSError:
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST, not FIN

    t = threading.Thread(target=resetter, daemon=True)
    t.start()

    async def main() -> list[str]:
        store = RemoteStore(f"redis://127.0.0.1:{lsock.getsockname()[1]}/?timeout=2&connect_timeout=2")
        codes = []
        try:
            for _ in range(30):
                with pytest.raises(HeliosError) as e:
                    await store.mget(["a"])
                codes.append(e.value.code)
                await asyncio.sleep(0.005)
        finally:
            await store.close()
        return codes

    try:
        codes = uvloop.run(main())
    finally:
        stop.set()
        t.join(5)
        lsock.close()
    assert set(codes) == {"store_unavailable"}, codes


def _self_signed(dirpath: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dirpath / "cert.pem", dirpath / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS on an unused port; skips when redis-server or TLS support is absent."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    port = unused_port()
    proc = subprocess.Popen([exe, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
                             "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                             str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.skip("this redis-server cannot serve TLS")
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5) as raw, \
                        ctx.wrap_socket(raw, server_hostname="localhost"):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # waiting for a child process to listen
        yield port, cert
    finally:
        proc.terminate()
        proc.wait(10)


def test_rediss_speaks_tls(tls_redis: tuple[int, Path]) -> None:
    port, cert = tls_redis

    async def body(s: RemoteStore) -> None:
        sub = s.subscribe("t:")
        await sub.ready(5)
        await s.transact(lambda t: t.set("t:1", "over tls"))
        assert await s.get("t:1") == b"over tls"
        assert await sub.get(timeout=5) == b"t:1"
        sub.close()

    run(f"rediss://localhost:{port}?ssl_ca_certs={cert}", body)

    async def untrusted(s: RemoteStore) -> None:
        with pytest.raises(HeliosError, match="cannot reach") as e:
            await s.get("t:1")
        assert "certificate" in str(e.value).lower()

    run(f"rediss://localhost:{port}", untrusted)  # the system CAs do not know our self-signed cert
