"""Watching an attached engine from outside: where its event loop stalls, and why.

A benchmark process wraps engine methods and AofFile's I/O seam on the spot,
so the engine's code stays as it ships:

  LoopSteps   times (or cProfiles) the snapshot steps that run on the event loop
  time_aof_io records every AOF write() and fsync
  LagMonitor  a 1 ms heartbeat coroutine: how late the loop wakes up, and, on
              request, a thread that samples the loop thread's stack while the
              heartbeat is overdue
"""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["LoopSteps", "time_aof_io", "LagMonitor", "in_spans"]

Event = tuple[float, float]  # (start, seconds), perf_counter clock


def in_spans(events: list[Event], spans: list[tuple[float, float]]) -> list[float]:
    """Durations of the events that started inside any of `spans`."""
    return [d for t, d in list(events) if any(a <= t <= b for a, b in spans)]


class LoopSteps:
    """Times, or on request cProfiles, the snapshot's steps that run on the event loop.

    It wraps the engine's snapshotter (helios_core/atlas/snapshotter.py) on the instance:
    `_synced` (the pre-fork sync done: pipe + fork) is "start", `_rotated` (the AOF part moved
    aside, on the loop once the worker thread is done) is "flush", `_finished` (the child's
    result checked, the image published, old parts dropped) is "finish".
    """

    NAMES = {"_synced": "start", "_rotated": "flush", "_finished": "finish"}

    def __init__(self, eng: Any) -> None:
        self.times: dict[str, list[float]] = {label: [] for label in self.NAMES.values()}
        self.spans: dict[str, list[tuple[float, float]]] = {label: [] for label in self.NAMES.values()}
        self.profiles: dict[str, Any] = {}
        self.profiling = False
        target = eng.snapshots
        for attr, label in self.NAMES.items():
            setattr(target, attr, self._wrap(getattr(target, attr), label))

    def _wrap(self, fn: Any, label: str) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            if self.profiling:
                import cProfile
                prof = self.profiles.setdefault(label, cProfile.Profile())
                return prof.runcall(fn, *a, **kw)
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                end = time.perf_counter()
                self.times[label].append(end - t)
                self.spans[label].append((t, end))
        return wrapper

    def overlaps(self, label: str, start: float, end: float) -> bool:
        return any(s < end and start < e for s, e in self.spans[label])

    def worst(self) -> dict[str, float]:
        return {label: max(v) if v else 0.0 for label, v in self.times.items()}

    def profile_summary(self, limit: int = 8) -> dict[str, list[list[Any]]]:
        """Per step, the functions with the most cumulative time: [name, calls, own s, cum s]."""
        import pstats
        out = {}
        for label, prof in self.profiles.items():
            st = pstats.Stats(prof)
            rows = []
            for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
                rows.append([f"{Path(file).name}:{line}({func})" if line else func, nc, tt, ct])
            rows.sort(key=lambda r: -r[3])
            out[label] = rows[:limit]
        return out


def time_aof_io() -> dict[str, list[Event]]:
    """Record (start, seconds) of every AOF write and fsync, through AofFile's I/O seam.

    Set on the class: the engine opens a new AofFile at each rotation.  Writes
    run on the event loop; fsyncs in a worker thread (list.append is atomic).
    """
    from helios_core.atlas.aof import AofFile

    record: dict[str, list[Event]] = {"write": [], "fsync": []}

    def timed(real: Any, sink: list[Event]) -> Any:
        def call(*a: Any) -> Any:
            t = time.perf_counter()
            try:
                return real(*a)
            finally:
                sink.append((t, time.perf_counter() - t))
        return staticmethod(call)

    AofFile.os_write = timed(AofFile.os_write, record["write"])  # type: ignore[assignment]
    AofFile.os_fsync = timed(AofFile.os_fsync, record["fsync"])  # type: ignore[assignment]
    return record


class LagMonitor:
    """A coroutine sleeping 1 ms at a time; how late each wake-up is tells the loop's stalls.

    With `sample_stacks`, a thread also samples the loop thread's stack every
    millisecond while the heartbeat is more than 6 ms overdue.  Python code
    holding the GIL still lets it in every switch interval (5 ms), so a stall
    in Python code or in a GIL-releasing call shows where it is; a stack
    sitting in `select` means the process was not getting a CPU.
    """

    def __init__(self, sample_stacks: bool = False) -> None:
        self.lags: list[Event] = []
        self.stacks: collections.Counter[str] = collections.Counter()
        self._beat = time.perf_counter()
        self._stop = asyncio.Event()
        self._thread_stop = threading.Event()
        self._loop_thread = threading.get_ident()
        self._task = asyncio.create_task(self._run())
        self._sampler = threading.Thread(target=self._sample, daemon=True) if sample_stacks else None
        if self._sampler is not None:
            self._sampler.start()

    async def _run(self) -> None:
        while not self._stop.is_set():
            t = self._beat = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags.append((t, time.perf_counter() - t - 0.001))

    def _sample(self) -> None:
        while not self._thread_stop.wait(0.001):
            if time.perf_counter() - self._beat > 0.006:
                frame = sys._current_frames().get(self._loop_thread)
                stack = []
                while frame is not None and len(stack) < 6:
                    code = frame.f_code
                    stack.append(f"{Path(code.co_filename).name}:{frame.f_lineno}({code.co_name})")
                    frame = frame.f_back
                self.stacks[" < ".join(stack)] += 1

    async def stop(self) -> None:
        self._stop.set()
        await self._task
        self._thread_stop.set()

    def summary(self, spans: list[tuple[float, float]], stall_s: float = 0.005) -> dict[str, float]:
        """Lag percentiles inside `spans`, with the count and total of stalls over `stall_s`."""
        from common import percentiles

        x = in_spans(self.lags, spans)
        return {**percentiles(x), "stalls": sum(1 for d in x if d > stall_s),
                "stalled_s": sum(d for d in x if d > stall_s)}
