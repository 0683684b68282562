"""`helios health` against live daemons: a gateway, atlasd over TCP and its socket; then dead ones."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from helios_cli.health import Health, probe
from helios_cli.main import cli
from helios_core.config import HeliosConfig
from helios_core.gateway.app import Started, serve
from tests.integration.test_atlasd_support import Daemon

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("restore_logging")]
HELIOS = str(Path(sys.executable).with_name("helios"))


def _health(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["health", *args])
    return res.exit_code, res.output


def test_live_gateway_is_healthy_and_a_stopped_one_is_not(tmp_path: Path) -> None:
    base = HeliosConfig()
    config = dataclasses.replace(base, gateway=dataclasses.replace(base.gateway, bind="127.0.0.1", port=0))

    async def main() -> tuple[str, int, str, Health]:
        stop = asyncio.Event()
        started: list[Started] = []
        task = asyncio.create_task(serve(config, tmp_path / "data", started.append, stop=stop))
        try:
            while not started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            url = started[0].url
            # The Dockerfile's HEALTHCHECK, as docker runs it: a process of its own.
            env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
            proc = await asyncio.create_subprocess_exec(HELIOS, "health", "--url", url, env=env,
                                                        stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            assert proc.returncode is not None
            # The gateway serves its data directory's socket as atlasd does: PING answers there too.
            sock = await asyncio.get_running_loop().run_in_executor(
                None, probe, f"unix://{tmp_path / 'data' / 'atlas.sock'}", 5.0)
            return url, proc.returncode, out.decode(), sock
        finally:
            stop.set()
            await task

    url, code, out, sock = asyncio.run(main())
    assert code == 0 and out == f"healthy: {url}/healthz answered 200\n"
    assert sock.ok, sock.line
    code, out = _health("--url", url, "--timeout", "2")
    assert code == 1 and out.startswith(f"unhealthy: {url}/healthz: ")


def test_atlasd_over_tcp_and_its_socket(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = Daemon(data).start()
    try:
        tcp = f"atlas://127.0.0.1:{d.port}"
        # No password given: found as store/url.py finds it for this user's local atlasd.
        assert _health("--url", tcp) == (0, f"healthy: {tcp} answered PONG\n")
        assert _health("--url", f"unix://{d.socket_path}")[0] == 0
        code, out = _health("--url", f"redis://:wrong-password@127.0.0.1:{d.port}")
        assert code == 1 and "password" in out and "wrong-password" not in out
    finally:
        assert d.stop() == 0
    code, out = _health("--url", tcp, "--timeout", "2")
    assert code == 1 and out.startswith(f"unhealthy: {tcp}: ")
