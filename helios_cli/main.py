"""The `helios` click group: global options, configuration and logging setup."""

from __future__ import annotations

import os
from pathlib import Path

import click

from helios_cli.context import CliContext, fail
from helios_core import __version__
from helios_core.config import load_config
from helios_core.errors import HeliosError
from helios_core.observability.logging import FORMATS, LEVELS, setup_logging

__all__ = ["cli", "main"]

# Long-running services log at log.level; every other command (a one-shot tool) logs warnings and
# errors only unless --log-level or HELIOS_LOG__LEVEL asks for more.
DAEMONS = frozenset({"atlasd", "gateway", "worker", "proxy"})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="HELIOS_CONFIG",
    help="YAML config file (see configs/default.yaml). Env: HELIOS_CONFIG.",
)
@click.option("--log-level", type=click.Choice(list(LEVELS)), help="Overrides log.level.")
@click.option("--log-format", type=click.Choice(FORMATS), help="Overrides log.format.")
@click.version_option(__version__, "--version", prog_name="helios", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str | None, log_format: str | None) -> None:
    """HELIOS: durable key-value store, API gateway, job queue and reverse proxy.

    Settings come from defaults < --config FILE < HELIOS_<SECTION>__<KEY>
    environment variables < command-line options.
    """
    # Everything HELIOS writes (data, snapshots, secrets, the lock, --output copies) is the owner's
    # alone, whatever umask the shell gave (issue 10, item 4).  Every entry point passes here.
    os.umask(0o077)
    try:
        config = load_config(config_path, overrides={"log.level": log_level, "log.format": log_format})
    except HeliosError as err:
        fail(err)
    level = config.log.level
    if ctx.invoked_subcommand not in DAEMONS and log_level is None and "HELIOS_LOG__LEVEL" not in os.environ:
        level = "warn"  # a one-shot tool prints its result, not the engine's start-up lines
    setup_logging(level, config.log.format)
    ctx.obj = CliContext(config=config, config_path=config_path)


def main() -> None:
    """Console-script entry point (`helios`)."""
    cli.main(prog_name="helios")


# --- subcommands ---
# Register each command group here, one line each: cli.add_command(module.group)
from helios_cli import aof_check, snapshot  # noqa: E402, I001 - these modules never import main
from helios_cli import atlasd  # noqa: E402, I001
from helios_cli import gateway, user  # noqa: E402, I001
cli.add_command(aof_check.aof_check)
cli.add_command(snapshot.snapshot)
cli.add_command(atlasd.atlasd)
cli.add_command(gateway.gateway)
cli.add_command(user.user)
from helios_cli import job, worker  # noqa: E402, I001
cli.add_command(job.job)
cli.add_command(worker.worker)
from helios_cli import ratelimit  # noqa: E402, I001
cli.add_command(ratelimit.ratelimit)
from helios_cli import proxy  # noqa: E402, I001
cli.add_command(proxy.proxy)
from helios_cli import backup, health  # noqa: E402, I001
cli.add_command(backup.backup)
cli.add_command(backup.restore)
cli.add_command(health.health)
