"""Helpers for the proxy's integration tests: the real `helios proxy` as a subprocess, config files, clients.

Backends are `tests.proxy_backend.BackendProcess` subprocesses on unused ports.  The proxy runs
as a process of its own with its stderr (the logs) in a file the test can read: started the way
an operator starts it (``helios proxy --config FILE --port 0``) with ``cli=True``, or otherwise
through `serve_main` below, the same `run_proxy` without the ``helios`` command's start-up (which
imports every command's modules: seconds on a loaded machine, for each of a dozen proxies).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HELIOS = str(Path(sys.executable).parent / "helios")
ROOT = Path(__file__).resolve().parents[3]

__all__ = ["HELIOS", "ProxyProcess", "write_config", "pool", "route", "request", "raw_exchange", "wait_until"]


def pool(backends: Sequence[tuple[str, str] | tuple[str, str, int]], *, balancer: str = "round_robin",
         health: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A pool record; health checks every 0.2 s on /healthz by default (fast tests)."""
    return {
        "balancer": balancer,
        "backends": [{"id": b[0], "url": b[1], "weight": b[2] if len(b) > 2 else 1} for b in backends],
        "health": health if health is not None else {"path": "/healthz", "interval": 0.2, "timeout": 1,
                                                     "rise": 1, "fall": 1},
        **extra,
    }


def route(rid: str, prefix: str, pool_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "prefix": prefix, "pool": pool_id, **extra}


def write_config(path: Path, pools: dict[str, Any], routes: list[dict[str, Any]], **top: Any) -> Path:
    """A proxy YAML file (JSON is YAML)."""
    path.write_text(json.dumps({"pools": pools, "routes": routes, **top}, indent=2))
    return path


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(step)


def serve_main() -> None:
    """``python -c '...serve_main()' CONFIG [--workers N] [--grace S] [--no-access-log]``: run_proxy on port 0."""
    import argparse

    from helios_core.observability.logging import setup_logging
    from helios_core.proxy.service import FileConfigSource, ServeOptions, run_proxy

    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    a = parser.parse_args()
    setup_logging("info", "json")

    async def nothing() -> None:
        return None

    async def open_source() -> Any:
        return FileConfigSource(a.config), nothing

    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    options = ServeOptions(grace=a.grace, access_log=not a.no_access_log, tls_cert=a.tls_cert, tls_key=a.tls_key)
    run_proxy(open_source, "127.0.0.1", 0, a.workers, options=options, loop_factory=loop_factory,
              announce=lambda url: print(f"helios proxy listening on {url} (workers {a.workers})", flush=True))


class ProxyProcess:
    """The proxy on FILE, port 0, in a subprocess (`helios proxy` itself with `cli`); `port`, `log()`, `stop()`."""

    def __init__(self, config: Path, *args: str, log_path: Path | None = None, cli: bool = False,
                 env: dict[str, str] | None = None) -> None:
        """`env`: HELIOS_* settings for the process (the caller's own are never passed on)."""
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}, **(env or {})}
        self.log_path = log_path or config.with_suffix(".log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        if cli:
            argv = [HELIOS, "--log-format", "json", "proxy", "--config", str(config), "--port", "0", *args]
        else:
            argv = [sys.executable, "-c", "from tests.integration.proxy import serve_main; serve_main()",
                    str(config), *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self._log, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.stop()
            raise AssertionError(f"proxy did not start: {line!r}\n{self.log()}")
        self.url = line.split("listening on ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        wait_until(self._accepts, 10)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def status(self) -> dict[str, Any]:
        status, _, body = request(self.port, "GET", "/_helios/proxy/status")
        assert status == 200, body
        doc: dict[str, Any] = json.loads(body)
        return doc

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            conn: http.client.HTTPConnection | None = None, timeout: float = 10,
            ) -> tuple[int, dict[str, str], bytes]:
    """One request (on `conn` when given, kept open); (status, headers lower-cased, body)."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        if own:
            c.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes, read until the proxy closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out
