"""`helios user`: every command through --data (embedded) and --url (a real gateway), in process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.atlas.engine import Engine
from helios_core.auth import AuditLog, AuthService, KeyRing, PasswordHasher, Principal
from helios_core.config import AtlasConfig, load_config
from helios_core.errors import AuthenticationError
from helios_core.gateway.app import rate_limit_settings
from helios_core.gateway.bootstrap import signing_key_specs
from helios_core.ratelimit import RateLimiter
from helios_core.store import EmbeddedStore
from tests.integration.test_gateway_process import HELIOS
from tests.integration.test_gateway_process import start as start_gateway
from tests.integration.test_gateway_process import stop as stop_gateway
from tests.unit.test_gateway_harness import Api, gateway

pytestmark = pytest.mark.usefixtures("restore_logging", "empty_cwd")
ENV = {"HELIOS_AUTH__BCRYPT_COST": "4"}


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["user", *args], input=stdin, env=ENV)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def test_add_list_passwd_grant_revoke_disable_remove(data: Path) -> None:
    r = run("add", "alice", "--data", str(data))
    assert r.exit_code == 0, r.output
    assert "created user alice" in r.stdout and "password" in r.stdout and "shown only now" in r.stdout
    r = run("add", "bob", "--role", "readonly", "--role", "user", "--password-stdin", "--json", "--data", str(data),
            stdin="bobs-password\n")
    assert r.exit_code == 0, r.output
    bob = orjson.loads(r.stdout)
    assert bob["roles"] == ["readonly", "user"] and "password" not in bob and "password_hash" not in bob
    r = run("list", "--data", str(data))
    assert r.exit_code == 0 and "alice" in r.stdout and "readonly, user" in r.stdout
    users = orjson.loads(run("list", "--json", "--data", str(data)).stdout)
    assert [u["username"] for u in users] == ["alice", "bob"]
    r = run("passwd", "bob", "--json", "--data", str(data))
    assert r.exit_code == 0 and len(orjson.loads(r.stdout)["password"]) >= 20
    r = run("grant", "alice", "admin", "--data", str(data))
    assert r.exit_code == 0 and "alice has role admin" in r.stdout
    r = run("grant", "alice", "admin", "--data", str(data))
    assert "(already)" in r.stdout
    # The owner has full power, but the last enabled `*` holder stays one (issue 10, item 2).
    for refused in (("revoke", "alice", "admin"), ("disable", "alice"), ("remove", "alice")):
        r = run(*refused, "--data", str(data))
        assert r.exit_code == 1 and "no enabled user holding '*'" in r.stderr, (refused, r.output)
    assert run("grant", "bob", "admin", "--data", str(data)).exit_code == 0
    r = run("revoke", "alice", "admin", "--json", "--data", str(data))
    assert orjson.loads(r.stdout)["roles"] == ["user"]
    assert run("revoke", "bob", "admin", "--data", str(data)).exit_code == 1
    run("grant", "alice", "admin", "--data", str(data))
    r = run("disable", "bob", "--data", str(data))
    assert r.exit_code == 0 and "disabled bob" in r.stdout
    assert orjson.loads(run("list", "--json", "--data", str(data)).stdout)[1]["disabled"] is True
    r = run("remove", "bob", "--data", str(data))
    assert r.exit_code == 0 and "removed user bob" in r.stdout
    r = run("remove", "bob", "--data", str(data))
    assert r.exit_code == 1 and "user 'bob' does not exist" in r.stderr
    # Every change is in the durable audit log, attributed to the CLI.
    eng = Engine.open(data, AtlasConfig())
    try:
        log = [orjson.loads(m) for m in eng.execute([b"ZRANGE", b"audit:{auth}:log", b"0", b"-1"])]
    finally:
        eng.close()
    assert log and all(e["actor"].startswith("cli:") for e in log)


def test_failures_exit_non_zero_with_a_reason(data: Path, tmp_path: Path) -> None:
    r = run("add", "x y", "--data", str(data))
    assert r.exit_code == 1 and "username" in r.stderr
    r = run("add", "carl", "--role", "nope", "--data", str(data))
    assert r.exit_code == 1 and "role(s) nope do not exist" in r.stderr
    r = run("add", "carl", "--password-stdin", "--data", str(data), stdin="short\n")
    assert r.exit_code == 1 and "at least 12" in r.stderr
    for weak, why in (("password1234", "too common"), (" " * 14, "whitespace")):
        r = run("add", "carl", "--password-stdin", "--data", str(data), stdin=weak + "\n")
        assert r.exit_code == 1 and why in r.stderr, r.output
    r = run("list", "--data", str(tmp_path / "missing"))
    assert r.exit_code == 1 and "does not exist" in r.stderr
    assert run("list").exit_code == 2
    assert run("list", "--data", str(data), "--url", "http://x").exit_code == 2
    r = run("list", "--url", "http://127.0.0.1:9")
    assert r.exit_code == 2 and "--token" in r.output
    r = run("list", "--url", "http://127.0.0.1:9", "--token", "t")
    assert r.exit_code == 1 and "cannot reach the gateway" in r.stderr


def test_an_owned_data_dir_is_refused_naming_the_owner(data: Path) -> None:
    eng = Engine.open(data, AtlasConfig(), tool="helios gateway", http_url="http://127.0.0.1:8080")
    try:
        r = run("list", "--data", str(data))
    finally:
        eng.close()
    assert r.exit_code == 1
    assert "in use by helios gateway process" in r.stderr and "--url http://127.0.0.1:8080" in r.stderr


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    """A gateway on its own loop in a thread, so the CLI (which runs its own loop) can call it."""
    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        async with gateway(tmp_path) as api:
            box["api"] = api
            box["token"] = await api.admin_token()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(30)
    yield box["api"], str(box["token"])  # type: ignore[misc]
    stop.set()
    t.join(30)


def test_the_same_commands_through_the_admin_api(live: tuple[Api, str]) -> None:
    api, token = live
    url = ["--url", api.base, "--token", token]
    r = run("add", "dora", "--role", "readonly", "--json", *url)
    assert r.exit_code == 0, r.output
    assert orjson.loads(r.stdout)["roles"] == ["readonly"] and orjson.loads(r.stdout)["password"]
    r = run("add", "dora", *url)
    assert r.exit_code == 1 and "409" in r.stderr and "already exists" in r.stderr
    assert "dora" in run("list", *url).stdout
    r = run("passwd", "dora", "--password-stdin", "--json", *url, stdin="a-new-password\n")
    assert r.exit_code == 0 and "password" not in orjson.loads(r.stdout)
    assert orjson.loads(run("grant", "dora", "user", "--json", *url).stdout)["roles"] == ["readonly", "user"]
    assert orjson.loads(run("revoke", "dora", "user", "--json", *url).stdout)["roles"] == ["readonly"]
    assert orjson.loads(run("disable", "dora", "--json", *url).stdout)["disabled"] is True
    assert run("remove", "dora", *url).exit_code == 0
    r = run("remove", "dora", *url)
    assert r.exit_code == 1 and "404" in r.stderr
    r = run("list", "--url", api.base, "--token", "not-a-token")
    assert r.exit_code == 1 and "401" in r.stderr


# -- API tokens (helios user token) ----------------------------------------------------------


def authenticate_on(data: Path, token: str, now_ms: int | None = None) -> Principal:
    """What a gateway on `data` would make of `token` (same signing key, same store records)."""

    async def main() -> Principal:
        cfg = load_config(env={})
        store = await EmbeddedStore.open(data, cfg.atlas)
        hasher = PasswordHasher(4)
        try:
            keys = KeyRing.from_specs(signing_key_specs((), data), cfg.auth.jwt_algorithms,
                                      issuer=cfg.auth.jwt_issuer, audience=cfg.auth.jwt_audience)
            svc = AuthService(store, cfg.auth, keys, hasher, RateLimiter(store, rate_limit_settings(cfg)),
                              AuditLog(store, 1000))
            return await svc.authenticate(token, now_ms if now_ms is not None else int(time.time() * 1000))
        finally:
            hasher.close()
            await store.close()

    return asyncio.run(main())


def test_token_through_the_data_directory(data: Path) -> None:
    assert run("add", "worker1", "--data", str(data)).exit_code == 0
    r = run("token", "worker1", "--ttl", "2d", "--label", "box 3", "--data", str(data))
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert r.stdout == token + "\n" and token.count(".") == 2  # just the JWT, for $(...)
    assert "session s_" in r.stderr and "expires" in r.stderr and "(box 3)" in r.stderr
    now = int(time.time() * 1000)
    p = authenticate_on(data, token, now + 24 * 3600 * 1000)  # a day on: far past an access token's life
    assert p.username == "worker1" and p.session_id in r.stderr
    with pytest.raises(AuthenticationError):
        authenticate_on(data, token, now + 3 * 24 * 3600 * 1000)
    r = run("token", "worker1", "--json", "--data", str(data))
    assert r.exit_code == 0, r.output
    out = orjson.loads(r.stdout)
    assert set(out) == {"token", "expires_ms", "session_id"}
    assert abs(out["expires_ms"] - (now + 30 * 24 * 3600 * 1000)) < 60_000  # the default --ttl is 30d
    # Changing the password ends both.
    assert run("passwd", "worker1", "--data", str(data)).exit_code == 0
    for t in (token, out["token"]):
        with pytest.raises(AuthenticationError, match="revoked"):
            authenticate_on(data, t)
    eng = Engine.open(data, AtlasConfig())
    try:
        log = [orjson.loads(m) for m in eng.execute([b"ZRANGE", b"audit:{auth}:log", b"0", b"-1"])]
    finally:
        eng.close()
    issued = [e for e in log if e["action"] == "token.issue"]
    assert len(issued) == 2 and all(e["actor"].startswith("cli:") and e["target"] == "worker1" for e in issued)


def test_token_failures(data: Path) -> None:
    assert run("add", "worker1", "--data", str(data)).exit_code == 0
    r = run("token", "worker1", "--ttl", "400d", "--data", str(data))
    assert r.exit_code == 1 and "auth.api_token_max_seconds" in r.stderr and r.stdout == ""
    r = run("token", "worker1", "--ttl", "soon", "--data", str(data))
    assert r.exit_code == 2 and "invalid duration" in r.output
    r = run("token", "worker1", "--ttl", "0", "--data", str(data))
    assert r.exit_code == 2 and "at least 1s" in r.output
    r = run("token", "ghost", "--data", str(data))
    assert r.exit_code == 1 and "does not exist" in r.stderr and r.stdout == ""


def test_token_through_the_admin_api_and_the_environment(live: tuple[Api, str], tmp_path: Path) -> None:
    api, admin = live
    assert run("add", "w2", "--url", api.base, "--token", admin).exit_code == 0
    r = run("token", "w2", "--ttl", "1h", "--label", "ci", "--url", api.base, "--token", admin)
    assert r.exit_code == 0, r.output
    code, body = http_get(api.base + "/api/v1/auth/me", r.stdout.strip())
    assert code == 200 and orjson.loads(body)["username"] == "w2"
    # HELIOS_URL and HELIOS_TOKEN stand in for --url and --token ...
    env = {**ENV, "HELIOS_URL": api.base, "HELIOS_TOKEN": admin}
    r = CliRunner().invoke(cli, ["user", "token", "w2", "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert http_get(api.base + "/api/v1/auth/me", orjson.loads(r.stdout)["token"])[0] == 200
    r = CliRunner().invoke(cli, ["user", "token", "w2", "--ttl", "999d"], env=env)
    assert r.exit_code == 1 and "400" in r.stderr and "auth.api_token_max_seconds" in r.stderr
    # ... and an explicit --data wins over an exported HELIOS_URL.
    other = tmp_path / "other"
    other.mkdir()
    r = CliRunner().invoke(cli, ["user", "add", "local", "--json", "--data", str(other)], env=env)
    assert r.exit_code == 0, r.output
    assert [u["username"] for u in orjson.loads(run("list", "--json", "--data", str(other)).stdout)] == ["local"]


def http_get(url: str, token: str) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
def test_token_for_a_worker_as_an_operator_makes_it(data: Path) -> None:
    """The README's recipe, for real: make a user and a token with the CLI, then use it on `helios gateway`."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}, **ENV}
    subprocess.run([HELIOS, "user", "add", "worker1", "--data", str(data)], env=env, check=True,
                   capture_output=True, timeout=60)
    out = subprocess.run(["sh", "-c", f'export HELIOS_TOKEN=$("{HELIOS}" user token worker1 --ttl 30d '
                                      f'--label worker --data "{data}") && printf %s "$HELIOS_TOKEN"'],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout
    assert token.count(".") == 2 and "session s_" in out.stderr
    proc, url, _ = start_gateway(data)
    try:
        code, body = http_get(url + "/api/v1/auth/me", token)
        assert code == 200 and orjson.loads(body)["username"] == "worker1"
    finally:
        assert stop_gateway(proc)[0] == 0
