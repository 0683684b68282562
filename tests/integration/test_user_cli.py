"""`helios user`: every command through --data (embedded) and --url (a real gateway), in process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from tests.unit.test_gateway_harness import Api, gateway

pytestmark = pytest.mark.usefixtures("restore_logging")
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
    r = run("revoke", "alice", "admin", "--json", "--data", str(data))
    assert orjson.loads(r.stdout)["roles"] == ["user"]
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
        log = [orjson.loads(m) for m in eng.execute([b"ZRANGE", b"audit:log", b"0", b"-1"])]
    finally:
        eng.close()
    assert log and all(e["actor"].startswith("cli:") for e in log)


def test_failures_exit_non_zero_with_a_reason(data: Path, tmp_path: Path) -> None:
    r = run("add", "x y", "--data", str(data))
    assert r.exit_code == 1 and "username" in r.stderr
    r = run("add", "carl", "--role", "nope", "--data", str(data))
    assert r.exit_code == 1 and "role(s) nope do not exist" in r.stderr
    r = run("add", "carl", "--password-stdin", "--data", str(data), stdin="short\n")
    assert r.exit_code == 1 and "at least 8" in r.stderr
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
