"""atlasd when a snapshot cannot start: SAVE and BGSAVE callers get the reason, INFO shows it,
and the server keeps serving and shuts down (AtlasServer on this loop, FaultyFs under it)."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from helios_core.atlas.daemon import AtlasServer
from helios_core.atlas.engine import Engine
from helios_core.atlas.fsops import FaultyFs
from helios_core.config import load_config
from tests.integration.test_atlasd_inprocess import Raw

pytestmark = pytest.mark.timeout(60)
CONFIG = load_config(None, env={}, overrides={"atlasd.port": 0, "atlas.appendfsync": "always"})


def server_on_faulty_fs(data: Path) -> tuple[AtlasServer, FaultyFs]:
    fs = FaultyFs()
    engine = Engine.open(data, CONFIG.atlas, fs=fs, component="test")
    return AtlasServer(engine, CONFIG, data / "atlas.sock"), fs


def test_save_and_bgsave_report_a_failed_fork(tmp_path: Path) -> None:
    async def main() -> None:
        server, fs = server_on_faulty_fs(tmp_path / "data")
        await server.start()
        r, w = await asyncio.open_unix_connection(str(server.socket_path))
        c = Raw(r, w)
        try:
            assert await c.call("SET", "a", "1") == "OK"
            fs.fail("fork", err=errno.ENOMEM, count=2)
            kind, text = await c.call("SAVE")
            assert kind == "ERR" and "cannot fork" in text and "Cannot allocate memory" in text
            assert await c.call("BGSAVE") == "Background saving started"
            info = b""
            for _ in range(200):  # BGSAVE answers at once; its outcome shows in INFO
                info = await c.call("INFO", "persistence")
                if b"rdb_bgsave_in_progress:0" in info:
                    break
                await asyncio.sleep(0.01)
            assert b"rdb_last_bgsave_status:err" in info
            assert b"rdb_last_bgsave_error:" in info and b"Cannot allocate memory" in info
            assert await c.call("GET", "a") == b"1"  # still serving
            assert await c.call("SAVE") == "OK"      # and the next one works
            assert b"rdb_last_bgsave_status:ok" in await c.call("INFO", "persistence")
            # SHUTDOWN SAVE whose snapshot fails: Redis's error, and the server stays up.
            fs.fail("fork", err=errno.ENOMEM)
            kind, text = await c.call("SHUTDOWN", "SAVE")
            assert (kind, text) == ("ERR", "ERR Errors trying to SHUTDOWN. Check logs.")
            assert await c.call("GET", "a") == b"1"
            assert not server.closing
        finally:
            w.close()
            await asyncio.wait_for(server.stop(), 10)

    asyncio.run(main())


def test_shutdown_save_force_shuts_down_when_the_snapshot_fails(tmp_path: Path) -> None:
    async def main() -> None:
        data = tmp_path / "data"
        server, fs = server_on_faulty_fs(data)
        running = asyncio.ensure_future(server.run())  # as the daemon runs: SHUTDOWN ends it
        for _ in range(500):
            if server.socket_path is not None and server.socket_path.exists():
                break
            await asyncio.sleep(0.01)
        r, w = await asyncio.open_unix_connection(str(server.socket_path))
        c = Raw(r, w)
        try:
            assert await c.call("SET", "a", "1") == "OK"
            fs.fail("fork", err=errno.ENOMEM)
            await c.send(b"*3\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n$5\r\nFORCE\r\n")
            assert await asyncio.wait_for(r.read(), 10) == b""  # closed without a reply: shut down
            await asyncio.wait_for(running, 10)
        finally:
            w.close()
        assert not (data / "atlas.sock").exists()
        reopened = Engine.open(data, CONFIG.atlas, component="test")  # the AOF has every write
        try:
            assert reopened.execute([b"GET", b"a"]) == b"1"
        finally:
            reopened.close()

    asyncio.run(main())
