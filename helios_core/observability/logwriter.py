"""The one writer of a process's log stream.

Every log line of a HELIOS process reaches its stream (stderr unless `setup_logging` was given
another) through `WRITER`: the loguru handler's rendered lines (`observability.logging`) and the
access logs' lines (`observability.accesslog`), which skip loguru.  One writer is what keeps the
two kinds whole and in order on one stream:

- `write` (loguru's lines: rare, and an error may be the last thing a process says) writes at
  once, after whatever access lines are still waiting;
- `write_batched` (access lines: one per request) appends to a buffer that is written with a
  single write and flush at the end of the event-loop pass that produced it.  Why: at gateway
  and proxy rates a write and a flush per line, on top of loguru's per-record work (frame lookup,
  record building, formatting), cost 20-40 us per request, a quarter of a whole authenticated KV
  read.  Outside a running loop (a thread, a test calling directly) the line is written at once.

Lines left in the buffer (a loop closed before its pass ended) go out with the next write, or at
exit; a forked child starts with an empty buffer (its parent writes what it had).  A broken or
closed stream never raises into a request: the lines are dropped.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
from collections.abc import Callable
from typing import TextIO

__all__ = ["LogWriter", "WRITER"]


class LogWriter:
    def __init__(self, stream: TextIO | Callable[[], TextIO] | None = None) -> None:
        self._stream: Callable[[], TextIO] = lambda: sys.stderr
        self.set_stream(stream)
        self._pending: list[str] = []
        # Reentrant: a signal handler that logs may run while this thread is inside `write`.
        self._lock = threading.RLock()
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        # The loguru handler's format and level, so the access logs render the same shape (set by
        # `setup_logging`; the defaults are its defaults).
        self.fmt = "console"
        self.level = "info"

    def set_stream(self, stream: TextIO | Callable[[], TextIO] | None) -> None:
        """Where lines go: a stream, a callable returning one, or None for whatever `sys.stderr`
        is when a line is written (so a harness that swaps sys.stderr sees the lines, and nothing
        writes to a stream it has closed)."""
        if stream is None:
            self._stream = lambda: sys.stderr
        elif callable(stream) and not hasattr(stream, "write"):
            self._stream = stream
        else:
            fixed: TextIO = stream  # type: ignore[assignment]
            self._stream = lambda: fixed

    @property
    def stream(self) -> TextIO:
        return self._stream()

    def write(self, text: str) -> None:
        """Write `text` (whole lines, newlines included) now, after any lines still batched."""
        with self._lock:
            if self._pending:
                text = "".join(self._pending) + text
                self._pending.clear()
            self._emit(text)

    def write_batched(self, line: str) -> None:
        """Write `line` (newline included) at the end of this event-loop pass, with the pass's others."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing would flush the buffer
            self.write(line)
            return
        with self._lock:
            self._pending.append(line)
        if self._scheduled_on is not loop:
            # Also when an earlier loop closed before its flush ran: this one must flush.
            self._scheduled_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the batched lines now."""
        self._scheduled_on = None
        with self._lock:
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            self._emit(text)

    def _emit(self, text: str) -> None:
        try:
            out = self._stream()
            out.write(text)
            out.flush()
        except (OSError, ValueError, AttributeError):  # closed, broken or missing stream
            pass

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._pending = []
        self._scheduled_on = None


WRITER = LogWriter()
atexit.register(WRITER.flush)
os.register_at_fork(after_in_child=WRITER._after_fork_in_child)  # noqa: SLF001 - the writer's own hook
