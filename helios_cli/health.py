"""`helios health --url URL`: is the daemon at URL healthy?  Exit 0 yes, 1 no, one line either way.

Built for container HEALTHCHECKs and supervisors, so it needs nothing but the
URL.  HTTP daemons are asked in the order they are most likely to be: the
gateway's ``/healthz``, the proxy's ``/_helios/proxy/status`` (loopback
peers only, which a HEALTHCHECK inside the container is) and a worker's
``/metrics``; a URL with a path asks only that path.  Store daemons (atlasd,
Redis) get a PING with the password found the way `helios_core.store.url`
finds it: in the URL, else this user's atlasd on that loopback port, else
``atlasd.requirepass``.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click

from helios_cli.context import CliContext, pass_cli
from helios_core.config import HeliosConfig
from helios_core.errors import HeliosError
from helios_core.store.url import parse_store_url, with_local_password

__all__ = ["health", "probe", "Health", "HTTP_PATHS"]

# Gateway, proxy, worker metrics port: the first that answers 2xx decides.
HTTP_PATHS = ("/healthz", "/_helios/proxy/status", "/metrics")


@dataclass(frozen=True)
class Health:
    ok: bool
    line: str  # what to print: what answered, or why it is not healthy


def probe(url: str, timeout: float = 5.0, config: HeliosConfig | None = None) -> Health:
    """Ask the daemon at `url` whether it is healthy (never raises for an unhealthy daemon)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    try:
        if scheme in ("http", "https"):
            return _probe_http(url, timeout)
        if scheme in ("atlas", "redis", "rediss", "unix", "redis+sentinel"):
            return _probe_store(url, timeout, config)
    except HeliosError as e:
        if e.code in ("bad_store_url", "usage"):
            raise  # the URL is wrong, not the daemon
        return Health(False, f"unhealthy: {e.message}")
    raise HeliosError(f"cannot check {url!r}: use http(s)://HOST:PORT[/PATH], atlas://, redis://, rediss://, "
                      f"redis+sentinel:// or unix:// URLs", code="usage")


def _probe_http(url: str, timeout: float) -> Health:
    parts = urlsplit(url)
    if not parts.hostname:
        raise HeliosError(f"bad URL {url!r}: no host", code="usage")
    paths = (parts.path + (f"?{parts.query}" if parts.query else ""),) if parts.path not in ("", "/") else HTTP_PATHS
    last = ""
    for path in paths:
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            # A health check asks whether the process answers, not who signed its certificate
            # (containers serve self-signed ones on 127.0.0.1).
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        where = f"{parts.scheme}://{parts.netloc}{path}"
        try:
            conn.request("GET", path, headers={"User-Agent": "helios-health"})
            resp = conn.getresponse()
            resp.read(1 << 16)
        except (OSError, http.client.HTTPException) as e:
            # Nothing listens, or it does not speak HTTP: another path will not change that.
            return Health(False, f"unhealthy: {where}: {_reason(e)}")
        finally:
            conn.close()
        if 200 <= resp.status < 300:
            return Health(True, f"healthy: {where} answered {resp.status}")
        last = f"{where} answered {resp.status} {resp.reason}"
        if resp.status != 404:
            break  # it is the daemon, and it says it is not well
    return Health(False, f"unhealthy: {last}")


def _probe_store(url: str, timeout: float, config: HeliosConfig | None) -> Health:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    target = with_local_password(parse_store_url(url), config)
    # One attempt: redis-py's default retries would turn a dead port into seconds of backoff.
    kw: dict[str, Any] = {"password": target.password, "username": target.username, "retry": Retry(NoBackoff(), 0),
                          "socket_timeout": timeout, "socket_connect_timeout": target.connect_timeout or timeout}
    if target.kind == "unix":
        client = redis.Redis(unix_socket_path=target.path, **kw)
    elif target.kind == "sentinel":
        # Healthy means what a gateway needs: the sentinels name a primary and it answers PING.
        from redis.sentinel import MasterNotFoundError, Sentinel

        sentinel = Sentinel(list(target.sentinels), sentinel_kwargs={
            "socket_timeout": timeout, "socket_connect_timeout": timeout,
            "username": target.sentinel_username, "password": target.sentinel_password})
        try:
            host, port = sentinel.discover_master(target.service)
        except MasterNotFoundError as e:
            return Health(False, f"unhealthy: {target.redacted}: no sentinel names a primary for "
                                 f"{target.service!r}: {e}")
        finally:
            for s in sentinel.sentinels:
                s.close()
        client = redis.Redis(host=host, port=port, db=target.db, **kw)
    else:
        tls: dict[str, Any] = {}
        if target.kind == "tls":
            tls = {"ssl": True, **target.tls}
        client = redis.Redis(host=target.host, port=target.port, db=target.db, **kw, **tls)
    where = target.redacted
    try:
        with client:
            pong = client.ping()
    except redis.AuthenticationError as e:
        return Health(False, f"unhealthy: {where} answers but refused the password: {e}")
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "WRONGPASS" in str(e):
            return Health(False, f"unhealthy: {where} answers but needs a password (put it in the URL or set "
                                 f"HELIOS_ATLASD__REQUIREPASS): {e}")
        return Health(False, f"unhealthy: {where}: {e}")
    except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
        return Health(False, f"unhealthy: {where}: {_reason(e)}")
    if pong is not True:
        return Health(False, f"unhealthy: {where} answered PING with {pong!r}")
    return Health(True, f"healthy: {where} answered PONG")


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


@click.command("health", short_help="Exit 0 when the daemon at URL answers healthy, 1 otherwise.")
@click.option("--url", required=True, metavar="URL",
              help="http(s)://HOST:PORT[/PATH] (gateway, proxy, worker metrics), atlas://, redis://, rediss://, "
                   "unix:// (atlasd, Redis) or redis+sentinel:// (the primary the sentinels name).")
@click.option("--timeout", metavar="SECONDS", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="How long each attempt may take.")
@pass_cli
def health(obj: CliContext, url: str, timeout: float) -> None:
    """Check the daemon at URL and print one line: "healthy: ..." or "unhealthy: ...".

    HTTP URLs without a path try /healthz (gateway), /_helios/proxy/status
    (proxy) and /metrics (worker) until one answers 2xx.  Store URLs get a
    PING.  Exit status: 0 healthy, 1 not, 2 usage error.
    """
    try:
        result = probe(url, timeout, obj.config)
    except HeliosError as e:
        raise click.BadParameter(e.message, param_hint="'--url'") from e
    click.echo(result.line)
    if not result.ok:
        raise SystemExit(1)
