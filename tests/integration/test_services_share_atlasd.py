"""`--data DIR` everywhere: with atlasd owning DIR, the gateway and `helios user` go through its socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_atlasd_support import HELIOS, running_daemon
from tests.integration.test_gateway_process import call, start

pytestmark = pytest.mark.slow


def helios(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    return subprocess.run([HELIOS, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_user_and_gateway_share_a_directory_atlasd_owns(tmp_path: Path) -> None:
    with running_daemon(tmp_path, "--appendfsync", "always") as daemon:
        added = helios("user", "add", "bob", "--role", "user", "--password-stdin", "--data", str(daemon.data),
                       stdin="correct horse battery\n")
        assert added.returncode == 0, added.stderr
        listed = helios("user", "list", "--json", "--data", str(daemon.data))
        assert listed.returncode == 0, listed.stderr
        assert "bob" in [u["username"] for u in json.loads(listed.stdout)]

        proc, url, _ = start(daemon.data)  # the gateway, on the same directory, while atlasd owns it
        try:
            status, body = call(f"{url}/api/v1/auth/login", "POST",
                                {"username": "bob", "password": "correct horse battery"})
            assert status == 200, body
            token = json.loads(body)["access_token"]
            status, me = call(f"{url}/api/v1/auth/me", token=token)
            assert status == 200, me
            key = f"users/{json.loads(me)['id']}/greeting"  # the user role's own namespace
            assert call(f"{url}/api/v1/kv/{key}", "PUT", token=token, raw=b"hi")[0] in (200, 201, 204)
            assert call(f"{url}/api/v1/kv/{key}", token=token) == (200, b"hi")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        # Everything went through atlasd: it still owns the directory and holds the user.
        assert helios("user", "list", "--json", "--data", str(daemon.data)).returncode == 0
