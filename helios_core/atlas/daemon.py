"""atlasd: the ATLAS engine served over the Redis protocol (TCP and a unix socket in the data dir).

`AtlasServer` owns the engine for the life of the process: it opens (and so
locks) the data directory, listens, keeps the registries connections share
(clients, pub/sub channels and patterns, WATCHed keys), serves Prometheus
metrics, and shuts down gracefully:

    stop accepting -> stop reading -> let owed replies go out (they wait for
    durability) -> optional final snapshot -> close clients -> remove the
    socket -> flush, fsync and release the directory (Engine.aclose)

The socket is removed before the lock is released, so a successor that takes
the lock never has its fresh socket deleted by us.

With `atlasd.tls_cert` and `atlasd.tls_key` the TCP port speaks TLS only; the
unix socket stays plain (it is reachable only by the directory's owner, mode
0600, and local tools use it).

Who may connect.  The unix socket needs no password: its mode (0600, in a
0700 directory) is the authority.  TCP always needs one: with no
`atlasd.requirepass` atlasd generates one on first start into
DIR/atlasd.password (0600, reused later), since otherwise any local user
could reach 127.0.0.1 and bypass the socket's permissions (issue 10).  The
file always holds the password in force (CONFIG SET requirepass rewrites it),
so `helios` tools and `redis-cli -a "$(cat DIR/atlasd.password)"` find it.
While the password is the generated one, protected mode still serves only
loopback clients; a password the operator set opens TCP to other hosts.
A failed AUTH is logged (at most once a second, with a count) and slows its
connection: the next read waits 0.1 s, doubling per failure up to 2 s, and the
tenth failure closes it.  Before AUTH the parser hands out one command at a
time, so guesses pipelined behind a failure wait their turn too.

A Lua script that runs past busy-reply-threshold stops the loop, as it stops
Redis: `BusyServer` (busy.py) then serves the other plain (not TLS) clients
and accepts new ones from inside the script, as Redis 7.0's BUSY state does,
until SCRIPT KILL, SHUTDOWN NOSAVE, the script's end or atlas.script_kill_after_ms.
"""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler

from helios_core import __version__
from helios_core.atlas.busy import BusyServer
from helios_core.atlas.client_connection import Connection
from helios_core.atlas.commands.server import REDIS_COMPAT_VERSION
from helios_core.atlas.datadir import DataDir, register_port, unregister_port
from helios_core.atlas.engine import Engine
from helios_core.atlas.glob import Glob, compile_glob
from helios_core.atlas.metrics import EngineCollector
from helios_core.atlas.resp import Push, Replies
from helios_core.atlas.watch import Watches
from helios_core.config import AtlasdConfig, HeliosConfig
from helios_core.errors import CommandError, HeliosError
from helios_core.observability.logging import get_logger

__all__ = ["AtlasServer", "SOCKET_NAME", "UNIX_PATH_MAX", "tls_context", "tune_gc"]

log = get_logger("atlasd")

SOCKET_NAME = "atlas.sock"
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes including the NUL


# Failed AUTHs the whole server answers per second before refusing AUTH without looking (see auth_allowed).
AUTH_FAILURES_PER_SECOND = 100


# The cyclic collector's gen0 threshold while serving (CPython's default is 700).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a process serving a keyspace.

    Every command allocates a handful of short-lived containers (argv lists, effect tuples,
    undo records, queue entries), and every list or set value in the keyspace is a tracked
    container too.  At the default thresholds a young collection ran every ~100 commands and
    the full ones walked every object imported at start-up plus every list and set stored
    (measured: about 10 us of CPU per HSET/SADD/LPUSH on a 2-core box, ~15 % of its cost).
    The keyspace holds no reference cycles (values are bytes, dicts, sets, deques and ZSets
    of bytes), so waiting longer between collections only delays reclaiming the rare
    cycle a connection object leaves behind.  What was loaded until now (modules, the
    recovered keyspace) is frozen out of the collector's sight, as the proxy does; the
    snapshotter's fork unfreezes it again, which costs nothing but that saving.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, max(gen1, 20), max(gen2, 20))


@dataclass
class Counters:
    connections: int = 0
    rejected: int = 0
    net_input_bytes: int = 0
    net_output_bytes: int = 0
    reads: int = 0   # reads from and writes to client sockets (INFO total_reads/writes_processed)
    writes: int = 0


def tls_context(cfg: AtlasdConfig) -> ssl.SSLContext | None:
    """The server-side TLS context from atlasd.tls_cert/tls_key; None when neither is set."""
    if not cfg.tls_cert and not cfg.tls_key:
        return None
    if not cfg.tls_cert or not cfg.tls_key:
        raise HeliosError("atlasd.tls_cert and atlasd.tls_key go together (--tls-cert F --tls-key F): "
                          "set both or neither", code="bad_config")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    except (OSError, ssl.SSLError) as e:
        raise HeliosError(f"cannot load the TLS certificate {cfg.tls_cert} with key {cfg.tls_key}: "
                          f"{getattr(e, 'strerror', None) or e}", code="bad_config") from e
    return ctx


class AtlasServer:
    def __init__(self, engine: Engine, config: HeliosConfig, socket_path: Path | None,
                 ssl_context: ssl.SSLContext | None = None, *, owner: str | None = None) -> None:
        cfg = config.atlasd
        self.engine = engine
        # Set when another service owns the engine and this server only lends it its unix socket
        # (`serve_socket`): SHUTDOWN is refused, stopping is that service's business.
        self.owner = owner
        self.config = config
        self.bind = cfg.bind
        self.port = cfg.port
        self.socket_path = socket_path
        self.requirepass: bytes | None = cfg.requirepass.encode() or None
        self.password_generated = False  # protected mode holds while the password is atlasd's own
        self._auth_log: tuple[float, int] = (0.0, 0)  # (last logged, failures not logged since)
        self._auth_window: tuple[float, int] = (0.0, 0)  # (this second's start, failed AUTHs in it)
        self.protected_mode = cfg.protected_mode
        self.maxclients = cfg.maxclients
        self.pubsub_limit = cfg.pubsub_output_limit
        self.max_bulk = engine.config.max_value_bytes
        self.clients: dict[int, Connection] = {}
        # Connections the loop accepted whose connection_made has not run yet (uvloop calls it one
        # step later): a script must not start before they are clients (Connection.data_received).
        self.accepting = 0
        self.channels: dict[bytes, set[Connection]] = {}
        self.patterns: dict[bytes, set[Connection]] = {}
        self.shard_channels: dict[bytes, set[Connection]] = {}  # SSUBSCRIBE/SPUBLISH's (one shard here)
        self._pattern_rx: dict[bytes, Glob] = {}
        self.watches = Watches(engine)
        self.counters = Counters()
        self.run_id = secrets.token_hex(20)
        self.closing = False
        self._next_id = 1
        self._listeners: list[asyncio.AbstractServer] = []
        self.busy = BusyServer(self)  # serves clients while a script is busy (busy.py)
        self._stop: asyncio.Future[bool] | None = None
        self._stopped: asyncio.Future[None] | None = None
        # The last per-second sample (_sample_ops): (when, commands, bytes in, bytes out), and the
        # rates since the one before: commands, bytes in and bytes out per second.
        self._ops: tuple[float, int, int, int] = (time.monotonic(), 0, 0, 0)
        self._rates: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self._metrics_server: Any = None
        self._sampler: asyncio.TimerHandle | None = None
        self.now = time.monotonic()  # refreshed every second: connections stamp activity with it
        self.ssl = ssl_context if ssl_context is not None else tls_context(cfg)
        # Keyspace notifications go out through this server's pub/sub; maxmemory is atlasd's own
        # setting (not applied to an engine another service owns and only lends us).
        engine.notifier.publish = self.publish
        if owner is None:
            engine.evictor.maxmemory = cfg.maxmemory
            engine.evictor.set_policy(cfg.maxmemory_policy, engine.clock(), (db for _, db in engine.dbs.made()))
        engine.observers_changed()

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str], config: HeliosConfig) -> AtlasServer:
        """Lock and recover `data_dir`; the lock file says how to reach this daemon."""
        path = Path(data_dir).absolute()
        sock = path / SOCKET_NAME
        if len(str(sock).encode()) > UNIX_PATH_MAX:
            raise HeliosError(f"the unix socket path {sock} is longer than the {UNIX_PATH_MAX} bytes the OS allows; "
                              f"use a data directory with a shorter path", code="bad_config")
        port = config.atlasd.port
        ctx = tls_context(config.atlasd)  # a bad certificate fails before the directory is locked
        engine = Engine.open(path, config.atlas, databases=config.atlasd.databases, component="atlasd",
                             socket=str(sock), port=port or None, bind=config.atlasd.bind if port else None,
                             tls=bool(ctx) if port else None)
        server = cls(engine, config, sock, ctx)
        try:
            ddir = DataDir(path)
            if server.requirepass is None:
                server.requirepass = ddir.ensure_password()
                server.password_generated = True
            else:
                ddir.write_password(server.requirepass)
        except BaseException:
            engine.close()
            raise
        return server

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        self._stopped = loop.create_future()
        self.engine.attach(loop)
        where = str(self.socket_path)
        try:
            if self.socket_path is not None:
                await self._listen_unix(self.socket_path)
            if self.port:
                where = f"{self.bind}:{self.port}"
                hosts = self.bind.replace(",", " ").split() or None
                srv = await loop.create_server(lambda: Connection(self, False), host=hosts, port=self.port,
                                               backlog=511, reuse_address=True, ssl=self.ssl)
                self._listeners.append(srv)
                register_port(self.port, self.engine.data_path())  # atlas://127.0.0.1:PORT finds the password
            where = f"{self.bind}:{self.config.atlasd.metrics_port} (metrics)"
            if self.config.atlasd.metrics_port:
                self._start_metrics()
        except OSError as e:
            await self._close_listeners()
            if self._metrics_server is not None:
                self._metrics_server.stop()
            if self.socket_path is not None:
                self.socket_path.unlink(missing_ok=True)
            await self.engine.aclose()
            raise HeliosError(f"cannot listen on {where}: {e.strerror or e}", code="listen") from e
        self._sampler = loop.call_later(1.0, self._sample_ops)
        log.info("atlasd ready", data=str(self.engine.data_path()), bind=self.bind if self.port else None,
                 port=self.port or None, tls=self.ssl is not None if self.port else None,
                 socket=str(self.socket_path), appendfsync=self.engine.policy,
                 metrics_port=self.config.atlasd.metrics_port or None, keys=self.engine.dbs.keys(),
                 version=__version__, pid=os.getpid())

    async def _listen_unix(self, path: Path) -> None:
        """Listen on the data directory's socket, mode 0600 from birth (the mode is its password)."""
        # We hold the directory lock, so a socket file left here is a dead owner's.
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # born 0600: no window where others could connect
        try:
            srv = await asyncio.get_running_loop().create_unix_server(
                lambda: Connection(self, True), path=str(path), backlog=511)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._listeners.append(srv)

    async def serve_socket(self) -> None:
        """Serve only the unix socket, on an engine another service owns and drives (the gateway
        with an embedded store), so `helios user|job|snapshot|aof-check --data DIR` reach a running
        service's directory as they reach atlasd's.  Stop with `stop_serving`."""
        assert self.owner is not None and self.socket_path is not None
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        self._stopped = loop.create_future()
        await self._listen_unix(self.socket_path)
        self._sampler = loop.call_later(1.0, self._sample_ops)
        log.info("serving the data directory's socket", socket=str(self.socket_path), owner=self.owner)

    async def stop_serving(self, timeout: float = 5.0) -> None:
        """Undo `serve_socket`: stop accepting, let owed replies go out, close, remove the socket.
        The engine stays open for its owner to close."""
        self.closing = True
        await self._close_listeners()
        for conn in list(self.clients.values()):
            conn.transport.pause_reading()
        await self._wait(lambda: all(c.idle() for c in self.clients.values()), timeout)
        for conn in list(self.clients.values()):
            conn.close_after_replies()
        await self._wait(lambda: not self.clients, 2.0)
        for conn in list(self.clients.values()):
            conn.kill()
        if self._sampler is not None:
            self._sampler.cancel()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT or SHUTDOWN, then shut down gracefully."""
        await self.start()
        tune_gc()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            assert self._stop is not None
            save = await self._stop
            await self._shutdown(save)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def stop(self, save: bool = False) -> None:
        """Shut down a server started with `start()` (not `run()`), as SIGTERM would."""
        self.request_shutdown(save)
        await self._shutdown(save)

    def _on_signal(self, sig: int) -> None:
        if self._stop is not None and self._stop.done():
            log.warning("already shutting down", signal=signal.Signals(sig).name)
            return
        log.info("shutdown requested", signal=signal.Signals(sig).name)
        self.request_shutdown(False)

    def request_shutdown(self, save: bool) -> asyncio.Future[None]:
        """Begin a graceful shutdown; the future fails only if the shutdown does."""
        assert self._stop is not None and self._stopped is not None
        if not self._stop.done():
            self._stop.set_result(save)
        return self._stopped

    def shutdown_after_snapshot(self, force: bool) -> asyncio.Future[None]:
        """SHUTDOWN SAVE: write a snapshot while still serving, then shut down.  If the snapshot
        fails, stay up and fail the future with Redis's error (FORCE: shut down anyway; the AOF
        holds every write)."""

        async def go() -> None:
            try:
                info = await self.engine.bgsave()
                log.info("snapshot before shutdown written", seq=info.seq, keys=info.keys)
            except Exception as e:
                if not force:
                    log.error("SHUTDOWN SAVE: the snapshot failed; not shutting down (SHUTDOWN SAVE FORCE "
                              "shuts down anyway, the AOF has every write)", error=str(e))
                    raise CommandError("ERR Errors trying to SHUTDOWN. Check logs.") from e
                log.error("SHUTDOWN SAVE FORCE: the snapshot failed; shutting down, the AOF has every write",
                          error=str(e))
            await self.request_shutdown(False)

        return asyncio.ensure_future(go())

    async def _shutdown(self, save: bool) -> None:
        self.closing = True
        await self._close_listeners()
        timeout = float(self.config.atlasd.shutdown_timeout)
        clients = list(self.clients.values())
        for conn in clients:
            conn.transport.pause_reading()
        # Replies owed are released as their writes become durable (the engine keeps running).
        await self._wait(lambda: all(c.idle() for c in self.clients.values()), timeout)
        if save:
            try:
                info = await self.engine.bgsave()
                log.info("final snapshot written", seq=info.seq, keys=info.keys)
            except Exception as e:  # the AOF still holds everything: go on shutting down
                log.error("final snapshot failed; the AOF has every write", error=str(e))
        assert self._stopped is not None
        if not self._stopped.done():
            self._stopped.set_result(None)  # SHUTDOWN's own reply: none, the connection just closes
        for conn in list(self.clients.values()):
            conn.close_after_replies()
        await self._wait(lambda: not self.clients, 2.0)
        for conn in list(self.clients.values()):
            conn.kill()
        if self._sampler is not None:
            self._sampler.cancel()
        if self._metrics_server is not None:
            self._metrics_server.stop()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
        if self.port:
            unregister_port(self.port, self.engine.data_path())
        await self.engine.aclose()
        log.info("atlasd stopped", seq=self.engine.seq)

    def listeners(self) -> list[asyncio.AbstractServer]:
        """The listening servers (TCP, the unix socket)."""
        return list(self._listeners)

    async def _close_listeners(self) -> None:
        for srv in self._listeners:
            srv.close()
        for srv in self._listeners:
            try:
                await asyncio.wait_for(srv.wait_closed(), 0.5)
            except (TimeoutError, OSError):
                pass  # Python 3.12+ waits for every connection here; they are closed below
        self._listeners.clear()

    @staticmethod
    async def _wait(done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    # -- clients --------------------------------------------------------------------------

    def add_client(self, conn: Connection) -> None:
        conn.id = self._next_id
        self._next_id += 1
        self.clients[conn.id] = conn

    def remove_client(self, conn: Connection) -> None:
        counters = self.counters
        counters.net_input_bytes += conn.net_in
        counters.net_output_bytes += conn.net_out
        counters.reads += conn.reads
        counters.writes += conn.writes
        if self.clients.get(conn.id) is conn:
            del self.clients[conn.id]
        self.unwatch(conn)
        self.engine.tracking.disable(conn)
        if conn.channels:
            self.unsubscribe(conn, [], pattern=False)
        if conn.patterns:
            self.unsubscribe(conn, [], pattern=True)
        if conn.shard_channels:
            self.unsubscribe(conn, [], shard=True)

    def set_requirepass(self, password: bytes | None) -> None:
        """Connected clients keep their state (as Redis); with no password left, all are in.

        The password file follows, so local tools keep finding the password in force.
        """
        self.requirepass = password
        self.password_generated = False
        ddir = DataDir(self.engine.data_path())
        if password is None:
            ddir.password_path.unlink(missing_ok=True)
            for conn in self.clients.values():
                conn.set_authed(True)
        else:
            ddir.write_password(password)

    def auth_allowed(self) -> bool:
        """False while this second already saw AUTH_FAILURES_PER_SECOND failed AUTHs, server-wide.

        The per-connection delay slows one connection; a guesser with many connections is held
        to this many guesses a second in all.  While it holds, AUTH on TCP is refused without
        looking (a client with the right password too, for the rest of that second); the unix
        socket needs no AUTH and stays open to the operator's tools."""
        start, failures = self._auth_window
        return failures < AUTH_FAILURES_PER_SECOND or time.monotonic() - start >= 1.0

    def auth_failed(self, conn: Connection) -> None:
        """Count a failed AUTH; log, at most one line a second (a guesser must not flood the log)."""
        now = time.monotonic()
        start, failures = self._auth_window
        self._auth_window = (start, failures + 1) if now - start < 1.0 else (now, 1)
        last, unlogged = self._auth_log
        if now - last < 1.0:
            self._auth_log = (last, unlogged + 1)
            return
        self._auth_log = (now, 0)
        log.warning("AUTH failed", addr=conn.addr, failures_on_connection=conn.auth_failures,
                    failures_not_logged=unlogged)

    def set_max_bulk(self, n: int) -> None:
        self.max_bulk = n
        for conn in self.clients.values():
            conn.parser.set_unauthenticated(not conn.authed, n)

    def hello_info(self, conn: Connection) -> dict[bytes, Any]:
        return {b"server": b"atlas", b"version": REDIS_COMPAT_VERSION.encode(), b"proto": 3 if conn.resp3 else 2,
                b"id": conn.id, b"mode": b"standalone", b"role": b"master", b"modules": []}

    def _sample_ops(self) -> None:
        t0, n0, in0, out0 = self._ops
        now, total = time.monotonic(), sum(self.engine.stats.commands.values())
        net_in, net_out = self.net_bytes()
        self.now = now
        span = max(now - t0, 1e-6)
        # (CONFIG RESETSTAT lowers the totals between two samples: no negative rate)
        self._ops = (now, total, net_in, net_out)
        self._rates = (max(total - n0, 0) / span, max(net_in - in0, 0) / span, max(net_out - out0, 0) / span)
        self._sampler = asyncio.get_running_loop().call_later(1.0, self._sample_ops)

    def net_bytes(self) -> tuple[int, int]:
        """Bytes read from and written to clients since start (or CONFIG RESETSTAT)."""
        live = self.clients.values()
        return (self.counters.net_input_bytes + sum(c.net_in for c in live),
                self.counters.net_output_bytes + sum(c.net_out for c in live))

    def io_counts(self) -> tuple[int, int]:
        """Reads from and writes to client sockets since start (or CONFIG RESETSTAT)."""
        live = self.clients.values()
        return (self.counters.reads + sum(c.reads for c in live),
                self.counters.writes + sum(c.writes for c in live))

    def ops_per_sec(self) -> int:
        return int(self._rates[0])

    def net_kbps(self) -> tuple[float, float]:
        """KiB per second read and written over the last second's sample (INFO instantaneous_*_kbps)."""
        return self._rates[1] / 1024, self._rates[2] / 1024

    def reset_stats(self) -> None:
        self.counters = Counters()
        for conn in self.clients.values():
            conn.net_in = conn.net_out = conn.reads = conn.writes = 0
        # (config.py's RESETSTAT resets the engine's command, expiry and eviction counts; the
        # active-expiry cycle's own, which Redis's RESETSTAT clears too, are reset here)
        self.engine.stats.reset_expire_cycle()

    # -- WATCH (watch.py) -------------------------------------------------------------------

    def watch(self, conn: Connection, keys: list[bytes], now_ms: int) -> None:
        self.watches.watch(conn, keys, now_ms)

    def watch_expired(self, conn: Connection) -> bool:
        return self.watches.expired(conn)

    def unwatch(self, conn: Connection) -> None:
        self.watches.unwatch(conn)

    # -- pub/sub ----------------------------------------------------------------------------

    def _kind(self, conn: Connection, pattern: bool, shard: bool) -> tuple[set[bytes], dict[bytes, set[Connection]]]:
        """The connection's names and the server's registry of a kind of subscription."""
        if shard:
            return conn.shard_channels, self.shard_channels
        return (conn.patterns, self.patterns) if pattern else (conn.channels, self.channels)

    @staticmethod
    def _count(conn: Connection, shard: bool) -> int:
        """The count a (un)subscribe reply carries: shard channels alone, or channels and patterns."""
        return len(conn.shard_channels) if shard else len(conn.channels) + len(conn.patterns)

    def subscribe(self, conn: Connection, names: list[bytes], *, pattern: bool = False,
                  shard: bool = False) -> Replies:
        kind = b"ssubscribe" if shard else b"psubscribe" if pattern else b"subscribe"
        mine, registry = self._kind(conn, pattern, shard)
        replies = Replies()
        for name in names:
            if name not in mine:
                mine.add(name)
                registry.setdefault(name, set()).add(conn)
                if pattern and name not in self._pattern_rx:
                    self._pattern_rx[name] = compile_glob(name)
            replies.append(Push([kind, name, self._count(conn, shard)]))
        conn.subscriptions_changed()
        return replies

    def unsubscribe(self, conn: Connection, names: list[bytes], *, pattern: bool = False,
                    shard: bool = False) -> Replies:
        kind = b"sunsubscribe" if shard else b"punsubscribe" if pattern else b"unsubscribe"
        mine, registry = self._kind(conn, pattern, shard)
        replies = Replies()
        targets = names or sorted(mine)
        for name in targets:
            if name in mine:
                mine.discard(name)
                conns = registry.get(name)
                if conns is not None:
                    conns.discard(conn)
                    if not conns:
                        del registry[name]
                        if pattern:
                            self._pattern_rx.pop(name, None)
            replies.append(Push([kind, name, self._count(conn, shard)]))
        if not targets:
            replies.append(Push([kind, None, self._count(conn, shard)]))
        conn.subscriptions_changed()
        return replies

    def publish(self, channel: bytes, message: bytes) -> int:
        n = 0
        subs = self.channels.get(channel)
        if subs:
            n += self._deliver(list(subs), Push([b"message", channel, message]))
        for pat, conns in list(self.patterns.items()):
            if self._pattern_rx[pat].match(channel):
                n += self._deliver(list(conns), Push([b"pmessage", pat, channel, message]))
        return n

    def spublish(self, channel: bytes, message: bytes) -> int:
        """A shard channel's message: to its own subscribers only (no patterns match shard channels)."""
        subs = self.shard_channels.get(channel)
        return self._deliver(list(subs), Push([b"smessage", channel, message])) if subs else 0

    @staticmethod
    def _deliver(conns: list[Connection], msg: Push) -> int:
        wire: dict[Any, bytes] = {}  # encoded once per (encoder, RESP3) among the receivers
        for conn in conns:
            kind = (conn.enc, conn.resp3)
            data = wire.get(kind)
            if data is None:
                data = wire[kind] = conn.enc(msg, conn.resp3)
            conn.push(data)
        return len(conns)

    # -- metrics ----------------------------------------------------------------------------

    def _start_metrics(self) -> None:
        registry = CollectorRegistry(auto_describe=False)
        # process_* and python_info as every other daemon serves them (the dashboards' process panels).
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        registry.register(EngineCollector(self.engine))
        registry.register(_AtlasCollector(self))

        class MetricsHandler(RequestHandler):
            def get(self) -> None:
                self.set_header("Content-Type", CONTENT_TYPE_LATEST)
                self.write(generate_latest(registry))

        app = Application([(r"/metrics", MetricsHandler)])
        server = self._metrics_server = HTTPServer(app)
        for host in self.bind.replace(",", " ").split() or [""]:
            server.listen(self.config.atlasd.metrics_port, address=host)


class _AtlasCollector:
    """The daemon's own counters at scrape time; the engine's come from EngineCollector."""

    def __init__(self, server: AtlasServer) -> None:
        self.server = server

    def collect(self) -> Any:
        server = self.server
        yield GaugeMetricFamily("atlas_connected_clients", "Client connections open.", value=len(server.clients))
        yield CounterMetricFamily("atlas_connections", "Client connections accepted.",
                                  value=server.counters.connections)
