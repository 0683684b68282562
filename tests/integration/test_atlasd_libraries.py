"""Real job libraries on a real atlasd, started as a user would: an RQ worker and a Celery worker.

Each test runs the library's own worker as a subprocess against the server's
URL, exactly as an operator would, and checks what the library reports
(results, statuses, the failed registry).  Every test also runs against a real
redis-server: a failure on atlasd alone is an atlasd bug, a failure on both is
the test's.  redis-py's Lock has its own test in test_differential_scripting.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.integration.test_atlasd_support import running_daemon
from tests.redis_server import RedisServer, redis_server  # noqa: F401

rq = pytest.importorskip("rq")
celery = pytest.importorskip("celery")

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Generous: the machine runs the suite in 4 processes on 2 busy cores.
WAIT_S = 60.0


@dataclass
class Server:
    name: str
    url: str
    client: Callable[[], redis.Redis]


@pytest.fixture(params=["atlasd", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "redis":
        real: RedisServer = request.getfixturevalue("redis_server")
        r = redis.Redis(host=real.host, port=real.port)
        r.flushall()
        r.close()
        yield Server("redis", f"redis://{real.host}:{real.port}/0",
                     lambda: redis.Redis(host=real.host, port=real.port, socket_timeout=10))
        return
    with running_daemon(tmp_path) as d:
        yield Server("atlasd", f"redis://:{d.password}@127.0.0.1:{d.port}/0", d.client)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _wait(cond: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None = None,
          log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None and not cond():
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}:\n{tail}")


def test_rq_worker_runs_jobs_and_records_failures(server: Server, tmp_path: Path) -> None:
    from rq import Queue
    from rq.job import JobStatus

    from tests.integration import rq_jobs

    conn = server.client()
    q = Queue("default", connection=conn)
    added = q.enqueue(rq_jobs.add, 2, 3)
    shouted = q.enqueue(rq_jobs.shout, "atlas")
    failing = q.enqueue(rq_jobs.fail, "on purpose")
    assert q.count == 3
    assert added.get_status() == JobStatus.QUEUED

    log = tmp_path / "rq-worker.log"
    with open(log, "wb") as out:
        done = subprocess.run([str(BIN / "rq"), "worker", "--burst", "--url", server.url, "default"],
                              cwd=ROOT, env=_env(), stdout=out, stderr=subprocess.STDOUT, timeout=WAIT_S * 2)
    assert done.returncode == 0, log.read_text(errors="replace")

    for job in (added, shouted, failing):
        job.refresh()
    assert added.get_status() == JobStatus.FINISHED
    assert added.return_value() == 5
    assert shouted.return_value() == "ATLAS!"
    assert failing.get_status() == JobStatus.FAILED
    assert failing.id in q.failed_job_registry
    assert "on purpose" in (failing.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert added.id in q.finished_job_registry
    assert q.count == 0
    conn.close()


def test_celery_worker_on_redis_transport(server: Server, tmp_path: Path) -> None:
    from tests.integration.celery_app import URL_ENV, make_app

    app = make_app(server.url)
    log = tmp_path / "celery-worker.log"
    out = open(log, "wb")
    worker = subprocess.Popen(
        [str(BIN / "celery"), "-A", "tests.integration.celery_app", "worker", "--pool", "solo",
         "--concurrency", "1", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-n", f"helios-{server.name}@%h"],
        cwd=ROOT, env=_env(**{URL_ENV: server.url}), stdout=out, stderr=subprocess.STDOUT)
    out.close()
    try:
        _wait(lambda: b"ready." in log.read_bytes(), "the celery worker to start", worker, log)
        results = [app.send_task("helios_test.add", args=(i, i)) for i in range(4)]
        failing = app.send_task("helios_test.boom", args=("on purpose",))
        assert [r.get(timeout=WAIT_S) for r in results] == [0, 2, 4, 6]
        with pytest.raises(Exception, match="on purpose"):
            failing.get(timeout=WAIT_S)
        assert failing.state == "FAILURE"
        assert all(r.state == "SUCCESS" for r in results)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise AssertionError("the celery worker ignored SIGTERM:\n" + log.read_text(errors="replace")) from None
        app.close()
    assert code == 0, log.read_text(errors="replace")[-4000:]
