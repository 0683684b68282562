"""Progress bars for long CLI work (aof-check, snapshot, backup, restore, bulk enqueue), on stderr.

A bar is drawn only for a person watching: stderr is a terminal, and the
command was not asked for machine output (--json) or silence.  Cron, pipes
and scripts see exactly the output they saw before.  The bar is transient
(erased when the work ends), so a terminal is left with the result alone.

HELIOS_PROGRESS=1 draws the bar even when stderr is not a terminal (rich's
`force_terminal`: tests, `script`, CI logs that render ANSI), and
HELIOS_PROGRESS=0 never draws one.

Work reports through a `Reporter` it is handed; when no bar is shown the
reporter does nothing, so the work's code is the same either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ENV", "QUIET", "Reporter", "enabled", "progress", "stderr_console"]

ENV = "HELIOS_PROGRESS"
Unit = Literal["bytes", "items"]


def _forced() -> bool | None:
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def stderr_console() -> Console:
    """The console bars draw on: stderr, a terminal when HELIOS_PROGRESS=1 says so."""
    return Console(stderr=True, force_terminal=True if _forced() else None)


def enabled(*, as_json: bool = False, quiet: bool = False) -> bool:
    """Whether a bar should be drawn for this command run."""
    forced = _forced()
    if forced is not None:
        return forced and not (as_json or quiet)
    return not (as_json or quiet) and stderr_console().is_terminal


class Reporter:
    """What long work calls to report; a no-op unless a bar is showing."""

    def __init__(self, bar: Progress | None = None, task: TaskID | None = None) -> None:
        self._bar = bar
        self._task = task

    @property
    def showing(self) -> bool:
        return self._bar is not None

    def advance(self, n: float = 1) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def update(self, completed: float | None = None, *, total: float | None = None,
               description: str | None = None) -> None:
        """Set how much is done; a `total` turns a spinner into a bar (and resets nothing else)."""
        if self._bar is None or self._task is None:
            return
        self._bar.update(self._task, completed=completed, total=total, description=description)

    def stage(self, description: str, total: float | None = None) -> None:
        """Start a new step of the work: the description changes and the count starts again
        (`total` None: a spinner for a step whose size is unknown)."""
        if self._bar is None or self._task is None:
            return
        self._bar.reset(self._task, total=total, completed=0, description=description)


QUIET = Reporter()  # for callers that show no progress


@contextmanager
def progress(description: str, total: float | None = None, *, unit: Unit = "items",
             show: bool = True) -> Iterator[Reporter]:
    """A transient bar on stderr while the block runs (nothing at all when `show` is False).

    With `total` None the step's size is unknown: a spinner with the elapsed
    time; `Reporter.stage` can give later steps a size.
    """
    if not show:
        yield QUIET
        return
    columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
    columns.append(DownloadColumn() if unit == "bytes" else MofNCompleteColumn())
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield Reporter(bar, task)
