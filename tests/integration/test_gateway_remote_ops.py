"""Admin store operations when the gateway's store is a server: atlasd's socket or a real redis-server.

/admin/snapshot, /admin/aof-rewrite and /admin/stats become BGSAVE (waited
for through LASTSAVE), BGREWRITEAOF and INFO/DBSIZE on the server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_atlasd_support import HELIOS, running_daemon
from tests.integration.test_gateway_process import call, first_password, start, start_gateway
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow


def admin_token(url: str, password: str) -> str:
    status, body = call(f"{url}/api/v1/auth/login", "POST", {"username": "ops", "password": password})
    assert status == 200, body
    return str(json.loads(body)["access_token"])


def exercise(url: str, token: str) -> dict:
    status, body = call(f"{url}/admin/stats", token=token)
    assert status == 200, body
    stats = json.loads(body)
    assert stats["backend"] == "RemoteStore" and stats["keys"] >= 1
    status, body = call(f"{url}/admin/snapshot", "POST", token=token)
    assert status == 200, body
    assert json.loads(body)["status"] == "ok"
    status, body = call(f"{url}/admin/aof-rewrite", "POST", token=token)
    assert status == 200, body
    status, body = call(f"{url}/admin/audit?action=store.snapshot", token=token)
    assert status == 200 and b"store.snapshot" in body, body
    return stats


def test_admin_store_ops_on_atlasd(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    with running_daemon(tmp_path) as daemon:
        added = subprocess.run([HELIOS, "user", "add", "ops", "--role", "admin", "--password-stdin", "--data",
                                str(daemon.data)], input="correct horse battery\n", capture_output=True, text=True,
                               env=env, timeout=60)
        assert added.returncode == 0, added.stderr
        before = {p.name: p.stat().st_mtime_ns for p in daemon.data.glob("dump.rdb")}
        proc, url, _ = start(daemon.data)
        try:
            stats = exercise(url, admin_token(url, "correct horse battery"))
            assert stats["appendfsync"] == "everysec"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        after = (daemon.data / "dump.rdb").stat().st_mtime_ns
        assert before.get("dump.rdb") != after, "atlasd wrote no snapshot"


def test_admin_store_ops_on_redis(tmp_path: Path) -> None:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(exe).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env["HELIOS_AUTH__JWT_KEYS"] = "k1=" + "s" * 40
    env["HELIOS_AUTH__BCRYPT_COST"] = "4"
    try:
        proc, url, lines = start_gateway(["--store", f"redis://127.0.0.1:{server.port}"], env)
        try:
            status, body = call(f"{url}/api/v1/auth/login", "POST",
                                {"username": "admin", "password": first_password(lines)})
            assert status == 200, body
            exercise(url, json.loads(body)["access_token"])
            assert server.workdir is not None and (server.workdir / "dump.rdb").exists()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        server.stop()
