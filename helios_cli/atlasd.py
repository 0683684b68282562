"""`helios atlasd`: serve a data directory over the Redis protocol.

Thin on purpose: options become config overrides (so `atlasd.port` in the YAML
file, HELIOS_ATLASD__PORT and --port mean the same thing), then an
`AtlasServer` runs on the loop Tornado uses (uvloop where installed) until
SIGTERM, SIGINT or SHUTDOWN stop it gracefully.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import click

from helios_cli.context import CliContext, fail, pass_cli
from helios_core.atlas.daemon import AtlasServer
from helios_core.config import HeliosConfig, load_config
from helios_core.errors import HeliosError
from helios_core.observability import tracing

__all__ = ["atlasd", "main_alias"]


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # plain asyncio is fine, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.command("atlasd")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Data directory to own (created if missing); its unix socket is DIR/atlas.sock.")
@click.option("--bind", help="Addresses to listen on, space-separated. Overrides atlasd.bind [127.0.0.1].")
@click.option("--port", type=int, help="TCP port; 0: unix socket only. Overrides atlasd.port [6380].")
@click.option("--appendfsync", type=click.Choice(["always", "everysec", "no"]),
              help="AOF fsync policy. Overrides atlas.appendfsync [always].")
@click.option("--requirepass", metavar="SECRET",
              help="Password clients must AUTH with (prefer HELIOS_ATLASD__REQUIREPASS: argv is visible "
                   "to other users).")
@click.option("--tls-cert", metavar="FILE", help="PEM certificate: the TCP port speaks TLS (with --tls-key). "
              "Overrides atlasd.tls_cert.")
@click.option("--tls-key", metavar="FILE", help="PEM private key for --tls-cert. Overrides atlasd.tls_key.")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port; 0 disables.")
@pass_cli
def atlasd(obj: CliContext, data_dir: Path, bind: str | None, port: int | None, appendfsync: str | None,
           requirepass: str | None, tls_cert: str | None, tls_key: str | None, metrics_port: int | None) -> None:
    """Serve ATLAS over RESP2/RESP3 (redis-cli, redis-py, any Redis client).

    Listens on --bind:--port and on the unix socket DIR/atlas.sock (mode
    0600).  With --tls-cert and --tls-key the TCP port speaks TLS; the unix
    socket stays plain.  A connection whose first byte is "{" speaks JSON
    lines in the AOF's record format instead of RESP.  Stops gracefully on
    SIGTERM, SIGINT or SHUTDOWN [SAVE|NOSAVE]: in-flight replies are sent,
    the AOF is flushed and fsynced, the lock is released and the exit status
    is 0.
    """
    overrides = {"atlasd.bind": bind, "atlasd.port": port, "atlas.appendfsync": appendfsync,
                 "atlasd.requirepass": requirepass, "atlasd.metrics_port": metrics_port,
                 "atlasd.tls_cert": tls_cert, "atlasd.tls_key": tls_key}
    try:
        loaded = load_config(obj.config_path, overrides=overrides)
        config = dataclasses.replace(obj.config, atlas=loaded.atlas, atlasd=loaded.atlasd)
        tracing.configure(config, "helios-atlasd")  # flushed and shut down at exit
        _install_uvloop()
        asyncio.run(_serve(data_dir, config))
    except HeliosError as err:
        fail(err)


async def _serve(data_dir: Path, config: HeliosConfig) -> None:
    # Opened inside the loop so the engine, the listeners and Tornado's IOLoop
    # (metrics) share it.
    server = AtlasServer.open(data_dir, config)
    await server.run()


def main_alias() -> None:
    """Console script `helios-atlasd ARGS` = `helios atlasd ARGS`."""
    from helios_cli.aliases import alias  # imports helios_cli.main, which imports this module

    alias("atlasd")()
