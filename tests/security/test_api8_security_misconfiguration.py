"""API8:2023 Security Misconfiguration: what another local user can reach, and what the logs keep.

Issue 10, items 3, 4 and 9b, tried as an attacker on the same host would:

- atlasd's TCP port needs a password (generated into DATA/atlasd.password
  when none is set); the unix socket's file mode stays its password; guessing
  is slowed and logged.
- every file HELIOS writes is its owner's alone (umask 077, directories 0700,
  files 0600), and a directory others can read is served with a warning.
- the gateway never logs tokens or cookies, and escapes what it logs.

A durable rate limit that locks everyone out has a way back:
An admin's override (PUT /admin/ratelimit) is kept in the store and applies to
every client, logins and the admin included: one mistaken "1 per day" and the
admin API can no longer undo it.  `helios ratelimit reset --data DIR` (the
gateway stopped) restores the configured limits from the shell.  Run the way
an operator would: a real gateway process, the CLI as a process.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import redis

from tests.integration.test_atlasd_support import HELIOS, Daemon, running_daemon
from tests.integration.test_gateway_process import call, start, stop

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def redis_cli(*args: str) -> str:
    out = subprocess.run(["redis-cli", *args], capture_output=True, text=True, timeout=30)
    return out.stdout + out.stderr


def raw_tcp(port: int, data: bytes, wait: float = 2.0) -> bytes:
    """Send `data`, read until the server closes (b'<EOF>' marks it) or goes quiet for `wait` s."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out + b"<EOF>"
                out += chunk
        except TimeoutError:
            return out


# -- item 3: no passwordless TCP -----------------------------------------------------------

def test_tcp_needs_the_generated_password_and_the_documented_way_in_works(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        # Another local user's view: the port is open, and nothing works without the password.
        refused = redis_cli("-p", str(d.port), "set", "a", "1")
        assert "NOAUTH" in refused, refused
        for cmd in (["config", "set", "appendfsync", "no"], ["flushall"], ["shutdown"]):
            assert "NOAUTH" in redis_cli("-p", str(d.port), *cmd)
        secret = d.data / "atlasd.password"
        assert mode(secret) == 0o600 and mode(d.data) == 0o700
        password = secret.read_text().strip()
        assert len(password) >= 32
        assert redis_cli("-p", str(d.port), "-a", password, "--no-auth-warning", "set", "a", "1").strip() == "OK"
        # The owner's socket needs no password: its file mode is the authority.
        assert redis_cli("-s", str(d.socket_path), "get", "a").strip() == "1"
        assert mode(d.socket_path) == 0o600
    again = Daemon(tmp_path / "data").start()  # a restart keeps the password
    try:
        assert (tmp_path / "data" / "atlasd.password").read_text().strip() == password
        with again.client() as r:
            assert r.get("a") == b"1"
    finally:
        again.kill()


@pytest.mark.slow
def test_failed_auth_is_slowed_then_the_connection_is_closed(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as d:
        assert d.password is not None
        right = b"AUTH " + d.password.encode() + b"\r\n"
        # Ten failures close the connection: no 146,000 guesses a second on one socket.  Pipelined
        # guesses are read one at a time, each after the wait the failure before it earned.
        got = raw_tcp(d.port, b"AUTH guess\r\n" * 12 + right, wait=5.0)
        assert got.count(b"-WRONGPASS") == 10 and got.endswith(b"<EOF>"), got
        # A client that waits out the delay is checked again.
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
            s.sendall(b"AUTH nope\r\n")
            assert s.recv(100).startswith(b"-WRONGPASS")
            s.sendall(right + b"PING\r\n")
            got = b""
            while not got.endswith(b"+PONG\r\n"):
                chunk = s.recv(100)
                assert chunk, got
                got += chunk
            assert got == b"+OK\r\n+PONG\r\n"
        log = d.log()
        assert "AUTH failed" in log
        assert log.count("AUTH failed") < 11  # rate-limited: 11 failures over ~5 s, not a line each
        assert d.password not in log


def test_protected_mode_holds_with_a_generated_password(tmp_path: Path) -> None:
    """Other hosts are still refused while the password is atlasd's own (not one the operator chose)."""
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("no non-loopback address on this host")
    with running_daemon(tmp_path, "--bind", f"127.0.0.1 {ip}") as d:
        got = raw_tcp_ip(ip, d.port, b"PING\r\n")
        assert got.startswith(b"-DENIED") and b"generated" in got, got


def _non_loopback_ip() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else str(ip)


def raw_tcp_ip(ip: str, port: int, data: bytes) -> bytes:
    with socket.create_connection((ip, port), timeout=5) as s:
        s.sendall(data)
        return s.recv(4096)


# -- item 4: files are the owner's alone ----------------------------------------------------

def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}


def _private(data: Path) -> dict[str, int]:
    """Every path under data whose mode lets group or others in (empty when all are private)."""
    leaks = {str(p): mode(p) for p in [data, *data.rglob("*")] if mode(p) & 0o077 and not p.is_symlink()}
    return leaks


def test_atlasd_files_are_owner_only(tmp_path: Path) -> None:
    os.umask(0o022)  # what a login shell gives: the daemon must not inherit it
    with running_daemon(tmp_path) as d:
        with redis.Redis(unix_socket_path=str(d.socket_path), socket_timeout=30) as r:
            r.set("secret", "value")
            r.save()
        assert (d.data / "dump.rdb").exists()
        assert _private(d.data) == {}


def test_cli_snapshot_output_and_embedded_files_are_owner_only(tmp_path: Path) -> None:
    os.umask(0o022)
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    out = subprocess.run([HELIOS, "user", "add", "alice", "--data", str(data), "--password-stdin"],
                         input="correct-horse-battery-staple\n", capture_output=True, text=True, env=_env(),
                         timeout=60)
    assert data.is_dir(), out.stderr
    copy = tmp_path / "backup.rdb"
    out = subprocess.run([HELIOS, "snapshot", "--data", str(data), "--output", str(copy)], capture_output=True,
                         text=True, env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert mode(copy) == 0o600
    assert _private(data) == {}


def test_gateway_files_are_owner_only(tmp_path: Path) -> None:
    os.umask(0o022)
    proc, _url, _lines = start(tmp_path / "gw")
    try:
        assert _private(tmp_path / "gw") == {}
    finally:
        stop(proc)


def test_a_directory_others_can_read_is_named_with_the_fix(tmp_path: Path) -> None:
    data = tmp_path / "open"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    out = subprocess.run([HELIOS, "snapshot", "--data", str(data)], capture_output=True, text=True, env=_env(),
                         timeout=60)
    assert f"chmod 700 {data}" in out.stderr, out.stderr


# -- item 9b: no secrets in the logs, and what is logged is escaped -------------------------

def test_gateway_logs_no_tokens_and_escapes_what_it_logs(tmp_path: Path) -> None:
    proc, url, _lines = start(tmp_path / "gw")
    url = url.rstrip("/")
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJlLXNlY3JldA"
    try:
        # A header with a bad byte: Tornado's refusal quotes the value.
        for header in (f"Authorization: Bearer {token}\x01", f"Cookie: session={token}\x01",
                       f"X-Api-Key: {token}\x01"):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode("latin-1"))
                assert s.recv(4096).startswith(b"HTTP/1.1 400")
        # A path with control characters and a fake log line in it.
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /api/v1/kv/a%0d%0aFAKE%1b[31m HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + token.encode() + b"\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 401")
        code, _ = call(url + "/api/v1/kv/x", token=token)
        assert code == 401
    finally:
        _code, err = stop(proc)
    assert "c2VjcmV0LXBheWxvYWQ" not in err and "c2lnbmF0dXJlLXNlY3JldA" not in err, err
    assert "\x1b" not in err and "\r" not in err
    assert not any(line.startswith("FAKE") for line in err.splitlines())



# -- A durable rate limit that locks everyone out has a way back --------------

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
