"""`helios ratelimit`: show, change or reset the gateway's request rate limits.

The limits in effect are the configuration's (``ratelimit.*``) with the
durable overrides an admin set (``PUT /admin/ratelimit``) on top.  An override
can lock every user out, the admin included (login too is rate-limited), and
then the admin API is no way back: so these commands work on the data
directory as well.

- ``--data DIR``: the store opened here (the gateway stopped), or through
  atlasd's socket when atlasd owns the directory;
- ``--url URL --token TOKEN``: the gateway's ``/admin/ratelimit``
  (``HELIOS_URL``/``HELIOS_TOKEN`` work too), for a token holding ``admin:ratelimit``.

``reset`` removes every override: the configured defaults apply again, on the
gateway's next request (no restart needed with ``--url`` or atlasd).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from helios_cli.context import CliContext, pass_cli
from helios_cli.target import GatewayApi, cli_actor, open_data_store, run_on_target
from helios_cli.target import target_options as shared_target_options
from helios_core.auth import AuditLog
from helios_core.auth.migrate import ensure_current
from helios_core.gateway.app import rate_limit_settings
from helios_core.ratelimit import RateLimiter

__all__ = ["ratelimit"]

T = TypeVar("T")
TOKEN_HINT = "an access token holding admin:ratelimit"


class Limits(Protocol):
    """Each returns the state afterwards: {"enabled", "effective", "overrides"} (GET /admin/ratelimit)."""

    async def show(self) -> dict[str, Any]: ...
    async def change(self, change: dict[str, Any]) -> dict[str, Any]: ...


def _removal(overrides: dict[str, Any]) -> dict[str, Any]:
    """The change that removes every override in `overrides` (null removes an entry)."""
    return {"default": None, **{s: dict.fromkeys(overrides.get(s) or {}) for s in ("roles", "clients")}}


class StoreLimits:
    """`RateLimiter` on the data directory's store; changes are audited as the gateway's are."""

    def __init__(self, limiter: RateLimiter, enabled: bool, audit: AuditLog) -> None:
        self.limiter = limiter
        self.enabled = enabled
        self.audit = audit

    async def show(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "effective": (await self.limiter.settings()).to_json(),
                "overrides": await self.limiter.overrides()}

    async def change(self, change: dict[str, Any]) -> dict[str, Any]:
        await self.limiter.update_overrides(change)
        now = int(datetime.now(UTC).timestamp() * 1000)
        await self.audit.record(now, "ratelimit.update", cli_actor(), detail=change)
        return await self.show()


class ApiLimits:
    """The gateway's /admin/ratelimit."""

    def __init__(self, url: str, token: str) -> None:
        self.api = GatewayApi(url, token, agent="helios-ratelimit-cli")

    async def show(self) -> dict[str, Any]:
        return await self.api.call("GET", "/admin/ratelimit")  # type: ignore[no-any-return]

    async def change(self, change: dict[str, Any]) -> dict[str, Any]:
        return await self.api.call("PUT", "/admin/ratelimit", change)  # type: ignore[no-any-return]


async def _with_store(obj: CliContext, data_dir: Path, work: Callable[[Limits], Awaitable[T]]) -> T:
    cfg = obj.config
    store = await open_data_store(obj, data_dir, "helios ratelimit", TOKEN_HINT)
    try:
        await ensure_current(store)  # auth keys of the older names moved (helios_core/auth/migrate.py)
        limiter = RateLimiter(store, rate_limit_settings(cfg))
        return await work(StoreLimits(limiter, cfg.ratelimit.enabled, AuditLog(store, cfg.auth.audit_max_entries)))
    finally:
        await store.close()


def _run(obj: CliContext, data_dir: Path | None, url: str | None, token: str | None,
         work: Callable[[Limits], Awaitable[T]]) -> T:
    async def remote(url: str, token: str) -> T:
        return await work(ApiLimits(url, token))

    return run_on_target(data_dir, url, token, TOKEN_HINT, lambda d: _with_store(obj, d, work), remote)


target_options = shared_target_options("Data directory (the gateway stopped, or owned by atlasd).",
                                        "For --url: " + TOKEN_HINT + " (env HELIOS_TOKEN).")


def _policy(text: str, option: str, named: bool) -> tuple[str | None, dict[str, int]]:
    """ "LIMIT SECONDS" (or "NAME LIMIT SECONDS") as (name, {"limit", "window"})."""
    parts = text.split()
    want = "NAME LIMIT SECONDS" if named else "LIMIT SECONDS"
    if len(parts) != (3 if named else 2) or not all(p.isdigit() and int(p) >= 1 for p in parts[-2:]):
        raise click.BadParameter(f"expected \"{want}\" with LIMIT and SECONDS whole numbers >= 1, got {text!r}",
                                 param_hint=option)
    return (parts[0] if named else None), {"limit": int(parts[-2]), "window": int(parts[-1])}


def _show(state: dict[str, Any], as_json: bool, note: str = "") -> None:
    if as_json:
        click.echo(orjson.dumps(state).decode())
        return
    c = Console(highlight=False, soft_wrap=True)
    if note:
        c.print(note)
    if not state.get("enabled", True):
        c.print("rate limiting is off (ratelimit.enabled: false); these limits apply once it is on")
    eff, over = state["effective"], state.get("overrides") or {}
    table = Table("applies to", "limit", "per seconds", "from")
    rows = [("default", "default", eff["default"], over.get("default"))]
    rows += [("roles", f"role {k}", v, (over.get("roles") or {}).get(k)) for k, v in eff["roles"].items()]
    rows += [("clients", k, v, (over.get("clients") or {}).get(k)) for k, v in eff["clients"].items()]
    for _, who, p, o in rows:
        table.add_row(who, str(p["limit"]), str(p["window"]), "override" if o else "config")
    c.print(table)


@click.group("ratelimit", short_help="Show, change or reset the gateway's request rate limits.")
def ratelimit() -> None:
    """The gateway's rate limits through --data DIR (gateway stopped) or --url URL --token TOKEN.

    With --data, a limit that locks every user out (the admin too) can be
    undone from the shell: `helios ratelimit reset --data DIR`.
    """


@ratelimit.command("show")
@target_options
@pass_cli
def show(obj: CliContext, data_dir: Path | None, url: str | None, token: str | None, as_json: bool) -> None:
    """The limits in effect, and which come from an override."""
    _show(_run(obj, data_dir, url, token, lambda lim: lim.show()), as_json)


@ratelimit.command("set")
@click.option("--default", "default", metavar='"LIMIT SECONDS"', help="Every client's limit unless named below.")
@click.option("--role", "roles", multiple=True, metavar='"ROLE LIMIT SECONDS"',
              help="A role's limit (repeatable); a user gets the largest of their roles'.")
@click.option("--client", "clients", multiple=True, metavar='"user:NAME|ip:ADDR LIMIT SECONDS"',
              help="One client's limit (repeatable).")
@click.option("--unset-role", "unset_roles", multiple=True, metavar="ROLE", help="Remove a role's override.")
@click.option("--unset-client", "unset_clients", multiple=True, metavar="CLIENT",
              help="Remove a client's override.")
@target_options
@pass_cli
def set_(obj: CliContext, default: str | None, roles: tuple[str, ...], clients: tuple[str, ...],
         unset_roles: tuple[str, ...], unset_clients: tuple[str, ...], data_dir: Path | None, url: str | None,
         token: str | None, as_json: bool) -> None:
    """Override limits (durable: kept in the store, applied at the gateway's next request).

    Example: helios ratelimit set --default "600 60" --role "admin 6000 60" --data ./data
    """
    change: dict[str, Any] = {}
    if default is not None:
        change["default"] = _policy(default, "--default", named=False)[1]
    for section, given, unset, option in (("roles", roles, unset_roles, "--role"),
                                          ("clients", clients, unset_clients, "--client")):
        entries: dict[str, Any] = dict.fromkeys(unset)
        for text in given:
            name, policy = _policy(text, option, named=True)
            entries[str(name)] = policy
        if entries:
            change[section] = entries
    if not change:
        raise click.UsageError("nothing to set: give --default, --role, --client, --unset-role or --unset-client")
    _show(_run(obj, data_dir, url, token, lambda lim: lim.change(change)), as_json, "rate limits changed")


@ratelimit.command("reset")
@target_options
@pass_cli
def reset(obj: CliContext, data_dir: Path | None, url: str | None, token: str | None, as_json: bool) -> None:
    """Remove every override: the configured limits (ratelimit.*) apply again."""

    async def work(lim: Limits) -> dict[str, Any]:
        return await lim.change(_removal((await lim.show()).get("overrides") or {}))

    _show(_run(obj, data_dir, url, token, work), as_json, "rate limits reset to the configured defaults")
