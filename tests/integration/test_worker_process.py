"""`helios worker` end to end, as an operator runs it: a real `helios gateway` process and worker processes.

Nothing here asserts a duration: every wait is for a condition (a job's state, seen through the API), with
a deadline that only bounds a hang.  Visibility timeouts are long (60 s) where a job must NOT come back by
expiry, and short (2 s) where it must.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HELIOS = str(Path(sys.executable).parent / "helios")
pytestmark = pytest.mark.slow

GATEWAY_ENV = {
    "HELIOS_AUTH__BCRYPT_COST": "4",
    "HELIOS_RATELIMIT__ENABLED": "false",
    "HELIOS_JOBS__BACKOFF_BASE_MS": "50",
    "HELIOS_JOBS__BACKOFF_CAP_MS": "200",
}

TASKS = '''
import asyncio, os, time


def _me(ctx, **more):
    return {"worker": ctx.worker.split(":")[0], "attempt": ctx.attempt, **more}


def run(payload, ctx):
    """sync: runs in a thread of its own"""
    op = payload["op"]
    if op == "double":
        return _me(ctx, n=payload["n"] * 2, sync=True)
    if op == "fail":
        raise ValueError(f"cannot handle {payload['n']}")
    if op == "sleep":
        time.sleep(payload["seconds"])
        return _me(ctx)
    raise KeyError(op)


async def arun(payload, ctx):
    """async: runs on the worker's loop"""
    op = payload["op"]
    if op == "double":
        await asyncio.sleep(0)
        return _me(ctx, n=payload["n"] * 2, sync=False)
    if op == "hang_first":  # the first delivery never finishes; later ones do at once
        if ctx.attempt == 1:
            await asyncio.sleep(3600)
        return _me(ctx)
    if op == "wait_file":
        while not os.path.exists(payload["path"]):
            await asyncio.sleep(0.02)
        return _me(ctx)
    raise KeyError(op)
'''

EXEC_SCRIPT = '''#!/bin/sh
payload=$(cat)
case "$payload" in
  *ok*)   printf '{"id": "%s", "attempt": %s, "got": %s}\\n' "$HELIOS_JOB_ID" "$HELIOS_JOB_ATTEMPT" "$payload" ;;
  *text*) echo "plain words" ;;
  *fail*) echo "some progress"; i=0; while [ $i -lt 300 ]; do echo "noise line $i" >&2; i=$((i+1)); done
          echo "fatal: the disk is on fire" >&2; exit 3 ;;
  *hang*) sleep 300 & echo $! > "$PIDFILE"; wait ;;
esac
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env.update(extra)
    return env


def call(url: str, method: str = "GET", body: Any = None, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


@dataclass
class Gateway:
    proc: subprocess.Popen[str]
    url: str
    data: Path
    token: str = ""

    def api(self, method: str, path: str, body: Any = None) -> Any:
        code, out = call(self.url + path, method, body, self.token)
        assert code < 300, (method, path, code, out)
        return out

    def enqueue(self, queue: str, payload: Any, **opts: Any) -> str:
        return str(self.api("POST", "/api/v1/jobs", {"queue": queue, "payload": payload, **opts})["job"]["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v1/jobs/{job_id}")["job"]  # type: ignore[no-any-return]

    def wait_state(self, job_id: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        return wait_for(lambda: (j := self.job(job_id))["state"] == state and j, f"job {job_id} {state}",
                        timeout)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(data: Path, port: int = 0) -> Gateway:
    proc = subprocess.Popen([HELIOS, "gateway", "--data", str(data), "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=clean_env(**GATEWAY_ENV))
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"gateway exited: {proc.wait()}")
        if "listening on" in line:
            return Gateway(proc, line.split("listening on ")[1].split()[0], data)
    proc.kill()
    raise AssertionError("gateway did not start")


def login(gw: Gateway) -> str:
    password = (gw.data / "initial_admin_password").read_text().strip()
    code, out = call(f"{gw.url}/api/v1/auth/login", "POST", {"username": "admin", "password": password})
    assert code == 200, out
    return str(out["access_token"])


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = start_gateway(tmp_path / "data")
    try:
        g.token = login(g)
        yield g
    finally:
        g.stop()


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir()
    (d / "wtasks.py").write_text(textwrap.dedent(TASKS))
    return d


class WorkerProc:
    def __init__(self, tmp: Path, name: str, url: str, token: str, args: list[str], pythonpath: Path | None = None,
                 **env: str) -> None:
        self.log = tmp / f"worker-{name}.log"
        extra = {"HELIOS_URL": url, "HELIOS_TOKEN": token, **env}  # the token never on the command line
        if pythonpath is not None:
            extra["PYTHONPATH"] = str(pythonpath)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen([HELIOS, "worker", "--name", name, *args], stdout=err, stderr=err,
                                         env=clean_env(**extra), cwd=tmp)

    def output(self) -> str:
        return self.log.read_text()

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker did not exit; its log:\n{self.output()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    started: list[WorkerProc] = []

    def start(name: str, gw: Gateway, *args: str, pythonpath: Path | None = None, **env: str) -> WorkerProc:
        w = WorkerProc(tmp_path, name, gw.url, gw.token, list(args), pythonpath, **env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


# -- handlers ---------------------------------------------------------------------------------


def test_handlers_sync_and_async_in_burst_with_metrics(gw: Gateway, tasks: Path,
                                                       workers: Callable[..., WorkerProc]) -> None:
    sync_ids = [gw.enqueue("sync", {"op": "double", "n": n}) for n in range(5)]
    async_ids = [gw.enqueue("async", {"op": "double", "n": n}) for n in range(5)]
    port = free_port()
    a = workers("A", gw, "-q", "sync", "--handler", "wtasks:run", "--burst", "-c", "3", "--metrics-port", str(port),
                pythonpath=tasks)
    b = workers("B", gw, "--queue", "async", "--handler", "wtasks:arun", "--burst", "-c", "3", pythonpath=tasks)
    # --burst: both exit by themselves, status 0, once their queue is empty.
    assert a.wait() == 0, a.output()
    assert b.wait() == 0, b.output()
    for n, job_id in enumerate(sync_ids):
        job = gw.job(job_id)
        assert job["state"] == "DONE" and job["result"] == {"worker": "A", "attempt": 1, "n": 2 * n, "sync": True}
    for n, job_id in enumerate(async_ids):
        assert gw.job(job_id)["result"] == {"worker": "B", "attempt": 1, "n": 2 * n, "sync": False}
    assert "queues drained" in a.output()


def test_metrics_port_serves_worker_metrics(gw: Gateway, tasks: Path, workers: Callable[..., WorkerProc]) -> None:
    port = free_port()
    w = workers("M", gw, "-q", "met", "--handler", "wtasks:run", "--metrics-port", str(port), pythonpath=tasks)
    job_id = gw.enqueue("met", {"op": "double", "n": 1})
    gw.wait_state(job_id, "DONE")

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return ""
        return text if 'worker_jobs_total{outcome="ok",queue="met"} 1.0' in text else ""

    text = wait_for(scrape, "the metrics to show the job")
    assert "worker_job_duration_seconds_bucket" in text and "worker_inflight 0.0" in text
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait() == 0


def test_handler_exception_is_retried_then_dead_lettered(gw: Gateway, tasks: Path,
                                                         workers: Callable[..., WorkerProc]) -> None:
    bad = gw.enqueue("risky", {"op": "fail", "n": 7}, max_attempts=3)
    good = gw.enqueue("risky", {"op": "double", "n": 1})
    w = workers("A", gw, "-q", "risky", "--handler", "wtasks:run", pythonpath=tasks)
    job = gw.wait_state(bad, "FAILED")
    assert job["attempts"] == 3
    first, rest = job["last_error"].split("\n", 1)
    assert first == "ValueError: cannot handle 7"
    assert "Traceback" in rest and 'raise ValueError(f"cannot handle' in rest
    assert gw.wait_state(good, "DONE")["result"]["n"] == 2
    assert w.proc.poll() is None  # failures never stop the worker
    dlq = gw.api("GET", "/api/v1/jobs/dlq?queue=risky")["jobs"]
    assert [j["id"] for j in dlq] == [bad]


# -- --exec -----------------------------------------------------------------------------------


def test_exec_ack_result_nack_stderr_tail_and_timeout_kill(gw: Gateway, tmp_path: Path,
                                                          workers: Callable[..., WorkerProc]) -> None:
    script = tmp_path / "job.sh"
    script.write_text(EXEC_SCRIPT)
    script.chmod(0o755)
    pidfile = tmp_path / "sleeper.pid"
    ok = gw.enqueue("sh", {"mode": "ok"})
    text = gw.enqueue("sh", {"mode": "text"})
    fail = gw.enqueue("sh", {"mode": "fail"}, max_attempts=1)
    hang = gw.enqueue("sh", {"mode": "hang"}, max_attempts=1)
    w = workers("X", gw, "-q", "sh", "--exec", str(script), "-c", "4", "--timeout", "2s", "--burst",
                PIDFILE=str(pidfile))
    assert w.wait() == 0, w.output()

    assert gw.job(ok)["result"] == {"id": ok, "attempt": 1, "got": {"mode": "ok"}}
    assert gw.job(text)["result"] == "plain words"
    failed = gw.job(fail)
    assert failed["state"] == "FAILED"
    assert failed["last_error"].startswith("command failed: exit status 3\n")
    assert failed["last_error"].endswith("fatal: the disk is on fire") and "noise line 0\n" not in failed["last_error"]
    hung = gw.job(hang)
    assert hung["state"] == "FAILED" and hung["last_error"] == "timed out after 2s"
    # The command's whole process group was killed, the background sleep included.
    sleeper = int(pidfile.read_text())
    wait_for(lambda: not _alive(sleeper), "the command's child to be killed", 10)


# -- leases: heartbeats, SIGKILL, SIGTERM -----------------------------------------------------


def test_heartbeats_keep_a_job_longer_than_its_visibility_timeout(gw: Gateway, tasks: Path,
                                                                  workers: Callable[..., WorkerProc]) -> None:
    # Visibility 2 s, the job takes 5 s: without heartbeats its lease would lapse twice and the other
    # worker (which is idle, long polling) would take it.
    job_id = gw.enqueue("long", {"op": "sleep", "seconds": 5}, visibility_timeout=2)
    workers("A", gw, "-q", "long", "--handler", "wtasks:run", pythonpath=tasks)
    wait_for(lambda: gw.job(job_id)["state"] == "IN_PROGRESS", "A to take the job")
    workers("B", gw, "-q", "long", "--handler", "wtasks:run", pythonpath=tasks)
    job = gw.wait_state(job_id, "DONE", 20)
    assert job["attempts"] == 1 and job["result"] == {"worker": "A", "attempt": 1}


def test_sigkilled_worker_job_is_redelivered_after_its_visibility_timeout(
        gw: Gateway, tasks: Path, workers: Callable[..., WorkerProc]) -> None:
    job_id = gw.enqueue("crash", {"op": "hang_first"}, visibility_timeout=2)
    a = workers("A", gw, "-q", "crash", "--handler", "wtasks:arun", pythonpath=tasks)
    wait_for(lambda: (j := gw.job(job_id))["state"] == "IN_PROGRESS" and j["lease"]["worker"].startswith("A"),
             "A to take the job")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    workers("B", gw, "-q", "crash", "--handler", "wtasks:arun", pythonpath=tasks)
    job = gw.wait_state(job_id, "DONE")
    assert job["attempts"] == 2 and job["result"] == {"worker": "B", "attempt": 2}


def test_sigterm_finishes_running_jobs_and_hands_the_rest_back_at_once(
        gw: Gateway, tasks: Path, tmp_path: Path, workers: Callable[..., WorkerProc]) -> None:
    release = tmp_path / "release"
    # Visibility 60 s: a job that completes within the test's deadline was handed back, not expired.
    finishing = gw.enqueue("term", {"op": "wait_file", "path": str(release)}, visibility_timeout=60)
    stuck = [gw.enqueue("term", {"op": "hang_first"}, visibility_timeout=60) for _ in range(2)]
    a = workers("A", gw, "-q", "term", "--handler", "wtasks:arun", "-c", "3", "--grace", "4s", pythonpath=tasks)
    wait_for(lambda: all(gw.job(j)["state"] == "IN_PROGRESS" for j in [finishing, *stuck]), "A to run all three")
    workers("B", gw, "-q", "term", "--handler", "wtasks:arun", pythonpath=tasks)
    a.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "no more leases" in a.output(), "A to take the signal")
    release.touch()  # the running job may finish within the grace period
    assert a.wait() == 0, a.output()
    assert gw.wait_state(finishing, "DONE")["result"] == {"worker": "A", "attempt": 1}
    for job_id in stuck:
        job = gw.wait_state(job_id, "DONE")
        assert job["result"] == {"worker": "B", "attempt": 2}
    assert "grace period over: giving running jobs back" in a.output()


# -- the gateway comes and goes ---------------------------------------------------------------


def test_worker_waits_for_a_gateway_that_is_down_at_start_and_comes_back_after_a_restart(tmp_path: Path, tasks: Path,
                                                        workers: Callable[..., WorkerProc]) -> None:
    port = free_port()
    data = tmp_path / "data"
    # A first start, only to get a token (the gateway keeps its signing key and sessions in its data).
    first = start_gateway(data, port)
    try:
        first.token = login(first)
    finally:
        first.stop()
    w = workers("A", first, "-q", "later", "--handler", "wtasks:run", pythonpath=tasks)
    wait_for(lambda: w.output().count("cannot lease: gateway unavailable") >= 2, "the worker to retry")
    assert w.proc.poll() is None

    def one_job_then_stop(n: int, reconnects: int) -> None:
        gw = start_gateway(data, port)
        try:
            gw.token = first.token
            job_id = gw.enqueue("later", {"op": "double", "n": n})
            assert gw.wait_state(job_id, "DONE", 40)["result"]["n"] == 2 * n
            wait_for(lambda: w.output().count("gateway reachable again") == reconnects, "the worker to say so")
        finally:
            gw.stop()

    one_job_then_stop(21, 1)
    # The gateway goes away under a running worker: it retries, and carries on when the gateway is back.
    retries = w.output().count("cannot lease: gateway unavailable")
    wait_for(lambda: w.output().count("cannot lease: gateway unavailable") > retries, "the worker to retry")
    assert w.proc.poll() is None
    one_job_then_stop(22, 2)
    w.proc.send_signal(signal.SIGTERM)
    assert w.wait() == 0


def test_bad_handler_exits_2_naming_it(tmp_path: Path) -> None:
    r = subprocess.run([HELIOS, "worker", "-q", "q", "--handler", "no_such_module_here:run"],
                       env=clean_env(HELIOS_URL="http://127.0.0.1:9", HELIOS_TOKEN="t"), capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert "Invalid value for '--handler'" in r.stderr and "no_such_module_here" in r.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
