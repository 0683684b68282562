"""What comes before a gateway serves: the files it keeps in its data directory, and `--workers N`.

The files are the generated signing secret and the first admin password.
Both are written atomically (tmp file, fsync, link or rename, fsync the
directory), mode 0600; the secret is linked into place only if none exists,
so two starts racing cannot each write a different secret and a crash never
leaves a half-written one.  The data directory is the authority (as for
the AOF): whoever can read it can read these.

`run_workers` is `helios gateway --workers N` (N > 1): a supervisor process
(`helios_core.supervise`) that does this bootstrap once, then keeps N gateway
processes serving one port (SO_REUSEPORT) on one store.  With `--data DIR` an
atlasd child owns the directory and the gateways reach it through
DIR/atlas.sock; with `--store URL` each gateway opens its own connection.
Metrics stay per process: each answers /metrics with its own counters and a
`helios_gateway_worker_info{slot,pid}` line saying which process it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from prometheus_client.core import GaugeMetricFamily

from helios_core.atlas.daemon import SOCKET_NAME, UNIX_PATH_MAX, AtlasServer
from helios_core.atlas.datadir import DataDir
from helios_core.auth.tokens import generate_secret
from helios_core.clock import service_clock
from helios_core.config import HeliosConfig
from helios_core.errors import ConfigError, DataDirLockedError, HeliosError
from helios_core.observability import tracing
from helios_core.observability.logging import get_logger
from helios_core.observability.metrics import REGISTRY
from helios_core.store.url import open_store

if TYPE_CHECKING:  # both import this module's importers: imported where used
    from helios_core.gateway.app import Started
    from helios_core.supervise import Supervisor

__all__ = ["signing_key_specs", "write_initial_password", "SECRET_FILE", "PASSWORD_FILE", "WorkersPlan",
           "run_workers"]

SECRET_FILE = "jwt_secret"
PASSWORD_FILE = "initial_admin_password"
log = get_logger("gateway")


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write `text` to `path`, mode 0600, atomically: a crash leaves the old file or the whole new one.

    tmp file (0600) -> fsync -> link (exclusive: fails if `path` exists, so two
    starts racing keep one secret) or rename -> fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            data = text.encode()
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def signing_key_specs(configured: tuple[str, ...], data_dir: Path | None) -> list[str]:
    """The configured auth.jwt_keys, or the one generated into DATA/jwt_secret on first start."""
    if configured:
        return list(configured)
    if data_dir is None:
        raise ConfigError("no auth.jwt_keys configured and no data directory to keep a generated one in; "
                          "set one, e.g. export HELIOS_AUTH__JWT_KEYS=\"k1=$(python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(48))')\" (the same value on every gateway that shares "
                          "the store), or run with --data DIR", key="auth.jwt_keys")
    path = Path(data_dir) / SECRET_FILE
    if not path.exists():
        try:
            _write_private(path, f"k{secrets.token_hex(4)}={generate_secret()}\n", exclusive=True)
            log.info("generated a JWT signing secret", path=str(path))
        except FileExistsError:
            pass
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("signing secret is readable by others; chmod 600 it", path=str(path), mode=oct(mode))
    spec = path.read_text().strip()
    if "=" not in spec:
        raise ConfigError(f"{path}: expected KID=SECRET", key="auth.jwt_keys")
    return [spec]


def write_initial_password(data_dir: Path, password: str) -> Path:
    path = Path(data_dir) / PASSWORD_FILE
    _write_private(path, password + "\n", exclusive=False)
    return path


# --- `helios gateway --workers N`: several gateway processes on one port ---


@dataclass(frozen=True)
class WorkersPlan:
    """What `run_workers` starts: `workers` gateway processes on `bind`:`port`, sharing `data_dir` or
    `store_url`.  `loop_factory` makes each process's event loop (uvloop's where installed)."""

    config: HeliosConfig
    workers: int
    data_dir: Path | None = None
    store_url: str | None = None
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    ready_timeout: float = 60.0  # seconds each process gets to open the store and listen


def run_workers(plan: WorkersPlan, on_started: Callable[[Started], None]) -> None:
    """Run N gateway processes until SIGTERM/SIGINT; raise HeliosError if they could not start or
    kept dying.

    Order: reserve the port; with a free data directory, start an atlasd child that owns it (unix
    socket only) and wait for its socket; bootstrap once in a short-lived child (the JWT secret,
    the first admin); fork the N gateways, each opening its own connection to the store and its
    own SO_REUSEPORT socket; announce.  SIGTERM stops the gateways first (each drains) and the
    atlasd child last, so its AOF is flushed after the last write the gateways acknowledged.
    """
    from helios_core.gateway.app import Started
    from helios_core.supervise import Group, Supervisor, call_in_child, reuse_port_socket

    config, g = plan.config, plan.config.gateway
    # Anchor the service clock here, before any fork: the N gateways (and any forked again later)
    # then share one frame for lease deadlines and buckets, and see a step of the wall clock together.
    service_clock()
    try:
        reserved = reuse_port_socket(g.bind, g.port, listen=False)
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise HeliosError(f"cannot listen on {g.bind}:{g.port}: {e.strerror}; pick another with --bind/--port",
                              code="io") from e
        raise
    port = reserved.getsockname()[1]
    host = f"[{g.bind}]" if ":" in g.bind else g.bind
    url = f"{'https' if g.tls_cert else 'http'}://{host}:{port}"
    try:
        with Supervisor("helios gateway") as sup:
            target = plan.store_url
            if plan.data_dir is not None:
                target = _data_dir_store(sup, plan)
            assert target is not None
            boot = call_in_child(lambda: asyncio.run(_bootstrap(config, target, plan.data_dir)),
                                 "the gateway bootstrap")
            # The workers get the signing keys in their config: none of them generates or reads one.
            wconfig = dataclasses.replace(config, auth=dataclasses.replace(config.auth, jwt_keys=tuple(boot["keys"])))

            def body(slot: int, ready: Callable[[], None]) -> None:
                # Bound now, listening only once the process can serve: a listening socket gets its
                # share of new connections at once, and they would wait for the store and the bcrypt
                # warm-up (or be reset, should the start fail).
                sock = reuse_port_socket(g.bind, port, listen=False)
                with asyncio.Runner(loop_factory=plan.loop_factory) as runner:
                    runner.run(_serve_worker(wconfig, target, sock, slot, ready))

            sup.start(Group("gateway", body, plan.workers, grace=g.shutdown_timeout_seconds + 10.0))
            sup.wait_ready("gateway", plan.ready_timeout)
            log.info("gateway workers listening", url=url, workers=plan.workers, pids=sup.pids("gateway"))
            pw_file = boot["password_file"]
            on_started(Started(url, port, plan.data_dir, plan.store_url, boot["password"],
                               Path(pw_file) if pw_file else None))
            outcome = sup.run()
    except HeliosError as e:
        if e.code != "stopped":
            raise
        log.info("stopped while starting", error=e.message)  # SIGTERM before serving: a clean stop
        return
    finally:
        reserved.close()
    if outcome.gave_up:
        raise HeliosError("the gateway processes kept dying at start (see the log above); stopped", code="workers")
    if not outcome.clean:
        raise HeliosError("the gateway processes did not all stop cleanly: " + "; ".join(outcome.problems),
                          code="workers")


def _data_dir_store(sup: Supervisor, plan: WorkersPlan) -> str:
    """The store URL the workers use for --data DIR: the socket of the directory's owner if it has
    one, else of an atlasd child started now (as `helios atlasd --data DIR --port 0` would)."""
    from helios_core.supervise import Group

    assert plan.data_dir is not None
    data = Path(plan.data_dir).absolute()
    owner = DataDir(data).owner()
    if owner is not None:
        if not owner.get("socket"):
            raise DataDirLockedError(f"data directory {data} is in use by process {owner.get('pid')}, which does "
                                     f"not serve other processes; stop it, or run atlasd on the directory")
        return "unix://" + quote(str(owner["socket"]))
    sock = data / SOCKET_NAME
    if len(str(sock).encode()) > UNIX_PATH_MAX:
        raise HeliosError(f"--workers needs the unix socket {sock}, longer than the {UNIX_PATH_MAX} bytes the OS "
                          f"allows; use a data directory with a shorter path", code="bad_config")
    config = plan.config
    # The atlasd child serves only the directory's socket: no TCP port (atlasd.port's default 6380
    # would clash with a real atlasd) and no metrics port.
    aconfig = dataclasses.replace(config, atlasd=dataclasses.replace(config.atlasd, port=0, metrics_port=0))

    def body(slot: int, ready: Callable[[], None]) -> None:
        with asyncio.Runner(loop_factory=plan.loop_factory) as runner:
            runner.run(_serve_atlasd(data, aconfig, ready))

    grace = config.atlasd.shutdown_timeout + 10.0
    sup.start(Group("atlasd", body, 1, grace=grace, forward_hup=False))
    sup.wait_ready("atlasd", plan.ready_timeout)
    return "unix://" + quote(str(sock))


async def _serve_atlasd(data: Path, config: HeliosConfig, ready: Callable[[], None]) -> None:
    """The atlasd child: own `data`, serve its socket until SIGTERM (flush the AOF, release the lock)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    tracing.configure(config, "helios-atlasd")  # its own provider: the parent's is the gateway's
    try:
        await _run_atlasd(data, config, ready)
    finally:
        tracing.shutdown()  # a forked child leaves by os._exit: no atexit flushes its spans


async def _run_atlasd(data: Path, config: HeliosConfig, ready: Callable[[], None]) -> None:
    server = AtlasServer.open(data, config)
    task = asyncio.ensure_future(server.run())
    sock = data / SOCKET_NAME
    while not task.done():  # ready once the socket answers (the lock file names it before it listens)
        try:
            _, writer = await asyncio.open_unix_connection(str(sock))
        except OSError:
            await asyncio.wait([task], timeout=0.02)
            continue
        writer.close()
        ready()
        break
    await task


async def _bootstrap(config: HeliosConfig, store_url: str, data_dir: Path | None) -> dict[str, Any]:
    """Once, before the workers: the signing keys (generated into DIR/jwt_secret if none is configured),
    the built-in roles and, on a store without users, the first admin (its password written to DIR)."""
    from helios_core.gateway.app import GatewayService

    keys = signing_key_specs(config.auth.jwt_keys, data_dir)
    store = await open_store(url=store_url, config=config)
    try:
        service = GatewayService(config, store, key_specs=keys)
        try:
            password = await service.gateway.auth.bootstrap(service.gateway.wall())
        finally:
            service.hasher.close()
    finally:
        await store.close()
    pw_file = write_initial_password(data_dir, password) if password and data_dir is not None else None
    return {"keys": keys, "password": password, "password_file": str(pw_file) if pw_file else None}


class _WorkerInfo:
    """helios_gateway_worker_info{slot, pid} 1: which of the N processes answered this scrape."""

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("helios_gateway_worker_info",
                                   "The gateway process that served this scrape (one of --workers N).",
                                   labels=["slot", "pid"])
        family.add_metric([str(self.slot), str(os.getpid())], 1)
        yield family


async def _serve_worker(config: HeliosConfig, store_url: str, sock: socket.socket, slot: int,
                        ready: Callable[[], None]) -> None:
    """One of the N gateway processes: its own store connection, its own socket on the shared port;
    serve until SIGTERM, then drain as a single gateway does."""
    from helios_core.gateway.app import GatewayService, tune_gc

    g = config.gateway
    tracing.configure(config, "helios-gateway")  # a fresh provider (the parent's exporter state is not ours)
    try:
        store = await open_store(url=store_url, config=config)
    except BaseException:
        tracing.shutdown()
        raise
    service: GatewayService | None = None
    REGISTRY.register(_WorkerInfo(slot))
    try:
        service = GatewayService(config, store, key_specs=list(config.auth.jwt_keys))
        await service.start()  # the bootstrap already ran: this only finds the admin there
        sock.listen(1024)
        service.listen([sock])
        tune_gc()  # as a single gateway does once started
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # The supervisor forwards SIGHUP: re-read proxy.config_file if there is one, else ignore it.
        proxy = service.proxy
        hup = proxy.reload_soon if proxy is not None and config.proxy.config_file else (lambda: None)
        loop.add_signal_handler(signal.SIGHUP, hup)
        ready()
        await stop.wait()
        log.info("shutting down", inflight=service.gateway.inflight, slot=slot)
        await service.shutdown(g.shutdown_timeout_seconds)
    finally:
        if service is None or service.server is None:
            sock.close()
        if service is not None:
            await service.reaper.stop()
            if service.proxy is not None:
                await service.proxy.stop()
            service.hasher.close()
        await store.close()
        tracing.shutdown()  # a forked child leaves by os._exit: no atexit flushes its spans
        log.info("gateway process stopped", slot=slot)
