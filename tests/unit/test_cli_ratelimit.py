"""`helios ratelimit show|set|reset`, in process: on a data directory and through the admin API."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig
from tests.integration.test_user_cli import live  # noqa: F401  (the fixture: a gateway in a thread)
from tests.unit.test_gateway_harness import Api

pytestmark = pytest.mark.usefixtures("restore_logging")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["ratelimit", *args], env={"HELIOS_AUTH__BCRYPT_COST": "4"})


def state(r: Result) -> dict[str, object]:
    assert r.exit_code == 0, r.output
    return orjson.loads(r.stdout)  # type: ignore[no-any-return]


def test_show_set_reset_on_a_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    d = ["--data", str(data)]
    shown = state(run("show", "--json", *d))
    assert shown["effective"] == {"default": {"limit": 600, "window": 60},
                                  "roles": {"worker": {"limit": 60000, "window": 60}}, "clients": {}}
    assert shown["overrides"] == {} and shown["enabled"] is True
    r = run("set", "--default", "1 86400", "--role", "admin 2 60", "--client", "ip:10.0.0.5 3 60", *d)
    assert r.exit_code == 0, r.output
    assert "rate limits changed" in r.stdout and "86400" in r.stdout and "override" in r.stdout
    shown = state(run("show", "--json", *d))
    assert shown["effective"]["default"] == {"limit": 1, "window": 86400}  # type: ignore[index]
    assert shown["overrides"]["roles"] == {"admin": {"limit": 2, "window": 60}}  # type: ignore[index]
    shown = state(run("set", "--unset-client", "ip:10.0.0.5", "--json", *d))
    assert shown["effective"]["clients"] == {}  # type: ignore[index]
    r = run("reset", *d)
    assert r.exit_code == 0 and "reset to the configured defaults" in r.stdout, r.output
    shown = state(run("show", "--json", *d))
    assert shown["effective"]["default"] == {"limit": 600, "window": 60}  # type: ignore[index]
    assert shown["effective"]["roles"] == {"worker": {"limit": 60000, "window": 60}}  # type: ignore[index]
    # Audited like the admin API's changes, attributed to the shell user.
    eng = Engine.open(data, AtlasConfig())
    try:
        log = [orjson.loads(m) for m in eng.execute([b"ZRANGE", b"audit:{auth}:log", b"0", b"-1"])]
    finally:
        eng.close()
    assert [e["action"] for e in log] == ["ratelimit.update"] * 3 and log[0]["actor"].startswith("cli:")


@pytest.mark.parametrize(("args", "words"), [
    (["set", "--default", "600"], ['--default', 'expected "LIMIT SECONDS"', "'600'"]),
    (["set", "--default", "0 60"], ["--default", ">= 1"]),
    (["set", "--role", "admin 10"], ["--role", 'expected "NAME LIMIT SECONDS"']),
    (["set"], ["nothing to set"]),
    (["show"], ["give exactly one of --data DIR", "or --url URL", "HELIOS_URL"]),
])
def test_bad_input_is_a_usage_error_naming_the_option(tmp_path: Path, args: list[str], words: list[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./data here
    extra = [] if args == ["show"] else ["--data", str(tmp_path)]
    r = run(*args, *extra)
    assert r.exit_code == 2, r.output
    for w in words:
        assert w in r.stderr, (w, r.stderr)


def test_without_data_or_url_the_default_data_dir_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the README shows it: `make run` keeps its data in ./data, and tools find it there."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir(mode=0o700)
    r = run("show", "--json")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "data" / "appendonly.aof").exists() or any((tmp_path / "data").iterdir())


def test_a_client_name_the_api_refuses_is_an_error(tmp_path: Path) -> None:
    r = run("set", "--client", "bob 1 60", "--data", str(tmp_path))
    assert r.exit_code == 1 and "must start with 'user:' or 'ip:'" in r.stderr, r.output


def test_the_same_commands_through_the_admin_api(live: tuple[Api, str]) -> None:  # noqa: F811
    api, token = live
    url = ["--url", api.base, "--token", token]
    shown = state(run("set", "--role", "readonly 5 60", "--json", *url))
    assert shown["effective"]["roles"]["readonly"] == {"limit": 5, "window": 60}  # type: ignore[index]
    assert state(run("show", "--json", *url))["overrides"]["roles"] == {  # type: ignore[index]
        "readonly": {"limit": 5, "window": 60}}
    shown = state(run("reset", "--json", *url))
    assert "readonly" not in shown["effective"]["roles"]  # type: ignore[operator]
    r = run("show", "--url", api.base, "--token", "not-a-token")
    assert r.exit_code == 1 and "401" in r.stderr, r.output
