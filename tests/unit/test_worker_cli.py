"""`helios worker` in process (click's CliRunner): usage errors, and a burst run against a real gateway."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.worker.client import JobsClient
from tests.unit.test_gateway_harness import Api, gateway

pytestmark = pytest.mark.usefixtures("restore_logging")


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["worker", *args], env=env, catch_exceptions=False)


BASE = ("--url", "http://127.0.0.1:1", "--token", "t", "--queue", "q")


@pytest.mark.parametrize("args, message", [
    (("--queue", "q", "--exec", "true"), "export HELIOS_URL="),
    (("--url", "http://x", "--queue", "q", "--exec", "true"), "export HELIOS_TOKEN="),
    (("--url", "http://x", "--token", "t", "--exec", "true"), "Missing option '--queue'"),
    (BASE, "give exactly one of --handler"),
    ((*BASE, "--exec", "true", "--handler", "m:f"), "give exactly one of --handler"),
    ((*BASE, "--handler", "no_such_module_for_worker:run"), "cannot import module 'no_such_module_for_worker'"),
    ((*BASE, "--handler", "json:no_such_function"), "'json' has no attribute 'no_such_function'"),
    ((*BASE, "--handler", "json"), "is not MODULE:FUNCTION"),
    ((*BASE, "--exec", " "), "the command to run is empty"),
    ((*BASE, "--exec", "true", "--visibility", "5 minutes"), "invalid duration '5 minutes'"),
    ((*BASE, "--exec", "true", "--visibility", "500ms"), "must be at least 1s"),
    ((*BASE, "--exec", "true", "--grace", "-1"), "invalid duration"),
    ((*BASE, "--exec", "true", "--queue", "bad:name"), "'bad:name': a queue name is"),
    ((*BASE, "--exec", "true", "--concurrency", "0"), "0 is not in the range"),
])
def test_usage_errors_exit_2_with_a_clear_message(args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(cli, ["worker", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_bad_handler_names_the_option() -> None:
    result = CliRunner().invoke(cli, ["worker", *BASE, "--handler", "no_such_module_for_worker:run"])
    assert "Invalid value for '--handler'" in result.output


def test_help_recommends_the_token_in_the_environment() -> None:
    out = " ".join(invoke("--help").output.split())
    assert "Prefer the env HELIOS_TOKEN" in out and "ps" in out


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    """A real gateway on its own loop in a thread (the command runs its own loop); (api, admin token)."""
    ready = threading.Event()
    stop: dict[str, Any] = {}
    box: dict[str, Any] = {}

    async def serve() -> None:
        async with gateway(tmp_path) as api:
            box["api"], box["token"] = api, await api.admin_token()
            stop["event"] = asyncio.Event()
            stop["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop["event"].wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(30), "gateway did not start"
    try:
        yield box["api"], box["token"]
    finally:
        stop["loop"].call_soon_threadsafe(stop["event"].set)
        thread.join(30)


def test_burst_run_with_env_url_and_token(live: tuple[Api, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    api, token = live
    (tmp_path / "cli_tasks.py").write_text(textwrap.dedent('''
        def upper(payload, ctx):
            return payload.upper()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))

    async def enqueue() -> list[str]:
        async with JobsClient(api.base, token) as jobs:
            return [(await jobs.enqueue("cli", w)).job["id"] for w in ("a", "b", "c")]

    async def results(ids: list[str]) -> list[Any]:
        async with JobsClient(api.base, token) as jobs:
            return [(await jobs.get(i))["result"] for i in ids]

    ids = asyncio.run(enqueue())
    result = invoke("--queue", "cli", "--handler", "cli_tasks:upper", "--burst", "-c", "2",
                    env={"HELIOS_URL": api.base, "HELIOS_TOKEN": token})
    assert result.exit_code == 0, result.output
    assert asyncio.run(results(ids)) == ["A", "B", "C"]


def test_refused_token_exits_1_with_the_reason(live: tuple[Api, str]) -> None:
    api, _ = live
    result = CliRunner().invoke(cli, ["worker", "--url", api.base, "--token", "nope", "-q", "q", "--exec", "true"])
    assert result.exit_code == 1
    assert f"the gateway at {api.base} refused the worker's token" in result.output
