"""The proxy's configuration model: frozen dataclasses, validated by `parse_config`, no I/O.

`parse_config(data)` (defined in parse.py, re-exported here) takes the plain-dict shape of
`configs/proxy.yaml` (the store form assembles the same shape) and returns a `ProxyConfig`,
or raises `ProxyConfigError` (a `ConfigError`) naming the key path, e.g.
``routes[1].pool: unknown pool 'x' (pools: web)``.  The YAML loader passes `where`, which maps
a key path to ``"file:line"`` so the message starts with the place in the file.
`to_dict(config)` is the inverse: `parse_config(to_dict(c)) == c`.

Durations are seconds (int or float); strings such as ``"500ms"``, ``"2s"``, ``"1m"`` are accepted too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from helios_core.digits import plain_int
from helios_core.errors import ConfigError

__all__ = [
    "BALANCERS",
    "Backend",
    "BreakerConfig",
    "HealthCheck",
    "Outlier",
    "Pool",
    "ProxyConfig",
    "ProxyConfigError",
    "Route",
    "Timeouts",
    "UpstreamTLS",
    "format_path",
    "parse_config",
    "parse_duration",
    "to_dict",
]

BALANCERS = ("round_robin", "least_conn", "weighted", "p2c")

KeyPath = tuple[str | int, ...]
Where = Callable[[KeyPath], str | None]


class ProxyConfigError(ConfigError):
    """A ConfigError whose text is ``"{file}:{line}: {key path}: {what is wrong}"`` (the agreed form).

    `location` is what `where` gave (``"file:line"``) or None; `key` the dotted key path;
    `problem` the bare description.
    """

    def __init__(self, problem: str, *, key: str | None = None, location: str | None = None) -> None:
        file, line = _split_location(location)
        super().__init__(problem, file=file, line=line, key=key)
        parts = [p for p in (location, key) if p]
        text = ": ".join([*parts, problem])
        self.message = text
        self.args = (text,)
        self.problem = problem
        self.location = location


def _split_location(location: str | None) -> tuple[str | None, int | None]:
    if not location:
        return None, None
    head, sep, tail = location.rpartition(":")
    port = plain_int(tail, 5) if sep else None
    if port is not None:
        return head, port
    return location, None


def format_path(path: KeyPath) -> str:
    """("routes", 1, "pool") -> "routes[1].pool"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Backend:
    """One upstream server. `url` is ``http(s)://host[:port][/base]``; the base is prepended to paths."""

    id: str
    url: str
    weight: int = 1

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def base_path(self) -> str:
        """The URL's path without its trailing slash ("" when none): joined in front of upstream paths."""
        return urlsplit(self.url).path.rstrip("/")

    def target(self, upstream_path: str) -> str:
        """The request target to send: `base_path` + the routed path (which starts with "/")."""
        return self.base_path + upstream_path if self.base_path else upstream_path


@dataclass(frozen=True)
class HealthCheck:
    """Active health check. `expect` holds inclusive (low, high) status ranges; rise/fall are counts."""

    enabled: bool = True
    path: str = "/"
    interval: float = 5.0
    timeout: float = 1.0
    expect: tuple[tuple[int, int], ...] = ((200, 399),)
    rise: int = 2
    fall: int = 3

    def expects(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.expect)


@dataclass(frozen=True)
class Outlier:
    """Passive ejection: `consecutive_failures` 5xx/connect failures eject for base × count, capped."""

    enabled: bool = True
    consecutive_failures: int = 5
    base_ejection: float = 30.0
    max_ejection: float = 300.0
    max_ejected_share: float = 0.5


@dataclass(frozen=True)
class BreakerConfig:
    """Per-backend breaker: opens on `failures` in a row or `error_ratio` over `window` (≥ min_requests)."""

    enabled: bool = True
    failures: int = 5
    error_ratio: float = 0.5
    window: float = 10.0
    min_requests: int = 20
    cooldown: float = 10.0
    half_open_probes: int = 3


@dataclass(frozen=True)
class UpstreamTLS:
    """How to speak TLS to ``https://`` backends: verify against the system CAs (or `ca_file`)."""

    verify: bool = True
    ca_file: str | None = None  # PEM bundle; checked when the connection context is built, not here
    server_name: str | None = None  # SNI and the name verified; default: the backend URL's host


@dataclass(frozen=True)
class Pool:
    id: str
    backends: tuple[Backend, ...] = ()
    balancer: str = "round_robin"  # | least_conn | weighted | p2c
    health: HealthCheck = field(default_factory=HealthCheck)
    outlier: Outlier = field(default_factory=Outlier)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    max_connections: int = 100  # per backend
    idle_timeout: float = 60.0
    tls: UpstreamTLS = field(default_factory=UpstreamTLS)


@dataclass(frozen=True)
class Timeouts:
    connect: float = 2.0
    read: float = 30.0
    total: float = 60.0


@dataclass(frozen=True)
class Route:
    id: str
    prefix: str
    pool: str
    hosts: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    strip_prefix: bool = False
    rewrite: str | None = None  # replaces the prefix
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 2
    require_auth: bool = False
    permissions: tuple[str, ...] = ()
    rate_limit: str | None = None  # used only inside the gateway


@dataclass(frozen=True)
class ProxyConfig:
    routes: tuple[Route, ...] = ()
    pools: dict[str, Pool] = field(default_factory=dict)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is trusted
    retry_budget: float = 0.2
    retry_min_per_second: float = 10.0
    max_header_bytes: int = 65536
    max_body_bytes: int | None = None
    version: str = ""


# --------------------------------------------------------------------------- parsing helpers

def _data(value: Any) -> Any:
    """Dataclasses → dicts, tuples → lists, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_data(v) for v in value]
    if isinstance(value, dict):
        return {k: _data(v) for k, v in value.items()}
    return value


def to_dict(config: ProxyConfig) -> dict[str, Any]:
    """The YAML document shape of `config`; `parse_config(to_dict(c)) == c`. JSON-serialisable."""
    out: dict[str, Any] = _data(config)
    for pool_id, pool in config.pools.items():
        data = out["pools"][pool_id]
        del data["id"]  # the key of the mapping
        data["health"]["expect"] = [lo if lo == hi else f"{lo}-{hi}" for lo, hi in pool.health.expect]
        if pool.tls == UpstreamTLS():
            del data["tls"]
    for data in out["routes"]:
        for key in ("rewrite", "rate_limit"):
            if data[key] is None:
                del data[key]
    if config.max_body_bytes is None:
        del out["max_body_bytes"]
    return out


# The validating reader lives in parse.py (it needs the classes above); re-exported so that
# `from helios_core.proxy.model import parse_config` keeps working.
from helios_core.proxy.parse import parse_config, parse_duration  # noqa: E402
