"""`helios proxy`: run the reverse proxy, and (subcommands) edit its config in the store.

Without a subcommand the group runs the daemon:

- ``helios proxy --config configs/proxy.yaml``: routes and pools from a YAML
  file; SIGHUP re-reads it (an invalid file is logged with file:line:key and
  the running config stays);
- ``helios proxy --data DIR`` or ``--store URL``: from the store
  (``proxy:{proxy}:route:*``, ``proxy:{proxy}:backend:*``); a change made with ``helios proxy
  route|backend add|rm`` or the gateway's admin API applies within a second.
  A free data directory is opened by the proxy, which then serves its unix
  socket as atlasd would: ``helios snapshot --data DIR`` and ``helios proxy
  route list --data DIR`` work while it runs.

``--workers N`` runs N processes sharing the port (SO_REUSEPORT), kept by the
supervisor ``helios gateway --workers`` runs on (``helios_core.supervise``): a
worker that dies is restarted, SIGHUP reaches each.  SIGTERM or Ctrl-C stops
accepting and lets in-flight requests finish (``--grace``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from helios_cli.context import CliContext, fail
from helios_core.errors import HeliosError
from helios_core.observability import tracing

if TYPE_CHECKING:
    from helios_core.proxy.service import ConfigSource, OpenSource

__all__ = ["proxy"]


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    from helios_cli.gateway import loop_factory  # uvloop where installed, as the gateway does

    return loop_factory()


@click.group("proxy", invoke_without_command=True,
             short_help="Run the reverse proxy (routes, pools, health checks), or edit its config.")
@click.option("--config", "config_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="Proxy YAML (see configs/proxy.yaml); SIGHUP reloads it.")
@click.option("--data", "data_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Instead of --config: the config in this data directory's store.")
@click.option("--store", "store_url", metavar="URL",
              help="Instead of --config: the config in an atlas://, redis://, rediss://, unix://, "
                   "redis+sentinel:// or redis+cluster:// store.")
@click.option("--bind", default="127.0.0.1", show_default=True, metavar="ADDR", help="Listen address.")
@click.option("--port", default=8000, show_default=True, type=int, metavar="PORT",
              help="TCP port (0: any free one; the chosen port is printed).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Processes sharing the port (SO_REUSEPORT); health and breaker state are per process.")
@click.option("--grace", default=10.0, show_default=True, type=click.FloatRange(0, 3600), metavar="SECONDS",
              help="On SIGTERM, how long in-flight requests may take to finish.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One log line per request.")
@click.option("--tls-cert", metavar="FILE", help="PEM certificate: serve HTTPS (re-read on SIGHUP).")
@click.option("--tls-key", metavar="FILE", help="PEM private key for --tls-cert.")
@click.pass_context
def proxy(ctx: click.Context, config_file: Path | None, data_dir: Path | None, store_url: str | None, bind: str,
          port: int, workers: int, grace: float, access_log: bool, tls_cert: str | None,
          tls_key: str | None) -> None:
    """Run the HELIOS reverse proxy on BIND:PORT, configured from --config FILE, --data DIR or --store URL.

    Status (loopback clients only): GET /_helios/proxy/status and /_helios/proxy/metrics.
    """
    if ctx.invoked_subcommand is not None:
        if config_file or data_dir or store_url:
            raise click.UsageError("--config/--data/--store run the daemon; give them to the subcommand instead")
        return
    obj = ctx.find_object(CliContext)
    if obj is None:  # pragma: no cover - the helios group always sets it
        raise click.UsageError("helios proxy must run under the helios command")
    given = [x for x in (config_file, data_dir, store_url) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --config FILE, --data DIR or --store URL")
    open_source = _source_opener(obj, config_file, data_dir, store_url, workers)
    # Below info the access lines would be dropped anyway: do not even build them.
    access_log = access_log and obj.config.log.level in ("debug", "info")

    from helios_core.proxy.service import ServeOptions, run_proxy

    options = ServeOptions(grace=grace, access_log=access_log, tls_cert=tls_cert, tls_key=tls_key)
    try:
        tracing.configure(obj.config, "helios-proxy")  # before the workers fork; flushed at exit
        run_proxy(open_source, bind, port, workers, options=options, loop_factory=_loop_factory(),
                  announce=lambda url: click.echo(f"helios proxy listening on {url} (workers {workers})"))
    except HeliosError as e:
        fail(e)
    except OSError as e:
        fail(HeliosError(f"cannot start the proxy: {e.strerror or e}", code="io"))


def _source_opener(obj: CliContext, config_file: Path | None, data_dir: Path | None, store_url: str | None,
                   workers: int) -> OpenSource:
    """What each proxy process calls (after forking) to get its config source."""
    from helios_core.proxy.service import FileConfigSource

    async def nothing() -> None:
        return None

    if config_file is not None:
        from helios_core.proxy.loader import load_file

        try:
            load_file(config_file)  # refuse a bad file before binding, with its file:line:key
        except HeliosError as e:
            fail(e)
        path = config_file

        async def open_file() -> tuple[ConfigSource, Callable[[], Awaitable[None]]]:
            return FileConfigSource(path), nothing

        return open_file

    if data_dir is not None and workers > 1:
        from helios_core.atlas.datadir import DataDir

        if DataDir(data_dir).owner() is None:
            raise click.UsageError("--workers with --data needs atlasd to own the directory (the processes "
                                   "share its socket); or use --store URL")

    async def open_from_store() -> tuple[ConfigSource, Callable[[], Awaitable[None]]]:
        from helios_core.proxy.service import open_store_source

        # A free --data directory: this process serves its socket while it runs (tools reach it).
        return await open_store_source(obj.config, data_dir=data_dir, store_url=store_url)

    return open_from_store


# `helios proxy route|backend|pool ...`: the store-backed config, written by proxy_admin.
try:
    from helios_cli.proxy_admin import backend, pool, route
except ImportError:  # pragma: no cover - only while proxy_admin is not in the tree
    pass
else:
    proxy.add_command(route)
    proxy.add_command(backend)
    proxy.add_command(pool)
