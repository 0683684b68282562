"""`helios proxy route|backend|pool add|rm|list`: --data, --store and --gateway, in process and as a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.config import load_config
from helios_core.proxy.store_config import StoreConfigSource
from helios_core.store import EmbeddedStore
from tests.integration.proxy import request
from tests.integration.test_gateway_process import HELIOS
from tests.proxy_backend import BackendProcess
from tests.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.security.conftest import user_with
from tests.unit.test_gateway_harness import Api, gateway

pytestmark = pytest.mark.usefixtures("restore_logging")
ENV = {"HELIOS_AUTH__BCRYPT_COST": "4"}


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["proxy", *args], env={**ENV, **(env or {})})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    return d


def load(data: Path) -> StoreConfigSource:
    async def main() -> StoreConfigSource:
        store = await EmbeddedStore.open(data, load_config(env={}).atlas)
        try:
            source = StoreConfigSource(store)
            await source.load()
            return source
        finally:
            await store.close()

    return asyncio.run(main())


def test_add_list_rm_on_a_data_directory(data: Path) -> None:
    at = ["--data", str(data)]
    r = run("backend", "add", "--id", "web1", "--pool", "web", "--url", "http://127.0.0.1:9001", "--weight", "3", *at)
    assert r.exit_code == 0, r.output
    assert "added backend web1 (http://127.0.0.1:9001 in pool web)" in r.stdout
    r = run("backend", "add", "--id", "web2", "--pool", "web", "--url", "http://127.0.0.1:9002", "--json", *at)
    assert orjson.loads(r.stdout) == {"id": "web2", "pool": "web", "url": "http://127.0.0.1:9002"}
    r = run("route", "add", "--id", "api", "--prefix", "/api/", "--pool", "web", "--strip-prefix",
            "--method", "GET", "--method", "POST", *at)
    assert r.exit_code == 0, r.output
    assert "added route api (/api/ -> pool web)" in r.stdout
    r = run("route", "add", "--id", "slow", "--prefix", "/slow/", "--pool", "web", "--json",
            "--set", '{"timeouts": {"read": 5}, "retries": 0}', *at)
    assert orjson.loads(r.stdout)["timeouts"] == {"read": 5}
    r = run("pool", "add", "--id", "web", "--balancer", "weighted", "--health-path", "/healthz", *at)
    assert r.exit_code == 0, r.output

    r = run("route", "list", *at)
    assert r.exit_code == 0 and "api" in r.stdout and "/api/" in r.stdout and "GET, POST" in r.stdout
    assert "strip prefix" in r.stdout
    assert [x["id"] for x in orjson.loads(run("route", "list", "--json", *at).stdout)] == ["api", "slow"]
    backends = orjson.loads(run("backend", "list", "--json", *at).stdout)
    assert [(b["id"], b.get("weight", 1)) for b in backends] == [("web1", 3), ("web2", 1)]
    pools = orjson.loads(run("pool", "list", "--json", *at).stdout)
    assert pools == [{"id": "web", "balancer": "weighted", "health": {"path": "/healthz"},
                      "backends": ["web1", "web2"]}]
    assert "weighted" in run("pool", "list", *at).stdout

    config = load(data).config
    assert config is not None and config.version == "5"
    assert config.pools["web"].balancer == "weighted" and config.pools["web"].health.path == "/healthz"
    assert {r.id: r.timeouts.read for r in config.routes} == {"api": 30.0, "slow": 5.0}

    # Refusals: exit 1, the reason on stderr, nothing changed.
    r = run("route", "add", "--id", "x", "--prefix", "/x/", "--pool", "nope", *at)
    assert r.exit_code == 1 and "route 'x': pool: unknown pool 'nope'" in r.stderr, r.output
    r = run("route", "add", "--id", "api", "--prefix", "/api/", "--pool", "web", *at)
    assert r.exit_code == 1 and "exists already" in r.stderr
    r = run("backend", "add", "--id", "web3", "--pool", "web", "--url", "ftp://127.0.0.1", *at)
    assert r.exit_code == 1 and "backend 'web3': url" in r.stderr
    r = run("route", "add", "--id", "x", "--prefix", "/x/", "--pool", "web", "--set", "[1]", *at)
    assert r.exit_code == 2 and "expected a JSON object" in r.stderr
    r = run("route", "rm", "nope", *at)
    assert r.exit_code == 1 and "no route 'nope'" in r.stderr
    assert load(data).version == 5

    # --replace: PUT semantics.
    r = run("route", "add", "--id", "api", "--prefix", "/v1/", "--pool", "web", "--replace", *at)
    assert r.exit_code == 0 and "stored route api" in r.stdout

    # Without settings of its own, a pool lives as long as its backends: the last one of a pool
    # a route uses cannot go first.
    assert run("pool", "rm", "web", *at).exit_code == 0
    assert run("backend", "rm", "web1", *at).exit_code == 0
    r = run("backend", "rm", "web2", *at)
    assert r.exit_code == 1 and "route 'api': pool: unknown pool 'web'" in r.stderr
    for args in (("route", "rm", "api"), ("route", "rm", "slow"), ("backend", "rm", "web2")):
        r = run(*args, "--json", *at)
        assert r.exit_code == 0 and orjson.loads(r.stdout)["removed"] == args[2], r.output
    assert run("route", "list", *at).stdout.strip() == "no routes"
    assert orjson.loads(run("pool", "list", "--json", *at).stdout) == []


def test_the_target_must_be_exactly_one(data: Path, tmp_path: Path) -> None:
    r = run("route", "list")
    assert r.exit_code == 2 and "exactly one of --data DIR, --store URL or --gateway URL" in r.stderr
    r = run("route", "list", "--data", str(data), "--store", "redis://127.0.0.1:1")
    assert r.exit_code == 2
    r = run("route", "list", "--gateway", "http://127.0.0.1:1")
    assert r.exit_code == 2 and "--gateway needs --token" in r.stderr
    # An exported HELIOS_URL does not stand in the way of an explicit --data.
    r = run("route", "list", "--data", str(data), env={"HELIOS_URL": "http://127.0.0.1:1"})
    assert r.exit_code == 0, r.output
    r = run("route", "list", "--data", str(tmp_path / "missing"))
    assert r.exit_code == 1 and "does not exist" in r.stderr


def test_store_url_on_a_real_redis(redis_server: RedisServer) -> None:  # noqa: F811
    import redis

    with redis.Redis(host=redis_server.host, port=redis_server.port) as r:
        r.flushall()
    at = ["--store", f"redis://{redis_server.host}:{redis_server.port}/0"]
    r = run("backend", "add", "--id", "b1", "--pool", "p", "--url", "http://127.0.0.1:9001", *at)
    assert r.exit_code == 0, r.output
    assert run("route", "add", "--id", "r", "--prefix", "/", "--pool", "p", *at).exit_code == 0
    assert [x["id"] for x in orjson.loads(run("route", "list", "--json", *at).stdout)] == ["r"]
    with redis.Redis(host=redis_server.host, port=redis_server.port) as r:
        assert r.get("proxy:{proxy}:version") == b"2" and orjson.loads(r.get("proxy:{proxy}:route:r"))["pool"] == "p"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Api, str, str]]:
    """A gateway on its own loop in a thread (the CLI runs its own loop); an admin's and a user admin's token."""
    ready, stop = threading.Event(), threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        async with gateway(tmp_path) as api:
            box.update(api=api, token=await api.admin_token(),
                       users_only=await user_with(api, "useradmin", ["admin:users"]))
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(30)
    yield box["api"], str(box["token"]), str(box["users_only"])  # type: ignore[misc]
    stop.set()
    t.join(30)


def test_the_same_commands_through_the_admin_api(live: tuple[Api, str, str]) -> None:
    api, token, users_only = live
    at = ["--gateway", api.base, "--token", token]
    r = run("backend", "add", "--id", "web1", "--pool", "web", "--url", "http://127.0.0.1:9001", *at)
    assert r.exit_code == 0, r.output
    r = run("route", "add", "--id", "api", "--prefix", "/api/", "--pool", "web", "--json", *at)
    assert r.exit_code == 0 and orjson.loads(r.stdout)["prefix"] == "/api/"
    r = run("route", "add", "--id", "api", "--prefix", "/v2/", "--pool", "web", "--replace", "--json", *at)
    assert r.exit_code == 0 and orjson.loads(r.stdout)["prefix"] == "/v2/"
    r = run("backend", "rm", "web1", *at)
    assert r.exit_code == 1 and "400" in r.stderr and "route 'api'" in r.stderr
    r = run("pool", "add", "--id", "web", "--balancer", "p2c", *at)
    assert r.exit_code == 0, r.output
    assert "api" in run("route", "list", *at).stdout
    assert orjson.loads(run("pool", "list", "--json", *at).stdout)[0]["backends"] == ["web1"]
    r = run("route", "list", "--gateway", api.base, "--token", users_only)
    assert r.exit_code == 1 and "403" in r.stderr and "admin:proxy" in r.stderr
    assert run("route", "rm", "api", *at).exit_code == 0
    r = run("route", "rm", "api", *at)
    assert r.exit_code == 1 and "404" in r.stderr
    # The HELIOS_URL / HELIOS_TOKEN pair works as for `helios user`.
    r = run("backend", "list", "--json", env={"HELIOS_URL": api.base, "HELIOS_TOKEN": token})
    assert r.exit_code == 0 and [b["id"] for b in orjson.loads(r.stdout)] == ["web1"]


def test_as_an_operator_runs_it(data: Path) -> None:
    """One real `helios proxy route add/list/rm` run per step, as a subprocess on --data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}

    def helios_cmd(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HELIOS, "proxy", *args, "--data", str(data)], capture_output=True, text=True,
                              env=env, timeout=60)

    r = run("backend", "add", "--id", "web1", "--pool", "web", "--url", "http://127.0.0.1:9001", "--data", str(data))
    assert r.exit_code == 0, r.output
    out = helios_cmd("route", "add", "--id", "api", "--prefix", "/api/", "--pool", "web")
    assert out.returncode == 0 and "added route api" in out.stdout, out.stderr
    out = helios_cmd("route", "list", "--json")
    assert out.returncode == 0 and [r["id"] for r in orjson.loads(out.stdout)] == ["api"]
    out = helios_cmd("route", "rm", "api")
    assert out.returncode == 0 and "removed route api" in out.stdout
    assert load(data).version == 3


class StoreProxy:
    """`helios proxy --store URL --port 0` in a subprocess: the daemon whose config lives in the store."""

    def __init__(self, store_url: str, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path
        self.proc = subprocess.Popen([HELIOS, "--log-format", "json", "proxy", "--store", store_url, "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=self._log, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.stop()
            raise AssertionError(f"proxy did not start: {line!r}\n{log_path.read_text(errors='replace')}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def served_within(port: int, path: str, status: int, seconds: float) -> bool:
    """Whether `path` answers `status` within `seconds` (polled): the daemon's own version poll is 5 s,
    so a shorter wait shows the change came through the store's notification."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if request(port, "GET", path, timeout=2)[0] == status:
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_a_route_added_with_the_cli_serves_at_once_on_a_running_proxy(redis_server: RedisServer,  # noqa: F811
                                                                       tmp_path: Path) -> None:
    import redis

    with redis.Redis(host=redis_server.host, port=redis_server.port) as r:
        r.flushall()
    at = ["--store", f"redis://{redis_server.host}:{redis_server.port}/0"]
    with BackendProcess("web1") as web1:
        proxy = StoreProxy(at[1], tmp_path / "proxy.log")
        try:
            assert request(proxy.port, "GET", "/api/x")[0] == 404  # an empty config serves nothing
            assert run("backend", "add", "--id", "web1", "--pool", "web", "--url", web1.url, *at).exit_code == 0
            r = run("route", "add", "--id", "api", "--prefix", "/api/", "--pool", "web", *at)
            assert r.exit_code == 0, r.output
            assert served_within(proxy.port, "/api/x", 200, 3.0), proxy.log_path.read_text(errors="replace")
            assert run("route", "rm", "api", *at).exit_code == 0
            assert served_within(proxy.port, "/api/x", 404, 3.0)
            assert proxy.proc.poll() is None
        finally:
            proxy.stop()
    assert proxy.proc.returncode == 0


def test_a_data_dir_a_gateway_owns_is_refused_pointing_at_its_api(data: Path) -> None:
    from helios_core.atlas.engine import Engine
    from helios_core.config import AtlasConfig

    eng = Engine.open(data, AtlasConfig(), tool="helios gateway", http_url="http://127.0.0.1:8080")
    try:
        r = run("route", "list", "--data", str(data))
    finally:
        eng.close()
    assert r.exit_code == 1
    assert "in use by helios gateway process" in r.stderr and "--gateway http://127.0.0.1:8080" in r.stderr
