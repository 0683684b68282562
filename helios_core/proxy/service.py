"""The proxy daemon: `ProxyService` (config, routing and pool state of one process) and `run_proxy`.

`ProxyService` holds what the data plane (`server.ClientConnection`) reads
for every request: the `Router`, one `PoolState` per pool, the `RetryBudget`,
the per-backend `UpstreamPool`s, metrics and the access log.  `apply(config)`
swaps all of that for a new config between two requests (the loop is single
threaded); backends whose id and url stay keep their health, breaker and
connections.

`run_proxy` is what `helios proxy` runs: bind, load the config from a
`ConfigSource` (`FileConfigSource`, re-read on SIGHUP; or the store's
`StoreConfigSource`, which pushes changes), serve, and on SIGTERM/SIGINT stop
accepting, let in-flight requests finish within a grace period, then close.
An invalid config at reload is logged with its file:line:key and the running
config stays.  With ``workers > 1`` the parent is a `helios_core.supervise.Supervisor`
(the one `helios gateway --workers` runs on) keeping N children that each bind
the same port with SO_REUSEPORT (the kernel spreads connections): it passes
SIGHUP on to each, restarts one that dies, gives up on a crash loop and on
SIGTERM lets each drain; health and breaker state are per process, the config
source is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gc
import hashlib
import ipaddress
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from helios_core.errors import ConfigError, HeliosError
from helios_core.observability import tracing
from helios_core.observability.accesslog import AccessLog
from helios_core.observability.logging import get_logger
from helios_core.proxy.exchange import Exchange
from helios_core.proxy.health import HealthChecker
from helios_core.proxy.loader import load_file
from helios_core.proxy.model import Pool, ProxyConfig
from helios_core.proxy.proxymetrics import ProxyMetrics
from helios_core.proxy.retry import RetryBudget
from helios_core.proxy.router import Router
from helios_core.proxy.server import ClientConnection, Request
from helios_core.proxy.state import BackendState, PoolState
from helios_core.proxy.upstream import UpstreamPool, Upstreams

if TYPE_CHECKING:
    from helios_core.config import HeliosConfig

__all__ = ["ProxyService", "ConfigSource", "FileConfigSource", "ServeOptions", "serve", "run_proxy", "bind_socket",
           "open_store_source"]

log = get_logger("proxy")
TICK = 0.05  # seconds between timeout checks: timeouts fire within this much of their due time
# One line per request through the process's one log writer, in the shape of every other line but
# without loguru's per-record cost (observability.logwriter says why).
access = AccessLog("proxy.access")


class ConfigSource(Protocol):
    async def load(self) -> ProxyConfig: ...

    async def watch(self, on_change: Callable[[ProxyConfig], None]) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


class FileConfigSource:
    """A YAML file (`loader.load_file`); `helios proxy` re-reads it on SIGHUP, it does not watch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def describe(self) -> str:
        return f"file {self.path}"

    async def load(self) -> ProxyConfig:
        config = load_file(self.path)
        if not config.version:
            # The status endpoint shows which file content is in force: a digest stands in for a version.
            digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
            config = dataclasses.replace(config, version=f"sha256:{digest}")
        return config

    async def watch(self, on_change: Callable[[ProxyConfig], None]) -> None:
        await asyncio.Event().wait()  # nothing pushes a file's changes: SIGHUP does

    def close(self) -> None:
        pass


async def open_store_source(config: HeliosConfig, *, data_dir: Path | None = None, store_url: str | None = None,
                            ) -> tuple[ConfigSource, Callable[[], Awaitable[None]]]:
    """The config source of ``helios proxy --data DIR | --store URL`` and the coroutine function that closes it.

    A data directory atlasd (or a gateway) owns is reached through its socket.  A free one is opened
    embedded, and this process then serves its unix socket as atlasd would (mode 0600, as the
    gateway does: issue 13 section 5), so ``helios snapshot --data DIR`` and ``helios proxy route
    list --data DIR`` work while the proxy runs; closing stops serving it, then closes the store.
    An embedded engine's ``atlas_*`` are on the proxy's metrics while it is open (one vocabulary
    wherever the engine runs: issue 13 section 3).
    """
    from helios_core.atlas.daemon import SOCKET_NAME, UNIX_PATH_MAX, AtlasServer
    from helios_core.atlas.metrics import export_engine
    from helios_core.proxy.store_config import StoreConfigSource
    from helios_core.store import EmbeddedStore
    from helios_core.store.url import open_store

    sock = Path(data_dir).absolute() / SOCKET_NAME if data_dir is not None else None
    if sock is not None and len(str(sock).encode()) > UNIX_PATH_MAX:
        log.warning("data directory path too long for a unix socket: tools cannot reach it while the proxy runs",
                    socket=str(sock))
        sock = None
    store = await open_store(data=data_dir, url=store_url, config=config, tool="helios proxy",
                             **({"socket": str(sock)} if sock is not None else {}))
    lender: AtlasServer | None = None
    if isinstance(store, EmbeddedStore) and sock is not None:
        lender = AtlasServer(store.engine, config, sock, owner="helios proxy")
        try:
            await lender.serve_socket()
        except BaseException:
            await store.close()
            raise
    unexport = export_engine(store)  # a no-op for a remote store (its engine exports its own)

    async def close() -> None:
        try:
            if lender is not None:
                await lender.stop_serving()
        finally:
            unexport()
            await store.close()

    return StoreConfigSource(store), close


class ProxyService:
    """One process's proxy: config, router, pools and their state; `protocol()` serves a client."""

    def __init__(self, config: ProxyConfig, *, clock: Callable[[], float] = time.monotonic,
                 access_log: bool = True, health_checks: bool = True, client_idle_timeout: float = 60.0,
                 header_timeout: float = 30.0) -> None:
        self.clock = clock
        self.client_idle_timeout = client_idle_timeout  # an idle keep-alive client connection is closed
        self.header_timeout = header_timeout  # a request head must arrive within this (else 408)
        self._next_sweep = 0.0
        self.access_log = access_log
        self.metrics = ProxyMetrics()
        self.upstreams = Upstreams(clock)
        self.pools: dict[str, PoolState] = {}
        self.budget = RetryBudget(config.retry_budget, config.retry_min_per_second)
        self.connections: set[ClientConnection] = set()
        self.active: set[Exchange] = set()  # exchanges whose timeouts the ticker checks
        self.loop: asyncio.AbstractEventLoop  # the serving loop: set by start() or the first protocol()
        self._ticker: asyncio.TimerHandle | None = None
        self.draining = False
        self.scheme = b"http"  # what X-Forwarded-Proto says for a direct client ("https" when serving TLS)
        self.config = config
        self.router = Router(config.routes)
        self.trusted_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
        self._upstream_of: dict[tuple[str, str], tuple[UpstreamPool, str]] = {}
        self.health: HealthChecker | None = (HealthChecker(lambda: self.pools.values(), clock)
                                             if health_checks else None)
        self.apply(config)

    # --- configuration ---

    def apply(self, config: ProxyConfig) -> None:
        """Switch to `config`; backends with the same id and url keep their state and connections."""
        pools: dict[str, PoolState] = {}
        for pool_id, pool in config.pools.items():
            state = self.pools.get(pool_id)
            if state is None:
                state = PoolState(pool)
            else:
                state.update(pool)
            pools[pool_id] = state
        self.pools = pools
        self.router = Router(config.routes)
        self.budget.configure(config.retry_budget, config.retry_min_per_second)
        self.trusted_networks = tuple(ipaddress.ip_network(c, strict=False) for c in config.trusted_proxies)
        keys = {(b.id, b.url) for p in config.pools.values() for b in p.backends}
        self.upstreams.retain(keys)
        self._upstream_of = {k: v for k, v in self._upstream_of.items() if k in keys}
        for pool in config.pools.values():
            for b in pool.backends:
                if (b.id, b.url) in self._upstream_of:
                    self.upstreams.get(b.id, b.url, b.host, b.port, max_connections=pool.max_connections,
                                       idle_timeout=pool.idle_timeout, tls=b.scheme == "https")
        self.config = config

    def upstream_for(self, backend: BackendState, pool: Pool) -> tuple[UpstreamPool, str]:
        """The connection pool of `backend` and the base path its URL puts in front of paths."""
        b = backend.backend
        key = (b.id, b.url)
        found = self._upstream_of.get(key)
        if found is None:
            up = self.upstreams.get(b.id, b.url, b.host, b.port, max_connections=pool.max_connections,
                                    idle_timeout=pool.idle_timeout, tls=b.scheme == "https")
            found = self._upstream_of[key] = (up, b.base_path)
        return found

    @staticmethod
    def retry_after(pool_state: PoolState, now: float) -> int:
        """Whole seconds for Retry-After: until a backend may be tried again, else one health interval."""
        wait = pool_state.retry_after(now) or pool_state.pool.health.interval
        return max(1, int(-(-wait // 1)))

    # --- serving ---

    def protocol(self) -> ClientConnection:
        if self._ticker is None:
            self.start_ticker()
        return ClientConnection(self)

    def start(self) -> None:
        """Health checks and the timeout ticker; needs the running loop the service will serve on."""
        self.start_ticker()
        if self.health is not None:
            self.health.start()

    def start_ticker(self) -> None:
        self.loop = asyncio.get_running_loop()
        if self._ticker is None:
            self._ticker = self.loop.call_later(TICK, self._tick)

    def _tick(self) -> None:
        # Timeouts of every exchange in flight, checked here rather than with two loop timers per
        # request (their arming and cancelling cost more than the rest of a small request's routing).
        now = self.loop.time()
        for exchange in list(self.active):
            exchange.check(now)
        if now >= self._next_sweep:  # client connections: once a second is plenty
            self._next_sweep = now + 1.0
            for conn in list(self.connections):
                conn.check(now)
        self._ticker = self.loop.call_later(TICK, self._tick)

    async def drain(self, grace: float) -> None:
        """Finish in-flight requests (at most `grace` s), close idle keep-alive connections, then the rest."""
        self.draining = True
        deadline = time.monotonic() + grace
        while True:
            for conn in list(self.connections):
                if conn.idle() and conn.transport is not None:
                    conn.transport.close()
            if not self.connections or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self.health is not None:
            await self.health.stop()
        self.upstreams.close()

    # --- status, metrics, logs ---

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "version": self.config.version,
            "pid": os.getpid(),
            "connections": len(self.connections),
            "routes": [{"id": r.id, "prefix": r.prefix, "pool": r.pool, "hosts": list(r.hosts),
                        "methods": list(r.methods)} for r in self.config.routes],
            "pools": {pid: {"balancer": ps.pool.balancer, "backends": ps.status(now)}
                      for pid, ps in self.pools.items()},
        }

    def render_metrics(self) -> bytes:
        now = self.clock()
        self.metrics.refresh(self.config.routes, {pid: ps.status(now) for pid, ps in self.pools.items()})
        return self.metrics.render()

    def log_request(self, req: Request, peer: str, status: int, route: str | None, backend: str | None,
                    tries: int, bytes_out: int = 0, error: str | None = None) -> None:
        if not self.access_log:
            return
        fields: dict[str, Any] = {
            "request_id": req.request_id, "method": req.method,
            "path": req.url.decode("latin-1")[:2000], "status": status, "route": route, "backend": backend,
            "tries": tries, "duration_ms": round((self.clock() - req.started) * 1000, 3),
            "bytes": bytes_out, "client": peer, "trace_id": req.trace_id,
        }
        if error:
            fields["error"] = error
        access.write(fields)

    def log_bad_request(self, peer: str, status: int, message: str) -> None:
        if self.access_log:
            access.write({"status": status, "client": peer, "error": message})


# --- the daemon ---


def bind_socket(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A non-blocking TCP socket on `host`:`port`; with `reuse_port` the supervisor's (SO_REUSEPORT,
    `helios_core.supervise.reuse_port_socket`), else one only this process may bind."""
    if reuse_port:
        from helios_core.supervise import reuse_port_socket

        return reuse_port_socket(host, port, listen=listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


OpenSource = Callable[[], Awaitable[tuple[ConfigSource, Callable[[], Awaitable[None]]]]]


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How each proxy process serves (what `helios proxy` options set besides the config source)."""

    grace: float = 10.0  # SIGTERM: seconds in-flight requests get to finish
    access_log: bool = True
    tls_cert: str | None = None  # PEM files: serve HTTPS; re-read on SIGHUP
    tls_key: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        if not (self.tls_cert or self.tls_key):
            return None
        if not (self.tls_cert and self.tls_key):
            raise ConfigError("give both --tls-cert and --tls-key", key="tls_cert")
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.load_cert(ctx)
        return ctx

    def load_cert(self, ctx: ssl.SSLContext) -> None:
        """(Re)load the certificate into `ctx`: new connections get it, open ones keep theirs."""
        try:
            ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the TLS certificate/key: {e}", key="tls_cert") from None


async def serve(open_source: OpenSource, sock: socket.socket, options: ServeOptions = ServeOptions(), *,
                on_ready: Callable[[ProxyService], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve on `sock` until SIGTERM/SIGINT (or `stop`): one process's whole life.

    `open_source()` gives the config source and a coroutine function that closes
    what it opened (a store).  SIGHUP reloads the config (and the TLS certificate).
    """
    loop = asyncio.get_running_loop()
    tls = options.tls_context()
    grace = options.grace
    # A SIGHUP while the config is being read (a supervisor passing an operator's reload on to a
    # worker it just restarted) must neither kill the process nor be lost: noted now, acted on
    # once serving, as the config read may predate the change it announces.
    early_hup: list[bool] = []
    loop.add_signal_handler(signal.SIGHUP, early_hup.append, True)
    try:
        source, close_source = await open_source()
    except BaseException:
        loop.remove_signal_handler(signal.SIGHUP)
        raise
    try:
        config = await source.load()
        service = ProxyService(config, access_log=options.access_log)
        # Everything loaded so far (click, loguru, prometheus, the YAML reader, the config) lives as
        # long as the process: out of the collector's sight, each collection only walks the objects
        # of requests in flight (measured: a few per cent of a small request's CPU).
        gc.collect()
        gc.freeze()
        service.scheme = b"https" if tls is not None else b"http"
        server = await loop.create_server(service.protocol, sock=sock, ssl=tls)
        service.start()
        stop = stop or asyncio.Event()
        reloading: set[asyncio.Task[None]] = set()

        def on_change(new: ProxyConfig) -> None:
            service.apply(new)
            log.info("config applied", version=new.version, routes=len(new.routes), pools=len(new.pools))

        async def reload() -> None:
            if tls is not None:
                try:
                    options.load_cert(tls)
                except ConfigError as e:
                    log.error("TLS certificate reload refused, the running one stays: {}", e.message)
            try:
                on_change(await source.load())
            except ConfigError as e:
                log.error("config reload refused, the running config stays: {}", e.message)
            except Exception as e:  # a store hiccup must not end the daemon
                log.error("config reload failed, the running config stays: {}", e)

        def hup() -> None:
            task = loop.create_task(reload())
            reloading.add(task)
            task.add_done_callback(reloading.discard)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, hup)
        if early_hup:
            hup()
        watcher = loop.create_task(source.watch(on_change))
        log.info("proxy serving", source=source.describe(), version=config.version, pid=os.getpid())
        if on_ready is not None:
            on_ready(service)
        await stop.wait()
        log.info("proxy draining", connections=len(service.connections), grace=grace)
        server.close()  # stop accepting; the drain decides when open connections end
        watcher.cancel()
        await service.drain(grace)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await service.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("proxy stopped", pid=os.getpid())
    finally:
        with contextlib.suppress(Exception):  # already gone after a clean stop; the loop may be closing
            loop.remove_signal_handler(signal.SIGHUP)
        source.close()
        await close_source()


def run_proxy(open_source: OpenSource, bind: str, port: int, workers: int = 1, *,
              options: ServeOptions = ServeOptions(),
              loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
              announce: Callable[[str], None] | None = None, ready_timeout: float = 60.0) -> None:
    """Run `helios proxy` until SIGTERM: in this process, or in `workers` children of a `Supervisor`.

    Raises HeliosError when the port cannot be had, the workers could not start (`ready_timeout`
    seconds each) or kept dying, or did not all stop cleanly.
    """
    options.tls_context()  # a missing or bad certificate is refused before anything starts
    try:
        # With workers the parent's socket only learns and reserves the port: were it listening too,
        # the kernel would hand it connections that nobody accepts.
        sock = bind_socket(bind, port, reuse_port=workers > 1, listen=workers == 1)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise HeliosError(f"cannot listen on {bind}:{port}: {e.strerror}; pick another with --bind/--port",
                              code="io") from e
        raise
    host = f"[{bind}]" if ":" in bind else bind
    url = f"{'https' if options.tls_cert else 'http'}://{host}:{sock.getsockname()[1]}"
    try:
        if workers == 1:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(serve(open_source, sock, options,
                                 on_ready=lambda service: announce(url) if announce is not None else None))
            return
        _run_workers(open_source, bind, sock.getsockname()[1], workers, options, loop_factory=loop_factory,
                     announce=lambda: announce(url) if announce is not None else None, ready_timeout=ready_timeout)
    finally:
        sock.close()


def _run_workers(open_source: OpenSource, bind: str, port: int, workers: int, options: ServeOptions, *,
                 loop_factory: Callable[[], asyncio.AbstractEventLoop] | None, announce: Callable[[], None],
                 ready_timeout: float) -> None:
    """`--workers N`: N proxy processes on `bind`:`port` under `helios_core.supervise` (the gateway's
    supervisor): SIGHUP passed on to each (each re-reads its config source), a dead one restarted,
    a crash loop given up on, SIGTERM/SIGINT drained in every process (`options.grace`)."""
    from helios_core.supervise import Group, Supervisor, reuse_port_socket

    def body(slot: int, ready: Callable[[], None]) -> None:
        # Bound here, listening once serve() starts the server: a listening socket gets its share of
        # new connections at once, and they would wait for the config source (or be reset, should
        # the start fail).
        own = reuse_port_socket(bind, port, listen=False)
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(serve(open_source, own, options, on_ready=lambda service: ready()))
        finally:
            own.close()
            tracing.force_flush()  # a forked child leaves by os._exit: no atexit flushes its spans

    try:
        with Supervisor("helios proxy") as sup:
            # forward_hup: serve() handles SIGHUP (a reload) from its first moment; until then the
            # supervisor has the child ignore it, and serve() reloads once started if one came.
            sup.start(Group("proxy", body, workers, grace=options.grace + 5.0, forward_hup=True))
            sup.wait_ready("proxy", ready_timeout)
            announce()
            log.info("proxy workers started", workers=workers, pids=sup.pids("proxy"))
            outcome = sup.run()
    except HeliosError as e:
        if e.code != "stopped":
            raise
        log.info("stopped while starting", error=e.message)  # SIGTERM before serving: a clean stop
        return
    if outcome.gave_up:
        raise HeliosError("the proxy workers kept dying at start (see the log above); stopped", code="workers")
    if not outcome.clean:
        raise HeliosError("the proxy workers did not all stop cleanly: " + "; ".join(outcome.problems),
                          code="workers")
