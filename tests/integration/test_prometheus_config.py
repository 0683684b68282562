"""configs/prometheus.yml and the Grafana dashboards, checked by the real Prometheus tools.

- `promtool check config` accepts configs/prometheus.yml;
- every dashboard expression, as one recording rule each, passes `promtool check rules`;
- a real `prometheus` scrapes a running atlasd, gateway, proxy and worker (started as an operator
  starts them, on unused ports, with some traffic) and its HTTP API answers a query for every
  metric family the dashboards use that those daemons export, and evaluates every dashboard
  expression without an error.

promtool and prometheus come from the Debian package `prometheus` (.ci/run installs it); without
them these tests are skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families
from ruamel.yaml import YAML

from tests.integration.test_atlasd_support import Daemon, unused_port
from tests.unit.test_dashboards import ROOT, dashboards, expressions, for_promtool, metric_names

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
HELIOS = str(Path(sys.executable).with_name("helios"))
SCRAPE_CONFIG = ROOT / "configs" / "prometheus.yml"
WHY = "needs {} (Debian package prometheus; .ci/run installs it)"

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason=WHY.format("promtool"))
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason=WHY.format("prometheus"))

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 60.0, every: float = 0.2) -> T:
    """Poll `check` until it returns something other than None (a loaded 2-core box can be slow)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def http(url: str, method: str = "GET", body: Any = None, token: str | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def rules_file(tmp_path: Path) -> tuple[Path, int]:
    """Every dashboard expression as a recording rule (one group per dashboard)."""
    groups: list[dict[str, Any]] = []
    n = 0
    for path, board in dashboards():
        rules: list[dict[str, str]] = []
        for _where, expr in expressions(board):
            rules.append({"record": f"helios_dashboard:{path.stem.replace('-', '_')}:expr{len(rules)}",
                          "expr": for_promtool(expr)})
        groups.append({"name": path.stem, "rules": rules})
        n += len(rules)
    out = tmp_path / "dashboard-rules.yml"
    with out.open("w") as f:
        YAML().dump({"groups": groups}, f)
    return out, n


# -- promtool ------------------------------------------------------------------------------------


@needs_promtool
def test_scrape_config_is_valid() -> None:
    r = promtool("check", "config", str(SCRAPE_CONFIG))
    assert r.returncode == 0, r.stdout + r.stderr
    jobs = {j["job_name"]: j for j in YAML(typ="safe").load(SCRAPE_CONFIG.read_text())["scrape_configs"]}
    # Each daemon's metrics path, as the daemons serve it (the live test below scrapes them).
    paths = {name.removeprefix("helios-"): job.get("metrics_path", "/metrics") for name, job in jobs.items()}
    assert paths == {"atlasd": "/metrics", "gateway": "/metrics", "proxy": "/_helios/proxy/metrics",
                     "worker": "/metrics"}


@needs_promtool
def test_dashboard_expressions_pass_promtool_check_rules(tmp_path: Path) -> None:
    path, n = rules_file(tmp_path)
    assert n >= 40  # every panel of five dashboards: a parser that lost them would pass vacuously
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {n} rules found" in r.stdout, r.stdout
    # ... and promtool does reject a broken expression, so the check above means something.
    bad = tmp_path / "bad.yml"
    bad.write_text('groups: [{name: bad, rules: [{record: "x:y", expr: "rate(helios_requests_total[5m]"}]}]\n')
    assert promtool("check", "rules", str(bad)).returncode != 0


# -- a real Prometheus scraping real daemons -----------------------------------------------------


class Proc:
    """A daemon started as the operator starts it, its output in a file (never a pipe that can fill)."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log_path = name, log
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**clean, **(env or {})})

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return re.search(pattern, self.log())
        return wait_for(f"{self.name} to print {pattern!r}", found, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_prometheus(stack: ExitStack, tmp_path: Path, config: Path) -> str:
    """prometheus on a free port (it cannot take port 0: bind one, release it, and retry if taken)."""
    assert PROMETHEUS is not None
    for attempt in range(5):
        port = unused_port()
        proc = Proc("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                    tmp_path / f"prometheus-{attempt}.log")
        stack.callback(proc.stop)
        url = f"http://127.0.0.1:{port}"

        def ready(proc: Proc = proc, url: str = url) -> bool | None:
            if proc.proc.poll() is not None:
                return False
            try:
                return True if http(f"{url}/-/ready", timeout=2)[0] == 200 else None
            except OSError:
                return None

        if wait_for("prometheus to be ready", ready, timeout=60):
            return url
        if "address already in use" not in proc.log():
            raise AssertionError(f"prometheus exited:\n{proc.log()}")
    raise AssertionError("no free port for prometheus after 5 tries")


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    code, body = http(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", f"{expr}: {code} {doc}"
    return list(doc["data"]["result"])


def scraped_names(url: str) -> set[str]:
    code, body = http(url)
    assert code == 200, f"{url}: {code}"
    return {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}


# The families that the traffic below makes each daemon export, whatever else they export: the
# test fails rather than passing on an empty intersection if a daemon stops exporting one.
REQUIRED = {
    "atlasd": {"atlas_aof_bytes_total", "atlas_aof_fsync_seconds_count", "atlas_snapshots_total", "atlas_keys",
               "atlas_commands_total", "atlas_connected_clients"},
    "gateway": {"helios_requests_total", "helios_request_duration_seconds_bucket", "rate_limiter_denied_total",
                "jobs_enqueued_total", "jobs_finished_total", "worker_job_queue_depth", "process_cpu_seconds_total",
                "atlas_aof_bytes_total"},
    "proxy": {"proxy_requests_total", "proxy_upstream_duration_seconds_bucket", "proxy_backend_healthy",
              "proxy_circuit_state", "process_resident_memory_bytes"},
    "worker": {"worker_jobs_total", "worker_job_duration_seconds_bucket", "worker_inflight", "process_open_fds"},
}


@pytest.mark.slow
@pytest.mark.timeout(240)
@needs_prometheus
def test_prometheus_scrapes_the_daemons_for_every_dashboard_metric(tmp_path: Path) -> None:
    with ExitStack() as stack:
        # atlasd with its metrics listener; a few writes so its counters move.
        metrics_port = unused_port()
        atlasd = Daemon(tmp_path / "atlas", "--appendfsync", "always", "--metrics-port", str(metrics_port))
        stack.callback(atlasd.kill)
        atlasd.start()
        with atlasd.client() as r:
            r.set("k", "v")
            r.set("t", "v", ex=300)

        # The gateway on its own data dir; callers without a token get 3 requests a minute, so a
        # 4th is a rate-limit denial.
        gateway = Proc("gateway", [HELIOS, "gateway", "--data", str(tmp_path / "gw"), "--port", "0"],
                       tmp_path / "gateway.log", env={"HELIOS_RATELIMIT__ROLES": "unauthenticated 3 60"})
        stack.callback(gateway.stop)
        gw = gateway.wait_line(r"listening on (http://\S+)").group(1)
        password = (tmp_path / "gw" / "initial_admin_password").read_text().strip()
        code, body = http(f"{gw}/api/v1/auth/login", "POST", {"username": "admin", "password": password}, timeout=30)
        assert code == 200, body
        token = json.loads(body)["access_token"]
        statuses = {http(f"{gw}/api/v1/kv/nothing")[0] for _ in range(4)}
        assert 429 in statuses, statuses
        for i in range(3):
            assert http(f"{gw}/api/v1/jobs", "POST", {"queue": "default", "payload": {"n": i}}, token)[0] == 201

        # The proxy in front of the gateway (health-checked on /healthz), and one request through it.
        proxy_yaml = tmp_path / "proxy.yaml"
        proxy_yaml.write_text(
            f"pools:\n  gw:\n    backends: [{{id: gw1, url: \"{gw}\"}}]\n"
            "    health: {path: /healthz, interval: 1}\n"
            "routes:\n  - {id: all, prefix: /, pool: gw}\n")
        proxy = Proc("proxy", [HELIOS, "proxy", "--config", str(proxy_yaml), "--port", "0"], tmp_path / "proxy.log")
        stack.callback(proxy.stop)
        px = proxy.wait_line(r"listening on (http://\S+)").group(1)
        wait_for("a request through the proxy", lambda: True if http(f"{px}/healthz")[0] == 200 else None)

        # A worker running the jobs (cat: done), with its metrics listener on a port it picks.
        worker = Proc("worker", [HELIOS, "worker", "--url", gw, "-q", "default", "--exec", "cat",
                                 "--metrics-port", "0"], tmp_path / "worker.log", env={"HELIOS_TOKEN": token})
        stack.callback(worker.stop)
        wk = worker.wait_line(r"metrics on (http://\S+/metrics)").group(1)

        targets = {"atlasd": f"127.0.0.1:{metrics_port}", "gateway": urllib.parse.urlsplit(gw).netloc,
                   "proxy": urllib.parse.urlsplit(px).netloc, "worker": urllib.parse.urlsplit(wk).netloc}
        base = YAML(typ="safe").load(SCRAPE_CONFIG.read_text())
        jobs = {j["job_name"].removeprefix("helios-"): j for j in base["scrape_configs"]}
        # configs/prometheus.yml's jobs and paths, on this test's ports, scraped every second.
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{**jobs[name], "static_configs": [{"targets": [target]}]}
                                     for name, target in targets.items()]}
        config_path = tmp_path / "prometheus.yml"
        with config_path.open("w") as f:
            YAML().dump(config, f)
        prom = start_prometheus(stack, tmp_path, config_path)

        # What each daemon exports once the traffic above has landed (the queue depth gauge is
        # refreshed every 15 s, the worker acks as it gets to the jobs).
        urls = {name: f"http://{target}{jobs[name].get('metrics_path', '/metrics')}"
                for name, target in targets.items()}

        def exported(name: str) -> set[str] | None:
            names = scraped_names(urls[name])
            return names if REQUIRED[name] <= names else None

        used = {n for _, board in dashboards() for _, e in expressions(board) for n in metric_names(e)}
        expected = {"up"}
        for name in targets:
            names = wait_for(f"{name} to export {sorted(REQUIRED[name])}", partial(exported, name), 90)
            expected |= used & names

        # Prometheus has every one of them (one query per poll: the names it holds right now).
        pattern = "|".join(sorted(expected))

        def held() -> set[str] | None:
            got = {r["metric"]["__name__"] for r in query(prom, f'group by (__name__) ({{__name__=~"{pattern}"}})')}
            return got if expected <= got else None

        try:
            wait_for("prometheus to hold every dashboard metric", held, timeout=90, every=0.5)
        except AssertionError:
            got = {r["metric"]["__name__"] for r in query(prom, f'group by (__name__) ({{__name__=~"{pattern}"}})')}
            raise AssertionError(f"prometheus lacks {sorted(expected - got)}; targets: "
                                 f"{query(prom, 'up')}") from None
        assert {r["metric"]["job"] for r in query(prom, "up == 1")} == {j["job_name"] for j in jobs.values()}

        # Every dashboard expression evaluates in the real Prometheus (variables as "All").
        for path, board in dashboards():
            for where, expr in expressions(board):
                try:
                    query(prom, for_promtool(expr))
                except AssertionError as e:
                    raise AssertionError(f"{path.stem} {where}: {e}") from None
