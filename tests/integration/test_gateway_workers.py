"""`helios gateway --workers N` and the supervisor under it, as an operator runs them: real processes.

Which gateway process answered is read from /metrics (`helios_gateway_worker_info{slot,pid}`): the
kernel spreads new connections over the processes' SO_REUSEPORT sockets, so a few fresh
connections reach each of them.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from helios_cli.main import cli
from helios_core.atlas.datadir import DataDir

HELIOS = str(Path(sys.executable).parent / "helios")
pytestmark = pytest.mark.slow
FAST = {"HELIOS_AUTH__BCRYPT_COST": "4"}  # every process warms bcrypt up at start: cheaply here
WORKER_INFO = re.compile(r'^helios_gateway_worker_info\{pid="(\d+)",slot="(\d+)"\} 1\.0$', re.M)


class Gateway:
    """A `helios gateway` subprocess, read up to its "listening on" line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        # The log goes to a file, not a pipe: nobody reads a pipe while the test runs, and once its
        # 64 KiB are full of access-log lines every process writing to it blocks.
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([HELIOS, "gateway", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env={**base, **FAST, **(env or {})})
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        # Every gateway pid this test saw (all must be gone at the end), with its start time: a pid
        # that died mid-test may belong to another process by cleanup time (pids wrap at pid_max).
        self.seen: dict[int, int | None] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"gateway exited: {self.proc.wait()} {self.stderr()}")
            self.lines.append(line.rstrip("\n"))
            if "listening on" in line:
                self.url = line.split("listening on ")[1].split()[0]
                self.port = int(self.url.rsplit(":", 1)[1])
                return
        raise AssertionError("gateway did not start")

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        own = conn is None
        c = conn or self.connection()
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            if own:
                c.close()

    def pid_of(self, conn: http.client.HTTPConnection | None = None) -> int:
        """The pid of the gateway process that serves `conn` (a new connection if None)."""
        status, body = self.call("GET", "/metrics", conn=conn)
        assert status == 200
        found = WORKER_INFO.findall(body.decode())
        assert len(found) == 1, body[-2000:]
        self.seen.setdefault(int(found[0][0]), start_time(int(found[0][0])))
        return int(found[0][0])

    def token(self, password: str) -> str:
        status, body = self.call("POST", "/api/v1/auth/login", {"username": "admin", "password": password})
        assert status == 200, body
        return str(json.loads(body)["access_token"])

    def children(self) -> set[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return {int(p) for p in path.read_text().split()} if path.exists() else set()

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return code, self.stderr()

    def kill(self) -> None:
        """Cleanup after a failed test: the parent, then any child left (PDEATHSIG sends them SIGTERM too)."""
        left = {pid: start_time(pid) for pid in self.children()} | self.seen
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
            log = [line for line in self.stderr().splitlines() if "gateway.access" not in line]
            print("\n".join(log[-200:]))  # shown with a failed test's output
        for pid, started in left.items():
            if started is None or start_time(pid) != started:
                continue  # gone, or the pid is another process's now: SIGKILL only what we started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None if it is gone:
    with the pid it names one process, whatever later reuses the number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    """The process has exited and was reaped.  Not "is a zombie": a killed process's main thread shows
    Z while its other threads are still exiting, and its sockets stay open (and take connections,
    which are then reset) until the last one is gone."""
    return not Path(f"/proc/{pid}").exists()


def connections_per_pid(gw: Gateway, want: int) -> dict[int, http.client.HTTPConnection]:
    """Keep-alive connections, one to each of `want` distinct gateway processes."""
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(400):
        conn = gw.connection()
        pid = gw.pid_of(conn)
        if pid in found:
            conn.close()
        else:
            found[pid] = conn
        if len(found) == want:
            return found
    raise AssertionError(f"only reached processes {sorted(found)}")


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gw in started:
        gw.kill()


def test_two_workers_share_the_data_dir_survive_a_kill_and_stop_cleanly(tmp_path: Path,
                                                                       gateways: list[Gateway]) -> None:
    data = tmp_path / "data"
    gw = Gateway("--data", str(data), "--workers", "2")
    gateways.append(gw)
    assert "2 processes" in gw.lines[-1]
    # The bootstrap ran once: one password printed, one admin, one secret.
    password = (data / "initial_admin_password").read_text().strip()
    assert sum(password in line for line in gw.lines) == 1
    assert (data / "jwt_secret").exists()
    owner = DataDir(data).owner()
    assert owner is not None and owner["pid"] in gw.children()  # the atlasd child holds the lock
    token = gw.token(password)

    # Two processes, and a write through one is read through the other.
    conns = connections_per_pid(gw, 2)
    (a, ca), (b, cb) = conns.items()
    assert a != b and {a, b} <= gw.children() and owner["pid"] not in (a, b)
    assert gw.call("PUT", "/api/v1/kv/shared", b"from-" + str(a).encode(), token, conn=ca)[0] == 201
    assert gw.call("GET", "/api/v1/kv/shared", token=token, conn=cb) == (200, b"from-" + str(a).encode())
    # A token issued by one process is good at the other (same keys, one store).
    assert gw.call("GET", "/api/v1/auth/me", token=token, conn=cb)[0] == 200
    for c in conns.values():
        c.close()

    # Many writes on fresh connections, spread over both processes: every acknowledged one must survive.
    def put(i: int) -> int:
        return gw.call("PUT", f"/api/v1/kv/k{i}", f"v{i}".encode(), token)[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(put, range(120)))
    acknowledged = [i for i, s in enumerate(statuses) if s == 201]
    assert len(acknowledged) == 120, statuses

    # kill -9 one gateway process: the others keep answering, and it is replaced.
    os.kill(b, signal.SIGKILL)
    wait_for(lambda: gone(b), what=f"pid {b} to die")
    for i in range(30):
        assert gw.call("GET", f"/api/v1/kv/k{i}", token=token) == (200, f"v{i}".encode())
    replacement = wait_for(lambda: (gw.children() - {a, b, owner["pid"]}) or None, what="a restarted worker")
    new = next(iter(replacement))
    wait_for(lambda: gw.pid_of() == new, timeout=90, what=f"the restarted process {new} to answer")
    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(lambda i: gw.call("GET", f"/api/v1/kv/k{i}", token=token)[0], range(40))) == {200}

    # kill -9 the atlasd child: it is restarted on the directory and recovers it from the AOF.  A
    # gateway request may still meet a pooled connection to the old one (the store retries once on
    # a fresh connection, so a few answer 503 at worst): read with retries.
    os.kill(owner["pid"], signal.SIGKILL)
    wait_for(lambda: gone(owner["pid"]), what="atlasd to die")
    new_owner = wait_for(lambda: (DataDir(data).owner() or {}).get("pid"), what="a restarted atlasd")
    assert new_owner in gw.children()

    def get_retrying(i: int) -> tuple[int, bytes]:
        reply: tuple[int, bytes] = (0, b"")
        for _ in range(20):
            reply = gw.call("GET", f"/api/v1/kv/k{i}", token=token)
            if reply[0] != 503:
                return reply
            time.sleep(0.1)
        return reply

    with ThreadPoolExecutor(4) as pool:
        got = set(pool.map(get_retrying, acknowledged))
    assert got == {(200, f"v{i}".encode()) for i in acknowledged}

    # SIGTERM: every process exits, the gateways before the atlasd child, status 0, lock released.
    children = gw.children()
    code, err = gw.stop()
    assert code == 0, err[-3000:]
    assert all(gone(pid) for pid in children | {a, b})
    assert DataDir(data).owner() is None
    stops = [line for line in err.splitlines() if "stopped" in line and "group=" in line]
    assert [("group=gateway" in s, "group=atlasd" in s) for s in stops] == [(True, False), (False, True)], stops

    # A restart on the same directory (one process, embedded) finds every acknowledged write.
    again = Gateway("--data", str(data))
    gateways.append(again)
    token = again.token(password)
    for i in acknowledged:
        assert again.call("GET", f"/api/v1/kv/k{i}", token=token) == (200, f"v{i}".encode())
    assert again.call("GET", "/api/v1/kv/shared", token=token)[0] == 200
    assert again.stop()[0] == 0


def test_workers_on_a_store_url_leave_the_store_running(tmp_path: Path, gateways: list[Gateway]) -> None:
    data = tmp_path / "atlas"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    atlasd = subprocess.Popen([HELIOS, "atlasd", "--data", str(data), "--port", "0"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: (data / "atlas.sock").exists() and DataDir(data).owner(), what="atlasd")
        keys = {"HELIOS_AUTH__JWT_KEYS": "k1=" + "s" * 48}
        gw = Gateway("--store", f"unix://{data}/atlas.sock", "--workers", "2", env=keys)
        gateways.append(gw)
        password = gw.lines[gw.lines.index(next(x for x in gw.lines if "this password" in x)) + 1].strip()
        token = gw.token(password)
        conns = connections_per_pid(gw, 2)
        (a, ca), (b, cb) = conns.items()
        assert gw.call("PUT", "/api/v1/kv/x", b"1", token, conn=ca)[0] == 201
        assert gw.call("GET", "/api/v1/kv/x", token=token, conn=cb) == (200, b"1")
        for c in conns.values():
            c.close()
        assert gw.stop()[0] == 0
        assert atlasd.poll() is None and DataDir(data).owner() is not None  # not the gateway's to stop
    finally:
        atlasd.send_signal(signal.SIGTERM)
        try:
            assert atlasd.wait(60) == 0
        finally:
            if atlasd.poll() is None:
                atlasd.kill()


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--workers", "0"], {}, "give 1 or more gateway processes"),
    (["--workers", "-2"], {}, "give 1 or more gateway processes"),
    ([], {"HELIOS_GATEWAY__WORKERS": "0"}, "gateway.workers"),
])
def test_a_bad_number_of_workers_is_refused(tmp_path: Path, args: list[str], env: dict[str, str],
                                            message: str) -> None:
    result = CliRunner().invoke(cli, ["gateway", "--data", str(tmp_path / "d"), "--port", "0", *args], env=env)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output, result.output
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_a_failed_bootstrap_stops_the_start_with_its_reason(tmp_path: Path) -> None:
    # --store with no auth.jwt_keys: the bootstrap (run once, in a helper process) refuses, and its
    # message is the command's, not "a child exited".
    # A subprocess, not CliRunner: the supervisor forks, and forking pytest's process is no test of it.
    base = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    out = subprocess.run([HELIOS, "gateway", "--store", f"unix://{tmp_path}/atlas.sock", "--port", "0",
                          "--workers", "2"], capture_output=True, text=True, timeout=60, env=base)
    assert out.returncode == 1, out
    assert "auth.jwt_keys" in out.stderr.strip().splitlines()[-1], out.stderr[-2000:]


# --- the supervisor itself (helios_core.supervise), in a subprocess: it installs signal handlers ---

SUPERVISED = textwrap.dedent("""
    import os, signal, sys, time
    from helios_core.supervise import Group, RestartPolicy, Supervisor

    def serving(slot, ready):
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        signal.signal(signal.SIGHUP, lambda *a: os.write(1, f"hup {slot}\\n".encode()))  # one write a line
        ready()
        while not stop:
            time.sleep(0.02)

    def crashing(slot, ready):
        raise SystemExit(3)

    def stubborn(slot, ready):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ready()
        while True:
            time.sleep(1)

    body = {"serving": serving, "crashing": crashing, "stubborn": stubborn}[sys.argv[1]]
    with Supervisor("test", RestartPolicy(backoff_initial=0.01, crash_limit=4)) as sup:
        sup.start(Group("w", body, 2, grace=1.0))
        if sys.argv[1] != "crashing":
            sup.wait_ready("w", 60)
        print("ready", *sup.pids("w"), flush=True)
        outcome = sup.run()
    print("outcome", int(outcome.clean), int(outcome.gave_up), flush=True)
    sys.exit(0 if outcome.clean else 1)
""")


def supervised(mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), (line, proc.stderr.read() if proc.stderr else "")
    return proc, [int(p) for p in line.split()[1:]]


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, out, err


def test_supervisor_forwards_hup_and_stops_cleanly_on_sigterm() -> None:
    proc, pids = supervised("serving")
    assert len(pids) == 2
    proc.send_signal(signal.SIGHUP)
    assert proc.stdout is not None
    got = {proc.stdout.readline().strip(), proc.stdout.readline().strip()}
    assert got == {"hup 0", "hup 1"}
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 0 and "outcome 1 0" in out, err[-2000:]
    assert all(gone(p) for p in pids)


def test_supervisor_gives_up_on_a_crash_loop() -> None:
    proc, _ = supervised("crashing")
    code, out, err = finish(proc)
    assert code == 1 and "outcome 0 1" in out, err[-2000:]
    assert "giving up" in err


def test_supervisor_kills_a_child_that_outlives_its_grace() -> None:
    proc, pids = supervised("stubborn")
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 1 and "outcome 0 0" in out, err[-2000:]
    assert "did not stop within its grace period" in err
    assert all(gone(p) for p in pids)
