"""`helios gateway --data DIR` SIGKILLed under mixed load, restarted on the same directory, checked.

The load, all through the HTTP API, while the gateway is killed at random:

- compare-and-swap KV writers: GET a key's ETag, PUT the next counter value
  with ``If-Match`` (each writer owns its key, so a 412 can only come from a
  write that was applied but whose answer the kill swallowed);
- an enqueuer with a ``dedup_id`` per job that also re-sends earlier ids
  (the answer must name the first job);
- a lease/ack loop with a short visibility timeout.

The invariant checker, after each restart and at the end (appendfsync always):

- every acknowledged PUT is there: the value is the last acknowledged counter,
  or the one after it whose answer was lost, and its ETag still matches;
- every acknowledged enqueue exists, and re-sending its dedup id names the
  same job (the dedup record survived);
- every acknowledged ack is DONE, and a DONE job is never leased again;
- a job is leased twice only if its earlier lease was cut by a kill (never
  acked) — and at the end every job is DONE or FAILED (in the DLQ).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

import pytest

from tests.chaos.harness import Gateway, iterations, record, seed, wait_for
from tests.integration.test_atlasd_support import Daemon

pytestmark = pytest.mark.slow
VISIBILITY_S = 2
GONE = (OSError, HTTPException, ValueError)  # ValueError: a JSON body cut short by the kill


class Load:
    def __init__(self, gw: Gateway, round_no: int, kv_last: dict[str, int]) -> None:
        self.gw, self.round_no = gw, round_no
        self.kv_last = kv_last  # key -> last acknowledged counter (kept across rounds)
        self.enqueued: dict[str, str] = {}  # dedup id -> job id
        self.leased: list[str] = []
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.killed = threading.Event()  # after it, a 5xx is the store or gateway going away, not a finding

    def failed(self, what: str, code: int, body: bytes) -> None:
        if not (self.killed.is_set() and code >= 500):
            self.errors.append(f"{what}: {code} {body[:200]!r}")

    def kv(self, w: int) -> None:
        key = f"chaos/k{w}"
        try:
            code, headers, body = self.gw.api("GET", f"/api/v1/kv/{key}")
            etag = headers.get("etag") if code == 200 else None
            n = int(body) if code == 200 else 0
            while not self.stop.is_set():
                h = {"If-Match": etag} if etag else {"If-None-Match": "*"}
                code, headers, body = self.gw.api("PUT", f"/api/v1/kv/{key}", raw=str(n + 1).encode(), headers=h)
                if code not in (200, 201):
                    self.failed(f"PUT {key} {n + 1}", code, body)
                    return
                n, etag = n + 1, headers["etag"]
                self.kv_last[key] = n
        except GONE:
            return

    def enqueue(self) -> None:
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                again = i % 3 == 0 and self.enqueued
                dedup = random.choice(list(self.enqueued)) if again else f"r{self.round_no}-{i}"
                code, _, body = self.gw.api("POST", "/api/v1/jobs", {
                    "queue": "chaos", "payload": {"dedup": dedup}, "dedup_id": dedup,
                    "visibility_timeout": VISIBILITY_S, "max_attempts": 50})
                if code not in (200, 201):
                    self.failed("enqueue", code, body)
                    return
                job_id = json.loads(body)["job"]["id"]
                if again and self.enqueued[dedup] != job_id:
                    self.errors.append(f"dedup {dedup} made a second job {job_id}")
                self.enqueued[dedup] = job_id
        except GONE:
            return

    def work(self) -> None:
        try:
            while not self.stop.is_set():
                code, _, body = self.gw.api("POST", "/api/v1/jobs/lease",
                                            {"queues": ["chaos"], "max": 5, "visibility_timeout": VISIBILITY_S})
                if code == 404 and b"queue_not_found" in body:  # before the enqueuer's first job
                    time.sleep(0.05)
                    continue
                if code != 200:
                    self.failed("lease", code, body)
                    return
                for job in json.loads(body)["jobs"]:
                    self.leased.append(job["id"])
                    code, _, _ = self.gw.api("POST", f"/api/v1/jobs/{job['id']}/ack",
                                             {"lease_token": job["lease"]["token"], "result": "ok"})
                    if code == 200:
                        self.acked.append(job["id"])
        except GONE:
            return

    def run_until_killed(self, delay: float, kill: Callable[[], None] | None = None) -> None:
        threads = [threading.Thread(target=self.kv, args=(w,)) for w in range(2)]
        threads += [threading.Thread(target=self.enqueue), threading.Thread(target=self.work)]
        for t in threads:
            t.start()
        time.sleep(delay)
        self.killed.set()
        (kill or self.gw.kill9)()
        self.stop.set()
        for t in threads:
            t.join(60)
        assert not self.errors, self.errors


def job_state(gw: Gateway, job_id: str) -> str:
    code, _, body = gw.api("GET", f"/api/v1/jobs/{job_id}")
    assert code == 200, f"acknowledged job {job_id} lost: {code} {body[:200]!r}"
    return str(json.loads(body)["job"]["state"])


def check_kv(gw: Gateway, kv_last: dict[str, int]) -> None:
    for key, n in kv_last.items():
        code, headers, body = gw.api("GET", f"/api/v1/kv/{key}")
        assert code == 200, f"acknowledged {key} lost"
        got = int(body)
        # n+1: a PUT the gateway made durable but whose answer the kill swallowed.
        assert got in (n, n + 1), f"{key}: acknowledged {n}, found {got}"
        kv_last[key] = got


def test_gateway_sigkill_mixed_load(tmp_path: Path) -> None:
    rng = random.Random(seed("gateway"))
    kills = iterations(3)
    data = tmp_path / "data"
    kv_last: dict[str, int] = {}
    enqueued: dict[str, str] = {}
    acked: set[str] = set()
    cut: set[str] = set()  # leased in a round and not acked there: the kill may have interrupted it
    # The long form outlasts the default 5-minute dedup window: every dedup id must be remembered to the end.
    gw = Gateway(tmp_path, data=data, env={"HELIOS_JOBS__DEDUP_WINDOW_SECONDS": "86400"})
    for round_no in range(kills):
        gw.start()
        gw.login()
        check_kv(gw, kv_last)
        for dedup, job_id in enqueued.items():
            code, _, body = gw.api("POST", "/api/v1/jobs", {"queue": "chaos", "payload": {"dedup": dedup},
                                                             "dedup_id": dedup})
            assert code in (200, 201) and json.loads(body)["job"]["id"] == job_id, f"dedup {dedup} forgotten"
        for job_id in acked:
            assert job_state(gw, job_id) == "DONE", f"acknowledged ack of {job_id} lost"
        load = Load(gw, round_no, kv_last)
        load.run_until_killed(rng.uniform(0.5, 2.0))
        assert load.enqueued, "no enqueue was acknowledged before the kill"
        twice = [j for j in load.leased if load.leased.count(j) > 1 or j in acked]
        # Leased before this round and leased again now: only a job whose lease a kill cut (never acked).
        assert not [j for j in twice if j in acked], f"an acked job was leased again: {twice}"
        enqueued.update(load.enqueued)
        acked.update(load.acked)
        cut.update(set(load.leased) - set(load.acked))

    gw.start()
    try:
        gw.login()
        check_kv(gw, kv_last)
        for job_id in acked:
            assert job_state(gw, job_id) == "DONE", f"acknowledged ack of {job_id} lost"

        def settled() -> bool:
            code, _, body = gw.api("GET", "/api/v1/jobs/stats?queue=chaos")
            return code == 200 and json.loads(body)["queues"][0]["in_progress"] == 0

        wait_for(settled, VISIBILITY_S + 30, "leases cut by the kills to expire")
        redelivered: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            code, _, body = gw.api("POST", "/api/v1/jobs/lease", {"queues": ["chaos"], "max": 100,
                                                                   "visibility_timeout": 60})
            assert code == 200, body
            jobs = json.loads(body)["jobs"]
            if not jobs:
                break
            redelivered += [j["id"] for j in jobs]
            acks = [{"id": j["id"], "lease_token": j["lease"]["token"]} for j in jobs]
            code, _, res = gw.api("POST", "/api/v1/jobs/ack", {"acks": acks})
            assert code == 200 and all(r["ok"] for r in json.loads(res)["results"]), res
        assert not set(redelivered) & acked, "a job acknowledged DONE ran again"
        states = {job_state(gw, j) for j in enqueued.values()}
        assert states <= {"DONE", "FAILED"}, states
    finally:
        gw.stop()
    record("gateway (--data, embedded store) SIGKILL under mixed load, appendfsync always",
           "acknowledged If-Match PUTs, enqueues (dedup ids remembered) and acks survive; an acked job is never "
           "leased again; a job is leased twice only after a kill cut its lease; all end DONE or FAILED",
           kills, jobs=len(enqueued), acked_before_kill=len(acked), redelivered_after_kill=len(cut - acked),
           kv_writes=sum(kv_last.values()))


def test_atlasd_sigkill_behind_the_gateway(tmp_path: Path) -> None:
    """atlasd owns DIR, the gateway (--data DIR) reaches it through its socket; atlasd is SIGKILLed."""
    rng = random.Random(seed("atlasd-behind-gateway"))
    kills = iterations(2)
    data = tmp_path / "data"
    daemon = Daemon(data, "--appendfsync", "always").start()
    gw = Gateway(tmp_path, data=data)
    kv_last: dict[str, int] = {}
    enqueued: dict[str, str] = {}
    acked: set[str] = set()
    try:
        gw.start()
        gw.login()
        for round_no in range(kills):
            load = Load(gw, round_no, kv_last)

            def kill() -> None:
                daemon.kill()
                assert daemon.proc is not None
                daemon.proc.wait()

            load.run_until_killed(rng.uniform(0.5, 2.0), kill)
            enqueued.update(load.enqueued)
            acked.update(load.acked)
            daemon.start()
            wait_for(lambda: gw.api("GET", "/api/v1/jobs/stats?queue=chaos")[0] == 200, 60,
                     "the gateway to reach the restarted atlasd", step=0.2)
            check_kv(gw, kv_last)
            for job_id in enqueued.values():
                state = job_state(gw, job_id)
                assert job_id not in acked or state == "DONE", f"acknowledged ack of {job_id} lost"
    finally:
        gw.stop()
        daemon.stop()
    record("atlasd SIGKILL behind a gateway (--data DIR through atlasd's socket), appendfsync always",
           "acknowledged If-Match PUTs, enqueues and acks survive; the gateway reconnects to the restarted atlasd",
           kills, jobs=len(enqueued), acked=len(acked), kv_writes=sum(kv_last.values()))
