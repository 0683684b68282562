"""Running the real `helios atlasd` for tests: a subprocess on an unused port with a tmp data dir.

Shared by the test_atlasd_* modules (imported from here; this module has no
tests of its own, and each module declares its own fixtures around
`running_daemon`).  The daemon is started the way an operator starts it, the
`helios` console script, and every test gets a fresh one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

HELIOS = str(Path(sys.executable).with_name("helios"))

__all__ = ["Daemon", "unused_port", "running_daemon"]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, data: Path, *extra: str, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.port = port if port is not None else unused_port()
        self.extra = list(extra)
        self.env = {**os.environ, **(env or {})}
        for name in list(self.env):
            if name.startswith("HELIOS_") and not (env and name in env):
                del self.env[name]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data.parent / f"atlasd-{data.name}-{self.port}.log"
        # With TLS the TCP port takes only TLS clients (self-signed in tests: not verified).
        self.tls_kw: dict[str, object] = {"ssl": True, "ssl_cert_reqs": None} if "--tls-cert" in self.extra else {}

    @property
    def socket_path(self) -> Path:
        return self.data / "atlas.sock"

    @property
    def password(self) -> str | None:
        """The password TCP clients need: DATA/atlasd.password (generated unless --requirepass gave one)."""
        try:
            return (self.data / "atlasd.password").read_text().strip() or None
        except FileNotFoundError:
            return None

    def start(self, wait: bool = True) -> Daemon:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [HELIOS, "--log-format", "json", "atlasd", "--data", str(self.data), "--port", str(self.port),
             *self.extra],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"atlasd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with redis.Redis(port=self.port, socket_timeout=1, **self.tls_kw) as r:  # type: ignore[arg-type]
                    if r.ping():
                        return
            except redis.AuthenticationError:
                return
            except redis.ResponseError as e:
                if "NOAUTH" in str(e):
                    return
                raise
            except (redis.ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"atlasd did not answer PING within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def client(self, **kw: object) -> redis.Redis:
        """A TCP client that knows the password (pass password=None to connect without one)."""
        return redis.Redis(port=self.port,  # type: ignore[arg-type]
                           **{"socket_timeout": 10, **self.tls_kw, "password": self.password, **kw})

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"atlasd ignored {signal.Signals(sig).name}:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running_daemon(tmp_path: Path, *extra: str) -> Iterator[Daemon]:
    """A running atlasd (appendfsync everysec unless `extra` says) on an unused port, killed afterwards.

    Test modules wrap this in their own `daemon` fixture.
    """
    args = extra if "--appendfsync" in extra else ("--appendfsync", "everysec", *extra)
    d = Daemon(tmp_path / "data", *args).start()
    try:
        yield d
    finally:
        d.kill()


def wait_for_snapshot(data: Path, since: float = 0.0) -> None:
    """Wait until DATA/dump.rdb is published (written by BGSAVE's child at or after `since`)."""
    snap = data / "dump.rdb"
    for _ in range(400):  # the snapshot runs in a child: wait for it to be published
        if snap.exists() and snap.stat().st_mtime >= since:
            return
        time.sleep(0.05)
    raise AssertionError("the snapshot was not published")
