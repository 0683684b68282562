"""End to end, as an operator runs it: `helios gateway --data DIR` in a subprocess, then curl and urllib."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

HELIOS = str(Path(sys.executable).parent / "helios")
pytestmark = pytest.mark.slow


def start(data: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    return start_gateway(["--data", str(data)])


def start_gateway(args: list[str], env: dict[str, str] | None = None, stderr: Any = subprocess.PIPE,
                  timeout: float = 30) -> tuple[subprocess.Popen[str], str, list[str]]:
    """`helios gateway ARGS --port 0` (in an environment without the caller's HELIOS_ settings unless
    `env` is given), once it listens: the process, its URL and the lines it printed on the way."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    proc = subprocess.Popen([HELIOS, "gateway", *args, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=stderr, text=True, env=env)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"gateway exited: {proc.wait()} {err} {lines}")
        lines.append(line.rstrip("\n"))
        if "listening on" in line:  # the last line of the start-up message
            return proc, line.split("listening on ")[1].split()[0], lines
    proc.kill()
    proc.wait()
    raise AssertionError(f"gateway did not start: {lines}")


def first_password(lines: list[str]) -> str:
    """The first admin's password, from the start-up lines of a gateway on a new store."""
    return lines[lines.index(next(ln for ln in lines if "created the user" in ln)) + 1].strip()


def call(url: str, method: str = "GET", body: Any = None, token: str | None = None,
         raw: bytes | None = None) -> tuple[int, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return code, proc.stderr.read() if proc.stderr else ""


def test_operator_session(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, url, lines = start(data)
    try:
        password = (data / "initial_admin_password").read_text().strip()
        assert any(password in line for line in lines), lines  # printed once ...
        for name in ("initial_admin_password", "jwt_secret"):  # ... and kept private
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
        code, body = call(f"{url}/api/v1/auth/login", "POST", {"username": "admin", "password": password})
        assert code == 200
        token = json.loads(body)["access_token"]
        assert call(f"{url}/api/v1/kv/greeting", "PUT", token=token, raw=b"hello\x00world")[0] == 201
        if shutil.which("curl"):
            out = subprocess.run(["curl", "-s", "-H", f"Authorization: Bearer {token}", f"{url}/api/v1/kv/greeting"],
                                 capture_output=True, timeout=30, check=True).stdout
            assert out == b"hello\x00world"
        code, body = call(f"{url}/nope")
        assert code == 404 and json.loads(body)["error"]["code"] == "not_found"
        assert b"helios_requests_total" in call(f"{url}/metrics")[1]
        assert b"atlas_keys " in call(f"{url}/metrics")[1]  # the embedded engine's metrics too
        # The gateway owns the directory and serves its socket (0600), as atlasd does: `--data` tools
        # work while it runs (issue 13, item 5), a snapshot from cron included.
        assert stat.S_IMODE((data / "atlas.sock").stat().st_mode) == 0o600
        r = subprocess.run([HELIOS, "user", "list", "--json", "--data", str(data)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert [u["username"] for u in json.loads(r.stdout)] == ["admin"]
        r = subprocess.run([HELIOS, "snapshot", "--json", "--data", str(data)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout)["keys"] >= 1, r.stderr
        r = subprocess.run([HELIOS, "user", "add", "carol", "--json", "--url", url, "--token", token],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["roles"] == ["user"]
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "gateway stopped" in err
    assert not (data / "atlas.sock").exists()

    # Second start: no new password, same data, same signing secret.
    proc, url, lines = start(data)
    try:
        assert not any("password" in line for line in lines)
        code, body = call(f"{url}/api/v1/auth/login", "POST", {"username": "admin", "password": password})
        token = json.loads(body)["access_token"]
        assert call(f"{url}/api/v1/kv/greeting", token=token) == (200, b"hello\x00world")
        assert call(f"{url}/api/v1/auth/me", token=token)[0] == 200
    finally:
        code, _ = stop(proc)
    assert code == 0
