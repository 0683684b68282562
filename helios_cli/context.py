"""What every `helios` subcommand receives: the loaded configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from helios_core.config import HeliosConfig
from helios_core.errors import HeliosError

__all__ = ["CliContext", "pass_cli", "fail", "guarded"]

T = TypeVar("T")


@dataclass(frozen=True)
class CliContext:
    """Built once by the `helios` group callback and stored in ``ctx.obj``."""

    config: HeliosConfig
    config_path: Path | None = None


# Use on a subcommand to receive the CliContext as its first argument.
pass_cli = click.make_pass_decorator(CliContext)


def fail(err: HeliosError) -> NoReturn:
    """Report a HELIOS error the click way: message on stderr, exit status 1."""
    raise click.ClickException(err.message) from err


def guarded(work: Callable[[], T], what: str) -> T:
    """Run `work`; every expected failure (a HeliosError, an OSError) ends the command with exit
    status 1 and the reason on stderr (`what` says what was being done, for an OSError)."""
    try:
        return work()
    except HeliosError as e:
        fail(e)
    except OSError as e:
        fail(HeliosError(f"{what}: {e.filename or ''}: {e.strerror or e}", code="io"))
