"""`helios user`: manage gateway accounts, on a data directory or through a running gateway.

Two ways to reach the users, one set of commands:

- ``--data DIR``: open the directory's store in this process (no service may
  own it; if one does, the error names it and how to use ``--url`` instead);
- ``--url URL --token TOKEN``: the gateway's admin API (``HELIOS_URL`` and
  ``HELIOS_TOKEN`` work too), with an admin's access token.  An explicit
  ``--data`` wins over an exported ``HELIOS_URL``.

Human output is rich tables; ``--json`` prints JSON for scripts.  Exit status
is 0 on success, 1 on failure (reason on stderr), 2 on a usage error.
`helios user token` prints only the token on stdout (hints go to stderr), so
``export HELIOS_TOKEN=$(helios user token worker1 --data ./data)`` works.
"""

from __future__ import annotations

import math
import sys
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
from helios_core.auth import AuditLog, AuthService, KeyRing, PasswordHasher
from helios_core.auth.migrate import ensure_current
from helios_core.auth.tokens import generate_secret
from helios_core.errors import HeliosError, InvalidInputError
from helios_core.gateway.app import rate_limit_settings
from helios_core.gateway.bootstrap import signing_key_specs
from helios_core.ratelimit import RateLimiter
from helios_core.worker.config import parse_duration

__all__ = ["user"]

T = TypeVar("T")


class Users(Protocol):
    """What every command needs; implemented on a Store and over the admin API."""

    async def add(self, name: str, roles: list[str], password: str | None) -> dict[str, Any]: ...
    async def list(self) -> list[dict[str, Any]]: ...
    async def passwd(self, name: str, password: str | None) -> dict[str, Any]: ...
    async def grant(self, name: str, role: str) -> dict[str, Any]: ...
    async def revoke(self, name: str, role: str) -> dict[str, Any]: ...
    async def disable(self, name: str) -> dict[str, Any]: ...
    async def remove(self, name: str) -> None: ...
    async def issue_token(self, name: str, ttl_s: int, label: str | None) -> dict[str, Any]: ...


class StoreUsers:
    """`AuthService` on an embedded store opened for the duration of one command."""

    def __init__(self, service: AuthService) -> None:
        self.svc = service
        self.actor = cli_actor()

    @staticmethod
    def now() -> int:
        return int(datetime.now(UTC).timestamp() * 1000)

    async def add(self, name: str, roles: list[str], password: str | None) -> dict[str, Any]:
        u, generated = await self.svc.create_user(name, password, roles, self.now(), self.actor)
        out: dict[str, Any] = await self.svc.describe(u)
        if generated:
            out["password"] = generated
        return out

    async def list(self) -> list[dict[str, Any]]:
        return await self.svc.list_users()

    async def passwd(self, name: str, password: str | None) -> dict[str, Any]:
        u, generated = await self.svc.set_password(name, password, self.now(), self.actor)
        out: dict[str, Any] = await self.svc.describe(u)
        if generated:
            out["password"] = generated
        return out

    async def grant(self, name: str, role: str) -> dict[str, Any]:
        changed = await self.svc.grant(name, role, self.now(), self.actor)
        return {**await self.svc.describe(await self.svc.users.require(name)), "changed": changed}

    async def revoke(self, name: str, role: str) -> dict[str, Any]:
        changed = await self.svc.revoke(name, role, self.now(), self.actor)
        return {**await self.svc.describe(await self.svc.users.require(name)), "changed": changed}

    async def disable(self, name: str) -> dict[str, Any]:
        return await self.svc.describe(await self.svc.set_disabled(name, True, self.now(), self.actor))

    async def remove(self, name: str) -> None:
        await self.svc.remove_user(name, self.now(), self.actor)

    async def issue_token(self, name: str, ttl_s: int, label: str | None) -> dict[str, Any]:
        return (await self.svc.issue_api_token(name, ttl_s, label, self.now(), self.actor)).to_json()


class ApiUsers(GatewayApi):
    """The gateway's /admin API."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(url, token, agent="helios-user-cli")

    async def add(self, name: str, roles: list[str], password: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"username": name, "roles": roles}
        if password is not None:
            body["password"] = password
        return await self.call("POST", "/admin/users", body)  # type: ignore[no-any-return]

    async def list(self) -> list[dict[str, Any]]:
        return (await self.call("GET", "/admin/users"))["users"]  # type: ignore[no-any-return]

    async def passwd(self, name: str, password: str | None) -> dict[str, Any]:
        body = {"password": password} if password is not None else {}
        return await self.call("POST", f"/admin/users/{self.quote(name)}/password", body)  # type: ignore[no-any-return]

    async def grant(self, name: str, role: str) -> dict[str, Any]:
        return await self.call("PUT", f"/admin/users/{self.quote(name)}/roles/{self.quote(role)}")  # type: ignore[no-any-return]

    async def revoke(self, name: str, role: str) -> dict[str, Any]:
        return await self.call("DELETE", f"/admin/users/{self.quote(name)}/roles/{self.quote(role)}")  # type: ignore[no-any-return]

    async def disable(self, name: str) -> dict[str, Any]:
        return await self.call("PATCH", f"/admin/users/{self.quote(name)}", {"disabled": True})  # type: ignore[no-any-return]

    async def remove(self, name: str) -> None:
        await self.call("DELETE", f"/admin/users/{self.quote(name)}")

    async def issue_token(self, name: str, ttl_s: int, label: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"ttl_seconds": ttl_s}
        if label is not None:
            body["label"] = label
        return await self.call("POST", f"/admin/users/{self.quote(name)}/tokens", body)  # type: ignore[no-any-return]


def _key_ring(obj: CliContext, data_dir: Path, signing: bool) -> KeyRing:
    a = obj.config.auth
    if not signing:  # this command issues no tokens; AuthService only needs a key ring to exist
        return KeyRing.from_specs([f"cli={generate_secret()}"], ("HS256",), issuer=a.jwt_issuer,
                                  audience=a.jwt_audience)
    # The gateway's own keys (auth.jwt_keys, else DATA/jwt_secret, made here if this
    # directory has none yet), so that the gateway accepts what we sign.
    try:
        specs = signing_key_specs(a.jwt_keys, data_dir)
    except OSError as e:
        raise HeliosError(f"cannot read the signing key in {data_dir}: {e.strerror}", code="signing_key") from None
    return KeyRing.from_specs(specs, a.jwt_algorithms, issuer=a.jwt_issuer, audience=a.jwt_audience,
                              leeway_s=a.clock_skew_seconds)


TOKEN_HINT = "an admin's access token"


async def _with_store(obj: CliContext, data_dir: Path, work: Callable[[Users], Awaitable[T]],
                      signing: bool = False) -> T:
    cfg = obj.config
    store = await open_data_store(obj, data_dir, "helios user", TOKEN_HINT)
    hasher = PasswordHasher(cfg.auth.bcrypt_cost)
    try:
        keys = _key_ring(obj, data_dir, signing)
        svc = AuthService(store, cfg.auth, keys, hasher, RateLimiter(store, rate_limit_settings(cfg)),
                          AuditLog(store, cfg.auth.audit_max_entries))
        await ensure_current(store)  # auth keys of the older names moved (helios_core/auth/migrate.py)
        await svc.roles.seed()
        return await work(StoreUsers(svc))
    finally:
        hasher.close()
        await store.close()


def _run(obj: CliContext, data_dir: Path | None, url: str | None, token: str | None,
         work: Callable[[Users], Awaitable[T]], signing: bool = False) -> T:
    async def remote(url: str, token: str) -> T:
        return await work(ApiUsers(url, token))

    return run_on_target(data_dir, url, token, TOKEN_HINT, lambda d: _with_store(obj, d, work, signing), remote)


target_options = shared_target_options("Data directory (free, or owned by atlasd).",
                                       "An admin's access token for --url (env HELIOS_TOKEN).")


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _show_user(u: dict[str, Any], as_json: bool, note: str = "") -> None:
    if as_json:
        click.echo(orjson.dumps(u).decode())
        return
    c = _out()
    if note:
        c.print(note)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("username", u["username"])
    table.add_row("id", u["id"])
    table.add_row("roles", ", ".join(u.get("roles") or []) or "-")
    table.add_row("disabled", "yes" if u.get("disabled") else "no")
    table.add_row("created", _iso(u.get("created_ms")))
    c.print(table)
    if u.get("password"):
        c.print(f"\n[bold]password[/bold] {u['password']}\n(generated; shown only now)")


def _read_password(stdin: bool) -> str | None:
    if not stdin:
        return None
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.UsageError("--password-stdin: nothing on stdin")
    return line


@click.group("user", short_help="Manage gateway users (add, list, passwd, grant, revoke, disable, remove, "
                                 "token).")
def user() -> None:
    """Manage gateway users through --data DIR (embedded) or --url URL --token TOKEN (admin API)."""


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, metavar="ROLE", help="Role to give (repeatable; default: user).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin instead of generating one.")
@target_options
@pass_cli
def add(obj: CliContext, name: str, roles: tuple[str, ...], password_stdin: bool, data_dir: Path | None,
        url: str | None, token: str | None, as_json: bool) -> None:
    """Create user NAME; without --password-stdin a password is generated and printed once."""
    password = _read_password(password_stdin)
    u = _run(obj, data_dir, url, token, lambda users: users.add(name, list(roles) or ["user"], password))
    _show_user(u, as_json, f"created user {u['username']}")


@user.command("list")
@target_options
@pass_cli
def list_(obj: CliContext, data_dir: Path | None, url: str | None, token: str | None, as_json: bool) -> None:
    """List users and their roles."""
    users = _run(obj, data_dir, url, token, lambda u: u.list())
    if as_json:
        click.echo(orjson.dumps(users).decode())
        return
    table = Table("username", "roles", "disabled", "created", "id")
    for u in users:
        table.add_row(u["username"], ", ".join(u.get("roles") or []) or "-", "yes" if u["disabled"] else "no",
                      _iso(u.get("created_ms")), u["id"])
    _out().print(table)


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin instead of generating one.")
@target_options
@pass_cli
def passwd(obj: CliContext, name: str, password_stdin: bool, data_dir: Path | None, url: str | None,
           token: str | None, as_json: bool) -> None:
    """Set NAME's password (generated and printed once unless --password-stdin); ends their sessions."""
    password = _read_password(password_stdin)
    u = _run(obj, data_dir, url, token, lambda users: users.passwd(name, password))
    _show_user(u, as_json, f"password of {u['username']} changed; their sessions are revoked")


@user.command("grant")
@click.argument("name")
@click.argument("role")
@target_options
@pass_cli
def grant(obj: CliContext, name: str, role: str, data_dir: Path | None, url: str | None, token: str | None,
          as_json: bool) -> None:
    """Give NAME the role ROLE."""
    u = _run(obj, data_dir, url, token, lambda users: users.grant(name, role))
    _show_user(u, as_json, f"{u['username']} has role {role}" + ("" if u.get("changed") else " (already)"))


@user.command("revoke")
@click.argument("name")
@click.argument("role")
@target_options
@pass_cli
def revoke(obj: CliContext, name: str, role: str, data_dir: Path | None, url: str | None, token: str | None,
           as_json: bool) -> None:
    """Take the role ROLE away from NAME."""
    u = _run(obj, data_dir, url, token, lambda users: users.revoke(name, role))
    _show_user(u, as_json, f"{u['username']} no longer has role {role}" + ("" if u.get("changed") else
                                                                          " (did not have it)"))


@user.command("disable")
@click.argument("name")
@target_options
@pass_cli
def disable(obj: CliContext, name: str, data_dir: Path | None, url: str | None, token: str | None,
            as_json: bool) -> None:
    """Disable NAME: logins fail and their sessions are revoked at once."""
    u = _run(obj, data_dir, url, token, lambda users: users.disable(name))
    _show_user(u, as_json, f"disabled {u['username']}; their sessions are revoked")


@user.command("remove")
@click.argument("name")
@target_options
@pass_cli
def remove(obj: CliContext, name: str, data_dir: Path | None, url: str | None, token: str | None,
           as_json: bool) -> None:
    """Delete NAME, their roles and their sessions."""
    _run(obj, data_dir, url, token, lambda users: users.remove(name))
    if as_json:
        click.echo(orjson.dumps({"removed": name}).decode())
    else:
        _out().print(f"removed user {name}")


class _Ttl(click.ParamType):
    """A token lifetime: 30d, 12h, 90m, 45s or plain seconds -> whole seconds (at least 1)."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            seconds = math.ceil(parse_duration(str(value)))
        except InvalidInputError as e:
            self.fail(e.message, param, ctx)
        if seconds < 1:
            self.fail("must be at least 1s", param, ctx)
        return seconds


@user.command("token")
@click.argument("name")
@click.option("--ttl", "ttl_s", type=_Ttl(), default="30d", show_default=True, metavar="DURATION",
              help="Lifetime (30d, 12h, 90m or seconds); at most auth.api_token_max_seconds (365d).")
@click.option("--label", metavar="TEXT", help="What the token is for; shown in NAME's session list.")
@target_options
@pass_cli
def token_(obj: CliContext, name: str, ttl_s: int, label: str | None, data_dir: Path | None, url: str | None,
           token: str | None, as_json: bool) -> None:
    """Issue an API token for NAME: an access token that lives for --ttl, e.g. for `helios worker`.

    Only the token goes to stdout (with --json: token, expires_ms, session_id),
    so scripts can capture it:

        export HELIOS_TOKEN=$(helios user token worker1 --data ./data)

    The token is a session of NAME's without a refresh token: it ends when that
    session is revoked, NAME's password changes, or NAME is disabled or removed.
    With --data it is signed with the gateway's keys (auth.jwt_keys of the same
    configuration, else DATA/jwt_secret).
    """
    t = _run(obj, data_dir, url, token, lambda users: users.issue_token(name, ttl_s, label), signing=True)
    click.echo(orjson.dumps(t).decode() if as_json else t["token"])
    what = f" ({label})" if label else ""
    click.echo(f"API token for {name}{what}: session {t['session_id']}, expires {_iso(t['expires_ms'])}.\n"
               f"Revoke it with DELETE /admin/users/{name}/sessions/{t['session_id']}; changing the password "
               f"or disabling {name} ends it too.", err=True)
