"""`helios job`: enqueue, inspect, retry and cancel jobs (being written)."""

from __future__ import annotations

import click

__all__ = ["job"]


@click.group()
def job() -> None:
    """Enqueue, list, show, retry and cancel jobs (not yet implemented)."""
