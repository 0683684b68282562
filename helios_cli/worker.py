"""`helios worker`: lease jobs over the gateway's HTTP API and run them (being written)."""

from __future__ import annotations

import click

__all__ = ["worker"]


@click.command()
def worker() -> None:
    """Run jobs from the gateway's queues (not yet implemented)."""
    raise click.ClickException("not yet implemented")
