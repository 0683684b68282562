"""Structured logging on loguru.

Every HELIOS log line carries a `component` (who logged it) and whatever
fields the caller bound with `logger.bind(...)` or passed as keyword
arguments.  Two output formats:

- ``json``: one JSON object per line, for log shippers.
- ``console``: ``HH:MM:SS.mmm LEVEL component message key=value ...``,
  coloured only when the stream is a terminal.

HELIOS names its levels debug, info, warn, error and fatal (what operators of
nginx and Redis expect); they map onto loguru's DEBUG, INFO, WARNING, ERROR
and CRITICAL.
"""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO

import orjson
from loguru import logger

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
FORMATS: tuple[str, ...] = ("json", "console")
DEFAULT_COMPONENT = "helios"

_HELIOS_NAME = {loguru_name: name for name, loguru_name in LEVELS.items()}

_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_CYAN = "\x1b[36m"
_LEVEL_COLOUR = {
    "debug": "\x1b[34m",
    "info": "\x1b[32m",
    "warn": "\x1b[33m",
    "error": "\x1b[31m",
    "fatal": "\x1b[1;31m",
}


# Secrets never reach a log line (issue 10, 9b).  Whatever a caller passes (a message, a
# field, an error text quoting a header), these are cut out before rendering: header
# values of credential headers, bearer/basic credentials, JWTs, and the value Tornado
# quotes when it refuses a header (it may be a token or a cookie).
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|x-auth-token)"
               r"(\s*[:=]\s*)[^\r\n,;)]*"),
    re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;)]+"),
    re.compile(r"(eyJ)()[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"),
    re.compile(r"(?i)(invalid header (?:value|name) )()(?:'[^']*'|\"[^\"]*\"|\S+)"),
    re.compile(r"(?i)\b(password|passwd|secret|token|refresh_token|access_token)(\s*[:=]\s*)[^\s,;&)]+"),
)
_REDACTED = "[redacted]"
# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators and bidi
# overrides: a logged value must not start a fake line or repaint a terminal.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def scrub(text: str) -> str:
    """`text` with credentials replaced by [redacted]."""
    if not text:
        return text
    for rx in _SECRET_PATTERNS:
        text = rx.sub(lambda m: m.group(1) + m.group(2) + _REDACTED, text)
    return text


def escape(text: str) -> str:
    """`text` scrubbed, with control characters shown as \\xNN / \\uNNNN escapes."""
    text = scrub(text)
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                       else f"\\u{ord(m.group()):04x}", text)


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, bytes):
        return escape(value.decode("utf-8", "backslashreplace"))
    return value  # numbers, lists, dicts: rendered by orjson / repr, which escape control characters


def get_logger(component: str) -> Logger:
    """A logger whose records carry ``component``."""
    return logger.bind(component=component)


def setup_logging(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> int:
    """Replace every loguru handler with one HELIOS sink; return its handler id.

    ``stream=None`` writes to whatever ``sys.stderr`` is at the time of each
    record, so a test harness that swaps ``sys.stderr`` (click's CliRunner)
    still sees the output and nothing writes to a stream it has closed.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {', '.join(FORMATS)}")

    render: Callable[[Record, bool], str]
    render = _render_json if fmt == "json" else _render_console

    def sink(message: Message) -> None:
        out = stream if stream is not None else sys.stderr
        colour = fmt == "console" and _isatty(out)
        out.write(render(message.record, colour))
        out.flush()

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
    extra = {key: _safe(value) for key, value in record["extra"].items()}
    component = str(extra.pop("component", DEFAULT_COMPONENT))
    return component, extra


def _exception_text(record: Record) -> str | None:
    exc = record["exception"]
    if exc is None or exc.type is None:
        return None
    return scrub("".join(traceback.format_exception(exc.type, exc.value, exc.traceback)).rstrip("\n"))


def _render_json(record: Record, colour: bool = False) -> str:
    component, extra = _fields(record)
    line: dict[str, Any] = {
        "time": record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": _level_name(record),
        "component": component,
        "message": escape(record["message"]),
    }
    for key, value in extra.items():
        # A bound field may not overwrite the fixed ones; keep it under another name.
        line[f"extra_{key}" if key in line else key] = value
    exception = _exception_text(record)
    if exception is not None:
        line["exception"] = exception
    return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode() + "\n"


def _render_console(record: Record, colour: bool) -> str:
    component, extra = _fields(record)
    level = _level_name(record)
    stamp = record["time"].strftime("%H:%M:%S.") + f"{record['time'].microsecond // 1000:03d}"
    pairs = [f"{key}={_console_value(value)}" for key, value in extra.items()]
    if colour:
        head = (
            f"{_DIM}{stamp}{_RESET} {_LEVEL_COLOUR.get(level, '')}{level.upper():<5}{_RESET} "
            f"{_CYAN}{component}{_RESET} {escape(record['message'])}"
        )
        pairs = [f"{_DIM}{pair}{_RESET}" for pair in pairs]
    else:
        head = f"{stamp} {level.upper():<5} {component} {escape(record['message'])}"
    text = " ".join([head, *pairs])
    exception = _exception_text(record)
    if exception is not None:
        text += "\n" + exception
    return text + "\n"


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    # Quote anything a reader could not split back into key=value pairs.
    if text == "" or any(ch.isspace() or ch in '"=' for ch in text):
        return orjson.dumps(text).decode()
    return text
