"""Backend health: active checks (rise/fall), passive outlier ejection, and the asyncio checker task.

The first two are pure logic with `now` passed in; `HealthChecker` is the only part with I/O.

- `HealthState`: a backend starts healthy (as nginx does, so traffic flows before the first check);
  `fall` failed checks in a row mark it unhealthy, `rise` passes in a row healthy again.
- `OutlierState`: `consecutive_failures` failed requests in a row (5xx, connect failures: the data
  plane decides) eject the backend for ``base_ejection × ejections``, capped at `max_ejection`.
  The pool asks `ejection_allowed` first, so never more than `max_ejected_share` of it is out at
  once: ejecting the last backends would turn a partial outage into a full one. The ejection count
  is forgotten after the backend has gone `max_ejection` seconds without being ejected.
- `HealthChecker`: one probe per backend every `health.interval`: HTTP/1.1 ``GET health.path`` on a
  fresh connection with ``Connection: close`` and `health.timeout`; a status in `health.expect`
  passes. The path is sent as written (the backend URL's base path is not put in front of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from helios_core.observability.logging import get_logger
from helios_core.proxy.model import Backend, HealthCheck, Outlier, UpstreamTLS

if TYPE_CHECKING:
    from helios_core.proxy.state import BackendState, PoolState

__all__ = ["HealthChecker", "HealthState", "OutlierState", "ejection_allowed", "probe", "upstream_ssl_context"]

log = get_logger("proxy")


class HealthState:
    """Rise/fall counting of active check results."""

    def __init__(self, cfg: HealthCheck) -> None:
        self.cfg = cfg
        self._healthy = True
        self.healthy = True  # what callers read: checks disabled means healthy (kept as a plain attribute,
        self.passes = 0      # since every pick reads it for every backend)
        self.failures = 0
        self.last_check: float | None = None

    def configure(self, cfg: HealthCheck) -> None:
        self.cfg = cfg
        self.healthy = self._healthy or not cfg.enabled

    def result(self, now: float, ok: bool) -> bool:
        """Count one check; True when this result flipped healthy/unhealthy."""
        self.last_check = now
        if ok:
            self.failures = 0
            self.passes += 1
            if not self._healthy and self.passes >= self.cfg.rise:
                self._healthy = self.healthy = True
                return True
        else:
            self.passes = 0
            self.failures += 1
            if self._healthy and self.failures >= self.cfg.fall:
                self._healthy = False
                self.healthy = not self.cfg.enabled
                return True
        return False


def ejection_allowed(ejected: int, total: int, share: float) -> bool:
    """May one more of `total` backends be ejected while `ejected` already are?"""
    # The epsilon keeps 0.3 * 10 from flooring to 2.
    return ejected + 1 <= int(share * total + 1e-9)


class OutlierState:
    """Passive ejection of one backend from the results of real requests."""

    def __init__(self, cfg: Outlier) -> None:
        self.cfg = cfg
        self.consecutive = 0
        self.ejections = 0  # times ejected (the multiplier), forgotten after a quiet max_ejection
        self.ejected_until = 0.0

    def ejected(self, now: float) -> bool:
        return self.cfg.enabled and now < self.ejected_until

    def duration(self) -> float:
        """How long the next ejection would last."""
        return min(self.cfg.base_ejection * (self.ejections + 1), self.cfg.max_ejection)

    def record(self, now: float, ok: bool, may_eject: Callable[[float], bool] | None = None) -> bool:
        """Count one request result; True when it ejected the backend."""
        if not self.cfg.enabled:
            return False
        if ok:
            self.consecutive = 0
            return False
        self.consecutive += 1
        if self.consecutive < self.cfg.consecutive_failures or self.ejected(now):
            return False
        if may_eject is not None and not may_eject(now):
            return False  # too much of the pool is out already; try again on the next failure
        if self.ejections and now >= self.ejected_until + self.cfg.max_ejection:
            self.ejections = 0
        self.ejected_until = now + self.duration()
        self.ejections += 1
        self.consecutive = 0
        return True


# --------------------------------------------------------------------------- the active checker


@functools.lru_cache(maxsize=64)
def upstream_ssl_context(tls: UpstreamTLS) -> ssl.SSLContext:
    """The client context for a pool's ``https://`` backends (cached: building one reads the CA store).

    Raises OSError/ssl.SSLError when `ca_file` cannot be loaded.
    """
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def probe(backend: Backend, cfg: HealthCheck, tls: UpstreamTLS | None = None) -> bool:
    """One check: GET cfg.path on `backend`; True if its status is expected, within cfg.timeout."""
    writer = None
    try:
        async with asyncio.timeout(cfg.timeout):
            ctx = server_name = None
            if backend.scheme == "https":
                tls = tls or UpstreamTLS()
                ctx, server_name = upstream_ssl_context(tls), tls.server_name or backend.host
            reader, writer = await asyncio.open_connection(backend.host, backend.port, ssl=ctx,
                                                           server_hostname=server_name)
            host = backend.host if ":" not in backend.host else f"[{backend.host}]"
            request = (f"GET {cfg.path} HTTP/1.1\r\nHost: {host}:{backend.port}\r\n"
                       f"User-Agent: helios-proxy-health\r\nAccept: */*\r\nConnection: close\r\n\r\n")
            writer.write(request.encode("latin-1"))
            await writer.drain()
            line = await reader.readline()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            return False
        return cfg.expects(int(parts[1]))
    except (OSError, TimeoutError, ssl.SSLError, ValueError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)


class HealthChecker:
    """Probes every backend of every pool `get_pools()` returns, each on its pool's interval.

    `get_pools` is called on every tick, so a reloaded config (new PoolStates, new backends) is
    picked up without restarting the checker. `clock` gives monotonic seconds (and is what results
    are stamped with). `start()` needs a running loop; `await stop()` cancels every probe.
    """

    def __init__(self, get_pools: Callable[[], Iterable[PoolState]], clock: Callable[[], float] = time.monotonic,
                 *, tick: float = 0.1) -> None:
        self.get_pools = get_pools
        self.clock = clock
        self.tick = tick
        self._task: asyncio.Task[None] | None = None
        self._due: dict[BackendState, float] = {}
        self._probes: dict[BackendState, asyncio.Task[None]] = {}

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="proxy-health")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._probes.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._probes.clear()
        self._due.clear()

    async def check_all(self) -> None:
        """Probe every backend of every enabled pool once, now, and wait for the results."""
        jobs = [self._check(b, p.pool.health) for p in self.get_pools() if p.pool.health.enabled for b in p.backends]
        await asyncio.gather(*jobs)

    async def _check(self, backend: BackendState, cfg: HealthCheck) -> None:
        ok = await probe(backend.backend, cfg, backend.pool.tls)
        was = backend.health.healthy
        backend.health_result(self.clock(), ok)
        if backend.health.healthy != was:
            log.bind(backend=backend.id, url=backend.backend.url).warning(
                "backend {} is {}", backend.id, "healthy again" if ok else "unhealthy")

    def _probe_done(self, backend: BackendState, task: asyncio.Task[None]) -> None:
        if self._probes.get(backend) is task:
            del self._probes[backend]
        if not task.cancelled() and task.exception() is not None:
            log.opt(exception=task.exception()).error("health check of {} failed", backend.id)

    async def _run(self) -> None:
        while True:
            try:
                self._schedule(self.clock())
            except Exception:  # a bad reload must not end health checking for good
                log.exception("health check scheduling failed")
            await asyncio.sleep(self.tick)

    def _schedule(self, now: float) -> None:
        """Start the probes that are due; forget backends a reload removed."""
        loop = asyncio.get_running_loop()
        seen: set[BackendState] = set()
        for pool in self.get_pools():
            cfg = pool.pool.health
            if not cfg.enabled:
                continue
            for backend in pool.backends:
                seen.add(backend)
                if now < self._due.get(backend, 0.0) or backend in self._probes:
                    continue
                self._due[backend] = now + cfg.interval
                task = loop.create_task(self._check(backend, cfg))
                self._probes[backend] = task
                task.add_done_callback(functools.partial(self._probe_done, backend))
        for gone in [b for b in self._due if b not in seen]:
            del self._due[gone]
            probe_task = self._probes.pop(gone, None)
            if probe_task is not None:
                probe_task.cancel()
