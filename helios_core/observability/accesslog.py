"""Access logs: one line per request, rendered here and batched by the process's `WRITER`.

The gateway (``gateway.access``) and the proxy (``proxy.access``) log every request this way
instead of through loguru (whose per-record work is the cost `logwriter` explains), yet in the
very shape of every other line (`logformat`): JSON ``time, level, component, message`` then the
fields, or the console line, with the same escaping (`redact`) and on the same stream, in order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from helios_core.observability.logformat import console_value, json_line, local_stamp, utc_stamp
from helios_core.observability.logwriter import WRITER, LogWriter
from helios_core.observability.redact import plain as redact_plain
from helios_core.observability.redact import safe, safe_fields

__all__ = ["AccessLog", "ENABLED_AT"]

# An access line is logged at info: below those levels it is dropped.
ENABLED_AT = frozenset({"debug", "info"})


class AccessLog:
    """Request lines of one `component`.

    `level` and `fmt` default to the process's (what `setup_logging` set on `WRITER`), read at
    each write; `stream` (tests) gives this log a writer of its own instead of the process's.
    """

    message = "request"

    def __init__(self, component: str, level: str | None = None, fmt: str | None = None,
                 stream: TextIO | Callable[[], TextIO] | None = None) -> None:
        self.component = component
        self.writer = WRITER if stream is None else LogWriter(stream)
        self._level = level
        self._fmt = fmt

    @property
    def enabled(self) -> bool:
        return (self._level or self.writer.level) in ENABLED_AT

    @property
    def json(self) -> bool:
        return (self._fmt or self.writer.fmt) == "json"

    def write(self, fields: dict[str, Any]) -> None:
        writer = self.writer
        if (self._level or writer.level) not in ENABLED_AT:
            return
        writer.write_batched(self._render(fields, time.time(), (self._fmt or writer.fmt) == "json"))

    def render(self, fields: dict[str, Any], now: float) -> str:
        """The line for `fields` at `now`, newline included."""
        return self._render(fields, now, self.json)

    def _render(self, fields: dict[str, Any], now: float, as_json: bool) -> str:
        if as_json:
            return json_line(utc_stamp(now), "info", self.component, self.message, safe_fields(fields))
        return _console(f"{local_stamp(now)} INFO  {self.component} {self.message}", fields)


_NUMBERS = (int, float, bool, type(None))


def _console(head: str, fields: dict[str, Any]) -> str:
    """`console_line(stamp, "info", ..., safe_fields(fields))`, in one pass over the fields: a value
    that `redact` finds plain (most of an access line's) needs neither escaping nor quoting, and a
    number is its repr; anything else takes the general path."""
    parts = [head]
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            if value and '"' not in value and redact_plain(value):
                parts.append(f"{key}={value}")
                continue
            value = safe(value)
        elif kind in _NUMBERS:
            parts.append(f"{key}={value!r}")
            continue
        else:
            value = safe(value)
        parts.append(f"{key}={console_value(value)}")
    return " ".join(parts) + "\n"
