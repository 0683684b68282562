"""A real redis-server for tests: started on an unused loopback port, stopped afterwards.

Tests that compare ATLAS with Redis import the fixture from here::

    from tests.redis_server import redis_server  # noqa: F401

The fixture is session-scoped (one server for the whole run; tests FLUSHALL
what they need) and skips the test when `redis-server` is not installed.
Persistence is off (`--save ""`, `--appendonly no`) and the server runs in
its own temporary directory, so nothing outside it is touched.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_server", "unused_port"]

STARTUP_SECONDS = 10.0


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process; `start()` returns once it answers PING."""

    executable: str
    host: str = "127.0.0.1"
    port: int = 0
    workdir: Path | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def start(self) -> RedisServer:
        # The port is chosen free, then handed to redis: another process could take
        # it in between, so a server that exits at once is retried on a new port.
        for _ in range(3):
            self._tmp = tempfile.TemporaryDirectory(prefix="helios-redis-")
            self.workdir = Path(self._tmp.name)
            self.port = unused_port()
            self.proc = subprocess.Popen(
                [self.executable, "--bind", self.host, "--port", str(self.port), "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
                 "--logfile", str(self.workdir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir,
            )
            deadline = time.monotonic() + STARTUP_SECONDS
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _ping(self.host, self.port):
                    atexit.register(self.stop)  # even if the caller dies before stop()
                    return self
                time.sleep(0.02)  # waiting for a child process to come up, not for a TTL
            self.stop()
        raise RuntimeError(f"redis-server ({self.executable}) did not answer PING on 127.0.0.1")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A running redis-server (host, port attributes); skips when redis-server is absent."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(exe).start()
    try:
        yield server
    finally:
        server.stop()
