"""One log writer, one JSON shape (issue 13 §3): a gateway and a proxy run with --log-format json,
and their stderr (access lines and ordinary lines alike) is one stream of JSON objects, each
``time, level, component, message`` then its fields, in the order things happened."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HELIOS = str(Path(sys.executable).with_name("helios"))
FIXED = ["time", "level", "component", "message"]


class Proc:
    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.out, self.err = tmp / f"{name}.out", tmp / f"{name}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([HELIOS, "--log-format", "json", "--log-level", "info", *args],
                                         stdout=out, stderr=err, env=env, cwd=tmp)

    def wait_for(self, what: str, found: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = found()
            if got:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} waiting for {what}:\n{self.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout}s:\n{self.stderr()}")

    def url(self) -> str:
        def found() -> str | None:
            m = re.search(r"listening on (http://\S+)", self.out.read_text(errors="replace"))
            return m.group(1) if m else None

        return str(self.wait_for("listening line", found))

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """Every stderr line, each of which must be one JSON object in the one shape."""
        out = []
        for raw in self.stderr().splitlines():
            line = json.loads(raw)  # a line that is not JSON fails here, naming it
            assert list(line)[:4] == FIXED, raw
            assert line["level"] in ("debug", "info", "warn", "error", "fatal"), raw
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]), raw
            out.append(line)
        return out

    def has(self, component: str, message: str, **fields: Any) -> Callable[[], bool]:
        return lambda: any(self._match(x, component, message, fields) for x in self.lines())

    @staticmethod
    def _match(line: dict[str, Any], component: str, message: str, fields: dict[str, Any]) -> bool:
        return (line["component"] == component and line["message"] == message
                and all(line.get(k) == v for k, v in fields.items()))

    def index(self, component: str, message: str, **fields: Any) -> int:
        got = [i for i, x in enumerate(self.lines()) if self._match(x, component, message, fields)]
        assert len(got) == 1, (component, message, fields, self.stderr())
        return got[0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"ignored SIGTERM:\n{self.stderr()}") from None


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str, list[str]], Proc]]:
    started: list[Proc] = []

    def go(name: str, args: list[str]) -> Proc:
        p = Proc(tmp_path, name, args)
        started.append(p)
        return p

    yield go
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def call(url: str, method: str = "GET", body: Any = None, token: str | None = None,
         request_id: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if request_id:
        req.add_header("X-Request-ID", request_id)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_gateway_access_and_ordinary_lines_one_shape_in_order(tmp_path: Path,
                                                             start: Callable[[str, list[str]], Proc]) -> None:
    gw = start("gateway", ["gateway", "--data", str(tmp_path / "data"), "--port", "0"])
    url = gw.url()
    password = (tmp_path / "data" / "initial_admin_password").read_text().strip()
    code, body = call(f"{url}/api/v1/auth/login", "POST", {"username": "admin", "password": password})
    assert code == 200, body
    token = json.loads(body)["access_token"]
    assert call(f"{url}/healthz", request_id="first")[0] == 200
    # The snapshot logs from inside the request (loguru, written at once): after "first" (batched
    # earlier in the same process), before the snapshot request's own access line.
    assert call(f"{url}/admin/snapshot", "POST", {}, token=token, request_id="snap")[0] == 200
    assert call(f"{url}/healthz", request_id="last")[0] == 200
    gw.wait_for("the last access line", gw.has("gateway.access", "request", request_id="last"))
    assert gw.stop() == 0

    order = [gw.index("gateway", "gateway listening"),
             gw.index("gateway.access", "request", request_id="first"),
             gw.index("atlas.snapshot", "snapshot started"),
             gw.index("gateway.access", "request", request_id="snap"),
             gw.index("gateway.access", "request", request_id="last"),
             gw.index("gateway", "shutting down"),
             gw.index("gateway", "gateway stopped")]
    assert order == sorted(order), (order, gw.stderr())
    line = gw.lines()[order[1]]
    assert line["level"] == "info" and line["status"] == 200 and line["route"] == "/healthz"
    assert line["method"] == "GET" and line["client"] == "127.0.0.1"


def test_proxy_access_and_ordinary_lines_one_shape_in_order(tmp_path: Path, request: pytest.FixtureRequest,
                                                           start: Callable[[str, list[str]], Proc]) -> None:
    # A port held but not listening: connections to it are refused, and no other test can take it.
    hold = socket.socket()
    hold.bind(("127.0.0.1", 0))
    request.addfinalizer(hold.close)
    backend = f"http://127.0.0.1:{hold.getsockname()[1]}"  # refused: the proxy answers 502 and says why
    config = tmp_path / "proxy.yaml"

    def write_config(prefix: str) -> None:
        config.write_text(f"pools:\n  web:\n    backends:\n      - {{id: web1, url: \"{backend}\"}}\n"
                          f"routes:\n  - {{id: api, prefix: {prefix}, pool: web}}\n")

    write_config("/")
    px = start("proxy", ["proxy", "--config", str(config), "--port", "0"])
    url = px.url()
    assert call(f"{url}/before")[0] == 502
    px.wait_for("the first access line", px.has("proxy.access", "request", path="/before"))
    write_config("/v2/")
    px.proc.send_signal(signal.SIGHUP)
    px.wait_for("the reload line", px.has("proxy", "config applied"))
    assert call(f"{url}/v2/after")[0] == 502
    px.wait_for("the second access line", px.has("proxy.access", "request", path="/v2/after"))
    assert px.stop() == 0

    order = [px.index("proxy", "proxy serving"),
             px.index("proxy.access", "request", path="/before"),
             px.index("proxy", "config applied"),
             px.index("proxy.access", "request", path="/v2/after"),
             px.index("proxy", "proxy stopped")]
    assert order == sorted(order), (order, px.stderr())
    line = px.lines()[order[1]]
    assert line["level"] == "info" and line["status"] == 502 and line["route"] == "api"
    assert line["backend"] == "web1" and "refused" in line["error"].lower()
