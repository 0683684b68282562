"""The README's metrics table against every daemon's real /metrics (issue 13, one metrics vocabulary).

Each daemon is started as an operator starts it (atlasd, a gateway with --data, a gateway over
atlasd with --store, a proxy with a config file, a worker with --metrics-port), given a request
or two so labelled series exist, and scraped.  Every row of README.md's "Metrics" table whose
"Daemons" cell names the daemon must be served with its documented type (and, where samples
exist, exactly its documented labels), and every metric a daemon serves must be in the table for
that daemon: the docs are read, not copied, so they cannot drift from the code.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_atlasd_support import Daemon, unused_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HELIOS = str(Path(sys.executable).with_name("helios"))
README = Path(__file__).resolve().parents[2] / "README.md"
KINDS = ("atlasd", "gateway", "gateway --data", "proxy", "proxy --data", "worker")
# Sample labels that belong to the type, not to the metric's documented labels.
TYPE_LABELS = {"le", "quantile"}


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    labels: frozenset[str]
    daemons: frozenset[str]


def read_table(readme: Path = README) -> dict[str, Row]:
    """The rows of the table in README.md's "### Metrics" section, by metric name."""
    text = readme.read_text()
    start = text.index("\n### Metrics\n")
    end = text.find("\n#", start + 1)
    rows: dict[str, Row] = {}
    for line in text[start:end if end != -1 else None].splitlines():
        m = re.fullmatch(r"\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|([^|]*)\|([^|]*)\|([^|]*)\|.*\|\s*", line)
        if not m:
            continue
        name, kind, labels, daemons = m.group(1), m.group(2).strip(), m.group(3), m.group(4)
        names = frozenset(x.strip() for x in labels.split(",") if x.strip())
        where = frozenset(x.strip() for x in daemons.split(",") if x.strip())
        assert kind in ("counter", "gauge", "histogram", "summary"), f"{name}: unknown type {kind!r}"
        assert where and where <= set(KINDS), f"{name}: daemons {sorted(where)} not among {KINDS}"
        assert name not in rows, f"{name} is in the table twice"
        rows[name] = Row(name, kind, names, where)
    return rows


def expected_for(rows: dict[str, Row], kind: str) -> dict[str, Row]:
    """The rows a daemon of `kind` must serve ("gateway" rows apply to a gateway with --data too, "proxy"
    rows to a proxy with --data)."""
    kinds = {kind, kind.removesuffix(" --data")}
    return {name: r for name, r in rows.items() if r.daemons & kinds}


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=15) as r:
        assert r.status == 200
        return str(r.read().decode())


def served(text: str) -> dict[str, tuple[str, set[str]]]:
    """Metric name (a counter's with _total, as documented) -> (type, sample label names)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for fam in text_string_to_metric_families(text):
        # The parser names a counter's family without _total; the table uses the sample's name.
        name = f"{fam.name}_total" if fam.type == "counter" else fam.name
        labels = {k for s in fam.samples for k in s.labels if k not in TYPE_LABELS}
        out[name] = (fam.type, labels)
    return out


def created_of(name: str, rows: dict[str, Row]) -> bool:
    """prometheus-client's `X_created` gauge (a series' creation time) beside a documented counter,
    histogram or summary X; the text format shows it as a family of its own."""
    if not name.endswith("_created"):
        return False
    stem = name.removesuffix("_created")
    row = rows.get(f"{stem}_total") or rows.get(stem)
    return row is not None and row.type in ("counter", "histogram", "summary")


def check(kind: str, text: str, rows: dict[str, Row]) -> None:
    got = served(text)
    want = expected_for(rows, kind)
    problems = []
    for name, row in sorted(want.items()):
        if name not in got:
            problems.append(f"{name}: documented for {kind} but not served")
            continue
        typ, labels = got[name]
        if typ != row.type:
            problems.append(f"{name}: served as {typ}, documented as {row.type}")
        if labels and labels != set(row.labels):
            problems.append(f"{name}: served with labels {sorted(labels)}, documented {sorted(row.labels)}")
    for name in sorted(set(got) - set(want)):
        if created_of(name, want):
            continue
        problems.append(f"{name}: served by {kind} but not in README's Metrics table for it")
    assert not problems, f"{kind} /metrics and README disagree:\n  " + "\n  ".join(problems)


# -- the daemons, as processes ----------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    return {**env, **extra}


def wait_for(what: str, check_: Callable[[], str | None], proc: subprocess.Popen[bytes], log: Path,
             timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check_()
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    raise AssertionError(f"{what} did not start within {timeout}s:\n{log.read_text(errors='replace')}")


class Procs:
    """Started processes, each logging to its own file; all killed at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], pattern: str, **env: str) -> str:
        """Run `helios ARGS`; return the first match of `pattern` (group 1) in its output."""
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([HELIOS, *args], stdout=out, stderr=subprocess.STDOUT, env=clean_env(**env),
                                    cwd=self.tmp)
        self.procs.append(proc)
        rx = re.compile(pattern)

        def found() -> str | None:
            m = rx.search(log.read_text(errors="replace"))
            return m.group(1) if m else None

        return wait_for(name, found, proc, log)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def get(url: str, body: object = None, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


@pytest.fixture
def atlasd(tmp_path: Path) -> Iterator[tuple[Daemon, int]]:
    metrics_port = unused_port()
    d = Daemon(tmp_path / "atlas", "--metrics-port", str(metrics_port), "--appendfsync", "everysec").start()
    try:
        yield d, metrics_port
    finally:
        d.kill()


LISTENING = r"listening on (http://\S+)"


def test_readme_table_is_well_formed() -> None:
    rows = read_table()
    # The original design's names (issue 13 §3), each where it applies.
    for name, where in {"helios_requests_total": "gateway", "helios_request_duration_seconds": "gateway",
                        "atlas_aof_bytes_total": "atlasd", "atlas_snapshot_duration_seconds": "atlasd",
                        "worker_job_queue_depth": "gateway", "rate_limiter_denied_total": "gateway",
                        "proxy_backend_healthy": "proxy"}.items():
        assert name in rows and where in rows[name].daemons, name
    # The engine's metrics wherever the engine runs.
    for row in rows.values():
        if row.name.startswith("atlas_") and row.name not in ("atlas_connected_clients", "atlas_connections_total"):
            assert {"atlasd", "gateway --data", "proxy --data"} <= row.daemons, row.name


def test_every_daemon_serves_the_documented_metrics(tmp_path: Path, procs: Procs, request: pytest.FixtureRequest,
                                                    atlasd: tuple[Daemon, int]) -> None:
    rows = read_table()
    daemon, metrics_port = atlasd

    # atlasd: a command or two first, so atlas_commands_total{cmd} has series.
    with daemon.client() as r:
        r.set("k", "v")
        r.get("k")
    check("atlasd", scrape(f"http://127.0.0.1:{metrics_port}/metrics"), rows)

    # A gateway with its own engine (--data), and one over atlasd (--store).
    gw = procs.start("gateway-data", ["gateway", "--data", str(tmp_path / "gw"), "--port", "0"], LISTENING)
    jwt = "k1=" + secrets.token_urlsafe(48)
    store = f"atlas://:{daemon.password}@127.0.0.1:{daemon.port}"
    gw_store = procs.start("gateway-store", ["gateway", "--store", store, "--port", "0"], LISTENING,
                           HELIOS_AUTH__JWT_KEYS=jwt)
    for url in (gw, gw_store):
        assert get(f"{url}/healthz")[0] == 200
        assert get(f"{url}/api/v1/kv/x")[0] == 401
    check("gateway --data", scrape(f"{gw}/metrics"), rows)
    check("gateway", scrape(f"{gw_store}/metrics"), rows)

    # A proxy from a config file; one request to a refused backend gives proxy_* series.
    hold = socket.socket()  # bound, never listening: the backend's connections are refused
    hold.bind(("127.0.0.1", 0))
    request.addfinalizer(hold.close)
    backend_port = hold.getsockname()[1]
    config = tmp_path / "proxy.yaml"
    config.write_text("pools:\n  web:\n    backends:\n"
                      f"      - {{id: web1, url: \"http://127.0.0.1:{backend_port}\"}}\n"
                      "routes:\n  - {id: api, prefix: /, pool: web}\n")
    proxy = procs.start("proxy", ["proxy", "--config", str(config), "--port", "0"], LISTENING)
    assert get(f"{proxy}/x")[0] == 502
    check("proxy", scrape(f"{proxy}/_helios/proxy/metrics"), rows)
    # A proxy with its routes in its own embedded store (--data): the engine's atlas_* as well.
    proxy_data = procs.start("proxy-data", ["proxy", "--data", str(tmp_path / "px"), "--port", "0"], LISTENING)
    assert get(f"{proxy_data}/x")[0] == 404  # no route yet
    check("proxy --data", scrape(f"{proxy_data}/_helios/proxy/metrics"), rows)

    # A worker with --metrics-port 0 (the port it chose is printed), leasing from the first gateway.
    password = (tmp_path / "gw" / "initial_admin_password").read_text().strip()
    code, body = get(f"{gw}/api/v1/auth/login", {"username": "admin", "password": password})
    assert code == 200, body
    token = json.loads(body)["access_token"]
    worker = procs.start("worker", ["worker", "-q", "metrics", "--exec", "true", "--metrics-port", "0"],
                         r"metrics on (http://\S+/metrics)", HELIOS_URL=gw, HELIOS_TOKEN=token)
    check("worker", scrape(worker), rows)


def test_a_disagreement_is_named(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# X\n\n### Metrics\n\n| Metric | Type | Labels | Daemons | Meaning |\n|---|---|---|---|---|\n"
                      "| `a_total` | counter | x | proxy | a |\n| `b` | gauge | | proxy | b |\n"
                      "| `c` | gauge | | worker | c |\n\n### Next\n| `d` | gauge | | proxy | not in the section |\n")
    rows = read_table(readme)
    assert set(rows) == {"a_total", "b", "c"}
    text = ('# TYPE a_total counter\na_total{y="1"} 1\na_created{y="1"} 1.7e9\n'
            "# TYPE b counter\nb_total 1\n# TYPE e gauge\ne 1\n")
    with pytest.raises(AssertionError) as err:
        check("proxy", text, rows)
    message = str(err.value)
    assert "a_total: served with labels ['y'], documented ['x']" in message
    assert "b: documented for proxy but not served" in message  # served as b_total, a counter
    assert "b_total: served by proxy but not in README" in message
    assert "e: served by proxy but not in README" in message
    assert "a_created" not in message and "c:" not in message
