"""Large bodies stream through the proxy with flat memory: upload and download, RSS sampled throughout.

1 GB each way, the issue's form: it takes a few seconds here (loopback, 64 KB writes).
``HELIOS_SHORT_TESTS=1`` makes it 200 MB for a loaded machine.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.proxy import ProxyProcess, pool, request, route, write_config
from tests.proxy_backend import BackendProcess

SIZE = 200 * (1 << 20) if os.environ.get("HELIOS_SHORT_TESTS") == "1" else (1 << 30)
MAX_GROWTH = 64 * (1 << 20)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Sampler:
    """The highest RSS of a process while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with BackendProcess("big") as b:
        cfg = write_config(tmp_path_factory.mktemp("stream") / "p.yaml",
                           {"web": pool([("big", b.url)], health={"enabled": False})},
                           [route("r", "/", "web", timeouts={"connect": 2, "read": 30, "total": 600})])
        with ProxyProcess(cfg, "--no-access-log") as p:
            # Warm up: imports, buffers and the first connections exist before the baseline.
            for _ in range(3):
                assert request(p.port, "POST", "/sink", body=b"w" * 4_000_000)[0] == 200
                assert len(request(p.port, "GET", "/stream?n=4000000")[2]) == 4_000_000
            yield p


@pytest.mark.timeout(600)
def test_large_upload_keeps_rss_flat(proxy: ProxyProcess) -> None:
    before = rss(proxy.pid)
    block = b"u" * (1 << 20)

    def body() -> Iterator[bytes]:
        for _ in range(SIZE // len(block)):
            yield block

    with Sampler(proxy.pid) as sampler:
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=120)
        c.request("POST", "/sink", body=body(), headers={"Content-Length": str(SIZE)})
        r = c.getresponse()
        answer = json.loads(r.read())
        c.close()
    assert r.status == 200 and answer["bytes"] == SIZE
    assert sampler.peak - before < MAX_GROWTH, (before, sampler.peak)


@pytest.mark.timeout(600)
def test_large_download_keeps_rss_flat(proxy: ProxyProcess) -> None:
    before = rss(proxy.pid)
    with Sampler(proxy.pid) as sampler:
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=120)
        c.request("GET", f"/stream?n={SIZE}")
        r = c.getresponse()
        assert r.status == 200
        got = 0
        while chunk := r.read(1 << 20):
            got += len(chunk)
        c.close()
    assert got == SIZE
    assert sampler.peak - before < MAX_GROWTH, (before, sampler.peak)


def test_slow_reader_download_pauses_the_backend(proxy: ProxyProcess) -> None:
    """A client that stops reading: the proxy stops reading the backend instead of buffering."""
    import socket
    import time

    before = rss(proxy.pid)
    with socket.create_connection(("127.0.0.1", proxy.port)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /stream?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (100 << 20))
        s.recv(65536)
        time.sleep(1.0)  # the backend could send 100 MB meanwhile, if nothing held it back
        assert rss(proxy.pid) - before < 32 << 20
