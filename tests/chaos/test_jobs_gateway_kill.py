"""The gateway SIGKILLed under appendfsync always while jobs flow: nothing acknowledged is lost.

Real processes: `helios gateway --data DIR` with appendfsync always, an
enqueuer and a worker loop (threads speaking HTTP) running against it, and a
SIGKILL at a random moment, three times over on the same data directory.
After each restart:

- every enqueue the gateway answered 201 exists;
- every ack it answered 200 is DONE (and stays so);
- no job stays IN_PROGRESS: leases held at the kill expire and the reaper
  returns them to PENDING, after which a drain finishes every job.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

HELIOS = str(Path(sys.executable).parent / "helios")
VISIBILITY_S = 2
pytestmark = pytest.mark.slow


def start(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env["HELIOS_ATLAS__APPENDFSYNC"] = "always"
    env["HELIOS_RATELIMIT__ENABLED"] = "false"
    proc = subprocess.Popen([HELIOS, "gateway", "--data", str(data), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 90  # a start-up on 2 cores shared by the whole suite may take long
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            raise AssertionError(f"gateway exited with {proc.wait()}")
        if "listening on" in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, line.split("listening on ")[1].split()[0]
    raise AssertionError("gateway did not start")


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


def login(url: str, data: Path) -> str:
    password = (data / "initial_admin_password").read_text().strip()
    code, body = call(f"{url}/api/v1/auth/login", "POST", {"username": "admin", "password": password})
    assert code == 200, body
    return str(body["access_token"])


class Traffic:
    """An enqueuer and a lease/ack loop; records what the gateway acknowledged."""

    def __init__(self, url: str, token: str, round_no: int) -> None:
        self.url, self.token, self.round_no = url, token, round_no
        self.enqueued: list[str] = []
        self.acked: list[str] = []
        self.errors: list[str] = []  # answers that were neither success nor a dead gateway
        self.stop = threading.Event()

    def enqueue_loop(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                code, body = call(f"{self.url}/api/v1/jobs", "POST",
                                  {"queue": "chaos", "payload": {"round": self.round_no, "i": i},
                                   "visibility_timeout": VISIBILITY_S}, self.token)
            except (OSError, http.client.HTTPException, ValueError):  # ValueError: a body cut short
                return  # the gateway is gone (mid-request or before it)
            if code not in (200, 201):
                self.errors.append(f"enqueue: {code} {body}")
                return
            self.enqueued.append(body["job"]["id"])
            i += 1

    def work_loop(self) -> None:
        while not self.stop.is_set():
            try:
                code, body = call(f"{self.url}/api/v1/jobs/lease", "POST",
                                  {"queues": ["chaos"], "max": 5, "visibility_timeout": VISIBILITY_S}, self.token)
                if code != 200:
                    self.errors.append(f"lease: {code} {body}")
                    return
                for job in body["jobs"]:
                    code, ack = call(f"{self.url}/api/v1/jobs/{job['id']}/ack", "POST",
                                     {"lease_token": job["lease"]["token"], "result": "ok"}, self.token)
                    if code == 200:
                        self.acked.append(job["id"])
            except (OSError, http.client.HTTPException, ValueError):  # ValueError: a body cut short
                return


def job_state(url: str, token: str, job_id: str) -> str:
    code, body = call(f"{url}/api/v1/jobs/{job_id}", token=token)
    assert code == 200, f"acknowledged job {job_id} lost: {code} {body}"
    return str(body["job"]["state"])


def test_gateway_sigkill_loses_no_acknowledged_enqueue_or_ack(tmp_path: Path) -> None:
    rng = random.Random(os.environ.get("CHAOS_SEED", "jobs"))
    data = tmp_path / "data"
    enqueued: list[str] = []
    acked: list[str] = []
    for round_no in range(3):
        proc, url = start(data)
        token = login(url, data)
        t = Traffic(url, token, round_no)
        threads = [threading.Thread(target=t.enqueue_loop), threading.Thread(target=t.work_loop)]
        for th in threads:
            th.start()
        time.sleep(rng.uniform(0.5, 2.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t.stop.set()
        for th in threads:
            th.join(30)
        assert not t.errors, t.errors
        assert t.enqueued, "no enqueue was acknowledged before the kill"
        enqueued += t.enqueued
        acked += t.acked

    proc, url = start(data)
    try:
        token = login(url, data)
        for job_id in acked:
            assert job_state(url, token, job_id) == "DONE", f"acknowledged ack of {job_id} lost"
        # Leases held at the kills expire; the reaper gives the jobs back (no lease call needed).
        deadline = time.monotonic() + VISIBILITY_S + 15
        while True:
            code, body = call(f"{url}/api/v1/jobs/stats?queue=chaos", token=token)
            assert code == 200, body
            stats = body["queues"][0]
            if stats["in_progress"] == 0:
                break
            assert time.monotonic() < deadline, f"jobs stuck IN_PROGRESS after restart: {stats}"
            time.sleep(0.2)
        # Drain: every acknowledged enqueue runs to DONE.
        deadline = time.monotonic() + 60
        while True:
            code, body = call(f"{url}/api/v1/jobs/lease", "POST",
                              {"queues": ["chaos"], "max": 100, "visibility_timeout": 30}, token)
            assert code == 200, body
            if not body["jobs"]:
                break
            acks = [{"id": j["id"], "lease_token": j["lease"]["token"]} for j in body["jobs"]]
            code, res = call(f"{url}/api/v1/jobs/ack", "POST", {"acks": acks}, token)
            assert code == 200 and all(r["ok"] for r in res["results"]), res
            assert time.monotonic() < deadline
        for job_id in enqueued:
            assert job_state(url, token, job_id) == "DONE"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
