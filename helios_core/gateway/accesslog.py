"""The gateway's request log: one ``gateway.access`` line per request.

Rendered and written by the shared access-log path (`helios_core.observability.accesslog`,
batched by the process's one log writer, `observability.logwriter`, which says why it skips
loguru), in the shape of every other log line.  It honours `log.level` and `log.format`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from helios_core.observability import accesslog
from helios_core.observability.logformat import json_line, local_stamp, utc_stamp
from helios_core.observability.redact import plain

__all__ = ["AccessLog", "COMPONENT"]

COMPONENT = "gateway.access"


class AccessLog(accesslog.AccessLog):
    def __init__(self, level: str, fmt: str, stream: Callable[[], TextIO] | None = None) -> None:
        super().__init__(COMPONENT, level, fmt, stream)
        self._head = f" INFO  {self.component} {self.message} request_id="

    def request(self, request_id: str, method: str, route: str, path: str, status: int, duration_ms: float,
                user: str | None, client: str, trace_id: str) -> None:
        """`write` of one request's fields, in this order.  A console line whose strings are all plain
        (`redact.plain`, no '"', none empty: what `write` would print bare) is made in one f-string,
        the same bytes as `write`'s, and a JSON one without `write`'s escaping pass (nothing to
        escape); anything else (a path to escape, an IPv6 client) goes through `write`.  Nothing is
        built when the level drops the line."""
        writer = self.writer
        if (self._level or writer.level) not in accesslog.ENABLED_AT:
            return
        if request_id and method and route and path and client and trace_id and user != "":
            # The properties plain() checks are each true of a joined string only if true of every
            # part ("eyJ" across a joint only sends the line the long way).
            joined = f"{request_id}{method}{route}{path}{client}{trace_id}{'' if user is None else user}"
            if '"' not in joined and plain(joined):
                now = time.time()
                if (self._fmt or writer.fmt) != "json":
                    writer.write_batched(
                        f"{local_stamp(now)}{self._head}{request_id} method={method} route={route} path={path} "
                        f"status={status!r} duration_ms={duration_ms!r} user={user} client={client} "
                        f"trace_id={trace_id}\n")
                    return
                # JSON: json_line as _render calls it, less safe_fields (which leaves plain strings,
                # numbers and None as they are).
                fields = {"request_id": request_id, "method": method, "route": route, "path": path,
                          "status": status, "duration_ms": duration_ms, "user": user, "client": client,
                          "trace_id": trace_id}
                writer.write_batched(json_line(utc_stamp(now), "info", self.component, self.message, fields))
                return
        self.write({"request_id": request_id, "method": method, "route": route, "path": path, "status": status,
                    "duration_ms": duration_ms, "user": user, "client": client, "trace_id": trace_id})
