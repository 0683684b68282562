"""What the chaos suite shares: its two forms, the record it leaves, and real HELIOS daemons to kill.

The suite runs in two forms.  `make test` runs the short one: a few kills per
daemon, so the whole of tests/chaos stays well inside CI's time.  `make chaos`
sets ``HELIOS_CHAOS_LONG=1`` (at least 30 kills per daemon, longer loads) and
``HELIOS_CHAOS_RECORD=FILE``: every scenario then appends one JSON line to
FILE (what it checks, its iterations, what it measured), from which
tests/chaos/report.py writes docs/reliability.md.

Daemons are started as an operator starts them (the ``helios`` console
script), on port 0, with their logs in a file beside the data directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

__all__ = ["HELIOS", "LONG", "ROOT", "Gateway", "HttpResult", "chaos_long", "clean_env", "fd_count", "http",
           "iterations", "record", "rss_kb", "seed", "wait_for"]

HELIOS = str(Path(sys.executable).with_name("helios"))
ROOT = Path(__file__).resolve().parents[2]
# Read once at import: tests/conftest.py removes every HELIOS_* variable before each test runs.
LONG = os.environ.get("HELIOS_CHAOS_LONG") == "1"
_KILLS = os.environ.get("HELIOS_CHAOS_KILLS", "")
_RECORD = os.environ.get("HELIOS_CHAOS_RECORD", "")
_SEED = os.environ.get("HELIOS_CHAOS_SEED", "")

# For a test that runs only in the long form.
chaos_long = pytest.mark.skipif(not LONG, reason="long form only: make chaos (HELIOS_CHAOS_LONG=1)")


def iterations(short: int, long: int = 30) -> int:
    """How many kills (or rounds) a scenario runs: HELIOS_CHAOS_KILLS wins, then the form's number."""
    if _KILLS:
        return max(1, int(_KILLS))
    return long if LONG else short


def record(scenario: str, checks: str, iterations: int, result: str = "pass", **measured: Any) -> None:
    """One line for docs/reliability.md (only when make chaos asked for a record)."""
    path = _RECORD
    if not path:
        return
    line = {"scenario": scenario, "checks": checks, "iterations": iterations, "result": result,
            "measured": measured, "ts": time.time()}
    with open(path, "a", encoding="utf-8") as f:  # one short append per line: safe across xdist workers
        f.write(json.dumps(line) + "\n")


def seed(default: str) -> str:
    """The random moments' seed: HELIOS_CHAOS_SEED when set (to replay a run), else the scenario's own."""
    return _SEED or default


def wait_for(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll `pred` until true; generous timeouts, since 2 cores are shared by 4 test processes and more."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


HttpResult = tuple[int, dict[str, str], bytes]


def http(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 30) -> HttpResult:
    """One request on a fresh connection: (status, lower-cased headers, body); OSError if the peer is gone."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    c = HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env.update(extra)
    return env


class Daemon:
    """A daemon process the chaos tests start, SIGKILL and stop (`proc` is set by the subclass's start)."""

    proc: subprocess.Popen[bytes] | None = None

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()


class Gateway(Daemon):
    """`helios gateway --data DIR` (or --store URL) on port 0; `kill9()`, `stop()`, `login()`, `api()`."""

    def __init__(self, tmp: Path, *, data: Path | None = None, store: str | None = None,
                 fsync: str = "always", env: dict[str, str] | None = None) -> None:
        self.data, self.store = data, store
        self.env = clean_env(HELIOS_ATLAS__APPENDFSYNC=fsync, HELIOS_RATELIMIT__ENABLED="false", **(env or {}))
        self.log_path = tmp / f"gateway-{id(self)}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = ""
        self.admin_password = ""  # printed once on a first start (the only copy with a remote store)

    def start(self, timeout: float = 60) -> Gateway:
        where = ["--data", str(self.data)] if self.data is not None else ["--store", str(self.store)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([HELIOS, "gateway", *where, "--port", "0"], stdout=subprocess.PIPE,
                                     stderr=log, env=self.env)
        log.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise AssertionError(f"gateway exited with {self.proc.wait()}:\n{self.log()[-3000:]}")
            if line.startswith("    ") and not self.admin_password:
                self.admin_password = line.strip()
            if "listening on" in line:
                self.url = line.split("listening on ")[1].split()[0]
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep the pipe drained
                return self
        raise AssertionError("gateway did not start")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


    def login(self) -> str:
        pw_file = self.data / "initial_admin_password" if self.data is not None else None
        if pw_file is not None and pw_file.exists():
            password = pw_file.read_text().strip()
        else:
            password = self.admin_password
        code, _, body = self.api("POST", "/api/v1/auth/login", {"username": "admin", "password": password},
                                 auth=False)
        assert code == 200, body
        self.token = json.loads(body)["access_token"]
        return self.token

    def api(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
            headers: dict[str, str] | None = None, auth: bool = True, timeout: float = 30) -> HttpResult:
        h = {"Content-Type": "application/json", **(headers or {})}
        if auth and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        return http(self.url, method, path, data, h, timeout)
