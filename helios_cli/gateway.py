"""`helios gateway`: serve the HTTP API (auth, KV, admin) on a data directory.

Options override the `gateway` section of the configuration; everything else
(auth, rate limits, durability) comes from the configuration file and
HELIOS_* environment variables.  The service runs until SIGTERM or SIGINT,
then drains in-flight requests and closes the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from helios_cli.context import CliContext, fail, pass_cli
from helios_core.errors import HeliosError
from helios_core.observability import tracing
from helios_core.store.url import redact

__all__ = ["gateway", "loop_factory"]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where installed (faster HTTP), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _announce(started: Any, workers: int = 1) -> None:
    # The "listening on" line comes last, so a script can read up to it and have everything.
    if started.admin_password:
        click.echo('First start: created the user "admin" with this password (shown only now):')
        click.echo(f"    {started.admin_password}")
        if started.password_file:
            click.echo(f"It is also in {started.password_file} (mode 0600).")
        else:
            click.echo("It is kept nowhere else (the store is remote): note it now, or set another with "
                       "`helios user passwd admin --store URL`.")
        click.echo("Log in with:")
        click.echo(f"    curl -s -X POST {started.url}/api/v1/auth/login "
                   f"-d '{{\"username\": \"admin\", \"password\": \"...\"}}'")
    where = f"data {started.data_dir}" if started.data_dir else f"store {redact(started.store_url or '')}"
    if workers > 1:
        where += f", {workers} processes"
    click.echo(f"helios gateway listening on {started.url} ({where})")


def _check_workers(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise click.BadParameter(f"{value}: give 1 or more gateway processes (one per core is the usual choice)")
    return value


@click.command("gateway", short_help="Serve the HTTP API (auth, KV, admin) on a data directory.")
@click.option("--data", "data_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path),
              help="Data directory (created if missing; reached through atlasd's socket when atlasd owns it).")
@click.option("--store", "store_url", metavar="URL",
              help="Instead of --data: atlas://HOST:PORT, redis://..., rediss://..., unix:///PATH, "
                   "redis+sentinel://... or redis+cluster://....")
@click.option("--bind", metavar="ADDR", help="Listen address (gateway.bind, default 127.0.0.1).")
@click.option("--port", type=int, metavar="PORT", help="TCP port (gateway.port, default 8080; 0: any free).")
@click.option("--tls-cert", metavar="FILE", help="PEM certificate: serve HTTPS (gateway.tls_cert).")
@click.option("--tls-key", metavar="FILE", help="PEM private key for --tls-cert (gateway.tls_key).")
@click.option("--workers", type=int, metavar="N", callback=_check_workers,
              help="Gateway processes on the one port and store (gateway.workers, default 1).")
@pass_cli
def gateway(obj: CliContext, data_dir: Path | None, store_url: str | None, bind: str | None, port: int | None,
            tls_cert: str | None, tls_key: str | None, workers: int | None) -> None:
    """Serve the HELIOS HTTP API from DIR: /api/v1/auth, /api/v1/kv, /admin, /metrics, /healthz.

    On the first start with no users, creates "admin" with a random password,
    prints it once and writes it to DIR/initial_admin_password (mode 0600).
    Stop with SIGTERM or Ctrl-C: in-flight requests finish first.

    With --workers N (N > 1), N processes serve the port (SO_REUSEPORT) and
    a supervisor restarts one that dies; with --data DIR an atlasd child
    process owns DIR and the gateways reach it through DIR/atlas.sock.
    """
    from helios_core.gateway.app import serve

    if (data_dir is None) == (store_url is None):
        raise click.UsageError("give exactly one of --data DIR or --store URL")

    given: dict[str, Any] = {"bind": bind, "port": port, "tls_cert": tls_cert, "tls_key": tls_key,
                             "workers": workers}
    changes = {k: v for k, v in given.items() if v is not None}
    try:
        config = dataclasses.replace(obj.config, gateway=dataclasses.replace(obj.config.gateway, **changes))
        tracing.configure(config, "helios-gateway")  # before any fork (--workers); flushed at exit
        if config.gateway.workers > 1:
            from helios_core.gateway.bootstrap import WorkersPlan, run_workers

            n = config.gateway.workers
            run_workers(WorkersPlan(config, n, data_dir, store_url, loop_factory()), lambda s: _announce(s, n))
            return
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve(config, data_dir, _announce, store_url=store_url))
    except HeliosError as e:
        fail(e)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES) and not e.filename:
            g = obj.config.gateway
            where = f"{bind or g.bind}:{port if port is not None else g.port}"
            fail(HeliosError(f"cannot listen on {where}: {e.strerror}; pick another with --bind/--port",
                             code="io"))
        fail(HeliosError(f"cannot start the gateway: {e.strerror or e}"
                         + (f" ({e.filename})" if e.filename else ""), code="io"))
