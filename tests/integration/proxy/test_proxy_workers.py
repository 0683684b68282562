"""`helios proxy --workers N` on `helios_core.supervise`: drain on SIGTERM, crash-loop give-up, SIGHUP at start.

test_proxy_process.py has the basics (the port shared, a killed worker replaced, SIGHUP to each);
these are the edges the move onto the gateway's supervisor must keep.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.proxy import ProxyProcess, pool, request, route, wait_until, write_config
from tests.proxy_backend import BackendProcess


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    with BackendProcess("web1") as b:
        yield b


def worker_pids(p: ProxyProcess, n: int) -> set[int]:
    """The pids of the `n` workers, as their status endpoints say (new connections spread over them)."""
    pids: set[int] = set()

    def seen_all() -> bool:
        try:
            pids.add(p.status()["pid"])
        except (OSError, AssertionError):
            pass
        return len(pids) >= n

    wait_until(seen_all, 30, 0.01)
    return pids


def test_sigterm_drains_every_worker_and_exits_zero(backend: BackendProcess, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("web1", backend.url)])}, [route("r", "/", "web")])
    p = ProxyProcess(cfg, "--workers", "2", "--grace", "20", cli=True)
    try:
        pids = worker_pids(p, 2)
        result: dict[str, tuple[int, dict[str, str], bytes]] = {}

        def slow() -> None:
            result["answer"] = request(p.port, "GET", "/slow?delay=1", timeout=30)

        # In flight at one worker: the backend has the request (its counter moved; read before the
        # request is sent, or a quick one may already be counted in `before` and never seen to move).
        before = backend.stats()["requests"]
        t = threading.Thread(target=slow)
        t.start()
        wait_until(lambda: backend.stats()["requests"] > before, 20)
        p.signal(signal.SIGTERM)
        t.join(30)
        assert p.proc.wait(30) == 0, p.log()
        status, _, body = result["answer"]
        assert status == 200 and json.loads(body)["slow"] is True
        assert p.log().count("proxy stopped") == 2
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        p.stop()


def test_a_crash_loop_gives_up_with_its_reason(backend: BackendProcess, tmp_path: Path) -> None:
    """Workers that cannot start again (the file broke under them) are given up on: exit 1, a clear reason."""
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("web1", backend.url)])}, [route("r", "/", "web")])
    p = ProxyProcess(cfg, "--workers", "2", cli=True)
    try:
        pids = worker_pids(p, 2)
        cfg.write_text("pools: {}\nroutes:\n  - {id: r, prefix: /, pool: nope}\n")
        os.kill(min(pids), signal.SIGKILL)  # its replacements fail to load the file, again and again
        assert p.proc.wait(60) == 1, p.log()
        assert "the proxy workers kept dying at start (see the log above); stopped" in p.log()
        for pid in pids:  # the healthy worker was stopped too
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        p.stop()


def test_a_sighup_while_the_config_is_read_reloads_once_serving(tmp_path: Path) -> None:
    """A worker restarted by the supervisor may get an operator's SIGHUP while it reads its config:
    the process survives it and reloads once serving (the file may have changed after its read)."""
    from helios_core.proxy.model import ProxyConfig
    from helios_core.proxy.service import ConfigSource, FileConfigSource, ProxyService, ServeOptions, bind_socket, serve

    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("a", "http://127.0.0.1:9")])}, [route("r", "/", "web")])

    class RacingSource(FileConfigSource):
        loads = 0

        async def load(self) -> ProxyConfig:
            config = await super().load()
            RacingSource.loads += 1
            if RacingSource.loads == 1:  # the change and its SIGHUP land just after this read
                write_config(cfg, {"web": pool([("a", "http://127.0.0.1:9")])},
                             [route("r", "/", "web"), route("new", "/new/", "web")])
                os.kill(os.getpid(), signal.SIGHUP)
                await asyncio.sleep(0.05)  # the signal is delivered while still starting
            return config

    async def nothing() -> None:
        return None

    async def open_source() -> tuple[ConfigSource, Callable[[], Awaitable[None]]]:
        return RacingSource(cfg), nothing

    async def scenario() -> list[str]:
        services: list[ProxyService] = []
        stop = asyncio.Event()
        sock = bind_socket("127.0.0.1", 0)
        task = asyncio.ensure_future(serve(open_source, sock, ServeOptions(access_log=False),
                                           on_ready=services.append, stop=stop))
        deadline = time.monotonic() + 20
        while not (services and len(services[0].config.routes) == 2) and not task.done():
            assert time.monotonic() < deadline, "the SIGHUP during start-up was not acted on"
            await asyncio.sleep(0.02)
        stop.set()
        await task
        sock.close()
        return [r.id for r in services[0].config.routes]

    try:
        assert sorted(asyncio.run(scenario())) == ["new", "r"]
    finally:
        gc.unfreeze()  # serve() froze this test process's objects as a daemon's
    assert RacingSource.loads == 2
