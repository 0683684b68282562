"""Balancing against real backends, and no leak after 10,000 requests through a faulty network.

The balancers' arithmetic is tested in tests/unit/proxy/ in simulated time; here the proxy runs as
a process in front of real backend processes: a 3:1 weighted pool over 4,000 requests, a slowed
backend that least-connections and power-of-two-choices steer away from, and 10,000 requests
through a fault-injecting relay (resets, mid-response resets, refusals) after which the proxy holds
no more file descriptors or memory than before, and nothing is left in flight.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faultrelay import FaultRelay
from tests.integration.proxy import ProxyProcess, pool, request, route, wait_until, write_config
from tests.proxy_backend import BackendProcess

pytestmark = pytest.mark.timeout(240)

NO_HEALTH = {"enabled": False}


@pytest.fixture
def backends() -> Iterator[tuple[BackendProcess, BackendProcess]]:
    a, b = BackendProcess("a"), BackendProcess("b")
    try:
        yield a, b
    finally:
        a.kill()
        b.kill()


def _hammer(port: int, n: int, threads: int) -> list[int]:
    """n GETs from `threads` keep-alive clients; their statuses."""
    statuses: list[int] = []
    lock = threading.Lock()

    def run(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(count):
                status, _, _ = request(port, "GET", "/x", conn=conn)
                with lock:
                    statuses.append(status)
        finally:
            conn.close()

    workers = [threading.Thread(target=run, args=(n // threads,)) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return statuses


def test_weighted_three_to_one_within_five_percent(backends: tuple[BackendProcess, BackendProcess],
                                                  tmp_path: Path) -> None:
    a, b = backends
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("a", a.url, 3), ("b", b.url, 1)], balancer="weighted",
                                                         health=NO_HEALTH)},
                       [route("all", "/", "web")])
    with ProxyProcess(cfg) as proxy:
        statuses = _hammer(proxy.port, 4000, 4)
    assert statuses.count(200) == 4000
    na, nb = a.stats()["requests"], b.stats()["requests"]
    assert na + nb == 4000
    assert abs(na / 4000 - 0.75) <= 0.05, (na, nb)


@pytest.mark.parametrize("balancer", ["least_conn", "p2c"])
def test_a_slow_backend_gets_little(backends: tuple[BackendProcess, BackendProcess], tmp_path: Path,
                                    balancer: str) -> None:
    """One backend answers in 50 ms, the other at once: with 8 clients in flight, the slow one holds
    its requests longer, so in-flight-aware balancers send it a small share (round robin: half)."""
    fast, slow = backends
    slow.control(delay=0.05)
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("fast", fast.url), ("slow", slow.url)],
                                                         balancer=balancer, health=NO_HEALTH)},
                       [route("all", "/", "web")])
    with ProxyProcess(cfg) as proxy:
        statuses = _hammer(proxy.port, 800, 8)
    assert statuses.count(200) == 800
    n_fast, n_slow = fast.stats()["requests"], slow.stats()["requests"]
    assert n_fast + n_slow == 800
    assert n_slow / 800 < 0.25, (balancer, n_fast, n_slow)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_ten_thousand_faulted_requests_leak_nothing(tmp_path: Path) -> None:
    backend = BackendProcess("a")
    relay = FaultRelay(("127.0.0.1", backend.port))
    try:
        relay.start()
        cfg = write_config(tmp_path / "p.yaml",
                           {"web": pool([("a", relay.url)], health=NO_HEALTH,
                                        breaker={"enabled": False}, outlier={"enabled": False})},
                           [route("all", "/", "web", retries=0, timeouts={"connect": 1, "read": 2, "total": 5})])
        with ProxyProcess(cfg) as proxy:
            assert _hammer(proxy.port, 200, 4).count(200) == 200  # warm: pools and caches filled
            fds0, rss0 = _fds(proxy.pid), _rss_kib(proxy.pid)
            seen: set[int] = set()
            for mode in ("reset", "reset_after", "refuse", "pass") * 2:
                if mode == "reset_after":
                    relay.reset_after(20)  # the response cut inside its head
                else:
                    relay.set_mode(mode)
                seen.update(_hammer(proxy.port, 1200, 4))
            relay.passthrough()
            assert _hammer(proxy.port, 400, 4).count(200) == 400  # 10,000 requests in all, and it still serves
            assert seen >= {200, 502}, seen
            wait_until(lambda: relay.open_connections <= 4 * 2, 10)
            status = proxy.status()
            assert [b["in_flight"] for b in status["pools"]["web"]["backends"]] == [0], status
            fds1, rss1 = _fds(proxy.pid), _rss_kib(proxy.pid)
            assert fds1 <= fds0 + 8, (fds0, fds1)
            assert rss1 - rss0 < 16 * 1024, (rss0, rss1)  # KiB
    finally:
        relay.close()
        backend.kill()
