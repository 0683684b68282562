"""The proxy config model and its YAML loader: valid shapes load, every invalid one names file:line:key."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from helios_core.errors import ConfigError
from helios_core.proxy.loader import load_file, load_text
from helios_core.proxy.model import (
    Backend,
    BreakerConfig,
    HealthCheck,
    Outlier,
    Pool,
    ProxyConfig,
    Route,
    Timeouts,
    UpstreamTLS,
    parse_config,
    parse_duration,
    to_dict,
)

REPO = Path(__file__).resolve().parents[3]


def base() -> dict[str, Any]:
    return {
        "pools": {"web": {"balancer": "weighted", "backends": [
            {"id": "web1", "url": "http://127.0.0.1:9001", "weight": 3},
            {"id": "web2", "url": "http://127.0.0.1:9002"},
        ]}},
        "routes": [{"id": "api", "prefix": "/api/", "pool": "web"}],
    }


def error_of(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value


# ------------------------------------------------------------------ the shipped example


def test_shipped_example_loads() -> None:
    cfg = load_file(REPO / "configs" / "proxy.yaml")
    assert [r.id for r in cfg.routes] == ["api", "site"]
    pool = cfg.pools["web"]
    assert pool.balancer == "weighted"
    assert [(b.id, b.url, b.weight) for b in pool.backends] == [
        ("web1", "http://127.0.0.1:9001", 3), ("web2", "http://127.0.0.1:9002", 1)]
    assert pool.health.path == "/healthz" and pool.health.expect == ((200, 200),)
    assert pool.outlier.base_ejection == 30.0 and pool.outlier.max_ejection == 300.0  # "30s", "5m"
    assert cfg.routes[0].timeouts.connect == 1.0
    assert cfg.trusted_proxies == ("127.0.0.1/32", "::1/128")


def test_defaults() -> None:
    cfg = parse_config({"pools": {"p": {"backends": [{"id": "b", "url": "http://h"}]}},
                        "routes": [{"id": "r", "prefix": "/", "pool": "p"}]})
    pool, route = cfg.pools["p"], cfg.routes[0]
    assert pool.balancer == "round_robin" and pool.max_connections == 100 and pool.idle_timeout == 60.0
    assert pool.health == HealthCheck() and pool.health.expects(204) and not pool.health.expects(500)
    assert (route.retries, route.strip_prefix, route.rewrite, route.hosts, route.methods) == (2, False, None, (), ())
    assert (cfg.retry_budget, cfg.retry_min_per_second, cfg.max_header_bytes, cfg.max_body_bytes) == (
        0.2, 10.0, 65536, None)
    assert parse_config(None) == ProxyConfig() == parse_config({})
    assert pool.tls == UpstreamTLS(verify=True, ca_file=None, server_name=None)


def test_backend_url_parts() -> None:
    b = Backend("b", "http://example.com:8080/base/")
    assert (b.scheme, b.host, b.port, b.base_path) == ("http", "example.com", 8080, "/base")
    assert b.target("/x?q=1") == "/base/x?q=1"
    assert Backend("s", "https://example.com").port == 443
    assert Backend("p", "http://[::1]:81").host == "::1"
    assert Backend("n", "http://h").target("/x") == "/x"


def test_normalisation() -> None:
    data = base()
    data["routes"][0].update(methods=["get", "GET", "post"], hosts=["API.Example.com.", "*.example.com"])
    route = parse_config(data).routes[0]
    assert route.methods == ("GET", "POST")
    assert route.hosts == ("api.example.com", "*.example.com")


@pytest.mark.parametrize(("text", "seconds"), [(2, 2.0), (0.5, 0.5), ("500ms", 0.5), ("2s", 2.0), ("1m", 60.0),
                                               ("1.5h", 5400.0), (" 3 s ", 3.0)])
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_expect_forms() -> None:
    data = base()
    data["pools"]["web"]["health"] = {"expect": [204, "2xx", "300-302"]}
    assert parse_config(data).pools["web"].health.expect == ((204, 204), (200, 299), (300, 302))
    data["pools"]["web"]["health"] = {"expect": 200}
    assert parse_config(data).pools["web"].health.expect == ((200, 200),)


# ------------------------------------------------------------------ every invalid shape


def _set(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = base()
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return data


BAD = [
    # (path to set, value, key path in the message, words in the message)
    (("pools", "web", "balancer"), "wieghted", "pools.web.balancer", "did you mean 'weighted'"),
    (("pools", "web", "balancer"), 3, "pools.web.balancer", "expected a string"),
    (("pools", "web", "backends", 0, "weight"), 0, "pools.web.backends[0].weight", "at least 1"),
    (("pools", "web", "backends", 0, "weight"), "3", "pools.web.backends[0].weight", "expected an integer"),
    (("pools", "web", "backends", 0, "weight"), True, "pools.web.backends[0].weight", "expected an integer"),
    (("pools", "web", "backends", 0, "wieght"), 2, "pools.web.backends[0].wieght", "did you mean 'weight'"),
    (("pools", "web", "backends", 1, "id"), "web1", "pools.web.backends[1].id", "duplicate backend id 'web1'"),
    (("pools", "web", "backends", 0, "id"), "bad id", "pools.web.backends[0].id", "bad backend id"),
    (("pools", "web", "backends", 0, "url"), "ftp://h", "pools.web.backends[0].url", "scheme must be http"),
    (("pools", "web", "backends", 0, "url"), "http://", "pools.web.backends[0].url", "no host"),
    (("pools", "web", "backends", 0, "url"), "http://h:0", "pools.web.backends[0].url", "port"),
    (("pools", "web", "backends", 0, "url"), "http://h:99999", "pools.web.backends[0].url", "port"),
    (("pools", "web", "backends", 0, "url"), "http://h:x", "pools.web.backends[0].url", "port"),
    (("pools", "web", "backends", 0, "url"), "http://u:p@h", "pools.web.backends[0].url", "credentials"),
    (("pools", "web", "backends", 0, "url"), "http://h/?q", "pools.web.backends[0].url", "no query"),
    (("pools", "web", "backends", 0, "url"), 5, "pools.web.backends[0].url", "expected a string"),
    (("pools", "web", "backends"), "web1", "pools.web.backends", "expected a list"),
    (("pools", "web", "backends", 0), "web1", "pools.web.backends[0]", "expected a mapping"),
    (("pools", "web", "health"), {"rise": 0}, "pools.web.health.rise", "at least 1"),
    (("pools", "web", "health"), {"fall": 0}, "pools.web.health.fall", "at least 1"),
    (("pools", "web", "health"), {"path": "healthz"}, "pools.web.health.path", "must start with '/'"),
    (("pools", "web", "health"), {"interval": 0}, "pools.web.health.interval", "greater than 0"),
    (("pools", "web", "health"), {"interval": "2 days"}, "pools.web.health.interval", "duration"),
    (("pools", "web", "health"), {"expect": [99]}, "pools.web.health.expect[0]", "status"),
    (("pools", "web", "health"), {"expect": []}, "pools.web.health.expect", "at least one"),
    (("pools", "web", "health"), {"expect": ["300-200"]}, "pools.web.health.expect[0]", "range"),
    (("pools", "web", "health"), {"enabled": "yes"}, "pools.web.health.enabled", "true or false"),
    (("pools", "web", "health"), {"intervall": 1}, "pools.web.health.intervall", "did you mean 'interval'"),
    (("pools", "web", "outlier"), {"max_ejected_share": 1.5}, "pools.web.outlier.max_ejected_share", "between"),
    (("pools", "web", "outlier"), {"max_ejected_share": -0.1}, "pools.web.outlier.max_ejected_share", "between"),
    (("pools", "web", "outlier"), {"consecutive_failures": 0}, "pools.web.outlier.consecutive_failures", "at least"),
    (("pools", "web", "outlier"), {"base_ejection": 10, "max_ejection": 5}, "pools.web.outlier.max_ejection",
     "at least base_ejection"),
    (("pools", "web", "breaker"), {"error_ratio": 2}, "pools.web.breaker.error_ratio", "between"),
    (("pools", "web", "breaker"), {"error_ratio": 0}, "pools.web.breaker.error_ratio", "greater than 0"),
    (("pools", "web", "breaker"), {"half_open_probes": 0}, "pools.web.breaker.half_open_probes", "at least 1"),
    (("pools", "web", "breaker"), {"failures": 0}, "pools.web.breaker.failures", "at least 1"),
    (("pools", "web", "breaker"), {"cooldown": -1}, "pools.web.breaker.cooldown", "greater than 0"),
    (("pools", "web", "breaker"), {"window": float("nan")}, "pools.web.breaker.window", "finite"),
    (("pools", "web", "max_connections"), 0, "pools.web.max_connections", "at least 1"),
    (("pools", "web", "health"), "on", "pools.web.health", "expected a mapping"),
    (("pools", "web", "tls"), {"verify": "no"}, "pools.web.tls.verify", "true or false"),
    (("pools", "web", "tls"), {"server_name": "bad name"}, "pools.web.tls.server_name", "bad host name"),
    (("pools", "web", "tls"), {"cafile": "x.pem"}, "pools.web.tls.cafile", "did you mean 'ca_file'"),
    (("pools",), [], "pools", "expected a mapping"),
    (("routes",), {}, "routes", "expected a list"),
    (("routes", 0, "pool"), "wbe", "routes[0].pool", "unknown pool 'wbe' (pools: web); did you mean 'web'"),
    (("routes", 0, "prefix"), "api/", "routes[0].prefix", "must start with '/'"),
    (("routes", 0, "prefix"), "/a?b", "routes[0].prefix", "plain path"),
    (("routes", 0, "rewrite"), "v2", "routes[0].rewrite", "must start with '/'"),
    (("routes", 0, "hosts"), ["http://x.com"], "routes[0].hosts[0]", "bad host"),
    (("routes", 0, "hosts"), ["x.com:80"], "routes[0].hosts[0]", "bad host"),
    (("routes", 0, "hosts"), ["a.*.com"], "routes[0].hosts[0]", "bad host"),
    (("routes", 0, "hosts"), "x.com", "routes[0].hosts", "expected a list"),
    (("routes", 0, "methods"), ["GE T"], "routes[0].methods[0]", "bad method"),
    (("routes", 0, "methods"), [1], "routes[0].methods[0]", "expected a string"),
    (("routes", 0, "retries"), -1, "routes[0].retries", "between 0 and 10"),
    (("routes", 0, "retries"), 11, "routes[0].retries", "between 0 and 10"),
    (("routes", 0, "timeouts"), {"connect": 0}, "routes[0].timeouts.connect", "greater than 0"),
    (("routes", 0, "timeouts"), {"reed": 1}, "routes[0].timeouts.reed", "did you mean 'read'"),
    (("routes", 0, "strip_prefix"), 1, "routes[0].strip_prefix", "true or false"),
    (("routes", 0, "rate_limit"), " ", "routes[0].rate_limit", "must not be empty"),
    (("routes", 0, "permissions"), ["a", 2], "routes[0].permissions[1]", "expected a string"),
    (("routes", 0, "permissions"), ["orders:*"], "routes[0].permissions[0]", "bad permission"),
    (("routes", 0, "permissions"), ["orders:read"], "routes[0].permissions", "set require_auth: true"),
    (("routes", 0, "poool"), "web", "routes[0].poool", "did you mean 'pool'"),
    (("trusted_proxies",), ["10.0.0.0/33"], "trusted_proxies[0]", "CIDR"),
    (("trusted_proxies",), ["not-an-ip"], "trusted_proxies[0]", "CIDR"),
    (("retry_budget",), 1.5, "retry_budget", "between"),
    (("retry_min_per_second",), -1, "retry_min_per_second", "at least"),
    (("max_header_bytes",), 100, "max_header_bytes", "at least 1024"),
    (("max_body_bytes",), -1, "max_body_bytes", "at least 0"),
    (("version",), [1], "version", "expected a string"),
    (("pool",), {}, "pool", "did you mean 'pools'"),
]


@pytest.mark.parametrize(("path", "value", "key", "words"), BAD, ids=[f"{b[2]}={b[1]!r}" for b in BAD])
def test_invalid_shapes_name_the_key(path: tuple[Any, ...], value: Any, key: str, words: str) -> None:
    err = error_of(_set(path, value))
    assert err.key == key
    assert words in str(err)
    assert str(err).startswith(f"{key}: ")


def test_missing_required_keys() -> None:
    for path, key in [(("routes", 0), "id"), (("routes", 0), "prefix"), (("routes", 0), "pool"),
                      (("pools", "web", "backends", 0), "id"), (("pools", "web", "backends", 0), "url")]:
        data = base()
        node: Any = data
        for part in path:
            node = node[part]
        del node[key]
        err = error_of(data)
        assert err.key == ".".join(str(p) for p in path).replace(".0", "[0]") + f".{key}"
        assert f"missing required key '{key}'" in str(err)


def test_duplicates_and_conflicts() -> None:
    data = base()
    data["routes"].append({"id": "api", "prefix": "/x/", "pool": "web"})
    assert "duplicate route id 'api' (also routes[0])" in str(error_of(data))

    data = base()
    data["routes"].append({"id": "api2", "prefix": "/api/", "pool": "web"})
    err = error_of(data)
    assert err.key == "routes[1].prefix" and "could never be chosen" in str(err)

    data = base()
    data["pools"]["other"] = {"backends": [{"id": "web2", "url": "http://h"}]}
    err = error_of(data)
    assert err.key == "pools.other.backends[0].id" and "also at pools.web.backends[1]" in str(err)

    data = base()
    data["routes"][0].update(strip_prefix=True, rewrite="/v2/")
    assert "not both" in str(error_of(data))


# ------------------------------------------------------------------ file:line from the YAML loader


def test_loader_reports_file_line_key(tmp_path: Path) -> None:
    path = tmp_path / "proxy.yaml"
    path.write_text(
        "pools:\n"                                 # 1
        "  web:\n"                                 # 2
        "    backends:\n"                          # 3
        "      - {id: a, url: 'http://h:1'}\n"     # 4
        "      - id: b\n"                          # 5
        "        url: http://h:2\n"                # 6
        "        weight: 0\n"                      # 7
        "routes:\n"                                # 8
        "  - {id: r, prefix: /, pool: web}\n",     # 9
        encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_file(path)
    err = info.value
    assert str(err) == f"{path}:7: pools.web.backends[1].weight: must be at least 1, got 0"
    assert (err.file, err.line, err.key) == (str(path), 7, "pools.web.backends[1].weight")


@pytest.mark.parametrize(("text", "line", "key"), [
    ("pools:\n  web:\n    balancer: fastest\n", 3, "pools.web.balancer"),
    ("pools:\n  web: {}\nroutes:\n  - id: r\n    prefix: /\n    pool: nope\n", 6, "routes[0].pool"),
    ("routes:\n  - id: r\n    pool: p\n", 2, "routes[0].prefix"),  # missing: the line of its parent
    ("pools: {}\nroutez: []\n", 2, "routez"),
    ("trusted_proxies:\n  - 10.0.0.1/8\n  - bogus\n", 3, "trusted_proxies[1]"),
    ("pools:\n  web:\n    health:\n      expect: [200, 700]\n", 4, "pools.web.health.expect[1]"),
])
def test_loader_lines(text: str, line: int, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(text, "p.yaml")
    assert (info.value.file, info.value.line, info.value.key) == ("p.yaml", line, key)
    assert str(info.value).startswith(f"p.yaml:{line}: {key}: ")


def test_loader_bad_yaml_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^p\.yaml:2: invalid YAML"):
        load_text("a: [\n", "p.yaml")
    with pytest.raises(ConfigError, match="duplicate|found duplicate"):
        load_text("pools: {}\npools: {}\n", "p.yaml")
    with pytest.raises(ConfigError, match="top level"):
        load_text("- a\n- b\n", "p.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_file(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not a file"):
        load_file(tmp_path)
    assert load_text("", "empty.yaml") == ProxyConfig()


# ------------------------------------------------------------------ to_dict / parse_config round trip


def test_round_trip_of_the_example() -> None:
    cfg = load_file(REPO / "configs" / "proxy.yaml")
    data = to_dict(cfg)
    assert parse_config(json.loads(json.dumps(data))) == cfg  # JSON-safe, as the store keeps it


_ids = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_durations = st.floats(min_value=0.001, max_value=3600, allow_nan=False)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    pool_ids = draw(st.lists(_ids, min_size=1, max_size=3, unique=True))
    backend_ids = iter(draw(st.lists(_ids, min_size=6, max_size=6, unique=True)))
    pools = {}
    for pid in pool_ids:
        backends = [{"id": next(backend_ids), "url": f"http://127.0.0.1:{draw(st.integers(1, 65535))}",
                     "weight": draw(st.integers(1, 100))} for _ in range(draw(st.integers(0, 2)))]
        base_ej = draw(_durations)
        pools[pid] = {
            "balancer": draw(st.sampled_from(["round_robin", "least_conn", "weighted", "p2c"])),
            "backends": backends,
            "health": {"path": "/" + draw(_ids), "interval": draw(_durations), "rise": draw(st.integers(1, 9)),
                       "expect": draw(st.lists(st.integers(100, 599), min_size=1, max_size=3))},
            "outlier": {"base_ejection": base_ej, "max_ejection": base_ej + draw(_durations),
                        "max_ejected_share": draw(st.floats(0, 1))},
            "breaker": {"error_ratio": draw(st.floats(0.01, 1)), "half_open_probes": draw(st.integers(1, 9))},
        }
        if draw(st.booleans()):
            pools[pid]["tls"] = {"verify": draw(st.booleans()), "ca_file": draw(st.none() | st.just("/ca.pem")),
                                 "server_name": draw(st.none() | st.just("api.example.com"))}
    routes = []
    for i, prefix in enumerate(draw(st.lists(st.from_regex(r"/[a-z/]{0,6}", fullmatch=True), max_size=4,
                                             unique=True))):
        route: dict[str, Any] = {"id": f"r{i}", "prefix": prefix, "pool": draw(st.sampled_from(pool_ids)),
                                 "methods": draw(st.lists(st.sampled_from(["GET", "POST"]), unique=True)),
                                 "hosts": draw(st.lists(st.sampled_from(["a.com", "*.b.org"]), unique=True)),
                                 "retries": draw(st.integers(0, 10)),
                                 "timeouts": {"read": draw(_durations)}}
        if draw(st.booleans()):
            route["rewrite"] = "/" + draw(_ids)
        else:
            route["strip_prefix"] = draw(st.booleans())
        if draw(st.booleans()):
            route["rate_limit"] = "proxy"
        if draw(st.booleans()):
            route.update(require_auth=True, permissions=draw(st.lists(st.sampled_from(["orders:read", "ops"]),
                                                                       unique=True)))
        routes.append(route)
    return {"pools": pools, "routes": routes, "retry_budget": draw(st.floats(0, 1)),
            "max_body_bytes": draw(st.none() | st.integers(0, 2**40)), "version": str(draw(st.integers(0, 99)))}


@settings(max_examples=60, deadline=None)
@given(configs())
def test_round_trip_property(data: dict[str, Any]) -> None:
    cfg = parse_config(data)
    again = to_dict(cfg)
    assert parse_config(again) == cfg
    assert to_dict(parse_config(json.loads(json.dumps(again)))) == again


@pytest.mark.parametrize(("path", "value", "key", "words"), BAD, ids=[f"{b[2]}={b[1]!r}" for b in BAD])
def test_invalid_shapes_in_yaml_name_file_line_key(path: tuple[Any, ...], value: Any, key: str, words: str,
                                                    tmp_path: Path) -> None:
    """The same shapes written as block-style YAML: the error points at the offending line."""
    file = tmp_path / "proxy.yaml"
    yaml = YAML()
    yaml.default_flow_style = False
    with file.open("w", encoding="utf-8") as f:
        yaml.dump(_set(path, value), f)
    with pytest.raises(ConfigError) as info:
        load_file(file)
    err = info.value
    assert (err.file, err.key) == (str(file), key)
    assert err.line is not None and str(err).startswith(f"{file}:{err.line}: {key}: ")
    text = file.read_text(encoding="utf-8").splitlines()[err.line - 1].strip()
    last = key.rsplit(".", 1)[-1]
    if last.endswith("]"):
        assert text.startswith("-"), text  # a list item
    else:
        assert text.startswith(f"{last}:") or text.startswith(f"- {last}:"), text


def test_the_example_documents_every_key() -> None:
    text = (REPO / "configs" / "proxy.yaml").read_text(encoding="utf-8")
    for cls in (ProxyConfig, Pool, Backend, HealthCheck, Outlier, BreakerConfig, UpstreamTLS, Route, Timeouts):
        for f in dataclasses.fields(cls):
            if f.name == "id" and cls is Pool:
                continue  # the key of the pools mapping
            assert re.search(rf"\b{f.name}:", text), f"configs/proxy.yaml does not show {cls.__name__}.{f.name}"
