"""The proxy and its backends SIGKILLed under GET load.

1. Backends: three behind one pool; the test SIGKILLs a random one (never the
   last one up) and brings it back on its port, over and over, while four
   keep-alive clients send GETs through the proxy.  Invariant: no client sees
   an error, since a GET is idempotent and some backend is always up.
2. The proxy itself: SIGKILLed and started again on the same port; each time
   it serves again within seconds and keeps no stale state (its fd count after
   the load settles is the same as before).
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

import pytest

from tests.chaos.harness import HELIOS, Daemon, clean_env, fd_count, http, iterations, record, seed, wait_for
from tests.integration.proxy import pool, route, write_config
from tests.integration.test_atlasd_support import unused_port
from tests.proxy_backend import BackendProcess

pytestmark = pytest.mark.slow


class Proxy(Daemon):
    """`helios proxy --config FILE --port PORT`: the same port across restarts."""

    def __init__(self, config: Path, tmp: Path) -> None:
        self.config, self.port = config, unused_port()
        self.log = tmp / f"proxy-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proxy:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([HELIOS, "proxy", "--config", str(self.config), "--port", str(self.port),
                                      "--no-access-log"], stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        out.close()
        wait_for(self.serves, 60, "the proxy to serve")
        return self

    def serves(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        try:
            return http(f"http://127.0.0.1:{self.port}", "GET", "/echo", timeout=5)[0] == 200
        except OSError:
            return False


class GetLoad:
    """Keep-alive GET clients; `errors` lists every failure a client saw."""

    def __init__(self, port: int, clients: int = 4) -> None:
        self.port = port
        self.ok = 0
        self.errors: list[str] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self) -> None:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.done.is_set():
            try:
                conn.request("GET", "/echo")
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    self.errors.append(f"{r.status} {body[:200]!r}")
                self.ok += 1
            except Exception as e:  # noqa: BLE001 - any client-visible failure is the finding
                self.errors.append(repr(e))
                conn.close()
                conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def __enter__(self) -> GetLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(60)


def config(tmp_path: Path, backends: list[BackendProcess]) -> Path:
    return write_config(
        tmp_path / "proxy.yaml",
        {"web": pool([(f"b{i}", b.url) for i, b in enumerate(backends)],
                     outlier={"base_ejection": 0.5, "max_ejection": 1}, breaker={"cooldown": 0.5})},
        [route("r", "/", "web", retries=2, timeouts={"connect": 1, "read": 10, "total": 20})],
        retry_min_per_second=1000)


def test_backend_sigkills_no_error_for_gets_while_one_is_up(tmp_path: Path) -> None:
    rng = random.Random(seed("backends"))
    kills = iterations(3)
    backends = [BackendProcess(f"b{i}") for i in range(3)]
    proxy = Proxy(config(tmp_path, backends), tmp_path)
    try:
        proxy.start()
        with GetLoad(proxy.port) as load:
            wait_for(lambda: load.ok > 50, 60, "load to start")
            for _ in range(kills):
                victim = rng.choice(backends)
                victim.kill()
                mark = load.ok
                wait_for(lambda m=mark: load.ok > m + 30, 60, "GETs to go on with a backend down")  # type: ignore[misc]
                victim.restart()
                time.sleep(rng.uniform(0.1, 0.5))
            served = load.ok
        assert load.errors == [], load.errors[:10]
    finally:
        proxy.stop()
        for b in backends:
            b.kill()
    record("backend SIGKILL behind the proxy (3 backends, GET load)",
           "no idempotent request fails while any backend is up (retries, ejection, health)", kills,
           requests=served, errors=len(load.errors))


def test_proxy_sigkill_restarts_and_serves(tmp_path: Path) -> None:
    kills = iterations(2)
    backends = [BackendProcess(f"b{i}") for i in range(2)]
    proxy = Proxy(config(tmp_path, backends), tmp_path)
    try:
        for _ in range(kills):
            proxy.start()
            with GetLoad(proxy.port, clients=2) as load:
                wait_for(lambda: load.ok > 20, 60, "load through the proxy")
                proxy.kill9()
            # The clients saw the kill (that is expected); a new proxy on the same port serves at once.
        proxy.start()
        with GetLoad(proxy.port, clients=2) as load:
            wait_for(lambda: load.ok > 50, 60, "load through the restarted proxy")
        assert load.errors == [], load.errors[:10]
        assert proxy.proc is not None
        before = fd_count(proxy.proc.pid)
        with GetLoad(proxy.port, clients=2) as load:
            wait_for(lambda: load.ok > 200, 60, "more load")
        # Idle keep-alive connections to the client closed; upstream pool at most its size again.
        wait_for(lambda: fd_count(proxy.proc.pid) <= before + 4, 30, "fds back to the level before")  # type: ignore[union-attr]
    finally:
        proxy.stop()
        for b in backends:
            b.kill()
    record("proxy SIGKILL under GET load, restarted on the same port", "it serves again at once; no fd growth",
           kills)
