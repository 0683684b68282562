"""A local Redis Cluster for tests: three primaries, no replicas, on unused loopback ports.

Each primary is a real `redis-server --cluster-enabled yes --appendonly yes`
in a temp directory of its own; `redis-cli --cluster create ... --cluster-yes`
assigns the 16384 slots among them, and `start()` returns once every node
reports `cluster_state:ok` and agrees on the slot map.  Used as::

    from tests.redis_cluster import redis_cluster  # noqa: F401

The fixture is session-scoped (one cluster per test process: creating one
takes ~1-2 s) and skips when redis-server or redis-cli is missing.  `url`
is the store URL (redis+cluster://...), `flushall()` empties every primary.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.redis_server import RedisServer, SentinelGroup, _ask, unused_port

__all__ = ["RedisClusterGroup", "redis_cluster"]

READY_SECONDS = 30.0


@dataclass
class RedisClusterGroup:
    redis_server: str
    redis_cli: str
    size: int = 3
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self) -> RedisClusterGroup:
        try:
            for _ in range(self.size):
                self.nodes.append(self._node())
            atexit.register(self.stop)
            out = subprocess.run(
                [self.redis_cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
            SentinelGroup.wait_until(self._ok, READY_SECONDS, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def _node(self) -> RedisServer:
        # The cluster bus listens on a port of its own: by default the client port + 10000, which
        # may be taken (or past 65535) for an unused client port; so it gets an unused one too.
        # (The config file is the node's own, in its own temp dir.)
        for attempt in range(3):
            try:
                return RedisServer(self.redis_server, args=(
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(unused_port()), "--cluster-node-timeout", "5000",
                    "--appendonly", "yes", "--appendfsync", "everysec")).start()
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _ok(self) -> bool:
        for port in self.ports:
            info = _ask(port, "CLUSTER", "INFO")
            if not isinstance(info, str) or "cluster_state:ok" not in info:
                return False
            if f"cluster_known_nodes:{self.size}" not in info:
                return False
        return True

    def flushall(self) -> None:
        for port in self.ports:
            _ask(port, "FLUSHALL")
            _ask(port, "SCRIPT", "FLUSH")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        for n in self.nodes:
            n.stop()
        self.nodes = []


def cluster_tools() -> tuple[str, str] | None:
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    return (server, cli) if server and cli else None


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterGroup]:
    """A running three-primary Redis Cluster; skips when redis-server or redis-cli is absent."""
    tools = cluster_tools()
    if tools is None:
        pytest.skip("redis-server and redis-cli are needed for a local Redis Cluster")
    group = RedisClusterGroup(*tools).start()
    try:
        yield group
    finally:
        group.stop()
