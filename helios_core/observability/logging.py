"""Structured logging on loguru.

Every HELIOS log line carries a `component` (who logged it) and whatever
fields the caller bound with `logger.bind(...)` or passed as keyword
arguments.  Two output formats:

- ``json``: one JSON object per line, for log shippers.
- ``console``: ``HH:MM:SS.mmm LEVEL component message key=value ...``,
  coloured only when the stream is a terminal.

Every line, loguru's and the access logs' (`observability.accesslog`), is written by the
process's one log writer (`observability.logwriter`) in the shapes of `observability.logformat`.

HELIOS names its levels debug, info, warn, error and fatal (what operators of
nginx and Redis expect); they map onto loguru's DEBUG, INFO, WARNING, ERROR
and CRITICAL.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from helios_core.observability.logformat import FORMATS, console_line, json_line
from helios_core.observability.logwriter import WRITER
from helios_core.observability.redact import escape, safe, scrub

if TYPE_CHECKING:
    from loguru import Logger, Message, Record

__all__ = ["LEVELS", "FORMATS", "DEFAULT_COMPONENT", "setup_logging", "get_logger", "scrub", "escape"]

# HELIOS level name -> loguru level name.
LEVELS: dict[str, str] = {
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "error": "ERROR",
    "fatal": "CRITICAL",
}
DEFAULT_COMPONENT = "helios"

_HELIOS_NAME = {loguru_name: name for name, loguru_name in LEVELS.items()}


def get_logger(component: str) -> Logger:
    """A logger whose records carry ``component``."""
    return logger.bind(component=component)


def setup_logging(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> int:
    """Replace every loguru handler with one HELIOS sink; return its handler id.

    The sink renders each record and hands it to the process's one log writer
    (`observability.logwriter.WRITER`), which the access logs write through too; `level`,
    `fmt` and `stream` are set on it, so those lines take the same shape and stream.
    ``stream=None`` writes to whatever ``sys.stderr`` is at the time of each record, so a test
    harness that swaps ``sys.stderr`` (click's CliRunner) still sees the output and nothing
    writes to a stream it has closed.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")

    render: Callable[[Record, bool], str]
    render = _render_json if fmt == "json" else _render_console
    WRITER.flush()  # lines batched for the old stream go there
    WRITER.set_stream(stream)
    WRITER.fmt, WRITER.level = fmt, level

    def sink(message: Message) -> None:
        colour = fmt == "console" and _isatty(WRITER.stream)
        WRITER.write(render(message.record, colour))

    logger.remove()
    return logger.add(sink, level=LEVELS[level], format="{message}", backtrace=False, diagnose=False)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or the stream is closed
        return False


def _level_name(record: Record) -> str:
    name = record["level"].name
    return _HELIOS_NAME.get(name, name.lower())


def _fields(record: Record) -> tuple[str, dict[str, Any]]:
    extra = {key: safe(value) for key, value in record["extra"].items()}
    component = str(extra.pop("component", DEFAULT_COMPONENT))
    return component, extra


def _exception_text(record: Record) -> str | None:
    exc = record["exception"]
    if exc is None or exc.type is None:
        return None
    return scrub("".join(traceback.format_exception(exc.type, exc.value, exc.traceback)).rstrip("\n"))


def _render_json(record: Record, colour: bool = False) -> str:
    component, extra = _fields(record)
    stamp = record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json_line(stamp, _level_name(record), component, escape(record["message"]), extra,
                     _exception_text(record))


def _render_console(record: Record, colour: bool) -> str:
    component, extra = _fields(record)
    stamp = record["time"].strftime("%H:%M:%S.") + f"{record['time'].microsecond // 1000:03d}"
    return console_line(stamp, _level_name(record), component, escape(record["message"]), extra,
                        _exception_text(record), colour)
