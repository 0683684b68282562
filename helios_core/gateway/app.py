"""The gateway service: build it on a Store, serve it, shut it down gracefully.

`GatewayService` wires the domain services (auth, rbac, rate limiting,
audit, the job queue) to the Tornado application, and runs the job reaper
(`JobReaper`: expired leases back to their queues, once a second).
`serve()` is what `helios gateway` runs: bind, open the data directory,
bootstrap, serve until SIGTERM/SIGINT, then stop accepting, end long polls,
let in-flight requests finish (up to `gateway.shutdown_timeout_seconds`),
close connections and the store.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application

from helios_core.atlas.daemon import SOCKET_NAME, UNIX_PATH_MAX, AtlasServer
from helios_core.atlas.metrics import EngineCollector
from helios_core.auth import AuditLog, AuthService, KeyRing, PasswordHasher
from helios_core.clock import service_clock
from helios_core.config import HeliosConfig
from helios_core.errors import ConfigError
from helios_core.gateway.base import NotFoundHandler
from helios_core.gateway.bootstrap import signing_key_specs, write_initial_password
from helios_core.gateway.context import Gateway
from helios_core.gateway.limits import GatewayHTTPServer, TrustedProxies, server_settings
from helios_core.gateway.proxied import GatewayProxy, proxied_url_spec
from helios_core.gateway.routes import HANDLERS, url_specs
from helios_core.gateway.storeops import StoreOps
from helios_core.jobs.queue import JobQueue
from helios_core.observability.logging import get_logger
from helios_core.observability.metrics import REGISTRY
from helios_core.ratelimit import Policy, RateLimiter, RateLimitSettings, parse_policy_entries
from helios_core.store import EmbeddedStore, Store
from helios_core.store.url import open_store, redact

__all__ = ["GatewayService", "JobReaper", "Started", "serve", "tune_gc", "rate_limit_settings", "BUILTIN_ROLE_POLICIES"]

log = get_logger("gateway")

# Limits for built-in roles that ratelimit.roles does not name.  A worker leases
# and acks on every job, and every worker process of one account shares that
# account's bucket: the 600/min default would throttle one busy worker to 5 jobs
# a second.  Workers are service accounts an admin created, so they get 1000
# requests a second; ratelimit.roles ("worker LIMIT SECONDS") or PUT
# /admin/ratelimit replace it.
BUILTIN_ROLE_POLICIES: dict[str, Policy] = {"worker": Policy(60000, 60, "worker")}


def rate_limit_settings(config: HeliosConfig) -> RateLimitSettings:
    rl = config.ratelimit
    limit, window = rl.default
    roles = {**BUILTIN_ROLE_POLICIES, **parse_policy_entries(rl.roles, "ratelimit.roles")}
    return RateLimitSettings(Policy(limit, window, "default"), roles,
                             parse_policy_entries(rl.clients, "ratelimit.clients"))


class JobReaper:
    """Returns jobs whose lease ran out to their queue (or the DLQ), and refreshes the depth gauge.

    `JobQueue.lease` also expires the leases of the queues it leases from, but
    a queue nobody leases from would keep its jobs IN_PROGRESS for ever, and
    after a restart every lease held when the gateway stopped has to run out
    somewhere: hence one `expire` at start and then one a second.  A failing
    tick (store read-only, atlasd away) is logged and retried, never fatal.
    """

    def __init__(self, gateway: Gateway, interval_s: float = 1.0, stats_every: int = 15) -> None:
        self.gateway = gateway
        self.interval_s = interval_s
        # Ticks between depth refreshes: JobQueue.stats reads every member of every ready and
        # delayed set (for the oldest pending age), so not every second; 15 s is a usual scrape.
        self.stats_every = stats_every
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ticks = 0
        self._last_error: tuple[str, float] | None = None

    async def tick(self) -> None:
        """Expire the leases that ran out (and now and then refresh the depth gauge); never raises."""
        gw = self.gateway
        try:
            now = gw.clock()
            # JobQueue.expire(now) runs one transaction per queue anyway: asking per queue costs
            # nothing more and says which queue the expired leases were on.
            for queue in await gw.jobs.queues():
                moved = await gw.jobs.expire(now, [queue])
                if moved:
                    gw.job_metrics.finish(gw.jobs.labels(queue), "expired", moved)
            if self._ticks % self.stats_every == 0:
                await self.refresh_depth()
            self._last_error = None
        except Exception as e:  # a background loop must outlive any one failure
            # Log a persisting failure once a minute, not once a second.
            text = f"{type(e).__name__}: {e}"
            last = self._last_error
            if last is None or last[0] != text or time.monotonic() - last[1] > 60:
                log.opt(exception=e).warning("job reaper tick failed; retrying", error=text)
                self._last_error = (text, time.monotonic())
        finally:
            self._ticks += 1

    async def refresh_depth(self) -> None:
        gw = self.gateway
        gw.job_metrics.set_depth(await gw.jobs.stats(gw.clock()), gw.jobs.labels)

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="helios-job-reaper")

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            except TimeoutError:
                await self.tick()

    async def stop(self) -> None:
        """Stop after the tick in progress (never cut a transaction in half)."""
        task, self._task = self._task, None
        if task is not None:
            self._stop.set()
            await task


class GatewayService:
    def __init__(self, config: HeliosConfig, store: Store, *, key_specs: list[str],
                 clock: Callable[[], int] = service_clock, hasher: PasswordHasher | None = None,
                 wall_clock: Callable[[], int] | None = None) -> None:
        a = config.auth
        self.config = config
        self.store = store
        keys = KeyRing.from_specs(key_specs, a.jwt_algorithms, issuer=a.jwt_issuer, audience=a.jwt_audience,
                                  leeway_s=a.clock_skew_seconds)
        self.hasher = hasher or PasswordHasher(a.bcrypt_cost)
        limiter = RateLimiter(store, rate_limit_settings(config))
        audit = AuditLog(store, a.audit_max_entries)
        auth = AuthService(store, a, keys, self.hasher, limiter, audit)
        self.gateway = Gateway(config, store, auth, limiter, audit, StoreOps(store),
                               TrustedProxies(config.gateway.trusted_proxies), JobQueue(store, config.jobs),
                               clock, wall_clock=wall_clock)
        self.reaper = JobReaper(self.gateway)
        # proxy.enabled: every path outside /api/ and /admin/ goes through the proxy's routes; the
        # catch-all comes last, so the gateway's own paths (the ops endpoints too) match first.
        self.proxy = GatewayProxy(config, store) if config.proxy.enabled else None
        specs = url_specs(self.gateway)
        if self.proxy is not None:
            specs.append(proxied_url_spec(self.gateway, self.proxy))
        self.app = Application(
            specs,
            default_handler_class=NotFoundHandler,
            default_handler_args={"gateway": self.gateway},
            log_function=self.gateway.request_done,
            routes=HANDLERS,
            serve_traceback=False,
        )
        self.server: HTTPServer | None = None

    async def start(self) -> str | None:
        """Seed roles, create the first admin on an empty store, bring job records to the current form,
        expire the leases that ran out while the gateway was down and start the reaper; returns the
        new admin's password (once)."""
        password = await self.gateway.auth.bootstrap(self.gateway.wall())
        await self.hasher.warm_up()
        await self.gateway.jobs.prepare()  # jobs/migrate.py, off the first request's path
        await self.reaper.tick()
        self.reaper.start()
        if self.proxy is not None:
            await self.proxy.start()
        return password

    def listen(self, sockets: list[socket.socket]) -> HTTPServer:
        g = self.config.gateway
        ssl_ctx = None
        if g.tls_cert or g.tls_key:
            if not (g.tls_cert and g.tls_key):
                raise ConfigError("give both gateway.tls_cert and gateway.tls_key", key="gateway.tls_cert")
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                ssl_ctx.load_cert_chain(g.tls_cert, g.tls_key)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load the TLS certificate/key: {e}", key="gateway.tls_cert") from None
        self.server = GatewayHTTPServer(self.app, ssl_options=ssl_ctx, **server_settings(g))
        self.server.add_sockets(sockets)
        return self.server

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting, end long polls, wait for in-flight requests, close connections; the store
        is the caller's."""
        gw = self.gateway
        gw.drain()  # a lease long poll answers what it has (usually []) instead of holding shutdown up
        if self.server is not None:
            self.server.stop()
        deadline = time.monotonic() + timeout_s
        while gw.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if gw.inflight:
            log.warning("shutdown timeout: cutting off in-flight requests", inflight=gw.inflight)
        await self.reaper.stop()
        if self.server is not None:
            try:
                await asyncio.wait_for(self.server.close_all_connections(), 5)
            except TimeoutError:
                pass
        if self.proxy is not None:
            await self.proxy.stop()
        self.hasher.close()


def tune_gc() -> None:
    """Once started: keep the startup heap out of the cyclic garbage collector's walks.

    What exists by then (modules, config, routes, the keyspace as recovered) lives as long as the
    process: collected once, then frozen out of the collector's sight, so a full collection no longer
    walks it (measured in bench/gateway.py, KV PUT: ~40 us of collection per request before).  The
    young generation's threshold stays CPython's: raised to 10,000 it saved ~15 us per GET, but
    bench/soak.py then showed the gateway's RSS growing ~1 MiB a minute (flat at the default).
    """
    gc.collect()
    gc.freeze()


@dataclass(frozen=True)
class Started:
    url: str
    port: int
    data_dir: Path | None
    store_url: str | None
    admin_password: str | None
    password_file: Path | None


async def serve(config: HeliosConfig, data_dir: Path | None, on_started: Callable[[Started], None],
                stop: asyncio.Event | None = None, store_url: str | None = None) -> None:
    """Run `helios gateway` until SIGTERM/SIGINT (or `stop` is set).

    The store is `data_dir` (embedded when free, atlasd's socket when atlasd
    owns it) or `store_url` (atlasd, Redis or Valkey).  Without a data
    directory, auth.jwt_keys must be configured and the first admin password
    is only printed.
    """
    g = config.gateway
    sockets = bind_sockets(g.port, g.bind, reuse_port=False)
    port = sockets[0].getsockname()[1]
    scheme = "https" if g.tls_cert else "http"
    host = f"[{g.bind}]" if ":" in g.bind else g.bind
    url = f"{scheme}://{host}:{port}"
    # A free data directory is opened embedded, and this process then serves its unix socket as
    # atlasd would (mode 0600), so `helios user|job|snapshot --data DIR` work while the gateway runs.
    sock = Path(data_dir).absolute() / SOCKET_NAME if data_dir is not None else None
    if sock is not None and len(str(sock).encode()) > UNIX_PATH_MAX:
        log.warning("data directory path too long for a unix socket: tools reach this gateway by --url only",
                    socket=str(sock))
        sock = None
    try:
        store = await open_store(data=data_dir, url=store_url, config=config, tool="helios gateway", http_url=url,
                                 **({"socket": str(sock)} if sock is not None else {}))
    except BaseException:
        for s in sockets:
            s.close()
        raise
    service: GatewayService | None = None
    lender: AtlasServer | None = None
    collector: EngineCollector | None = None
    try:
        if isinstance(store, EmbeddedStore):
            collector = EngineCollector(store.engine)  # atlas_* on this gateway's /metrics too
            REGISTRY.register(collector)
            if sock is not None:
                lender = AtlasServer(store.engine, config, sock, owner="helios gateway")
                await lender.serve_socket()
        service = GatewayService(config, store, key_specs=signing_key_specs(config.auth.jwt_keys, data_dir))
        password = await service.start()
        tune_gc()
        pw_file = write_initial_password(data_dir, password) if password and data_dir is not None else None
        service.listen(sockets)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if service.proxy is not None and config.proxy.config_file:
            loop.add_signal_handler(signal.SIGHUP, service.proxy.reload_soon)  # re-read proxy.config_file
        log.info("gateway listening", url=url,
                 **({"data": str(data_dir)} if data_dir else {"store": redact(store_url or "")}))
        on_started(Started(url, port, Path(data_dir) if data_dir else None, store_url, password, pw_file))
        await stop.wait()
        log.info("shutting down", inflight=service.gateway.inflight)
        await service.shutdown(g.shutdown_timeout_seconds)
    finally:
        if service is None or service.server is None:
            for s in sockets:
                s.close()
        if lender is not None:
            await lender.stop_serving()
        if collector is not None:
            REGISTRY.unregister(collector)
        if service is not None:
            await service.reaper.stop()
            if service.proxy is not None:
                await service.proxy.stop()
            service.hasher.close()
        await store.close()
        log.info("gateway stopped")
