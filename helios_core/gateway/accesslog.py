"""The request log: one line per request, written without going through loguru.

Why not loguru: at gateway rates its per-record work (frame lookup, record
building, formatting, a write and a flush per line) cost 20-40 us per request,
a quarter of a whole authenticated KV read.  This writer renders the same
shapes as `helios_core.observability.logging` (JSON: time, level, component,
message, then the fields; console: ``HH:MM:SS.mmm INFO  gateway.access request
key=value ...``) and writes the lines of one event-loop pass with a single
write, so lines stay whole and in order.  It honours `log.level` and
`log.format`; everything else the gateway logs still goes through loguru.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson

from helios_core.observability.logging import escape

__all__ = ["AccessLog"]

COMPONENT = "gateway.access"
_ENABLED_AT = {"debug", "info"}


_PLAIN = re.compile(r'[^\s"=]+')


def _console_value(value: Any) -> str:
    if value is None:
        return "None"
    text = value if isinstance(value, str) else str(value)
    return text if _PLAIN.fullmatch(text) else orjson.dumps(text).decode()


def _escaped(fields: dict[str, Any]) -> dict[str, Any]:
    """Strings as `escape` leaves them (no secrets, no control characters); others as they are.

    The request's path is the only field a client writes freely; the cost (one scan of
    each string) is paid per request, so plain ASCII without controls is let through as is.
    """
    out = {}
    for k, v in fields.items():
        if type(v) is str and not (v.isascii() and v.isprintable() and "eyJ" not in v):
            v = escape(v)
        out[k] = v
    return out


class AccessLog:
    def __init__(self, level: str, fmt: str, stream: Callable[[], TextIO] | None = None) -> None:
        self.enabled = level in _ENABLED_AT
        self.json = fmt == "json"
        self.stream = stream or (lambda: sys.stderr)  # looked up at write time, as loguru's sink does
        self._lines: list[str] = []
        self._scheduled = False

    def write(self, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        now = time.time()
        fields = _escaped(fields)
        if self.json:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
            line = orjson.dumps({"time": stamp, "level": "info", "component": COMPONENT, "message": "request",
                                 **fields}).decode()
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
            pairs = " ".join([f"{k}={_console_value(v)}" for k, v in fields.items()])
            line = f"{stamp} INFO  {COMPONENT} request {pairs}"
        self._lines.append(line)
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a test calling directly): write now
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data = "\n".join(self._lines) + "\n"
        self._lines.clear()
        out = self.stream()
        try:
            out.write(data)
            out.flush()
        except (OSError, ValueError):  # a closed or broken stream must not take requests down
            pass
