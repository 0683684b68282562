"""Router: host tiers, longest prefix, methods, strip/rewrite, query kept."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helios_core.proxy.model import Route
from helios_core.proxy.router import Router, normalize_host, normalize_path


def route(id: str, prefix: str, **kw: Any) -> Route:
    return Route(id=id, prefix=prefix, pool="p", **kw)


def rid(router: Router, path: str, host: str = "h", method: str = "GET") -> str | None:
    m = router.match(host, path, method)
    return m.route.id if m else None


def test_longest_prefix_wins_whatever_the_order() -> None:
    router = Router([route("root", "/"), route("api", "/api/"), route("v1", "/api/v1/"), route("img", "/img")])
    assert rid(router, "/") == "root"
    assert rid(router, "/index.html") == "root"
    assert rid(router, "/api/x") == "api"
    assert rid(router, "/api/v1/users") == "v1"
    assert rid(router, "/api/v1/") == "v1"
    assert rid(router, "/api/v1") == "api"     # "/api/v1/" needs its slash
    assert rid(router, "/api") == "root"       # "/api/" needs its slash
    assert rid(router, "/img") == "img"        # no trailing slash: the path and its sub-paths
    assert rid(router, "/img/a.png") == "img"
    assert rid(router, "/img?x=1") == "img"
    assert rid(router, "/imgs") == "root"      # ...on a segment boundary only
    reversed_router = Router(list(reversed(router.routes)))
    for path in ("/", "/api/x", "/api/v1/users", "/img/a", "/imgs"):
        assert rid(reversed_router, path) == rid(router, path)


def test_no_match() -> None:
    router = Router([route("api", "/api/")])
    assert router.match("h", "/other", "GET") is None
    assert router.match("h", "*", "OPTIONS") is None
    assert router.match("h", "http://h/api/", "GET") is None  # absolute form: the data plane's business
    assert Router([]).match("h", "/", "GET") is None


def test_hosts_exact_wildcard_and_any() -> None:
    router = Router([
        route("any", "/"),
        route("exact", "/", hosts=("api.example.com",)),
        route("wild", "/", hosts=("*.example.com",)),
        route("deeper", "/", hosts=("*.eu.example.com",)),
        route("exact-api", "/v2/", hosts=("api.example.com",)),
    ])
    assert rid(router, "/", "api.example.com") == "exact"
    assert rid(router, "/v2/x", "api.example.com") == "exact-api"
    assert rid(router, "/", "API.Example.COM:8080") == "exact"   # case and port do not matter
    assert rid(router, "/", "api.example.com.") == "exact"       # nor a trailing dot
    assert rid(router, "/", "www.example.com") == "wild"
    assert rid(router, "/", "a.b.example.com") == "wild"         # any depth
    assert rid(router, "/", "x.eu.example.com") == "deeper"      # the longer suffix first
    assert rid(router, "/", "example.com") == "any"              # "*.example.com" is not example.com
    assert rid(router, "/", "other.org") == "any"
    assert rid(router, "/", "") == "any"
    assert rid(router, "/", "[::1]:80") == "any"


def test_host_tier_falls_through_when_its_routes_do_not_match() -> None:
    router = Router([route("default", "/"), route("special", "/admin/", hosts=("a.com",))])
    assert rid(router, "/admin/x", "a.com") == "special"
    assert rid(router, "/public", "a.com") == "default"
    assert rid(router, "/admin/x", "b.com") == "default"


def test_methods() -> None:
    router = Router([
        route("all", "/"),
        route("reads", "/api/", methods=("GET", "HEAD")),
        route("writes", "/api/", methods=("POST",)),
        route("any-api", "/api/"),
    ])
    assert rid(router, "/api/x", method="GET") == "reads"
    assert rid(router, "/api/x", method="get") == "reads"
    assert rid(router, "/api/x", method="POST") == "writes"
    assert rid(router, "/api/x", method="DELETE") == "any-api"
    only_get = Router([route("all", "/"), route("reads", "/api/", methods=("GET",))])
    assert rid(only_get, "/api/x", method="POST") == "all"  # a shorter prefix that takes the method
    assert Router([route("reads", "/api/", methods=("GET",))]).match("h", "/api/", "PUT") is None


@pytest.mark.parametrize(("prefix", "kw", "path", "upstream"), [
    ("/api/", {}, "/api/users?id=1", "/api/users?id=1"),
    ("/api/", {"strip_prefix": True}, "/api/users", "/users"),
    ("/api/", {"strip_prefix": True}, "/api/", "/"),
    ("/api/", {"strip_prefix": True}, "/api/users?x=1&y=%20", "/users?x=1&y=%20"),
    ("/api", {"strip_prefix": True}, "/api", "/"),
    ("/api", {"strip_prefix": True}, "/api/users", "/users"),
    ("/api", {"strip_prefix": True}, "/api?q", "/?q"),
    ("/api/", {"rewrite": "/v2/"}, "/api/users", "/v2/users"),
    ("/api/", {"rewrite": "/v2"}, "/api/users", "/v2/users"),
    ("/api", {"rewrite": "/v2/"}, "/api/users", "/v2/users"),
    ("/api/", {"rewrite": "/v2/"}, "/api/", "/v2/"),
    ("/api/", {"rewrite": "/"}, "/api/a/b?c=d", "/a/b?c=d"),
    ("/old", {"rewrite": "/new"}, "/old", "/new"),
    ("/old", {"rewrite": "/new"}, "/old?x", "/new?x"),
    ("/", {"rewrite": "/base/"}, "/x", "/base/x"),
    ("/", {}, "/x?", "/x?"),  # untouched when neither strip nor rewrite applies
])
def test_strip_and_rewrite_keep_the_query(prefix: str, kw: dict[str, Any], path: str, upstream: str) -> None:
    m = Router([route("r", prefix, **kw)]).match("h", path, "GET")
    assert m is not None and m.upstream_path == upstream


def test_normalize_host() -> None:
    assert normalize_host("Example.COM:443") == "example.com"
    assert normalize_host("[::1]:8080") == "::1"
    assert normalize_host("::1") == "::1"
    assert normalize_host(" a.b. ") == "a.b"


_segments = st.lists(st.sampled_from(["a", "b", "api", "v1"]), min_size=0, max_size=4)


@given(st.lists(_segments, min_size=1, max_size=6, unique_by=tuple), _segments, st.booleans())
def test_longest_prefix_property(prefixes: list[list[str]], path_parts: list[str], slash: bool) -> None:
    """The chosen route is the one with the longest prefix that matches, checked by brute force."""
    routes = [route(f"r{i}", "/" + "/".join(p) + ("/" if p and slash else "")) for i, p in enumerate(prefixes)]
    routes = list({r.prefix: r for r in routes}.values())
    path = "/" + "/".join(path_parts)

    def matches(prefix: str) -> bool:
        if prefix.endswith("/"):
            return path.startswith(prefix)
        return path == prefix or path.startswith(prefix + "/")

    expected = max((r for r in routes if matches(r.prefix)), key=lambda r: len(r.prefix), default=None)
    got = Router(routes).match("h", path, "GET")
    assert (got.route if got else None) == expected


@pytest.mark.parametrize(("path", "resolved"), [
    ("/a/b", "/a/b"), ("/public/../admin/x", "/admin/x"), ("/a/./b", "/a/b"), ("/..", "/"), ("/../", "/"),
    ("/%2e%2e/admin", "/admin"), ("/%2E./admin", "/admin"), ("/a/b/..", "/a/"), ("/a/b/.", "/a/b/"),
    ("/a/.b", "/a/.b"), ("/a/..b", "/a/..b"), ("/a/%2e/b", "/a/b"), ("/a/%2fb", "/a/%2fb"),
])
def test_normalize_path(path: str, resolved: str) -> None:
    assert normalize_path(path) == resolved


def test_dot_segments_cannot_walk_around_a_route() -> None:
    router = Router([route("public", "/public/"), route("admin", "/admin/", require_auth=True),
                     route("strip", "/s/", strip_prefix=True)])
    m = router.match("h", "/public/../admin/users?x=1", "GET")
    assert m is not None and m.route.id == "admin" and m.upstream_path == "/admin/users?x=1"
    m = router.match("h", "/public/%2e%2e/admin/users", "GET")
    assert m is not None and m.route.id == "admin" and m.upstream_path == "/admin/users"
    m = router.match("h", "/s/a/../../admin/", "GET")
    assert m is not None and m.route.id == "admin"
    m = router.match("h", "/s/./x", "GET")
    assert m is not None and m.upstream_path == "/x"
