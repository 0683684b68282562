"""`helios worker` processes SIGKILLed while they run jobs: every job ends, and re-runs only after a kill.

Two workers (``--exec``, concurrency 2) work a queue on a gateway while the
test SIGKILLs one of them at random, with the commands it is running (as systemd's
stop or a container's end would), and starts a new one.  Each run of a job
appends ``START id time`` and ``END id`` to a log.  The checker afterwards:

- every job ends DONE or FAILED (the DLQ): none is left pending or leased;
- a job ran more than once only if a worker kill fell between its two starts
  (a run cut short, or an ack the kill swallowed): nothing runs twice for no
  reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.chaos.harness import HELIOS, Gateway, clean_env, iterations, record, seed, wait_for

pytestmark = pytest.mark.slow
VISIBILITY_S = 2


def start_worker(gw: Gateway, log: Path, tmp: Path) -> subprocess.Popen[bytes]:
    cmd = (f'echo "START $HELIOS_JOB_ID $(date +%s.%N)" >> {log}; sleep 0.05; '
           f'echo "END $HELIOS_JOB_ID" >> {log}')
    out = open(tmp / "workers.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen([HELIOS, "worker", "--url", gw.url, "-q", "chaos", "--exec", cmd, "-c", "2"],
                                stdout=out, stderr=subprocess.STDOUT, env=clean_env(HELIOS_TOKEN=gw.token),
                                start_new_session=True)
    finally:
        out.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker with the commands it runs, as systemd's stop (KillMode=control-group) or a
    container's end does.  Each --exec command runs in a session of its own (so that the worker can
    kill its whole tree on a timeout): a SIGKILL of the worker's group alone would leave them running,
    orphaned, and their START could come long after the kill on a loaded box.  The worker is stopped
    first, so that it cannot start another command while its children are found and killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGSTOP)
        for child in _children(proc.pid):
            for kill in (os.killpg, os.kill):  # (its session, or itself if it has not made one yet)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(child, signal.SIGKILL)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_worker_sigkills_jobs_all_end_and_rerun_only_after_a_kill(tmp_path: Path) -> None:
    rng = random.Random(seed("workers"))
    kills = iterations(3)
    log = tmp_path / "runs.log"
    gw = Gateway(tmp_path, data=tmp_path / "data").start()
    workers: list[subprocess.Popen[bytes]] = []
    kill_times: list[float] = []
    job_ids: list[str] = []
    try:
        gw.login()

        def enqueue(n: int) -> None:
            for _ in range(n):
                code, _, body = gw.api("POST", "/api/v1/jobs", {"queue": "chaos", "payload": {},
                                                                 "visibility_timeout": VISIBILITY_S,
                                                                 "max_attempts": 100})
                assert code == 201, body
                job_ids.append(json.loads(body)["job"]["id"])

        enqueue(20)
        workers = [start_worker(gw, log, tmp_path) for _ in range(2)]
        for _ in range(kills):
            enqueue(15)
            time.sleep(rng.uniform(0.3, 1.5))
            victim = workers.pop(rng.randrange(len(workers)))
            kill_times.append(time.time())
            kill_group(victim)
            workers.append(start_worker(gw, log, tmp_path))

        def finished() -> bool:
            code, _, body = gw.api("GET", "/api/v1/jobs/stats?queue=chaos")
            s = json.loads(body)["queues"][0]
            return code == 200 and s["pending"] == s["in_progress"] == s["delayed"] == 0

        wait_for(finished, 120, "every job to finish")
        states = {}
        for job_id in job_ids:
            code, _, body = gw.api("GET", f"/api/v1/jobs/{job_id}")
            assert code == 200, body
            states[job_id] = json.loads(body)["job"]["state"]
        assert set(states.values()) <= {"DONE", "FAILED"}, states
    finally:
        for w in workers:
            kill_group(w)
        gw.stop()

    starts: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "START":
            starts.setdefault(parts[1], []).append(float(parts[2]))
    assert set(starts) == set(job_ids), "a job finished without running"
    reruns = 0
    for job_id, times in starts.items():
        times.sort()
        for before, after in zip(times, times[1:], strict=False):
            reruns += 1
            assert any(before - 0.5 <= k <= after for k in kill_times), \
                f"job {job_id} ran again at {after} after a run at {before} with no kill between"
    record("worker SIGKILL while running jobs (--exec, 2 workers, short visibility)",
           "every job ends DONE or FAILED; a job runs again only if a worker kill fell between its runs",
           kills, jobs=len(job_ids), reruns=reruns)
