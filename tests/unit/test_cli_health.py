"""`helios health`: which HTTP paths it asks, what counts as healthy, and its exit status."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from helios_cli.health import probe
from helios_cli.main import cli

pytestmark = pytest.mark.usefixtures("restore_logging")


class _Daemon(BaseHTTPRequestHandler):
    """Answers each path with the status the test put in `routes` (404 for the rest)."""

    routes: dict[str, int] = {}
    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
        self.asked.append(self.path)
        status = self.routes.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_daemon() -> Iterator[tuple[str, type[_Daemon]]]:
    handler = type("Handler", (_Daemon,), {"routes": {}, "asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def test_gateway_healthz_answers_first(http_daemon: tuple[str, type[_Daemon]]) -> None:
    url, handler = http_daemon
    handler.routes.update({"/healthz": 200, "/metrics": 200})
    h = probe(url, 5)
    assert h.ok and h.line == f"healthy: {url}/healthz answered 200"
    assert handler.asked == ["/healthz"]


def test_proxy_and_worker_are_found_after_404s(http_daemon: tuple[str, type[_Daemon]]) -> None:
    url, handler = http_daemon
    handler.routes["/_helios/proxy/status"] = 200
    assert probe(url, 5).ok and handler.asked == ["/healthz", "/_helios/proxy/status"]
    handler.routes.clear()
    handler.asked.clear()
    handler.routes["/metrics"] = 200
    assert probe(url + "/", 5).ok and handler.asked == ["/healthz", "/_helios/proxy/status", "/metrics"]


def test_an_error_status_is_unhealthy_without_trying_further(http_daemon: tuple[str, type[_Daemon]]) -> None:
    url, handler = http_daemon
    handler.routes.update({"/healthz": 503, "/metrics": 200})
    h = probe(url, 5)
    assert not h.ok and "503" in h.line and handler.asked == ["/healthz"]


def test_a_full_path_asks_only_that_path(http_daemon: tuple[str, type[_Daemon]]) -> None:
    url, handler = http_daemon
    handler.routes["/readyz"] = 200
    assert probe(url + "/readyz", 5).ok
    assert not probe(url + "/nothing", 5).ok
    assert handler.asked == ["/readyz", "/nothing"]


def test_command_exit_status(http_daemon: tuple[str, type[_Daemon]]) -> None:
    url, handler = http_daemon
    handler.routes["/healthz"] = 200
    runner = CliRunner()
    res = runner.invoke(cli, ["health", "--url", url])
    assert res.exit_code == 0 and res.output.startswith("healthy: ") and res.output.count("\n") == 1
    res = runner.invoke(cli, ["health", "--url", url + "/missing"])
    assert res.exit_code == 1 and res.output.startswith("unhealthy: ") and "404" in res.output


def test_dead_port_and_missing_socket_are_unhealthy(tmp_path: object) -> None:
    from tests.integration.test_atlasd_support import unused_port

    port = unused_port()
    runner = CliRunner()
    for url in (f"http://127.0.0.1:{port}", f"atlas://127.0.0.1:{port}", f"unix://{tmp_path}/atlas.sock"):
        res = runner.invoke(cli, ["health", "--url", url, "--timeout", "2"])
        assert res.exit_code == 1, (url, res.output)
        assert res.output.startswith("unhealthy: ") and res.output.count("\n") == 1


@pytest.mark.parametrize("url", ["ftp://x", "localhost:8080", "atlas://", "redis://h:notaport", "http://"])
def test_bad_urls_are_usage_errors(url: str) -> None:
    res = CliRunner().invoke(cli, ["health", "--url", url])
    assert res.exit_code == 2, res.output
