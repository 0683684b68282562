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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["RedisServer", "SentinelGroup", "redis_server", "unused_port"]

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
    # Extra redis-server options, after the defaults (a later option wins): e.g. ("--appendonly", "yes").
    args: tuple[str, ...] = ()
    proc: subprocess.Popen | None = field(default=None, repr=False)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def start(self) -> RedisServer:
        # The port is chosen free, then handed to redis: another process could take
        # it in between, so a server that exits at once is retried on a new port.
        for _ in range(3):
            self._tmp = tempfile.TemporaryDirectory(prefix="helios-redis-")
            self.workdir = Path(self._tmp.name)
            self.port = unused_port()
            if self._launch():
                return self
            self.stop()
        raise RuntimeError(f"redis-server ({self.executable}) did not answer PING on 127.0.0.1")

    def _launch(self) -> bool:
        assert self.workdir is not None
        self.proc = subprocess.Popen(
            [self.executable, "--bind", self.host, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
             "--logfile", str(self.workdir / "redis.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir,
        )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline and self.proc.poll() is None:
            # Another test's server may have taken the port meanwhile (a restart reuses it):
            # the answer counts only if it comes from the process just started.
            if _ping(self.host, self.port) and _server_pid(self.port) == self.proc.pid:
                atexit.register(self.stop)  # even if the caller dies before stop()
                return True
            time.sleep(0.02)  # waiting for a child process to come up, not for a TTL
        return False

    def log_tail(self, lines: int = 40) -> str:
        """The end of this server's log, for a failing test's message."""
        log = self.workdir / "redis.log" if self.workdir is not None else None
        if log is None or not log.exists():
            return f"(no log for the server on port {self.port})"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown save, no goodbye to replicas; the directory is kept."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, *args: str) -> RedisServer:
        """Start again on the same port and directory (it loads its own AOF) after kill(); `args` add options."""
        self.kill()
        self.args = (*self.args, *args)
        if not self._launch():
            raise RuntimeError(f"redis-server did not come back on port {self.port}")
        return self

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


def _server_pid(port: int) -> int | None:
    info = _ask(port, "INFO", "server")
    return info.get("process_id") if isinstance(info, dict) else None


def _ask(port: int, *command: str) -> object:
    """One command to a server or sentinel we started; None when it does not answer."""
    import redis

    try:
        with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0, socket_connect_timeout=2.0,
                         decode_responses=True) as client:
            return client.execute_command(*command)
    except (redis.RedisError, OSError):
        return None


@dataclass
class SentinelGroup:
    """A primary, one replica and three sentinels (quorum 2) on unused loopback ports, in temp dirs.

    Both data servers run `appendonly yes`.  The sentinels consider the
    primary down after `down_after_ms` without a reply, so a SIGKILLed primary
    is replaced by the replica a few seconds later.  `url` is the store URL
    (redis+sentinel://...) naming the three sentinels.  `link`, if given, is
    called with the primary's port and returns the port the replica should
    replicate from (a FaultRelay in between, say); the sentinels then wait
    `failover_timeout_ms` before "fixing" that replica's configuration back.
    """

    redis_server: str
    sentinel: str
    service: str = "helios"
    # 3 s, not 1: a sentinel makes a new record for the primary it switched to, and counts the time
    # to its first PING reply against this; at 1 s a loaded CI box made the sentinels fail the new
    # primary over too, a second after the first failover, back to the old primary that had just
    # restarted as its replica (CI's "old primary had not resynced" on f03ec75, from the logs).
    down_after_ms: int = 3000
    failover_timeout_ms: int = 60000
    link: Callable[[int], int] | None = None
    primary: RedisServer | None = None
    replica: RedisServer | None = None
    sentinels: list[tuple[int, subprocess.Popen, tempfile.TemporaryDirectory]] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port, _, _ in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    def start(self, ready_seconds: float = 60.0) -> SentinelGroup:
        durable = ("--appendonly", "yes", "--appendfsync", "everysec")
        try:
            self.primary = RedisServer(self.redis_server, args=durable).start()
            self.replica = RedisServer(self.redis_server, args=(
                *durable, "--replicaof", "127.0.0.1",
                str(self.link(self.primary.port) if self.link else self.primary.port))).start()
            for _ in range(3):
                self._start_sentinel()
            self.wait_until(self._settled, ready_seconds, "the sentinels to see the replica and each other")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinel(self) -> None:
        assert self.primary is not None
        tmp = tempfile.TemporaryDirectory(prefix="helios-sentinel-")
        port = unused_port()
        conf = Path(tmp.name) / "sentinel.conf"  # a sentinel rewrites its own config: a file of its own
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {tmp.name}\nlogfile {tmp.name}/sentinel.log\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.service} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {self.service} 1\n")
        proc = subprocess.Popen([self.sentinel, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=tmp.name)
        self.sentinels.append((port, proc, tmp))
        atexit.register(self.stop)

    def _settled(self) -> bool:
        assert self.replica is not None
        replication = _ask(self.replica.port, "INFO", "replication")
        if not isinstance(replication, dict) or replication.get("master_link_status") != "up":
            return False
        for port, _, _ in self.sentinels:
            info = _ask(port, "INFO", "sentinel")  # redis-py parses master0:name=..,slaves=1,.. into a dict
            master = info.get("master0") if isinstance(info, dict) else None
            if not isinstance(master, dict) or master.get("slaves") != 1 or master.get("sentinels") != 3:
                return False
        return True

    def _named(self, sentinel_port: int) -> int | None:
        reply = _ask(sentinel_port, "SENTINEL", "get-master-addr-by-name", self.service)
        return int(reply[1]) if isinstance(reply, list | tuple) and len(reply) == 2 else None

    def primary_port(self) -> int | None:
        """The primary's port as the first answering sentinel names it."""
        for port, _, _ in self.sentinels:
            named = self._named(port)
            if named is not None:
                return named
        return None

    def log_tails(self, lines: int = 40) -> str:
        """The end of every server's and sentinel's log, for a failing test's message."""
        parts = [f"--- redis-server :{s.port}\n{s.log_tail(lines)}" for s in (self.primary, self.replica) if s]
        for port, _, tmp in self.sentinels:
            log = Path(tmp.name) / "sentinel.log"
            text = "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"
            parts.append(f"--- sentinel :{port}\n{text}")
        return "\n".join(parts)

    def all_agree_on(self, port: int) -> bool:
        return all(self._named(sport) == port for sport, _, _ in self.sentinels)

    @staticmethod
    def wait_until(check: object, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():  # type: ignore[operator]
                return
            time.sleep(0.05)  # polling processes we started for a state change, not a TTL
        raise RuntimeError(f"timed out after {seconds} s waiting for {what}")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        for _, proc, tmp in self.sentinels:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            tmp.cleanup()
        self.sentinels = []
        for server in (self.primary, self.replica):
            if server is not None:
                server.stop()
