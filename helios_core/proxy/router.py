"""Route matching: host, then longest path prefix, then method; and the upstream path it rewrites to.

Order of precedence, as nginx's server_name-then-location and Envoy's virtual-host-then-route give it:

1. routes naming the request's host exactly, then routes with a wildcard host (``*.example.com``
   matches ``a.example.com`` and ``a.b.example.com``, not ``example.com``; a longer suffix first),
   then routes with no hosts (any host);
2. within each of those tiers the longest matching prefix wins;
3. a route with methods matches only those; if no route of a prefix takes the method, shorter
   prefixes and then the next tier are tried, so a GET-only ``/api/`` falls back to ``/``.

A prefix ending in "/" matches by plain string prefix (``/api/`` matches ``/api/x``, not ``/api``);
one without matches itself and its sub-paths on a segment boundary (``/api`` matches ``/api``,
``/api/x`` and ``/api?q``, never ``/apix``). Matching is done on the raw (undecoded) path without
the query string; the query is kept on the upstream path.

Dot segments are resolved before matching (RFC 3986 remove_dot_segments, ``%2e`` counted as a dot),
and the resolved path is what goes upstream: ``/public/../admin/`` is matched, and sent, as
``/admin/``, so a route's auth cannot be walked around by a backend that resolves them itself.

Lookups cost one dict probe per distinct prefix length, not one per route.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from helios_core.proxy.model import Route

__all__ = ["Match", "Router", "normalize_host", "normalize_path", "upstream_path"]


class Match(NamedTuple):  # a NamedTuple: made on every request, and far cheaper than a frozen dataclass
    route: Route
    upstream_path: str  # after strip_prefix/rewrite, query string kept


def normalize_host(host: str) -> str:
    """Host header → lower-case name without port or trailing dot ("[::1]:80" → "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def normalize_path(path: str) -> str:
    """`path` (no query) with "." and ".." segments resolved; ".." never climbs above "/"."""
    if "/." not in path and "%2" not in path:
        return path  # the common case: nothing to resolve
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, segment in enumerate(segments):
        dots = segment.replace("%2e", ".").replace("%2E", ".")
        if dots == ".":
            pass
        elif dots == "..":
            if out:
                out.pop()
        else:
            out.append(segment)
            continue
        if i == len(segments) - 1:
            out.append("")  # "/a/b/.." is the directory "/a/", trailing slash kept
    return "/" + "/".join(out)


def _replace(new: str, rest: str) -> str:
    # The prefix is replaced by `new`, joined to the rest with exactly one "/" between them, so that
    # prefix "/api/" + rewrite "/v2" and prefix "/api" + rewrite "/v2/" both send "/api/x" to "/v2/x".
    if not rest:
        return new
    if rest.startswith("/"):
        rest = rest[1:]
    return new.rstrip("/") + "/" + rest


def upstream_path(route: Route, path: str, query: str = "") -> str:
    """The path sent upstream for a request `path` (no query) that `route` matched, query re-attached."""
    if route.rewrite is not None or route.strip_prefix:
        out = _replace(route.rewrite if route.rewrite is not None else "/", path[len(route.prefix):])
    else:
        out = path
    return f"{out}?{query}" if query else out


class _Table:
    """Routes of one host tier, indexed by prefix."""

    def __init__(self) -> None:
        self.by_prefix: dict[str, list[Route]] = {}
        self.lengths: list[int] = []

    def add(self, route: Route) -> None:
        self.by_prefix.setdefault(route.prefix, []).append(route)

    def freeze(self) -> None:
        for routes in self.by_prefix.values():
            # Method-specific routes before catch-all ones of the same prefix; config order otherwise.
            routes.sort(key=lambda r: 0 if r.methods else 1)
        self.lengths = sorted({len(p) for p in self.by_prefix}, reverse=True)

    def find(self, path: str, method: str) -> Route | None:
        n = len(path)
        for length in self.lengths:
            if length > n:
                continue
            routes = self.by_prefix.get(path[:length])
            if routes is None:
                continue
            # A prefix without a trailing "/" must end on a segment boundary.
            if length < n and path[length - 1] != "/" and path[length] != "/":
                continue
            for route in routes:
                if not route.methods or method in route.methods:
                    return route
        return None


class Router:
    """Immutable: build a new Router for a new config (construction is cheap) and swap the reference."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._exact: dict[str, _Table] = {}
        self._wild: dict[str, _Table] = {}  # keyed by ".example.com"
        self._any = _Table()
        for route in self.routes:
            if not route.hosts:
                self._any.add(route)
            for host in route.hosts:
                if host.startswith("*."):
                    self._wild.setdefault(host[1:], _Table()).add(route)
                else:
                    self._exact.setdefault(host, _Table()).add(route)
        for table in (*self._exact.values(), *self._wild.values(), self._any):
            table.freeze()
        self._hosted = bool(self._exact or self._wild)
        self._any_only = [self._any]

    def _tables(self, host: str) -> list[_Table]:
        host = normalize_host(host) if host else ""
        tables = []
        table = self._exact.get(host)
        if table is not None:
            tables.append(table)
        if self._wild:
            dot = host.find(".")
            while dot >= 0:  # ".b.example.com", then ".example.com", ...: longest suffix first
                table = self._wild.get(host[dot:])
                if table is not None:
                    tables.append(table)
                dot = host.find(".", dot + 1)
        tables.append(self._any)
        return tables

    def match(self, host: str, path: str, method: str) -> Match | None:
        """The route for a request, or None (the caller answers 404). `path` may carry a query."""
        q = path.find("?")
        raw_path, query = (path, "") if q < 0 else (path[:q], path[q + 1:])
        if raw_path[:1] != "/":
            return None  # absolute-form and asterisk-form targets are the data plane's business
        resolved = normalize_path(raw_path)
        if resolved is not raw_path:
            raw_path = resolved
            path = f"{raw_path}?{query}" if q >= 0 else raw_path
        if not method.isupper():
            method = method.upper()
        # Hot path: with no host-specific routes there is one table and nothing to normalise.
        tables = self._tables(host) if self._hosted else self._any_only
        for table in tables:
            route = table.find(raw_path, method)
            if route is not None:
                if route.rewrite is None and not route.strip_prefix:
                    return Match(route, path)  # sent as received, query and all
                return Match(route, upstream_path(route, raw_path, query))
        return None
