"""`helios proxy --config FILE` as an operator runs it: reload on SIGHUP, graceful SIGTERM, --workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.proxy import HELIOS, ProxyProcess, pool, request, route, wait_until, write_config
from tests.proxy_backend import BackendProcess


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    with BackendProcess("web1") as b:
        yield b


def access_lines(p: ProxyProcess) -> list[dict[str, object]]:
    return [ln for ln in p.log_lines() if ln.get("component") == "proxy.access"]


def test_serves_logs_and_reloads_on_sighup(backend: BackendProcess, tmp_path: Path) -> None:
    """One access line per request; SIGHUP applies a new route; a broken file is refused and the old config stays."""
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("web1", backend.url)])}, [route("api", "/api/", "web")])
    with ProxyProcess(cfg, cli=True) as p:
        assert request(p.port, "GET", "/api/x?y=1", headers={"traceparent":
                       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})[0] == 200
        assert request(p.port, "GET", "/new/x")[0] == 404
        wait_until(lambda: len(access_lines(p)) >= 2)
        first, second = access_lines(p)[:2]
        assert first["method"] == "GET" and first["path"] == "/api/x?y=1" and first["status"] == 200
        assert first["route"] == "api" and first["backend"] == "web1" and first["level"] == "info"
        assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert second["status"] == 404 and second["route"] is None

        write_config(cfg, {"web": pool([("web1", backend.url)])},
                     [route("api", "/api/", "web"), route("new", "/new/", "web")])
        p.signal(signal.SIGHUP)
        wait_until(lambda: request(p.port, "GET", "/new/x")[0] == 200)
        # A broken file: refused with its file, line and key; the routes in force stay.
        cfg.write_text(cfg.read_text().replace('"pool": "web"', '"pool": "nope"', 1))
        p.signal(signal.SIGHUP)
        wait_until(lambda: "config reload refused" in p.log())
        line = next(ln for ln in p.log_lines() if "reload refused" in str(ln.get("message")))
        assert f"{cfg}:" in str(line["message"]) and "pool" in str(line["message"]) and "nope" in str(line["message"])
        assert request(p.port, "GET", "/new/x")[0] == 200
        assert request(p.port, "GET", "/api/x")[0] == 200
        assert p.proc.poll() is None


def test_invalid_file_at_start_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  web:\n    backends:\n      - {id: a, url: 'ftp://x'}\nroutes: []\n")
    out = subprocess.run([HELIOS, "proxy", "--config", str(bad), "--port", "0"], capture_output=True, text=True,
                         timeout=30, env={k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")})
    assert out.returncode == 1
    assert f"{bad}:4" in out.stderr and "url" in out.stderr


def test_sigterm_finishes_in_flight_requests(backend: BackendProcess, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("web1", backend.url)])}, [route("r", "/", "web")])
    p = ProxyProcess(cfg, "--grace", "10", cli=True)
    try:
        result: dict[str, object] = {}

        def slow() -> None:
            result["answer"] = request(p.port, "GET", "/slow?delay=1")

        t = threading.Thread(target=slow)
        t.start()
        wait_until(lambda: p.status()["connections"] >= 2)  # the slow request is in flight
        p.signal(signal.SIGTERM)
        t.join(10)
        assert p.proc.wait(10) == 0
        status, _, body = result["answer"]  # type: ignore[misc]
        assert status == 200 and json.loads(body)["slow"] is True
        assert "proxy stopped" in p.log()
    finally:
        p.stop()


def test_workers_share_the_port(backend: BackendProcess, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.yaml", {"web": pool([("web1", backend.url)])}, [route("r", "/", "web")])
    with ProxyProcess(cfg, "--workers", "2", cli=True) as p:
        pids: set[int] = set()

        def status_pid() -> bool:
            try:
                pids.add(p.status()["pid"])
            except (OSError, AssertionError):
                pass
            return len(pids) == 2

        wait_until(status_pid, 20, 0.01)  # new connections spread over both workers
        assert p.pid not in pids  # the parent only supervises
        for _ in range(10):
            assert request(p.port, "GET", "/echo")[0] == 200
        # A worker that dies is replaced.
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        pids.discard(victim)
        wait_until(status_pid, 20, 0.01)
        assert victim not in pids
        # SIGHUP goes to every worker; SIGTERM stops them all and the parent.
        p.signal(signal.SIGHUP)
        wait_until(lambda: p.log().count("config applied") >= 2)
        assert p.stop() == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_cli_refusals_in_process(tmp_path: Path) -> None:
    """`helios proxy` through click's CliRunner: usage errors (exit 2) and a bad file (exit 1, file:line)."""
    from click.testing import CliRunner

    from helios_cli.main import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["proxy"])
    assert out.exit_code == 2 and "give exactly one of --config FILE, --data DIR or --store URL" in out.output
    out = runner.invoke(cli, ["proxy", "--config", str(tmp_path / "x.yaml"), "--store", "redis://127.0.0.1:1"])
    assert out.exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: {}\nroutes:\n  - {id: r, prefix: /, pool: nope}\n")
    out = runner.invoke(cli, ["proxy", "--config", str(bad), "--port", "0"])
    assert out.exit_code == 1
    assert f"{bad}:3" in out.output and "nope" in out.output
    out = runner.invoke(cli, ["proxy", "--help"])
    assert out.exit_code == 0 and "--workers" in out.output and "route" in out.output


def test_a_data_dir_the_proxy_owns_serves_its_socket(backend: BackendProcess, tmp_path: Path) -> None:
    """`helios proxy --data DIR` on a free directory: tools reach DIR through its socket while it runs."""
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}

    def helios(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HELIOS, *args, "--data", str(data)], capture_output=True, text=True, env=env,
                              timeout=60)

    out = helios("proxy", "backend", "add", "--id", "web1", "--pool", "web", "--url", backend.url)
    assert out.returncode == 0, out.stderr
    out = helios("proxy", "route", "add", "--id", "all", "--prefix", "/", "--pool", "web")
    assert out.returncode == 0, out.stderr
    log = open(tmp_path / "proxy.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([HELIOS, "--log-format", "json", "proxy", "--data", str(data), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=log, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "listening on" in line, (line, (tmp_path / "proxy.log").read_text())
        port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        wait_until(lambda: request(port, "GET", "/echo")[0] == 200, 20)
        assert (data / "atlas.sock").exists()

        # While the proxy runs: its store is reached through the socket, for reading and for changes.
        out = helios("proxy", "route", "list", "--json")
        assert out.returncode == 0 and [r["id"] for r in json.loads(out.stdout)] == ["all"], out.stderr
        out = helios("proxy", "route", "add", "--id", "two", "--prefix", "/two/", "--pool", "web",
                     "--strip-prefix")
        assert out.returncode == 0, out.stderr
        wait_until(lambda: json.loads(request(port, "GET", "/two/echo")[2]).get("path") == "/echo", 10)
        out = helios("snapshot")
        assert out.returncode == 0, out.stderr
        assert (data / "dump.rdb").exists()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not (data / "atlas.sock").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()
    # Stopped: the directory is free again, and the route added while it ran is in it.
    out = helios("proxy", "route", "list", "--json")
    assert out.returncode == 0 and sorted(r["id"] for r in json.loads(out.stdout)) == ["all", "two"], out.stderr
