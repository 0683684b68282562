"""SIGTERM drains every daemon, as a supervisor or `docker stop` sends it (issue 13 §6).

Each test starts a real process, puts work in flight, sends SIGTERM and checks the operator's
contract: the work in flight is answered, new connections are refused, the data directory's lock
is released (a new owner starts at once) and the exit status is 0.

Already covered elsewhere, not repeated here:
- worker: tests/integration/test_worker_process.py
  (test_sigterm_finishes_running_jobs_and_hands_the_rest_back_at_once);
- proxy, a slow backend request in flight: tests/integration/proxy/test_proxy_process.py
  (test_sigterm_finishes_in_flight_requests);
- atlasd, writers at SIGTERM keep every acknowledged write, SIGINT, SHUTDOWN:
  tests/integration/test_atlasd_lifecycle.py.

No test asserts a duration: waits are for conditions, with deadlines that only bound a hang.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.test_atlasd_support import HELIOS, Daemon

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

UPLOAD = 512 * 1024  # under gateway.max_body_bytes (1 MiB)


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def refused(port: int) -> bool:
    """True once nothing accepts on the port (the listener is closed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env["HELIOS_AUTH__BCRYPT_COST"] = "4"  # logins in milliseconds on a busy box
    env.update(extra)
    return env


class GatewayProc:
    """`helios gateway ARGS --port 0`, its stderr (the logs) in a file; the start-up lines read from stdout."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp / f"gateway-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([HELIOS, "--log-format", "json", "gateway", *args, "--port", "0"],
                                         stdout=subprocess.PIPE, stderr=log, text=True, env=env or clean_env())
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"gateway exited with {self.proc.wait()}:\n{self.log()}")
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self.url = line.split("listening on ")[1].split()[0]
                self.port = int(self.url.rsplit(":", 1)[1])
                return
        self.kill()
        raise AssertionError("gateway did not start")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def printed_password(self) -> str:
        i = next(i for i, ln in enumerate(self.lines) if "created the user" in ln)
        return self.lines[i + 1].strip()

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, bytes]:
        c = self.conn()
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            c.request(method, path, body=json.dumps(body).encode() if body is not None else None, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def login(self, password: str) -> str:
        status, body = self.call("POST", "/api/v1/auth/login", {"username": "admin", "password": password})
        assert status == 200, body
        return str(json.loads(body)["access_token"])

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"gateway ignored SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def gateways() -> Iterator[Callable[..., GatewayProc]]:
    started: list[GatewayProc] = []

    def start(tmp: Path, *args: str, env: dict[str, str] | None = None) -> GatewayProc:
        g = GatewayProc(tmp, *args, env=env)
        started.append(g)
        return g

    yield start
    for g in started:
        g.kill()


class SlowUpload:
    """A KV PUT whose head and first half are sent now and the rest on `finish()`: a request that is in
    flight (the handler streams the body) for as long as the test wants."""

    def __init__(self, gw: GatewayProc, token: str, key: str) -> None:
        self.body = bytes(range(256)) * (UPLOAD // 256)
        self.conn = gw.conn()
        self.conn.putrequest("PUT", f"/api/v1/kv/{key}")
        self.conn.putheader("Authorization", f"Bearer {token}")
        self.conn.putheader("Content-Type", "application/octet-stream")
        self.conn.putheader("Content-Length", str(len(self.body)))
        self.conn.endheaders()
        self.conn.send(self.body[: UPLOAD // 2])
        self.read_by_server = lambda: read_by_server(gw.port, self.conn)

    def finish(self) -> int:
        self.conn.send(self.body[UPLOAD // 2:])
        r = self.conn.getresponse()
        r.read()
        self.conn.close()
        return r.status


def read_by_server(port: int, conn: http.client.HTTPConnection) -> bool:
    """True once the server on `port` has read everything `conn` sent (the receive queue of its end of the
    connection is empty, /proc/net/tcp): the request's head was parsed and its handler started."""
    assert conn.sock is not None
    want_local, want_remote = f":{port:04X}", f":{conn.sock.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                return int(fields[4].split(":")[1], 16) == 0
    return False


class LongPoll(threading.Thread):
    """POST /api/v1/jobs/lease with wait_seconds on an empty queue: held until a job comes or the gateway
    drains.  The request is sent at once; the thread waits for the answer."""

    def __init__(self, gw: GatewayProc, token: str) -> None:
        super().__init__(daemon=True)
        self.answer: tuple[int, bytes] | None = None
        self.error: BaseException | None = None
        self.conn = gw.conn()
        self.conn.request("POST", "/api/v1/jobs/lease",
                          body=json.dumps({"queues": ["drain"], "max": 1, "wait_seconds": 20}).encode(),
                          headers={"Authorization": f"Bearer {token}"})
        self.read_by_server = lambda: read_by_server(gw.port, self.conn)

    def run(self) -> None:
        try:
            r = self.conn.getresponse()
            self.answer = (r.status, r.read())
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.conn.close()


def drain_gateway(gw: GatewayProc, token: str, key: str) -> None:
    """The gateway's half of the contract, on whatever store it runs."""
    # The queue exists (a job went through it) and is empty: the long poll has nothing to answer with.
    status, body = gw.call("POST", "/api/v1/jobs", {"queue": "drain", "payload": {}}, token=token)
    assert status in (200, 201, 202), body
    status, body = gw.call("POST", "/api/v1/jobs/lease", {"queues": ["drain"], "max": 1}, token=token)
    assert status == 200 and json.loads(body)["jobs"], body
    upload = SlowUpload(gw, token, key)
    poll = LongPoll(gw, token)
    poll.start()
    # Both requests must be inside the gateway (prepare() counted them) before the signal: wait until
    # it has read what was sent on each connection.
    wait_until(upload.read_by_server, "the gateway to read the upload's head and first half")
    wait_until(poll.read_by_server, "the gateway to read the long poll")
    gw.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: refused(gw.port), "the gateway to stop accepting")
    poll.join(30)
    assert poll.error is None and poll.answer is not None, poll.error
    assert poll.answer == (200, b'{"jobs":[]}'), poll.answer  # answered (empty), not cut off
    assert upload.finish() in (200, 201, 204)  # the slow upload completes after SIGTERM
    assert gw.wait() == 0, gw.log()
    log = gw.log()
    assert "shutting down" in log and "gateway stopped" in log
    assert "cutting off in-flight" not in log


def test_gateway_with_data_drains_and_releases_the_directory(tmp_path: Path,
                                                            gateways: Callable[..., GatewayProc]) -> None:
    data = tmp_path / "data"
    gw = gateways(tmp_path, "--data", str(data))
    token = gw.login((data / "initial_admin_password").read_text().strip())
    drain_gateway(gw, token, "drain/upload")
    assert not (data / "atlas.sock").exists()
    # The lock is released: atlasd takes the directory right away, and the upload is in it.
    d = Daemon(data).start()
    try:
        with d.client() as r:
            assert r.get("kv:drain/upload") == bytes(range(256)) * (UPLOAD // 256)
    finally:
        assert d.stop() == 0


def test_gateway_over_atlasd_drains_and_leaves_atlasd_running(tmp_path: Path,
                                                             gateways: Callable[..., GatewayProc]) -> None:
    d = Daemon(tmp_path / "data", "--appendfsync", "always").start()
    try:
        env = clean_env(HELIOS_AUTH__JWT_KEYS="k1=" + "s" * 40)
        gw = gateways(tmp_path, "--store", f"atlas://127.0.0.1:{d.port}", env=env)
        token = gw.login(gw.printed_password())
        drain_gateway(gw, token, "drain/remote")
        with d.client() as r:  # atlasd serves on; the upload went through it
            assert r.get("kv:drain/remote") == bytes(range(256)) * (UPLOAD // 256)
    finally:
        assert d.stop() == 0


def resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        out.append(f"${len(a.encode())}\r\n{a}\r\n".encode())
    return b"".join(out)


def test_atlasd_answers_a_pipeline_in_flight_then_refuses_and_releases(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data, "--appendfsync", "always").start()
    n = 20_000
    try:
        # A raw RESP pipeline: AUTH, then n SETs sent in one go; the replies are read only after SIGTERM.
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
            s.sendall(resp("AUTH", d.password or "") + b"".join(resp("SET", f"p{i}", str(i)) for i in range(n)))
            with redis.Redis(port=d.port, password=d.password, socket_timeout=10) as probe:
                wait_until(lambda: int(probe.dbsize()) > 0, "the pipeline to start executing")
            d.send(signal.SIGTERM)
            got = b""
            while chunk := s.recv(1 << 16):  # atlasd closes the connection once it has answered
                got += chunk
        assert d.proc is not None and d.proc.wait(30) == 0, d.log()
        replies = got.split(b"\r\n")
        assert replies[0] == b"+OK"  # AUTH
        answered = replies[1:].index(b"") if b"" in replies[1:] else len(replies) - 1
        assert answered > 0 and all(x == b"+OK" for x in replies[1:answered + 1]), replies[:5]
        assert refused(d.port) and not d.socket_path.exists()
    finally:
        d.kill()
    # Every answered SET is on disk (AOF flushed and fsynced), and the lock is free at once.
    d2 = Daemon(data).start()
    try:
        with d2.client() as r:
            values = r.mget([f"p{i}" for i in range(answered)])
            assert all(v == str(i).encode() for i, v in enumerate(values))
    finally:
        assert d2.stop() == 0


def test_proxy_with_data_releases_the_directory(tmp_path: Path) -> None:
    """The proxy's in-flight drain is tested in test_proxy_process.py; here, the part it lacks: a proxy
    that owns a data directory exits 0 on SIGTERM and leaves the directory to the next owner."""
    data = tmp_path / "data"
    log_path = tmp_path / "proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([HELIOS, "--log-format", "json", "proxy", "--data", str(data), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=clean_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, log_path.read_text()
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        owner = json.loads((data / "helios.lock").read_text())
        assert owner["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
        assert refused(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    d = Daemon(data).start()  # the lock is free at once
    try:
        with d.client() as r:
            assert r.ping()
    finally:
        assert d.stop() == 0
