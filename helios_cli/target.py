"""Where a tool like `helios user` or `helios job` does its work: a data directory or a gateway.

Both take ``--data DIR`` (the store opened in the command, or reached through
atlasd's socket when atlasd owns the directory) or ``--url URL --token TOKEN``
(a running gateway's API), and ``--json``.  This module holds that shared
part: the options, the choice between them, and the refusal of a directory a
gateway owns (it serves no store socket: its API is the way in).
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from helios_cli.context import CliContext, fail
from helios_core.atlas.datadir import DataDir
from helios_core.auth import Actor
from helios_core.errors import DataDirLockedError, HeliosError
from helios_core.store.base import Store
from helios_core.store.url import open_store

__all__ = ["target_options", "open_data_store", "run_on_target", "GatewayApi", "cli_actor"]

T = TypeVar("T")

# The data directory a tool uses when given neither --data nor --url (nor HELIOS_URL).
DEFAULT_DATA = Path("data")


def target_options(data_help: str, token_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--data / --url / --token / --json, on every subcommand of a tool."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--data", "data_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
                      help=data_help)
        @click.option("--url", metavar="URL", envvar="HELIOS_URL", help="A running gateway (env HELIOS_URL).")
        @click.option("--token", metavar="TOKEN", envvar="HELIOS_TOKEN", help=token_help)
        @click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    return decorate


async def open_data_store(obj: CliContext, data_dir: Path, tool: str, token_hint: str) -> Store:
    """The store of `data_dir`: opened here when free, through atlasd's socket when atlasd owns it."""
    if not data_dir.is_dir():
        raise HeliosError(f"data directory {data_dir} does not exist", code="data_dir")
    owner = DataDir(data_dir).owner()
    if owner is not None and not owner.get("socket"):
        pid = owner.get("pid") or "(unknown pid)"
        what = f"{owner.get('tool')} " if owner.get("tool") else ""
        hint = (f"; use --url {owner['http_url']} --token <{token_hint}> instead" if owner.get("http_url")
                else "; stop it first, or run the service on atlasd so that tools can share the directory")
        raise DataDirLockedError(f"data directory {data_dir} is in use by {what}process {pid}{hint}")
    return await open_store(data=data_dir, config=obj.config, tool=tool)


def _from_env(param: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(param) is click.core.ParameterSource.ENVIRONMENT


def run_on_target(data_dir: Path | None, url: str | None, token: str | None, token_hint: str,
                  local: Callable[[Path], Coroutine[Any, Any, T]],
                  remote: Callable[[str, str], Coroutine[Any, Any, T]]) -> T:
    """Run `local(data_dir)` or `remote(url, token)`; a HeliosError ends the command (exit 1)."""
    if data_dir is not None and url is not None and _from_env("url"):
        url = None  # an exported HELIOS_URL does not stand in the way of an explicit --data
    if data_dir is None and url is None and DEFAULT_DATA.is_dir():
        data_dir = DEFAULT_DATA  # where `make run` and the README's `helios gateway --data ./data` keep it
    if (data_dir is None) == (url is None):
        raise click.UsageError("give exactly one of --data DIR (./data is used when it exists) or --url URL "
                               "(or set HELIOS_URL and HELIOS_TOKEN)")
    try:
        if data_dir is not None:
            return asyncio.run(local(data_dir))
        if not token or url is None:
            raise click.UsageError(f"--url needs --token ({token_hint}; or set HELIOS_TOKEN)")
        return asyncio.run(remote(url, token))
    except HeliosError as e:
        fail(e)


class GatewayApi:
    """A running gateway's HTTP API as a tool calls it: JSON in and out, its errors as HeliosError."""

    def __init__(self, url: str, token: str, agent: str = "helios-cli") -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.agent = agent

    def call_sync(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
            "User-Agent": self.agent})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return orjson.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = orjson.loads(raw)["error"]
                message, code = err["message"], err["code"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message, code = raw.decode(errors="replace")[:200] or e.reason, "http_error"
            raise HeliosError(f"{self.url}: {e.code} {message}", code=code) from None
        except urllib.error.URLError as e:
            raise HeliosError(f"cannot reach the gateway at {self.url}: {e.reason}", code="unreachable") from None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """`call_sync` off the loop (urllib blocks)."""
        return await asyncio.get_running_loop().run_in_executor(None, self.call_sync, method, path, body)

    @staticmethod
    def quote(segment: str) -> str:
        return urllib.parse.quote(segment, safe="")


def cli_actor() -> Actor:
    """Who a tool acting on a data directory is, for the audit log: the local login."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "unknown"
    return Actor(f"cli:{login}", None, "local")
