"""The fault-injecting relay (tests/faultrelay.py), each mode against a real echo server on an unused port."""

from __future__ import annotations

import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultrelay import FaultRelay, Mode

ROOT = Path(__file__).resolve().parents[2]
QUIET = 0.3  # how long "nothing arrives" is watched for (a lower bound only, never a timing goal)


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte; on the client's EOF sends ``<eof>`` and closes. Counts its connections."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.accepted = 0
        self.active = 0
        self.received = 0
        self.lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server_address[:2]
        return str(host), int(port)

    def wait_active(self, count: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.active != count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


class _Echo(socketserver.BaseRequestHandler):
    server: EchoServer

    def handle(self) -> None:
        with self.server.lock:
            self.server.accepted += 1
            self.server.active += 1
        try:
            while data := self.request.recv(65536):
                with self.server.lock:
                    self.server.received += len(data)
                self.request.sendall(data)
            self.request.sendall(b"<eof>")
        except OSError:
            pass
        finally:
            with self.server.lock:
                self.server.active -= 1


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def relay(echo: EchoServer) -> Iterator[FaultRelay]:
    with FaultRelay(echo.address) as r:
        yield r
    assert r.open_connections == 0


def connect(relay: FaultRelay) -> socket.socket:
    return socket.create_connection(relay.address, timeout=5)


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def assert_reset(relay: FaultRelay) -> None:
    """A new connection through `relay` is reset (when at connect or at the first read is a race)."""
    with pytest.raises(ConnectionResetError):
        with connect(relay) as s:
            s.recv(1)


def nothing_arrives(s: socket.socket) -> bool:
    s.settimeout(QUIET)
    try:
        s.recv(1)
    except TimeoutError:
        return True
    finally:
        s.settimeout(5)
    return False


def test_pass_relays_both_ways_and_passes_the_fin_on(relay: FaultRelay, echo: EchoServer) -> None:
    with connect(relay) as s:
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"hello"
        assert relay.open_connections == 1
        s.shutdown(socket.SHUT_WR)  # the echo server sees EOF, answers <eof>, closes
        assert recv_exactly(s, 5) == b"<eof>"
        assert s.recv(1) == b""
    assert relay.wait_open(0)
    assert echo.wait_active(0)
    assert relay.stats() == {"mode": "pass", "open": 0, "accepted": 1, "bytes_up": 5, "bytes_down": 10,
                             "resets": 0}


def test_delay_holds_each_chunk(relay: FaultRelay) -> None:
    relay.delay(0.2)
    assert relay.mode == Mode("delay", seconds=0.2)
    with connect(relay) as s:
        start = time.monotonic()
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"x"
        assert time.monotonic() - start >= 0.4  # one chunk each way, each held 0.2 s
        relay.passthrough()
        s.sendall(b"y")
        assert recv_exactly(s, 1) == b"y"


def test_drop_accepts_but_never_connects_upstream(relay: FaultRelay, echo: EchoServer) -> None:
    relay.drop()
    with connect(relay) as s:
        s.sendall(b"lost")
        assert nothing_arrives(s)
        assert relay.open_connections == 1
        assert echo.accepted == 0
        relay.passthrough()  # a dropped connection stays dropped
        s.sendall(b"still lost")
        assert nothing_arrives(s)
        with connect(relay) as s2:  # a new one passes
            s2.sendall(b"ok")
            assert recv_exactly(s2, 2) == b"ok"
    assert relay.wait_open(0)
    assert echo.received == 2


def test_blackhole_holds_open_connections_and_heals(relay: FaultRelay, echo: EchoServer) -> None:
    with connect(relay) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"a"
        relay.blackhole()
        s.sendall(b"b")
        assert nothing_arrives(s)
        assert echo.received == 1  # not forwarded upstream either
        with connect(relay) as s2:  # new connections are held too
            s2.sendall(b"c")
            assert nothing_arrives(s2)
            assert relay.open_connections == 2
            relay.passthrough()  # the partition heals: what waited is delivered
            assert recv_exactly(s, 1) == b"b"
            assert recv_exactly(s2, 1) == b"c"


def test_reset_resets_open_and_new_connections(relay: FaultRelay, echo: EchoServer) -> None:
    with connect(relay) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"a"
        relay.reset()
        with pytest.raises(ConnectionResetError):
            s.recv(1)
    assert echo.wait_active(0)  # the upstream side was closed as well
    assert_reset(relay)  # accepted, then reset
    assert relay.wait_open(0)
    assert relay.stats()["resets"] == 2


def test_reset_after_cuts_the_response_mid_way(relay: FaultRelay, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 40  # 10,240 bytes
    with connect(relay) as s:
        s.sendall(b"warm")
        assert recv_exactly(s, 4) == b"warm"
        relay.reset_after(1000)  # counted from now, not from the connection's start
        s.sendall(payload)
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := s.recv(65536):
                got += chunk
        assert got == payload[:1000]
    relay.reset_after(0)
    with pytest.raises(ConnectionResetError):
        with connect(relay) as s:
            s.sendall(b"x")
            s.recv(1)
    assert relay.wait_open(0)
    assert echo.wait_active(0)


def test_half_open_client_side(relay: FaultRelay, echo: EchoServer) -> None:
    with connect(relay) as s:
        s.sendall(b"a")
        assert recv_exactly(s, 1) == b"a"
        relay.half_open("client")
        assert s.recv(1) == b""  # FIN from the relay
        s.sendall(b"still goes up")  # the other direction is open
        deadline = time.monotonic() + 5
        while echo.received < 14 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert echo.received == 14
        assert relay.open_connections == 1
    assert relay.wait_open(0)
    assert echo.wait_active(0)


def test_half_open_upstream_side_on_new_connections(relay: FaultRelay, echo: EchoServer) -> None:
    relay.half_open("upstream")
    with connect(relay) as s:
        # Upstream reads EOF at once, answers <eof> and closes; that answer still reaches the client.
        assert recv_exactly(s, 5) == b"<eof>"
        assert s.recv(1) == b""
        assert echo.received == 0
    assert relay.wait_open(0)


def test_refuse_stops_listening_and_listens_again_on_the_same_port(relay: FaultRelay) -> None:
    port = relay.port
    with connect(relay) as s:
        s.sendall(b"x")  # accepted by the relay (one still in the kernel's backlog would be refused)
        assert recv_exactly(s, 1) == b"x"
        relay.refuse()
        with pytest.raises(ConnectionRefusedError):
            connect(relay)
        s.sendall(b"open ones go on")
        assert recv_exactly(s, 15) == b"open ones go on"
        relay.passthrough()
        assert relay.port == port
        with connect(relay) as s2:
            s2.sendall(b"back")
            assert recv_exactly(s2, 4) == b"back"


def test_backend_down_recipe_reset_then_refuse(relay: FaultRelay) -> None:
    with connect(relay) as s:
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"x"
        relay.reset()
        relay.refuse()
        with pytest.raises(ConnectionResetError):
            s.recv(1)
    with pytest.raises(ConnectionRefusedError):
        connect(relay)
    assert relay.wait_open(0)


def test_upstream_down_is_a_reset_for_the_client() -> None:
    with socket.socket() as gone:
        gone.bind(("127.0.0.1", 0))
        port = gone.getsockname()[1]  # bound, never listening: connecting is refused
        with FaultRelay(("127.0.0.1", port)) as relay:
            assert_reset(relay)
            assert relay.wait_open(0)


def test_close_closes_everything(echo: EchoServer) -> None:
    relay = FaultRelay(f"127.0.0.1:{echo.address[1]}").start()
    socks = []
    for mode in ("pass", "delay", "drop", "blackhole"):  # switching to these leaves open ones as they are
        relay.set_mode(mode, 0.01 if mode == "delay" else None)
        for _ in range(5):
            s = connect(relay)
            s.sendall(b"abcdef")
            socks.append(s)
    assert relay.wait_open(20), relay.stats()
    relay.close()
    relay.close()  # idempotent
    assert relay.open_connections == 0
    for s in socks:  # each sees the end of its connection
        try:
            while s.recv(65536):
                pass
        except ConnectionResetError:
            pass
        s.close()
    assert echo.wait_active(0)
    with pytest.raises(RuntimeError):
        relay.reset()


def test_bad_modes_are_refused(relay: FaultRelay) -> None:
    with pytest.raises(ValueError, match="unknown relay mode"):
        relay.set_mode("partition")
    with pytest.raises(ValueError):
        relay.half_open("sideways")
    with pytest.raises(ValueError):
        relay.delay(-1)
    assert relay.mode.name == "pass"


def test_standalone_process(echo: EchoServer) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "tests.faultrelay", f"127.0.0.1:{echo.address[1]}"],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        host, port = proc.stdout.readline().split()[1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"ping")
            assert recv_exactly(s, 4) == b"ping"
            proc.stdin.write("reset\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "ok reset"
            with pytest.raises(ConnectionResetError):
                s.recv(1)
        proc.stdin.write("stats\n")
        proc.stdin.flush()
        assert '"resets": 1' in proc.stdout.readline()
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
