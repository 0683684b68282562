"""Where a store lives: `--data DIR` or a store URL, turned into an open Store.

Accepted URLs (see `FORMS`)::

    atlas://HOST[:PORT]                  atlasd over TCP (port 6380 unless given)
    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]   Redis, Valkey, or atlasd (port 6379 unless given)
    rediss://...                         the same over TLS
    unix:///PATH/TO/atlas.sock           a unix socket (atlasd's is DIR/atlas.sock)
    redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]
                                         the primary Redis Sentinel names for SERVICE
                                         (sentinels' port 26379 unless given)
    redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]
                                         a Redis Cluster, reached through any of the
                                         nodes listed (port 6379 unless given)
    rediss+cluster://...                 the same over TLS

A `redis+sentinel://` URL lists sentinels, not the primary: every new
connection asks them where SERVICE's primary is (redis-py's asyncio
`Sentinel(...).master_for(SERVICE)`), so a store follows a failover.  The
spelling is the redis-sentinel-url package's (Celery/Kombu list sentinels
as `sentinel://H1;sentinel://H2` with the service in transport options; one
URL with a host list fits `--store` better).  USER/PASSWORD are the
primary's, as `master_for(..., password=)` takes them; the sentinels' own
credentials, if they need any, go in `sentinel_password` /
`sentinel_username` query parameters; DB may also be given as `?db=N`.

A `redis+cluster://` URL lists startup nodes of a Redis Cluster: redis-py's
asyncio `RedisCluster` asks the first that answers for the slot map and
follows MOVED/ASK from then on, so one reachable node is enough (list a few
in case one is down).  A cluster has one database: a path or `db` other
than 0 is refused.  See store/cluster.py for what a cluster store does
differently (per-slot transactions and scripts).

With no password given, an `atlas://` URL on a loopback address uses the
password in force of this user's atlasd on that port (its DATA/atlasd.password,
found through the record atlasd keeps in the runtime directory), else
`atlasd.requirepass`; a directory's owner is reached through its unix socket,
which needs none.

Every form takes query parameters `password`, `username`, `db`, `timeout`
(seconds a reply may take) and `connect_timeout`; `rediss://` also
`ssl_cert_reqs` (none|optional|required), `ssl_ca_certs`, `ssl_certfile`,
`ssl_keyfile` and `ssl_check_hostname` (as does `rediss+cluster://`); `redis+sentinel://` also
`sentinel_password` and `sentinel_username`.  A password never appears in an
error message: URLs are shown redacted.

`open_store(data, url, config)` is what every command taking `--data DIR`
uses, so the same command works with or without a daemon: a free directory
is opened in this process (embedded); a directory atlasd owns is reached
through the unix socket its lock file names.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from helios_core.atlas.datadir import DataDir, password_for_port
from helios_core.config import HeliosConfig
from helios_core.errors import DataDirLockedError, HeliosError

if TYPE_CHECKING:
    from helios_core.store.base import Store

__all__ = ["StoreURL", "parse_store_url", "open_store", "FORMS"]

FORMS = ("atlas://HOST[:PORT], redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS), "
         "unix:///PATH/TO/atlas.sock[?password=...] "
         "redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB] "
         "or redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...] (rediss+cluster:// for TLS)")
DEFAULT_PORTS = {"atlas": 6380, "redis": 6379, "rediss": 6379}
SENTINEL_PORT = 26379
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SENTINEL_PARAMS = frozenset({"sentinel_password", "sentinel_username"})
_COMMON_PARAMS = frozenset({"password", "username", "db", "timeout", "connect_timeout"})
_TLS_PARAMS = frozenset({"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"})
_CERT_REQS = ("none", "optional", "required")
# How long open_store waits for an owner's socket to answer: atlasd records the
# socket in its lock file before it starts listening on it.
OWNER_CONNECT_SECONDS = 5.0


@dataclass(frozen=True, repr=False)
class StoreURL:
    """A parsed store URL.  `kind` is "tcp", "tls", "unix", "sentinel" or "cluster".

    For "sentinel", `sentinels` lists the sentinels' (host, port), `service` the
    name they monitor the primary under, and `host`/`port` are the first sentinel's.
    For "cluster", `sentinels` lists the startup nodes (host, port), `host`/`port`
    are the first's, and `ssl` says whether to use TLS (`tls` then holds its options).
    """

    url: str
    kind: str
    host: str = ""
    port: int = 0
    path: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    timeout: float | None = None
    connect_timeout: float | None = None
    tls: dict[str, Any] = field(default_factory=dict)
    service: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    ssl: bool = False

    def __repr__(self) -> str:
        return f"StoreURL({self.redacted!r})"

    @property
    def redacted(self) -> str:
        """The URL as it may be shown in logs and errors: no password."""
        return redact(self.url)

    @property
    def where(self) -> str:
        if self.kind == "sentinel":
            return f"{self.service} via sentinels " + ",".join(_hostport(h, p) for h, p in self.sentinels)
        if self.kind == "cluster":
            return "cluster " + ",".join(_hostport(h, p) for h, p in self.sentinels)
        return self.path if self.kind == "unix" else f"{self.host}:{self.port}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = "&".join(f"{k}=***" if k.endswith("password") else f"{k}={quote(v, safe='/')}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _bad(url: str, reason: str) -> HeliosError:
    return HeliosError(f"bad store URL {redact(url)!r}: {reason}; use {FORMS}", code="bad_store_url")


def parse_store_url(url: str) -> StoreURL:
    """Parse a store URL or raise HeliosError naming it (redacted) and the accepted forms."""
    if not isinstance(url, str) or "://" not in url:
        raise _bad(str(url), "not a URL")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme not in ("atlas", "redis", "rediss", "unix", SENTINEL_SCHEME, *CLUSTER_SCHEMES):
        raise _bad(url, f"unknown scheme {scheme!r}")
    if scheme == "unix":
        return _parse_unix(url, rest)
    if scheme == SENTINEL_SCHEME:
        return _parse_sentinel(url, rest)
    if scheme in CLUSTER_SCHEMES:
        return _parse_cluster(url, rest, tls=scheme == "rediss+cluster")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as e:  # a port that is not a number, or out of range
        raise _bad(url, str(e)) from None
    if not host:
        raise _bad(url, "no host")
    if parts.fragment:
        raise _bad(url, "a URL fragment ('#...') means nothing here")
    params = _params(url, parts.query, tls=scheme == "rediss")
    db = _db_from_path(url, parts.path)
    if "db" in params:
        db = _int_param(url, "db", params.pop("db"))
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return _finish(url, "tls" if scheme == "rediss" else "tcp", params, host=host, port=port, db=db,
                   username=username or None, password=password or None, atlas=scheme == "atlas")


def _parse_unix(url: str, rest: str) -> StoreURL:
    path, _, query = rest.partition("?")
    if "#" in path:
        raise _bad(url, "a URL fragment ('#...') means nothing here")
    if not path:
        raise _bad(url, "no socket path")
    if "@" in path.split("/", 1)[0]:
        raise _bad(url, "give a unix socket's credentials as ?password=... (and &username=...)")
    params = _params(url, query, tls=False)
    db = _int_param(url, "db", params.pop("db")) if "db" in params else 0
    return _finish(url, "unix", params, path=os.path.abspath(unquote(path)), db=db)


def _split_host_list(url: str, rest: str) -> tuple[str, str, str, str | None, str | None]:
    """(hosts, path, query, username, password) of a URL naming several hosts, comma-separated
    (sentinels, cluster nodes): parsed by hand, as urlsplit's .hostname/.port cannot read a list."""
    rest, _, query = rest.partition("?")
    if "#" in rest or "#" in query:
        raise _bad(url, "a URL fragment ('#...') means nothing here")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, _, pw = userinfo.partition(":")  # read as redis:// reads it (urlsplit's username/password)
        username, password = unquote(user) or None, unquote(pw) or None
    return hosts, path, query, username, password


def _parse_sentinel(url: str, rest: str) -> StoreURL:
    hosts, path, query, username, password = _split_host_list(url, rest)
    sentinels = tuple(_sentinel_address(url, item) for item in hosts.split(","))
    service, _, db_part = path.partition("/")
    service = unquote(service)
    if not service:
        raise _bad(url, "no service name: the name the sentinels monitor the primary under comes after the "
                        "hosts, as in redis+sentinel://HOST:26379/mymaster")
    if "/" in db_part.strip("/"):
        raise _bad(url, "the path is /SERVICE or /SERVICE/DB")
    params = _params(url, query, tls=False, extra=_SENTINEL_PARAMS)
    db = _db_from_path(url, db_part)
    if "db" in params:
        db = _int_param(url, "db", params.pop("db"))
    return _finish(url, "sentinel", params, host=sentinels[0][0], port=sentinels[0][1], db=db, service=service,
                   sentinels=sentinels, username=username, password=password,
                   sentinel_password=params.pop("sentinel_password", "") or None,
                   sentinel_username=params.pop("sentinel_username", "") or None)


def _parse_cluster(url: str, rest: str, *, tls: bool) -> StoreURL:
    hosts, path, query, username, password = _split_host_list(url, rest)
    nodes = tuple(_sentinel_address(url, item, what="cluster node", default_port=DEFAULT_PORTS["redis"])
                  for item in hosts.split(","))
    params = _params(url, query, tls=tls)
    db = _db_from_path(url, path)
    if "db" in params:
        db = _int_param(url, "db", params.pop("db"))
    if db:
        raise _bad(url, "a Redis Cluster has one database, db 0 (drop the /DB path)")
    return _finish(url, "cluster", params, host=nodes[0][0], port=nodes[0][1], sentinels=nodes,
                   username=username, password=password, ssl=tls)


def _sentinel_address(url: str, item: str, *, what: str = "sentinel",
                      default_port: int = SENTINEL_PORT) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:PORT
        host, sep, tail = item[1:].partition("]")
        if not sep or (tail and not tail.startswith(":")):
            raise _bad(url, f"bad {what} address {item!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise _bad(url, f"a {what} without a host (give HOST[:PORT], comma-separated)")
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise _bad(url, f"{what} port must be a number, not {port_text!r}") from None
    if not 0 < port < 65536:
        raise _bad(url, f"{what} port {port} is out of range 1-65535")
    return host, port


def _params(url: str, query: str, *, tls: bool, extra: frozenset[str] = frozenset()) -> dict[str, str]:
    allowed = _COMMON_PARAMS | extra | (_TLS_PARAMS if tls else frozenset())
    params: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise _bad(url, f"unknown parameter {name!r} (known: {', '.join(sorted(allowed))})")
        params[name] = value
    return params


def _db_from_path(url: str, path: str) -> int:
    path = path.strip("/")
    return _int_param(url, "db", path) if path else 0


def _int_param(url: str, name: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise _bad(url, f"{name} must be a whole number, not {value!r}") from None
    if n < 0:
        raise _bad(url, f"{name} must not be negative")
    return n


def _seconds(url: str, name: str, value: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise _bad(url, f"{name} must be a number of seconds, not {value!r}") from None
    if not 0 < s < float("inf"):
        raise _bad(url, f"{name} must be a positive number of seconds")
    return s


def _finish(url: str, kind: str, params: dict[str, str], *, atlas: bool = False, **fields: Any) -> StoreURL:
    if "password" in params:
        fields["password"] = params.pop("password") or None
    if "username" in params:
        fields["username"] = params.pop("username") or None
    if atlas and fields.get("db"):
        raise _bad(url, "atlasd has one database, db 0")
    timeout = _seconds(url, "timeout", params.pop("timeout")) if "timeout" in params else None
    connect = _seconds(url, "connect_timeout", params.pop("connect_timeout")) if "connect_timeout" in params else None
    tls: dict[str, Any] = {}
    for name, value in params.items():  # only TLS parameters are left
        if name == "ssl_cert_reqs":
            if value not in _CERT_REQS:
                raise _bad(url, f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
            tls[name] = value
        elif name == "ssl_check_hostname":
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise _bad(url, "ssl_check_hostname must be true or false")
            tls[name] = value.lower() in ("true", "1", "yes")
        else:
            tls[name] = value
    return StoreURL(url=url, kind=kind, timeout=timeout, connect_timeout=connect, tls=tls, **fields)


async def open_store(data: str | os.PathLike[str] | None = None, url: str | None = None,
                     config: HeliosConfig | None = None, **lock_info: Any) -> Store:
    """Open the store a command was pointed at: exactly one of `data` (a directory) or `url`.

    A free directory is opened embedded (this process becomes its owner;
    `lock_info` goes into the lock file, e.g. ``tool="helios user"``).  A
    directory owned by atlasd is reached through the unix socket its lock
    file names, with `config.atlasd.requirepass` if set.  A directory owned by
    a process that serves no socket (another embedded user) is an error
    naming that process.
    """
    if (data is None) == (url is None):
        raise HeliosError("give exactly one of a data directory or a store URL", code="bad_store")
    config = config or HeliosConfig()
    if url is not None:
        return await _remote(with_local_password(parse_store_url(url), config), config)
    assert data is not None
    ddir = DataDir(data)
    for _ in range(3):
        owner = ddir.owner()
        if owner is not None:
            return await _via_owner(ddir, owner, config)
        from helios_core.store.embedded import EmbeddedStore

        try:
            return await EmbeddedStore.open(ddir.path, config.atlas, **lock_info)
        except DataDirLockedError:
            continue  # a daemon took the directory between owner() and the lock: ask it instead
    raise DataDirLockedError(f"data directory {ddir.path} keeps changing owner; try again")


def with_local_password(target: StoreURL, config: HeliosConfig | None = None) -> StoreURL:
    """An atlas:// URL without a password, to this host: the password this user's atlasd uses."""
    if target.password is not None or not target.url.lower().startswith("atlas://") or not _loopback(target.host):
        return target
    found = password_for_port(target.port)
    password = found.decode() if found else ((config.atlasd.requirepass if config else "") or None)
    return dataclasses.replace(target, password=password) if password else target


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _via_owner(ddir: DataDir, owner: dict, config: HeliosConfig) -> Store:
    pid = owner.get("pid") or "(unknown pid)"
    sock = owner.get("socket")
    if not sock:
        raise DataDirLockedError(
            f"data directory {ddir.path} is in use by process {pid}, which does not serve other processes "
            f"(it records no socket in {ddir.lock_path}); stop it, or run atlasd on the directory and let "
            f"every command talk to that")
    target = StoreURL(url=f"unix://{sock}", kind="unix", path=str(sock))  # the socket's mode is its password
    deadline = asyncio.get_running_loop().time() + OWNER_CONNECT_SECONDS
    while True:
        try:
            return await _remote(target)
        except HeliosError as e:
            if e.code != "store_unavailable":
                raise  # it answered: a wrong password, say, is not cured by waiting
            if asyncio.get_running_loop().time() > deadline:
                raise DataDirLockedError(
                    f"data directory {ddir.path} is owned by process {pid}, but its socket {sock} "
                    f"does not answer: {e}") from e
            if ddir.owner() is None:  # it went away: the directory is free now
                raise DataDirLockedError(f"process {pid} released data directory {ddir.path} while we "
                                         f"connected to it; try again") from e
        await asyncio.sleep(0.05)  # the daemon records its socket before it listens on it


async def _remote(target: StoreURL, config: HeliosConfig | None = None) -> Store:
    try:
        from helios_core.store.cluster import ClusterStore
        from helios_core.store.remote import RemoteStore
    except ImportError as e:  # redis-py is what speaks the protocol
        raise HeliosError(f"store URLs need the redis package (pip install redis): {e}",
                          code="missing_dependency") from e
    kind = ClusterStore if target.kind == "cluster" else RemoteStore
    store = (kind(target, wait_replicas=config.store.wait_replicas,
                  wait_timeout_ms=config.store.wait_timeout_ms) if config else kind(target))
    try:
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store
