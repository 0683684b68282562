"""The Grafana dashboards and their provisioning files, checked as documents.

Grafana itself is not available here, so each dashboard is checked for what Grafana needs to load
it (schemaVersion, unique uid and panel ids, a grid that fits) and for what makes it show data:
every panel and variable names the datasource uid of the provisioning file, every ``$variable``
is defined, and every metric an expression uses is one a HELIOS daemon exports (the in-process
registries, the ATLAS collectors) and, once README.md has its "Metrics" table, one it documents.
tests/integration/test_prometheus_config.py checks the same expressions with promtool and a real
Prometheus; the helpers below are shared with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "configs" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
README = ROOT / "README.md"

__all__ = ["DASHBOARDS", "dashboards", "datasource_uid", "expressions", "for_promtool", "metric_names",
           "family", "exported_names", "documented_names"]

# Grafana's own interval variables, replaced by a fixed range where an expression must stand alone.
GRAFANA_RANGES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
# Series Prometheus makes itself for every target: not exported by any daemon.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}
_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan"}


def dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in DASHBOARDS]


def datasource_uid() -> str:
    doc = YAML(typ="safe").load((GRAFANA / "provisioning" / "datasources" / "helios.yaml").read_text())
    (source,) = doc["datasources"]
    return str(source["uid"])


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside it


def expressions(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) for every query of a dashboard: panel targets and query variables."""
    for panel in _panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} ({panel['title']}) {target['refId']}", target["expr"]


def for_promtool(expr: str) -> str:
    """`expr` as plain PromQL: Grafana's ranges become fixed ones, a ``$var`` (only ever inside a
    regex matcher in these dashboards) matches anything."""
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return GRAFANA_RANGES.get(name, ".*")

    return _VAR.sub(sub, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects.  Enough PromQL for these dashboards: strings, label
    matchers, ranges and grouping clauses are removed, then an identifier not followed by "(" is a
    metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', for_promtool(expr))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)\s*(\()?", text):
        if m.group(2) is None and m.group(1).lower() not in _PROMQL_WORDS:
            names.add(m.group(1))
    return names


def family(name: str) -> str:
    """The family a series name belongs to, as the README's table and prometheus-client name it."""
    for suffix in ("_bucket", "_count", "_sum", "_created"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exported_names(tmp_path: Path) -> set[str]:
    """Every series name the daemons' code registers, built in this process: the shared registry with
    the gateway's, jobs', workers' and proxy's metrics, and the ATLAS collectors on a real engine."""
    from prometheus_client import CollectorRegistry

    from helios_core.atlas.daemon import AtlasServer, _AtlasCollector
    from helios_core.atlas.engine import Engine
    from helios_core.atlas.metrics import EngineCollector
    from helios_core.config import load_config
    from helios_core.gateway.context import GatewayMetrics, JobMetrics
    from helios_core.observability.metrics import REGISTRY
    from helios_core.proxy.proxymetrics import ProxyMetrics
    from helios_core.worker import metrics as _worker_metrics  # noqa: F401  (registers the worker's metrics)

    GatewayMetrics(), JobMetrics(), ProxyMetrics()
    config = load_config(None, env={})
    engine = Engine.open(tmp_path / "data")
    try:
        atlas = CollectorRegistry(auto_describe=False)
        atlas.register(EngineCollector(engine))
        atlas.register(_AtlasCollector(AtlasServer(engine, config, None)))
        families = [*REGISTRY.collect(), *atlas.collect()]
    finally:
        engine.close()
    names: set[str] = set()
    for f in families:
        kind = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}.get(f.type, ("",))
        names.update(f.name + suffix for suffix in kind)
        names.update(s.name for s in f.samples)
    return names


def documented_names() -> set[str] | None:
    """Metric names in README.md's "Metrics" section (backquoted, first column), or None while it has none."""
    text = README.read_text()
    m = re.search(r"^(#+) Metrics\b.*?$(.*?)(?=^#{1,3} |\Z)", text, re.M | re.S)
    if m is None:
        return None
    names = set()
    for line in m.group(2).splitlines():
        if line.startswith("|"):
            names.update(re.findall(r"`([a-zA-Z_:][\w:]*)(?:\{[^`]*\})?`", line.split("|")[1]))
    return names or None


def _documented(name: str, documented: set[str]) -> bool:
    return name in documented or family(name) in documented or (
        name.endswith("_total") and name.removesuffix("_total") in documented)


def test_dashboards_exist() -> None:
    names = {p.stem for p in DASHBOARDS}
    assert {"helios-gateway", "helios-atlas", "helios-jobs", "helios-proxy", "helios-process"} <= names


def test_provisioning_files() -> None:
    yaml = YAML(typ="safe")
    ds = yaml.load((GRAFANA / "provisioning" / "datasources" / "helios.yaml").read_text())
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] and source["url"].startswith("http")
    dash = yaml.load((GRAFANA / "provisioning" / "dashboards" / "helios.yaml").read_text())
    assert dash["apiVersion"] == 1
    (provider,) = dash["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_loadable(path: Path) -> None:
    board = json.loads(path.read_text())
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] == path.stem and len(board["uid"]) <= 40  # Grafana's uid limit
    assert board["title"] and "helios" in board["tags"]
    panels = list(_panels(board))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] != "row":
            assert p["targets"], f"{p['title']}: no query"
            assert all(t["expr"].strip() and t["refId"] for t in p["targets"])
    # Panels do not overlap (Grafana would move them, and the layout would not be the one committed).
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        for y in range(g["y"], g["y"] + g["h"]):
            for x in range(g["x"], g["x"] + g["w"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_uids_unique() -> None:
    uids = [board["uid"] for _, board in dashboards()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_uses_the_provisioned_datasource(path: Path) -> None:
    uid = datasource_uid()
    board = json.loads(path.read_text())
    for p in _panels(board):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": uid}, p["title"]
        for t in p["targets"]:
            assert t.get("datasource", p["datasource"])["uid"] == uid, p["title"]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            assert var["datasource"]["uid"] == uid, var["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_variables_are_defined(path: Path) -> None:
    board = json.loads(path.read_text())
    defined = {v["name"] for v in board["templating"]["list"]} | set(GRAFANA_RANGES)
    queries = [e for _, e in expressions(board)] + [v["query"]["query"] for v in board["templating"]["list"]
                                                      if v["type"] == "query"]
    for expr in queries:
        for m in _VAR.finditer(expr):
            assert (m.group(1) or m.group(2)) in defined, f"{expr}: ${m.group(1) or m.group(2)} is not defined"


def test_metric_names_parsed() -> None:
    expr = ('histogram_quantile(0.99, sum by (route, le) (rate(helios_request_duration_seconds_bucket'
            '{instance=~"$instance", route=~"a|b"}[$__rate_interval]))) / on (x) group_left up '
            'or vector(0) > bool 1 and time() - process_start_time_seconds')
    assert metric_names(expr) == {"helios_request_duration_seconds_bucket", "up", "process_start_time_seconds"}


def test_dashboard_metrics_are_exported(tmp_path: Path) -> None:
    exported = exported_names(tmp_path)
    missing = {}
    for path, board in dashboards():
        for where, expr in expressions(board):
            unknown = metric_names(expr) - exported - SYNTHETIC
            if unknown:
                missing[f"{path.stem} {where}"] = sorted(unknown)
    assert not missing, f"metrics no daemon exports: {missing}"


def test_dashboard_metrics_are_documented() -> None:
    documented = documented_names()
    if documented is None:
        pytest.skip("README.md has no Metrics table yet")
    missing = {}
    for path, board in dashboards():
        for where, expr in expressions(board):
            unknown = {n for n in metric_names(expr) - SYNTHETIC if not _documented(n, documented)}
            if unknown:
                missing[f"{path.stem} {where}"] = sorted(unknown)
    assert not missing, f"metrics missing from README's Metrics table: {missing}"


def test_scrape_targets_are_the_default_ports() -> None:
    """configs/prometheus.yml reaches the daemons where their defaults put them."""
    from helios_cli.proxy import proxy
    from helios_core.config import load_config

    doc = YAML(typ="safe").load((ROOT / "configs" / "prometheus.yml").read_text())
    targets = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
               for job in doc["scrape_configs"]}
    config = load_config(None, env={})
    assert targets["helios-gateway"] == [f"{config.gateway.bind}:{config.gateway.port}"]
    (port_option,) = [p for p in proxy.params if p.name == "port"]
    assert targets["helios-proxy"] == [f"127.0.0.1:{port_option.default}"]
    assert all(t.startswith("127.0.0.1:") for ts in targets.values() for t in ts)  # the proxy answers loopback only
