"""Reading a plain-dict proxy config (the YAML document's shape) into the model, with errors that
name the key path (and the file:line when the loader knows it).  See model.py for the classes."""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from helios_core.config import _suggest
from helios_core.proxy.model import (
    BALANCERS,
    Backend,
    BreakerConfig,
    HealthCheck,
    KeyPath,
    Outlier,
    Pool,
    ProxyConfig,
    ProxyConfigError,
    Route,
    Timeouts,
    UpstreamTLS,
    Where,
    format_path,
)

__all__ = ["parse_config", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token, for method names
_HOST = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_PERMISSION = re.compile(r"[a-z][a-z0-9_-]*(:[a-z][a-z0-9_-]*)*")  # a needed permission: no wildcards
_STATUS_RANGE = re.compile(r"^\s*([1-5]\d\d)\s*-\s*([1-5]\d\d)\s*$")
_STATUS_CLASS = re.compile(r"^\s*([1-5])xx\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like "500ms", "2s", "1.5m", "1h"; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError("expected a duration")


def _shown(value: Any) -> str:
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "null"}
    for tp, name in kind.items():
        if type(value) is tp:
            return f"{name} ({value!r})" if tp not in (list, dict) else name
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "a list"
    return repr(value)


class _Reader:
    """Walks the document, keeps the key path, and raises errors that name it."""

    def __init__(self, where: Where | None) -> None:
        self.where = where

    def fail(self, path: KeyPath, problem: str) -> ProxyConfigError:
        location = self.where(path) if self.where else None
        return ProxyConfigError(problem, key=format_path(path) or None, location=location)

    def mapping(self, value: Any, path: KeyPath, allowed: Sequence[str]) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {_shown(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.fail(path, f"keys must be strings, got {_shown(key)}")
            if key not in allowed:
                raise self.fail((*path, key), f"unknown key '{key}'{_suggest(key, list(allowed))}")
        return value

    def seq(self, value: Any, path: KeyPath) -> Sequence[Any]:
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise self.fail(path, f"expected a list, got {_shown(value)}")
        return value

    def boolean(self, m: Mapping[str, Any], key: str, path: KeyPath, default: bool) -> bool:
        value = m.get(key, default)
        if not isinstance(value, bool):
            raise self.fail((*path, key), f"expected true or false, got {_shown(value)}")
        return value

    def integer(self, m: Mapping[str, Any], key: str, path: KeyPath, default: int, *, low: int | None = None,
                high: int | None = None) -> int:
        value = m.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail((*path, key), f"expected an integer, got {_shown(value)}")
        self._bounds(value, path, key, low, high)
        return value

    def number(self, m: Mapping[str, Any], key: str, path: KeyPath, default: float, *, low: float | None = None,
               high: float | None = None, positive: bool = False, duration: bool = False) -> float:
        value = m.get(key, default)
        try:
            if duration:
                result = parse_duration(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError
            else:
                result = float(value)
        except ValueError:
            want = 'a duration in seconds (e.g. 2, 0.5, "500ms", "1m")' if duration else "a number"
            raise self.fail((*path, key), f"expected {want}, got {_shown(value)}") from None
        if result != result or result in (float("inf"), float("-inf")):
            raise self.fail((*path, key), f"expected a finite number, got {value!r}")
        if positive and result <= 0:
            raise self.fail((*path, key), f"must be greater than 0, got {value!r}")
        self._bounds(result, path, key, low, high)
        return result

    def _bounds(self, value: float, path: KeyPath, key: str, low: float | None, high: float | None) -> None:
        if low is not None and high is not None and not low <= value <= high:
            raise self.fail((*path, key), f"must be between {low} and {high}, got {value!r}")
        if low is not None and value < low:
            raise self.fail((*path, key), f"must be at least {low}, got {value!r}")
        if high is not None and value > high:
            raise self.fail((*path, key), f"must be at most {high}, got {value!r}")

    def string(self, m: Mapping[str, Any], key: str, path: KeyPath, default: str | None = None, *,
               required: bool = False) -> str:
        if key not in m and required:
            raise self.fail((*path, key), f"missing required key '{key}'")
        value = m.get(key, default)
        if not isinstance(value, str):
            raise self.fail((*path, key), f"expected a string, got {_shown(value)}")
        return value

    def optional_string(self, m: Mapping[str, Any], key: str, path: KeyPath) -> str | None:
        value = m.get(key)
        if value is None:
            return None
        return self.string(m, key, path)

    def strings(self, m: Mapping[str, Any], key: str, path: KeyPath) -> tuple[str, ...]:
        items = self.seq(m.get(key), (*path, key))
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise self.fail((*path, key, i), f"expected a string, got {_shown(item)}")
            out.append(item)
        return tuple(out)

    def ident(self, value: Any, path: KeyPath, what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string {what} id, got {_shown(value)}")
        if not _ID.match(value):
            raise self.fail(path, f"bad {what} id {value!r}: use 1-64 letters, digits, '_', '-', '.'")
        return value


# --------------------------------------------------------------------------- sections

_TOP_KEYS = ("pools", "routes", "trusted_proxies", "retry_budget", "retry_min_per_second", "max_header_bytes",
             "max_body_bytes", "version")
_POOL_KEYS = ("backends", "balancer", "health", "outlier", "breaker", "max_connections", "idle_timeout", "tls")
_TLS_KEYS = ("verify", "ca_file", "server_name")
_BACKEND_KEYS = ("id", "url", "weight")
_HEALTH_KEYS = ("enabled", "path", "interval", "timeout", "expect", "rise", "fall")
_OUTLIER_KEYS = ("enabled", "consecutive_failures", "base_ejection", "max_ejection", "max_ejected_share")
_BREAKER_KEYS = ("enabled", "failures", "error_ratio", "window", "min_requests", "cooldown", "half_open_probes")
_ROUTE_KEYS = ("id", "prefix", "pool", "hosts", "methods", "strip_prefix", "rewrite", "timeouts", "retries",
               "require_auth", "permissions", "rate_limit")
_TIMEOUT_KEYS = ("connect", "read", "total")


def _backend(r: _Reader, raw: Any, path: KeyPath) -> Backend:
    m = r.mapping(raw, path, _BACKEND_KEYS)
    if "id" not in m:
        raise r.fail((*path, "id"), "missing required key 'id'")
    ident = r.ident(m["id"], (*path, "id"), "backend")
    url = r.string(m, "url", path, required=True)
    problem = _url_problem(url)
    if problem:
        raise r.fail((*path, "url"), problem)
    weight = r.integer(m, "weight", path, 1, low=1)
    return Backend(id=ident, url=url, weight=weight)


def _url_problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        if "port" in str(err).lower():
            return f"bad URL {url!r}: port must be a number 1..65535"
        return f"bad URL {url!r}: {err}"
    if parts.scheme not in ("http", "https"):
        return f"bad URL {url!r}: scheme must be http or https, got {parts.scheme or 'none'!r}"
    if not parts.hostname:
        return f"bad URL {url!r}: no host"
    if port is not None and not 1 <= port <= 65535:
        return f"bad URL {url!r}: port must be a number 1..65535"
    if parts.username or parts.password:
        return f"bad URL {url!r}: credentials in backend URLs are not supported"
    if parts.query or parts.fragment:
        return f"bad URL {url!r}: no query or fragment allowed"
    return None


def _expect(r: _Reader, raw: Any, path: KeyPath) -> tuple[tuple[int, int], ...]:
    if raw is None:
        return HealthCheck().expect
    items = [raw] if isinstance(raw, int | str) and not isinstance(raw, bool) else r.seq(raw, path)
    if not items:
        raise r.fail(path, "expected at least one status (e.g. [200], ['200-399'], ['2xx'])")
    out: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        here = path if items is not raw else (*path, i)
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.append((item, item))
            continue
        if isinstance(item, str):
            m = _STATUS_RANGE.match(item)
            if m and int(m.group(1)) <= int(m.group(2)):
                out.append((int(m.group(1)), int(m.group(2))))
                continue
            m = _STATUS_CLASS.match(item)
            if m:
                out.append((int(m.group(1)) * 100, int(m.group(1)) * 100 + 99))
                continue
        raise r.fail(here, f"expected a status 100..599, a range like '200-399' or a class like '2xx', "
                           f"got {_shown(item)}")
    return tuple(out)


def _health(r: _Reader, raw: Any, path: KeyPath) -> HealthCheck:
    m = r.mapping(raw, path, _HEALTH_KEYS)
    d = HealthCheck()
    check_path = r.string(m, "path", path, d.path)
    if not check_path.startswith("/"):
        raise r.fail((*path, "path"), f"must start with '/', got {check_path!r}")
    return HealthCheck(
        enabled=r.boolean(m, "enabled", path, d.enabled),
        path=check_path,
        interval=r.number(m, "interval", path, d.interval, positive=True, duration=True),
        timeout=r.number(m, "timeout", path, d.timeout, positive=True, duration=True),
        expect=_expect(r, m.get("expect"), (*path, "expect")),
        rise=r.integer(m, "rise", path, d.rise, low=1),
        fall=r.integer(m, "fall", path, d.fall, low=1),
    )


def _outlier(r: _Reader, raw: Any, path: KeyPath) -> Outlier:
    m = r.mapping(raw, path, _OUTLIER_KEYS)
    d = Outlier()
    base = r.number(m, "base_ejection", path, d.base_ejection, positive=True, duration=True)
    cap = r.number(m, "max_ejection", path, max(d.max_ejection, base), positive=True, duration=True)
    if cap < base:
        raise r.fail((*path, "max_ejection"), f"must be at least base_ejection ({base:g}), got {cap:g}")
    return Outlier(
        enabled=r.boolean(m, "enabled", path, d.enabled),
        consecutive_failures=r.integer(m, "consecutive_failures", path, d.consecutive_failures, low=1),
        base_ejection=base,
        max_ejection=cap,
        max_ejected_share=r.number(m, "max_ejected_share", path, d.max_ejected_share, low=0.0, high=1.0),
    )


def _breaker(r: _Reader, raw: Any, path: KeyPath) -> BreakerConfig:
    m = r.mapping(raw, path, _BREAKER_KEYS)
    d = BreakerConfig()
    ratio = r.number(m, "error_ratio", path, d.error_ratio, low=0.0, high=1.0)
    if ratio == 0:
        raise r.fail((*path, "error_ratio"), "must be greater than 0 (0 would open on the first error)")
    return BreakerConfig(
        enabled=r.boolean(m, "enabled", path, d.enabled),
        failures=r.integer(m, "failures", path, d.failures, low=1),
        error_ratio=ratio,
        window=r.number(m, "window", path, d.window, positive=True, duration=True),
        min_requests=r.integer(m, "min_requests", path, d.min_requests, low=1),
        cooldown=r.number(m, "cooldown", path, d.cooldown, positive=True, duration=True),
        half_open_probes=r.integer(m, "half_open_probes", path, d.half_open_probes, low=1),
    )


def _tls(r: _Reader, raw: Any, path: KeyPath) -> UpstreamTLS:
    m = r.mapping(raw, path, _TLS_KEYS)
    server_name = r.optional_string(m, "server_name", path)
    if server_name is not None and not _HOST.match(server_name.lower()):
        raise r.fail((*path, "server_name"), f"bad host name {server_name!r}")
    return UpstreamTLS(verify=r.boolean(m, "verify", path, True), ca_file=r.optional_string(m, "ca_file", path),
                       server_name=server_name)


def _pool(r: _Reader, pool_id: str, raw: Any, path: KeyPath, seen_backends: dict[str, KeyPath]) -> Pool:
    m = r.mapping(raw, path, _POOL_KEYS)
    d = Pool(id=pool_id)
    backends = []
    for i, item in enumerate(r.seq(m.get("backends"), (*path, "backends"))):
        here = (*path, "backends", i)
        backend = _backend(r, item, here)
        if backend.id in seen_backends:
            raise r.fail((*here, "id"), f"duplicate backend id '{backend.id}' (also at "
                                        f"{format_path(seen_backends[backend.id])}); backend ids are global")
        seen_backends[backend.id] = here
        backends.append(backend)
    balancer = r.string(m, "balancer", path, d.balancer)
    if balancer not in BALANCERS:
        hint = _suggest(balancer, BALANCERS, what="balancers")
        raise r.fail((*path, "balancer"), f"unknown balancer '{balancer}'{hint}")
    return Pool(
        id=pool_id,
        backends=tuple(backends),
        balancer=balancer,
        health=_health(r, m.get("health"), (*path, "health")),
        outlier=_outlier(r, m.get("outlier"), (*path, "outlier")),
        breaker=_breaker(r, m.get("breaker"), (*path, "breaker")),
        max_connections=r.integer(m, "max_connections", path, d.max_connections, low=1),
        idle_timeout=r.number(m, "idle_timeout", path, d.idle_timeout, positive=True, duration=True),
        tls=_tls(r, m.get("tls"), (*path, "tls")),
    )


def _timeouts(r: _Reader, raw: Any, path: KeyPath) -> Timeouts:
    m = r.mapping(raw, path, _TIMEOUT_KEYS)
    d = Timeouts()
    return Timeouts(
        connect=r.number(m, "connect", path, d.connect, positive=True, duration=True),
        read=r.number(m, "read", path, d.read, positive=True, duration=True),
        total=r.number(m, "total", path, d.total, positive=True, duration=True),
    )


def _hosts(r: _Reader, m: Mapping[str, Any], path: KeyPath) -> tuple[str, ...]:
    out = []
    for i, host in enumerate(r.strings(m, "hosts", path)):
        norm = host.strip().lower().rstrip(".")
        if not _HOST.match(norm):
            raise r.fail((*path, "hosts", i), f"bad host {host!r}: expected a name like 'api.example.com' or "
                                              f"'*.example.com' (no port, no scheme)")
        out.append(norm)
    return tuple(dict.fromkeys(out))


def _methods(r: _Reader, m: Mapping[str, Any], path: KeyPath) -> tuple[str, ...]:
    out = []
    for i, method in enumerate(r.strings(m, "methods", path)):
        if not _TOKEN.match(method):
            raise r.fail((*path, "methods", i), f"bad method {method!r}")
        out.append(method.upper())
    return tuple(dict.fromkeys(out))


def _route(r: _Reader, raw: Any, path: KeyPath, pools: Mapping[str, Pool]) -> Route:
    m = r.mapping(raw, path, _ROUTE_KEYS)
    if "id" not in m:
        raise r.fail((*path, "id"), "missing required key 'id'")
    ident = r.ident(m["id"], (*path, "id"), "route")
    prefix = r.string(m, "prefix", path, required=True)
    if not prefix.startswith("/"):
        raise r.fail((*path, "prefix"), f"must start with '/', got {prefix!r}")
    if any(c in prefix for c in "?# \t\r\n"):
        raise r.fail((*path, "prefix"), f"must be a plain path (no '?', '#' or spaces), got {prefix!r}")
    pool = r.string(m, "pool", path, required=True)
    if pool not in pools:
        close = difflib.get_close_matches(pool, list(pools), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise r.fail((*path, "pool"), f"unknown pool '{pool}' (pools: {', '.join(pools) or 'none'}){hint}")
    strip = r.boolean(m, "strip_prefix", path, False)
    rewrite = r.optional_string(m, "rewrite", path)
    if rewrite is not None:
        if not rewrite.startswith("/"):
            raise r.fail((*path, "rewrite"), f"must start with '/', got {rewrite!r}")
        if strip:
            raise r.fail((*path, "rewrite"), "set either strip_prefix or rewrite, not both "
                                             "(strip_prefix is rewrite: '/')")
    require_auth = r.boolean(m, "require_auth", path, False)
    permissions = r.strings(m, "permissions", path)
    for i, perm in enumerate(permissions):
        if not _PERMISSION.fullmatch(perm):
            raise r.fail((*path, "permissions", i), f"bad permission {perm!r}: expected a name like 'orders:read'")
    if permissions and not require_auth:
        raise r.fail((*path, "permissions"), "permissions are checked on an authenticated caller: "
                                             "set require_auth: true")
    rate_limit = r.optional_string(m, "rate_limit", path)
    if rate_limit is not None and not rate_limit.strip():
        raise r.fail((*path, "rate_limit"), "must not be empty (omit it for none)")
    return Route(
        id=ident,
        prefix=prefix,
        pool=pool,
        hosts=_hosts(r, m, path),
        methods=_methods(r, m, path),
        strip_prefix=strip,
        rewrite=rewrite,
        timeouts=_timeouts(r, m.get("timeouts"), (*path, "timeouts")),
        retries=r.integer(m, "retries", path, 2, low=0, high=10),
        require_auth=require_auth,
        permissions=permissions,
        rate_limit=rate_limit,
    )


def parse_config(data: Mapping[str, Any] | None, *, where: Where | None = None) -> ProxyConfig:
    """Validate the document's plain-dict shape and build a ProxyConfig; ProxyConfigError names the key."""
    r = _Reader(where)
    top = r.mapping(data, (), _TOP_KEYS)
    d = ProxyConfig()

    pools: dict[str, Pool] = {}
    seen_backends: dict[str, KeyPath] = {}
    raw_pools = top.get("pools")
    if raw_pools is not None and not isinstance(raw_pools, Mapping):
        raise r.fail(("pools",), f"expected a mapping of pool id to pool, got {_shown(raw_pools)}")
    for pool_id, raw in (raw_pools or {}).items():
        ident = r.ident(pool_id, ("pools", str(pool_id)), "pool")
        pools[ident] = _pool(r, ident, raw, ("pools", ident), seen_backends)

    routes: list[Route] = []
    seen_routes: dict[str, int] = {}
    seen_match: dict[tuple[str, tuple[str, ...], tuple[str, ...]], int] = {}
    for i, raw in enumerate(r.seq(top.get("routes"), ("routes",))):
        route = _route(r, raw, ("routes", i), pools)
        if route.id in seen_routes:
            raise r.fail(("routes", i, "id"), f"duplicate route id '{route.id}' (also routes[{seen_routes[route.id]}])")
        seen_routes[route.id] = i
        match_key = (route.prefix, tuple(sorted(route.hosts)), tuple(sorted(route.methods)))
        if match_key in seen_match:
            raise r.fail(("routes", i, "prefix"), f"routes[{seen_match[match_key]}] already matches the same "
                                                  f"prefix, hosts and methods; this route could never be chosen")
        seen_match[match_key] = i
        routes.append(route)

    trusted = r.strings(top, "trusted_proxies", ())
    for i, cidr in enumerate(trusted):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problem = f"expected an IP address or CIDR like 10.0.0.0/8, got {cidr!r}"
            raise r.fail(("trusted_proxies", i), problem) from None

    max_body = top.get("max_body_bytes")
    version = top.get("version", "")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)  # the store's version key is an integer
    if not isinstance(version, str):
        raise r.fail(("version",), f"expected a string, got {_shown(version)}")
    return ProxyConfig(
        routes=tuple(routes),
        pools=pools,
        trusted_proxies=trusted,
        retry_budget=r.number(top, "retry_budget", (), d.retry_budget, low=0.0, high=1.0),
        retry_min_per_second=r.number(top, "retry_min_per_second", (), d.retry_min_per_second, low=0.0),
        max_header_bytes=r.integer(top, "max_header_bytes", (), d.max_header_bytes, low=1024),
        max_body_bytes=None if max_body is None else r.integer(top, "max_body_bytes", (), 0, low=0),
        version=version,
    )


# --------------------------------------------------------------------------- the inverse
