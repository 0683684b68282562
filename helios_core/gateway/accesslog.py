"""The gateway's request log: one ``gateway.access`` line per request.

Rendered and written by the shared access-log path (`helios_core.observability.accesslog`,
batched by the process's one log writer, `observability.logwriter`, which says why it skips
loguru), in the shape of every other log line.  It honours `log.level` and `log.format`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from helios_core.observability import accesslog

__all__ = ["AccessLog", "COMPONENT"]

COMPONENT = "gateway.access"


class AccessLog(accesslog.AccessLog):
    def __init__(self, level: str, fmt: str, stream: Callable[[], TextIO] | None = None) -> None:
        super().__init__(COMPONENT, level, fmt, stream)
