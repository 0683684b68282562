"""`helios proxy route|backend|pool add|rm|list`: the proxy's config in the store.

A proxy started on the store (``helios proxy --data DIR`` or ``--store URL``)
applies a change within a second, without a restart.  Three ways in:

- ``--data DIR``: the directory's store, opened here when it is free, or
  through atlasd's socket when atlasd owns it;
- ``--store URL``: atlas://, redis://, rediss:// or unix:// (as ``helios gateway --store``);
- ``--gateway URL --token TOKEN``: a running gateway's ``/admin/proxy`` API
  (``HELIOS_URL`` and ``HELIOS_TOKEN`` work too), for a token holding
  ``admin:proxy``.  (Not ``--url`` as in ``helios user``: a backend's own
  address is ``--url`` here.)

Every change is checked against the whole resulting config and refused, with
the record and the field named, when the proxy could not load the result.
Human output is a table; ``--json`` prints JSON.  Exit status 0 on success, 1
on failure (reason on stderr), 2 on a usage error.

H1's ``helios proxy`` group mounts these: ``proxy.add_command(route)``, and
the same for `backend` and `pool`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from helios_cli.context import CliContext, fail, pass_cli
from helios_cli.target import GatewayApi, cli_actor, open_data_store
from helios_core.auth import AuditLog
from helios_core.errors import DataDirLockedError, HeliosError
from helios_core.proxy import store_config as sc
from helios_core.store.base import Store
from helios_core.store.url import open_store

__all__ = ["route", "backend", "pool", "ProxyRecords", "StoreProxyRecords", "ApiProxyRecords"]

T = TypeVar("T")
TOKEN_HINT = "an access token holding admin:proxy"


class ProxyRecords(Protocol):
    """What every command needs; on a Store and over the admin API.  `kind`: route, backend or pool."""

    async def add(self, kind: sc.Kind, record: dict[str, Any], replace: bool) -> dict[str, Any]: ...
    async def remove(self, kind: sc.Kind, record_id: str) -> None: ...
    async def list(self, kind: sc.Kind) -> list[dict[str, Any]]: ...


_ADD = {"route": sc.add_route, "backend": sc.add_backend, "pool": sc.add_pool}
_PUT = {"route": sc.put_route, "backend": sc.put_backend, "pool": sc.put_pool}
_GET = {"route": sc.get_route, "backend": sc.get_backend, "pool": sc.get_pool}
_REMOVE = {"route": sc.remove_route, "backend": sc.remove_backend, "pool": sc.remove_pool}
_LIST = {"route": sc.list_routes, "backend": sc.list_backends, "pool": sc.list_pools}


class StoreProxyRecords:
    """`store_config` on a store opened for one command; changes are audited as the gateway's are."""

    def __init__(self, store: Store, audit: AuditLog) -> None:
        self.store = store
        self.audit = audit

    async def _audit(self, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        now = int(datetime.now(UTC).timestamp() * 1000)
        await self.audit.record(now, action, cli_actor(), target=target, detail=detail)

    async def add(self, kind: sc.Kind, record: dict[str, Any], replace: bool) -> dict[str, Any]:
        if replace:
            await _PUT[kind](self.store, record)
        else:
            await _ADD[kind](self.store, record)
        await self._audit(f"proxy.{kind}.{'put' if replace else 'add'}", record["id"], record)
        return await _GET[kind](self.store, record["id"])

    async def remove(self, kind: sc.Kind, record_id: str) -> None:
        await _REMOVE[kind](self.store, record_id)
        await self._audit(f"proxy.{kind}.remove", record_id)

    async def list(self, kind: sc.Kind) -> list[dict[str, Any]]:
        return await _LIST[kind](self.store)


class ApiProxyRecords:
    """The gateway's /admin/proxy API."""

    def __init__(self, url: str, token: str) -> None:
        self.api = GatewayApi(url, token, agent="helios-proxy-cli")

    def _item(self, kind: sc.Kind, record_id: str) -> str:
        return f"/admin/proxy/{kind}s/{self.api.quote(record_id)}"

    async def add(self, kind: sc.Kind, record: dict[str, Any], replace: bool) -> dict[str, Any]:
        if replace:
            return await self.api.call("PUT", self._item(kind, record["id"]), record)  # type: ignore[no-any-return]
        return await self.api.call("POST", f"/admin/proxy/{kind}s", record)  # type: ignore[no-any-return]

    async def remove(self, kind: sc.Kind, record_id: str) -> None:
        await self.api.call("DELETE", self._item(kind, record_id))

    async def list(self, kind: sc.Kind) -> list[dict[str, Any]]:
        return (await self.api.call("GET", f"/admin/proxy/{kind}s"))[f"{kind}s"]  # type: ignore[no-any-return]


async def _with_store(obj: CliContext, data_dir: Path | None, store_url: str | None,
                      work: Callable[[ProxyRecords], Awaitable[T]]) -> T:
    if data_dir is not None:
        try:
            store = await open_data_store(obj, data_dir, "helios proxy", TOKEN_HINT)
        except DataDirLockedError as e:
            # The shared hint names `helios user`'s --url; here the gateway is --gateway.
            raise DataDirLockedError(e.message.replace("; use --url ", "; use --gateway ")) from None
    else:
        store = await open_store(url=store_url, config=obj.config)
    try:
        return await work(StoreProxyRecords(store, AuditLog(store, obj.config.auth.audit_max_entries)))
    finally:
        await store.close()


def _from_env(param: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(param) is click.core.ParameterSource.ENVIRONMENT


def _run(obj: CliContext, target: dict[str, Any], work: Callable[[ProxyRecords], Coroutine[Any, Any, T]]) -> T:
    data_dir, store_url, gateway, token = (target["data_dir"], target["store_url"], target["gateway"],
                                           target["token"])
    if gateway is not None and (data_dir is not None or store_url is not None) and _from_env("gateway"):
        gateway = None  # an exported HELIOS_URL does not stand in the way of an explicit --data or --store
    if sum(x is not None for x in (data_dir, store_url, gateway)) != 1:
        raise click.UsageError("give exactly one of --data DIR, --store URL or --gateway URL")
    try:
        if gateway is not None:
            if not token:
                raise click.UsageError(f"--gateway needs --token ({TOKEN_HINT}; or set HELIOS_TOKEN)")
            return asyncio.run(work(ApiProxyRecords(gateway, token)))
        return asyncio.run(_with_store(obj, data_dir, store_url, work))
    except HeliosError as e:
        fail(e)


_TARGET_KEYS = ("data_dir", "store_url", "gateway", "token")


def target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--data / --store / --gateway / --token / --json; the first four reach the command as `target`."""

    @click.option("--data", "data_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
                  help="Data directory (free, or owned by atlasd).")
    @click.option("--store", "store_url", metavar="URL",
                  help="Instead of --data: atlas://HOST:PORT, redis://..., rediss://..., unix:///PATH, "
                       "redis+sentinel://... or redis+cluster://....")
    @click.option("--gateway", metavar="URL", envvar="HELIOS_URL",
                  help="Instead: a running gateway's admin API (env HELIOS_URL).")
    @click.option("--token", metavar="TOKEN", envvar="HELIOS_TOKEN",
                  help=f"For --gateway: {TOKEN_HINT} (env HELIOS_TOKEN).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        target = {k: kwargs.pop(k) for k in _TARGET_KEYS}
        return fn(*args, target=target, **kwargs)

    return wrapper


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _json_object(text: str | None, option: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise click.BadParameter(f"invalid JSON ({e})", param_hint=option) from None
    if not isinstance(doc, dict):
        raise click.BadParameter("expected a JSON object", param_hint=option)
    return doc


def _record(given: dict[str, Any], extra: str | None) -> dict[str, Any]:
    """The options given (None: not given) over the --set JSON object."""
    out = _json_object(extra, "--set")
    out.update({k: v for k, v in given.items() if v is not None and v != () and v is not False})
    return out


def _added(kind: str, rec: dict[str, Any], replace: bool, as_json: bool, summary: str) -> None:
    if as_json:
        click.echo(orjson.dumps(rec).decode())
    else:
        _out().print(f"{'stored' if replace else 'added'} {kind} {rec['id']}{summary}")


def _removed(kind: str, record_id: str, as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps({"removed": record_id, "kind": kind}).decode())
    else:
        _out().print(f"removed {kind} {record_id}")


def _table(records: list[dict[str, Any]], as_json: bool, columns: dict[str, Callable[[dict[str, Any]], Any]],
           empty: str) -> None:
    if as_json:
        click.echo(orjson.dumps(records).decode())
        return
    if not records:
        _out().print(empty)
        return
    table = Table(*columns)
    for rec in records:
        table.add_row(*("" if (v := get(rec)) in (None, [], "") else str(v) for get in columns.values()))
    _out().print(table)


def _csv(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else ("" if value is None else str(value))


SET_HELP = "Other fields as a JSON object (options given win), e.g. '{\"timeouts\": {\"read\": 5}}'."

# -- route ---------------------------------------------------------------------------------------------


@click.group("route", short_help="Add, remove or list the proxy's routes (in the store).")
def route() -> None:
    """The proxy's routes: a path prefix (and optional hosts and methods) sent to a pool."""


@route.command("add")
@click.option("--id", "rid", required=True, help="Route id: 1-64 of A-Z a-z 0-9 _ . - (a letter or digit first).")
@click.option("--prefix", required=True, help="Path prefix, e.g. /api/ (the longest matching prefix wins).")
@click.option("--pool", required=True, help="The pool that serves it (a pool exists once a backend names it).")
@click.option("--strip-prefix", is_flag=True, help="Send the path without the prefix.")
@click.option("--rewrite", metavar="PATH", help="Replace the prefix with PATH (not with --strip-prefix).")
@click.option("--method", "methods", multiple=True, metavar="METHOD", help="Only this method (repeatable).")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Only this Host: exact or *.example.com (repeatable).")
@click.option("--retries", type=int, help="Retries on another backend for idempotent requests (default 2).")
@click.option("--require-auth", is_flag=True, help="Inside the gateway: callers must authenticate.")
@click.option("--permission", "permissions", multiple=True, metavar="PERM",
              help="Inside the gateway: callers need this permission (repeatable).")
@click.option("--set", "extra", metavar="JSON", help=SET_HELP)
@click.option("--replace", is_flag=True, help="Replace a route with this id instead of refusing.")
@target_options
@pass_cli
def route_add(obj: CliContext, rid: str, prefix: str, pool: str, strip_prefix: bool, rewrite: str | None,
              methods: tuple[str, ...], hosts: tuple[str, ...], retries: int | None, require_auth: bool,
              permissions: tuple[str, ...], extra: str | None, replace: bool, target: dict[str, Any],
              as_json: bool) -> None:
    """Add a route: requests whose path starts with --prefix go to --pool."""
    rec = _record({"id": rid, "prefix": prefix, "pool": pool, "strip_prefix": strip_prefix, "rewrite": rewrite,
                   "methods": list(methods) or None, "hosts": list(hosts) or None, "retries": retries,
                   "require_auth": require_auth, "permissions": list(permissions) or None}, extra)
    out = _run(obj, target, lambda p: p.add("route", rec, replace))
    _added("route", out, replace, as_json, f" ({out['prefix']} -> pool {out['pool']})")


@route.command("rm")
@click.argument("rid", metavar="ID")
@target_options
@pass_cli
def route_rm(obj: CliContext, rid: str, target: dict[str, Any], as_json: bool) -> None:
    """Remove route ID."""
    _run(obj, target, lambda p: p.remove("route", rid))
    _removed("route", rid, as_json)


@route.command("list")
@target_options
@pass_cli
def route_list(obj: CliContext, target: dict[str, Any], as_json: bool) -> None:
    """List the routes."""
    recs = _run(obj, target, lambda p: p.list("route"))
    _table(recs, as_json, {
        "id": lambda r: r["id"], "prefix": lambda r: r.get("prefix"), "pool": lambda r: r.get("pool"),
        "hosts": lambda r: _csv(r.get("hosts")), "methods": lambda r: _csv(r.get("methods")),
        "upstream path": lambda r: ("strip prefix" if r.get("strip_prefix") else
                                    f"rewrite {r['rewrite']}" if r.get("rewrite") else ""),
    }, "no routes")


# -- backend -------------------------------------------------------------------------------------------


@click.group("backend", short_help="Add, remove or list the proxy's backends (in the store).")
def backend() -> None:
    """The proxy's backends: upstream servers, each in one pool."""


@backend.command("add")
@click.option("--id", "bid", required=True, help="Backend id (unique across pools).")
@click.option("--pool", required=True, help="Its pool (made when its first backend names it).")
@click.option("--url", required=True, help="http://HOST:PORT[/base]")
@click.option("--weight", type=int, help="Share for the weighted balancer (default 1).")
@click.option("--replace", is_flag=True, help="Replace a backend with this id instead of refusing.")
@target_options
@pass_cli
def backend_add(obj: CliContext, bid: str, pool: str, url: str, weight: int | None, replace: bool,
                target: dict[str, Any], as_json: bool) -> None:
    """Add a backend to a pool."""
    rec = _record({"id": bid, "pool": pool, "url": url, "weight": weight}, None)
    out = _run(obj, target, lambda p: p.add("backend", rec, replace))
    _added("backend", out, replace, as_json, f" ({out['url']} in pool {out['pool']})")


@backend.command("rm")
@click.argument("bid", metavar="ID")
@target_options
@pass_cli
def backend_rm(obj: CliContext, bid: str, target: dict[str, Any], as_json: bool) -> None:
    """Remove backend ID (refused while a route needs its pool and it is the last one)."""
    _run(obj, target, lambda p: p.remove("backend", bid))
    _removed("backend", bid, as_json)


@backend.command("list")
@target_options
@pass_cli
def backend_list(obj: CliContext, target: dict[str, Any], as_json: bool) -> None:
    """List the backends."""
    recs = _run(obj, target, lambda p: p.list("backend"))
    _table(recs, as_json, {"id": lambda r: r["id"], "pool": lambda r: r.get("pool"), "url": lambda r: r.get("url"),
                           "weight": lambda r: r.get("weight", 1)}, "no backends")


# -- pool ----------------------------------------------------------------------------------------------


@click.group("pool", short_help="Set, remove or list the proxy's pool settings (in the store).")
def pool() -> None:
    """Pool settings (balancer, health checks, breaker); a pool without settings uses the defaults."""


@pool.command("add")
@click.option("--id", "pid", required=True, help="Pool id.")
@click.option("--balancer", type=click.Choice(["round_robin", "least_conn", "weighted", "p2c"]))
@click.option("--health-path", metavar="PATH", help="Active health check path (default /).")
@click.option("--health-interval", type=float, metavar="SECONDS")
@click.option("--max-connections", type=int, help="Upstream connections per backend (default 100).")
@click.option("--set", "extra", metavar="JSON",
              help="Other settings as a JSON object, e.g. '{\"breaker\": {\"failures\": 3}}'.")
@click.option("--replace", is_flag=True, help="Replace the pool's settings instead of refusing.")
@target_options
@pass_cli
def pool_add(obj: CliContext, pid: str, balancer: str | None, health_path: str | None, health_interval: float | None,
             max_connections: int | None, extra: str | None, replace: bool, target: dict[str, Any],
             as_json: bool) -> None:
    """Set a pool's settings."""
    rec = _record({"id": pid, "balancer": balancer, "max_connections": max_connections}, extra)
    health = {k: v for k, v in (("path", health_path), ("interval", health_interval)) if v is not None}
    if health:
        given = rec.get("health")
        if given is not None and not isinstance(given, dict):
            raise click.BadParameter("health: expected a JSON object", param_hint="--set")
        rec["health"] = {**(given or {}), **health}
    out = _run(obj, target, lambda p: p.add("pool", rec, replace))
    _added("pool", out, replace, as_json, "")


@pool.command("rm")
@click.argument("pid", metavar="ID")
@target_options
@pass_cli
def pool_rm(obj: CliContext, pid: str, target: dict[str, Any], as_json: bool) -> None:
    """Remove pool ID's settings (its backends keep it, with default settings)."""
    _run(obj, target, lambda p: p.remove("pool", pid))
    _removed("pool", pid, as_json)


@pool.command("list")
@target_options
@pass_cli
def pool_list(obj: CliContext, target: dict[str, Any], as_json: bool) -> None:
    """List the pools, their settings and backends."""
    recs = _run(obj, target, lambda p: p.list("pool"))
    _table(recs, as_json, {
        "id": lambda r: r["id"], "balancer": lambda r: r.get("balancer", "round_robin"),
        "backends": lambda r: _csv(r.get("backends")), "health": lambda r: (r.get("health") or {}).get("path"),
        "settings": lambda r: orjson.dumps({k: v for k, v in r.items()
                                            if k not in ("id", "backends", "balancer")}).decode()
        if len(r) > 2 else "",
    }, "no pools")
