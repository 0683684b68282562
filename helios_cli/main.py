"""The `helios` click group: global options, configuration and logging setup."""

from __future__ import annotations

import importlib
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


class LazyGroup(click.Group):
    """A click group whose commands (LAZY_COMMANDS) are imported when first needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[cmd_name].split(":")
            cmd = getattr(importlib.import_module(module), attr)
            assert isinstance(cmd, click.Command)
            self.add_command(cmd, cmd_name)
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
# Register each command here, one line each: name -> "module:attribute".  A command's module is
# imported only when that command runs (or for --help), so `helios snapshot` does not pay for the
# gateway's and the proxy's imports: every `helios` invocation starts faster.
LAZY_COMMANDS: dict[str, str] = {
    "aof-check": "helios_cli.aof_check:aof_check",
    "snapshot": "helios_cli.snapshot:snapshot",
    "atlasd": "helios_cli.atlasd:atlasd",
    "gateway": "helios_cli.gateway:gateway",
    "user": "helios_cli.user:user",
    "job": "helios_cli.job:job",
    "worker": "helios_cli.worker:worker",
    "ratelimit": "helios_cli.ratelimit:ratelimit",
    "proxy": "helios_cli.proxy:proxy",
    "backup": "helios_cli.backup:backup",
    "restore": "helios_cli.backup:restore",
    "health": "helios_cli.health:health",
}
