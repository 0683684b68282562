"""The two shapes of a HELIOS log line, written once for every writer.

- ``json``: one object per line: ``time`` (UTC, milliseconds, ``Z``), ``level``, ``component``,
  ``message``, then the line's fields, flat (a field named like a fixed key is kept as
  ``extra_<key>``), then ``exception`` when there is one;
- ``console``: ``HH:MM:SS.mmm LEVEL component message key=value ...`` (local time), coloured only
  when the stream is a terminal.

The loguru handler (`observability.logging`) and the access logs (`observability.accesslog`)
both render through `json_line` / `console_line`, so a log shipper sees one shape whichever path
a line took.  Values must already be safe (`observability.redact`).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson

__all__ = ["FORMATS", "FIXED_KEYS", "json_line", "console_line", "console_value", "utc_stamp", "local_stamp"]

FORMATS: tuple[str, ...] = ("json", "console")
FIXED_KEYS = frozenset({"time", "level", "component", "message"})

_PLAIN = re.compile(r'[^\s"=]+')
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


# The seconds part of each stamp, formatted once per second (an access line is written per request,
# and strftime over a struct_time cost more than the rest of the stamp).
_utc_second: tuple[int, str] = (-1, "")
_local_second: tuple[int, str] = (-1, "")


def utc_stamp(now: float) -> str:
    """``2026-01-02T03:04:05.678Z`` for `now` (seconds since the epoch)."""
    global _utc_second
    ms = int(now * 1000)
    sec = ms // 1000
    if _utc_second[0] != sec:
        _utc_second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{_utc_second[1]}.{ms % 1000:03d}Z"


def local_stamp(now: float) -> str:
    """``03:04:05.678`` (local time) for `now`."""
    global _local_second
    ms = int(now * 1000)
    sec = ms // 1000
    if _local_second[0] != sec:
        _local_second = (sec, time.strftime("%H:%M:%S", time.localtime(sec)))
    return f"{_local_second[1]}.{ms % 1000:03d}"


def json_line(stamp: str, level: str, component: str, message: str, fields: dict[str, Any],
              exception: str | None = None) -> str:
    """One JSON line, newline included."""
    line: dict[str, Any] = {"time": stamp, "level": level, "component": component, "message": message}
    if fields:
        if FIXED_KEYS.isdisjoint(fields):
            line.update(fields)
        else:
            for key, value in fields.items():
                line[f"extra_{key}" if key in FIXED_KEYS else key] = value
    if exception is not None:
        line["exception"] = exception
    return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode() + "\n"


def console_line(stamp: str, level: str, component: str, message: str, fields: dict[str, Any],
                 exception: str | None = None, colour: bool = False) -> str:
    """One console line (plus the exception's lines), newline included."""
    pairs = [f"{key}={console_value(value)}" for key, value in fields.items()]
    if colour:
        head = (f"{_DIM}{stamp}{_RESET} {_LEVEL_COLOUR.get(level, '')}{level.upper():<5}{_RESET} "
                f"{_CYAN}{component}{_RESET} {message}")
        pairs = [f"{_DIM}{pair}{_RESET}" for pair in pairs]
    else:
        head = f"{stamp} {level.upper():<5} {component} {message}"
    text = " ".join([head, *pairs]) if pairs else head
    if exception is not None:
        text += "\n" + exception
    return text + "\n"


def console_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    # Quote anything a reader could not split back into key=value pairs (one regex: this runs for
    # every field of every access line).
    return text if _PLAIN.fullmatch(text) else orjson.dumps(text).decode()
