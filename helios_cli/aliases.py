"""Entry points that run one `helios` subcommand directly, e.g. `helios-atlasd`.

To add one, point a console script at a module-level alias::

    atlasd = alias("atlasd")        # helios-atlasd = "helios_cli.aliases:atlasd"

Arguments after the script name go to the subcommand, so global options such
as ``--config`` are not available there; use their environment variables
(``HELIOS_CONFIG``) instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from helios_cli.main import cli

__all__ = ["alias"]


def alias(subcommand_name: str) -> Callable[[], None]:
    """A console-script function running ``helios <subcommand_name> ARGS...``."""

    def run() -> None:
        cli.main(args=[subcommand_name, *sys.argv[1:]], prog_name="helios")

    run.__name__ = run.__qualname__ = f"helios_{subcommand_name.replace('-', '_')}"
    return run


gateway = alias("gateway")  # helios-gateway
proxy = alias("proxy")  # helios-proxy
worker = alias("worker")  # helios-worker
