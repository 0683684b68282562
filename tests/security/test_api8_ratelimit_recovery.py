"""OWASP API8:2023 Security Misconfiguration: a durable rate limit that locks everyone out has a way back.

An admin's override (PUT /admin/ratelimit) is kept in the store and applies to
every client, logins and the admin included: one mistaken "1 per day" and the
admin API can no longer undo it.  `helios ratelimit reset --data DIR` (the
gateway stopped) restores the configured limits from the shell.  Run the way
an operator would: a real gateway process, the CLI as a process.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.integration.test_gateway_process import HELIOS, call, start, stop


def _login(url: str, password: str) -> tuple[int, bytes]:
    return call(f"{url}/api/v1/auth/login", "POST", {"username": "admin", "password": password})


def _helios(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    if token:
        env["HELIOS_TOKEN"] = token
    return subprocess.run([HELIOS, *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_lockout_is_undone_from_the_shell(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, url, _ = start(data)
    try:
        password = (data / "initial_admin_password").read_text().strip()
        code, body = _login(url, password)
        assert code == 200, body
        token = json.loads(body)["access_token"]
        lockout = {"default": {"limit": 1, "window": 86400}, "roles": {"admin": {"limit": 1, "window": 86400}}}
        assert call(f"{url}/admin/ratelimit", "PUT", lockout, token=token)[0] == 200
        # Everyone is out now (a bucket keeps at most the new limit: one request more, then 429): the
        # admin, a fresh login, and the CLI through the API.
        assert [call(f"{url}/admin/ratelimit", token=token)[0] for _ in range(2)] == [200, 429]
        assert [_login(url, password)[0] for _ in range(2)][-1] == 429
        r = _helios("ratelimit", "reset", "--url", url, token=token)
        assert r.returncode == 1 and "429" in r.stderr, (r.returncode, r.stderr)
    finally:
        stop(proc)

    r = _helios("ratelimit", "reset", "--json", "--data", str(data))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["effective"]["default"] == {"limit": 600, "window": 60}, r.stdout

    proc, url, _ = start(data)
    try:
        code, body = _login(url, password)
        assert code == 200, body
        token = json.loads(body)["access_token"]
        code, body = call(f"{url}/admin/ratelimit", token=token)
        assert code == 200 and json.loads(body)["effective"]["default"] == {"limit": 600, "window": 60}, body
    finally:
        stop(proc)
