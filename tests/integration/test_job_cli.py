"""`helios job`: every command and error through --data (a real store on a tmp dir) and --url (a real gateway)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from helios_cli.main import cli
from helios_core.atlas.engine import Engine
from helios_core.clock import wall_ms
from helios_core.config import AtlasConfig, HeliosConfig
from helios_core.jobs import JobQueue, TooManyQueuesError
from helios_core.store.url import open_store
from helios_core.worker.client import error_from, is_transient
from tests.integration.test_atlasd_support import Daemon, running_daemon
from tests.integration.test_gateway_process import HELIOS, call
from tests.integration.test_gateway_process import start as start_gateway
from tests.integration.test_gateway_process import stop as stop_gateway
from tests.unit.test_gateway_harness import Api, gateway

pytestmark = pytest.mark.usefixtures("restore_logging", "empty_cwd")
ENV = {"HELIOS_AUTH__BCRYPT_COST": "4"}
UNKNOWN = "01JCDZ8Y6VAAAAAAAAAAAAAAAA"  # a well-formed job id that no test makes


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, ["job", *args], input=stdin, env={**ENV, **(env or {})})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def enqueue(data: Path, queue: str, payload: str, *extra: str) -> str:
    r = run("enqueue", "--queue", queue, "--payload", payload, *extra, "--data", str(data))
    assert r.exit_code == 0, r.output
    job_id = r.stdout.strip()
    assert len(job_id) == 26 and "\n" not in job_id  # the id alone, for $(helios job enqueue ...)
    return job_id


def fail_job(data: Path, queue: str) -> str:
    """Lease the queue's next job and nack it with no attempts left: it lands in the DLQ."""

    async def go() -> str:
        store = await open_store(data=data, config=HeliosConfig())
        try:
            q = JobQueue(store, HeliosConfig().jobs)
            (job,) = await q.lease([queue], 1, wall_ms(), worker="test")
            assert job.lease is not None
            failed = await q.nack(job.id, job.lease.token, "boom: the test made it fail", wall_ms())
            assert str(failed.state) == "FAILED"
            return job.id
        finally:
            await store.close()

    return asyncio.run(go())


def test_enqueue_show_list_cancel(data: Path) -> None:
    a = enqueue(data, "emails", '{"to": "alice@example.com"}')
    b = enqueue(data, "emails", '[1, 2, 3]', "--priority", "5", "--max-attempts", "3")
    r = run("enqueue", "-q", "thumbs", "-p", '"x.png"', "--json", "--data", str(data))
    assert r.exit_code == 0, r.output
    c = orjson.loads(r.stdout)
    assert (c["queue"], c["payload"], c["state"], c["attempts"]) == ("thumbs", "x.png", "PENDING", 0)

    r = run("show", a, "--json", "--data", str(data))
    assert r.exit_code == 0, r.output
    job = orjson.loads(r.stdout)
    assert (job["id"], job["payload"], job["max_attempts"]) == (a, {"to": "alice@example.com"}, 5)
    job_b = orjson.loads(run("show", b, "--json", "--data", str(data)).stdout)
    assert (job_b["priority"], job_b["max_attempts"]) == (5, 3)
    r = run("show", a, "--data", str(data))
    assert r.exit_code == 0 and a in r.stdout and "PENDING" in r.stdout and "alice@example.com" in r.stdout

    every = orjson.loads(run("list", "--json", "--data", str(data)).stdout)
    assert sorted(j["id"] for j in every) == sorted([a, b, c["id"]])
    emails = orjson.loads(run("list", "--queue", "emails", "--json", "--data", str(data)).stdout)
    assert {j["id"] for j in emails} == {a, b}
    assert len(orjson.loads(run("list", "--limit", "2", "--json", "--data", str(data)).stdout)) == 2
    r = run("list", "--data", str(data))
    assert r.exit_code == 0 and a in r.stdout and "thumbs" in r.stdout

    r = run("cancel", a, "--data", str(data))
    assert r.exit_code == 0 and f"cancelled job {a}" in r.stdout
    cancelled = orjson.loads(run("list", "--state", "cancelled", "--json", "--data", str(data)).stdout)
    assert [j["id"] for j in cancelled] == [a]
    pending = orjson.loads(run("list", "-q", "emails", "-s", "PENDING", "--json", "--data", str(data)).stdout)
    assert [j["id"] for j in pending] == [b]
    r = run("cancel", a, "--data", str(data))  # only PENDING jobs can be cancelled
    assert r.exit_code == 1 and "CANCELLED" in r.stderr


def test_stats(data: Path) -> None:
    enqueue(data, "emails", "{}")
    enqueue(data, "emails", "{}", "--delay", "30s")
    enqueue(data, "thumbs", "{}")
    stats = {s["queue"]: s for s in orjson.loads(run("stats", "--json", "--data", str(data)).stdout)}
    assert set(stats) == {"emails", "thumbs"}
    assert (stats["emails"]["pending"], stats["emails"]["delayed"], stats["thumbs"]["pending"]) == (1, 1, 1)
    r = run("stats", "--data", str(data))
    assert r.exit_code == 0 and "emails" in r.stdout and "thumbs" in r.stdout and "pending" in r.stdout
    only = orjson.loads(run("stats", "--queue", "thumbs", "--json", "--data", str(data)).stdout)
    assert [s["queue"] for s in only] == ["thumbs"]


def test_delay_dedup_and_payload_sources(data: Path, tmp_path: Path) -> None:
    before = wall_ms()
    r = run("enqueue", "-q", "later", "-p", "{}", "--delay", "2m", "--json", "--data", str(data))
    job = orjson.loads(r.stdout)
    assert before + 120_000 <= job["available_ms"] <= wall_ms() + 120_000

    first = enqueue(data, "once", '{"n": 1}', "--dedup-id", "order-42")
    r = run("enqueue", "-q", "once", "-p", '{"n": 2}', "--dedup-id", "order-42", "--data", str(data))
    assert r.exit_code == 0 and r.stdout.strip() == first  # the job the dedup id first made
    assert "order-42" in r.stderr and "existing job" in r.stderr
    assert orjson.loads(run("show", first, "--json", "--data", str(data)).stdout)["payload"] == {"n": 1}

    f = tmp_path / "payload.json"
    f.write_text('{"from": "file", "list": [1, 2]}')
    from_file = enqueue(data, "src", f"@{f}")
    from_stdin = run("enqueue", "-q", "src", "-p", "-", "--data", str(data), stdin='{"from": "stdin"}')
    assert from_stdin.exit_code == 0, from_stdin.output
    payloads = {j["id"]: j["payload"] for j in orjson.loads(run("list", "-q", "src", "--json", "--data",
                                                                     str(data)).stdout)}
    assert payloads == {from_file: {"from": "file", "list": [1, 2]},
                        from_stdin.stdout.strip(): {"from": "stdin"}}


def test_retry_one_and_all_of_the_dlq(data: Path) -> None:
    for q in ("emails", "emails", "thumbs"):
        enqueue(data, q, "{}", "--max-attempts", "1")
    one = fail_job(data, "emails")
    two = fail_job(data, "emails")
    three = fail_job(data, "thumbs")
    shown = orjson.loads(run("show", one, "--json", "--data", str(data)).stdout)
    assert shown["state"] == "FAILED" and "boom" in shown["last_error"]
    assert "boom" in run("show", one, "--data", str(data)).stdout

    r = run("retry", one, "--json", "--data", str(data))
    assert r.exit_code == 0, r.output
    again = orjson.loads(r.stdout)
    assert (again["state"], again["attempts"]) == ("PENDING", 0)
    r = run("retry", one, "--data", str(data))  # not FAILED any more
    assert r.exit_code == 1 and "PENDING" in r.stderr

    r = run("retry", "--all-dlq", "--queue", "thumbs", "--json", "--data", str(data))
    assert r.exit_code == 0 and orjson.loads(r.stdout) == {"redriven": 1}
    r = run("retry", "--all-dlq", "--data", str(data))
    assert r.exit_code == 0 and "1 job back from the dead-letter queue" in r.stdout
    states = {j["id"]: j["state"] for j in orjson.loads(run("list", "--json", "--data", str(data)).stdout)}
    assert states == {one: "PENDING", two: "PENDING", three: "PENDING"}


def test_errors_exit_non_zero_with_a_reason(data: Path, tmp_path: Path) -> None:
    r = run("enqueue", "-q", "emails", "-p", '{"to": "x",}', "--data", str(data))
    assert r.exit_code == 2 and "not valid JSON" in r.output
    assert "trailing comma is not allowed at line 1, column 11 (char 10)" in r.output
    r = run("enqueue", "-q", "emails", "-p", "{\n  \"a\": nope\n}", "--data", str(data))
    assert r.exit_code == 2 and "line 2" in r.output
    r = run("enqueue", "-q", "emails", "-p", f"@{tmp_path / 'missing.json'}", "--data", str(data))
    assert r.exit_code == 2 and "cannot read" in r.output
    r = run("enqueue", "-q", "emails", "-p", '"' + "x" * 200 + '"', "--data", str(data),
            env={"HELIOS_JOBS__MAX_PAYLOAD_BYTES": "100"})
    assert r.exit_code == 1 and "202 bytes" in r.stderr and "limit is 100 bytes" in r.stderr
    r = run("enqueue", "-q", "bad:name", "-p", "{}", "--data", str(data))
    assert r.exit_code == 1 and "queue" in r.stderr
    r = run("enqueue", "-q", "emails", "-p", "{}", "--delay", "soon", "--data", str(data))
    assert r.exit_code == 2 and "invalid duration 'soon'" in r.output
    r = run("enqueue", "-q", "emails", "-p", "{}", "--priority", "5000", "--data", str(data))
    assert r.exit_code == 2
    for cmd in ("show", "cancel", "retry"):
        r = run(cmd, UNKNOWN, "--data", str(data))
        assert r.exit_code == 1 and f"no job {UNKNOWN}" in r.stderr, (cmd, r.output)
        r = run(cmd, "not-a-job-id", "--data", str(data))
        assert r.exit_code == 1 and "no job not-a-job-id" in r.stderr
    assert run("retry", "--data", str(data)).exit_code == 2
    assert run("retry", UNKNOWN, "--all-dlq", "--data", str(data)).exit_code == 2
    assert run("retry", UNKNOWN, "--queue", "q", "--data", str(data)).exit_code == 2
    assert run("list", "--state", "SLEEPING", "--data", str(data)).exit_code == 2
    r = run("list", "--data", str(tmp_path / "missing"))
    assert r.exit_code == 1 and "does not exist" in r.stderr
    assert run("stats").exit_code == 2
    assert run("stats", "--data", str(data), "--url", "http://x").exit_code == 2
    r = run("stats", "--url", "http://127.0.0.1:9")
    assert r.exit_code == 2 and "--token" in r.output
    r = run("stats", "--url", "http://127.0.0.1:9", "--token", "t")
    assert r.exit_code == 1 and "cannot reach the gateway" in r.stderr


def test_the_queue_cap_is_a_clear_error(data: Path) -> None:
    enqueue(data, "first", "1")
    r = run("enqueue", "-q", "second", "-p", "2", "--data", str(data), env={"HELIOS_JOBS__MAX_QUEUES": "1"})
    assert r.exit_code == 1 and "cannot create queue 'second'" in r.stderr and "jobs.max_queues is 1" in r.stderr
    # Through the API the same refusal is a TooManyQueuesError, not a throttle to retry.
    err = error_from(429, "too_many_queues", "cannot create queue 'x'")
    assert isinstance(err, TooManyQueuesError) and not is_transient(err)


def test_a_gateway_owned_data_dir_is_refused_naming_the_owner(data: Path) -> None:
    eng = Engine.open(data, AtlasConfig(), tool="helios gateway", http_url="http://127.0.0.1:8080")
    try:
        r = run("stats", "--data", str(data))
    finally:
        eng.close()
    assert r.exit_code == 1
    assert "in use by helios gateway process" in r.stderr and "--url http://127.0.0.1:8080" in r.stderr


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with running_daemon(tmp_path) as d:
        yield d


def test_an_atlasd_owned_data_dir_goes_through_its_socket(daemon: Daemon) -> None:
    job_id = enqueue(daemon.data, "emails", '{"via": "atlasd"}')
    with daemon.client() as r:
        assert orjson.loads(r.get(f"job:{{emails}}:{job_id}"))["payload"] == {"via": "atlasd"}
    assert orjson.loads(run("show", job_id, "--json", "--data", str(daemon.data)).stdout)["state"] == "PENDING"


# -- --url: the jobs API of a gateway ---------------------------------------------------------

@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    """A gateway on its own loop in a thread, so the CLI (which runs its own loop) can call it."""
    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        async with gateway(tmp_path, **{"jobs.max_payload_bytes": 100}) as api:  # type: ignore[arg-type]
            box["api"] = api
            box["token"] = await api.admin_token()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    t.start()
    assert ready.wait(30)
    yield box["api"], str(box["token"])  # type: ignore[misc]
    stop.set()
    t.join(30)


def test_the_same_commands_through_the_jobs_api(live: tuple[Api, str]) -> None:
    api, token = live
    url = ["--url", api.base, "--token", token]
    r = run("enqueue", "-q", "emails", "-p", '{"to": "bob"}', "--priority", "3", *url)
    assert r.exit_code == 0, r.output
    a = r.stdout.strip()
    r = run("enqueue", "-q", "emails", "-p", "{}", "--delay", "90s", "--dedup-id", "d1", "--json", *url)
    b = orjson.loads(r.stdout)
    assert b["available_ms"] >= wall_ms() + 80_000
    r = run("enqueue", "-q", "emails", "-p", '{"other": 1}', "--dedup-id", "d1", *url)
    assert r.exit_code == 0 and r.stdout.strip() == b["id"] and "existing job" in r.stderr
    c = run("enqueue", "-q", "thumbs", "-p", "[]", "--max-attempts", "1", *url).stdout.strip()

    job = orjson.loads(run("show", a, "--json", *url).stdout)
    assert (job["payload"], job["priority"]) == ({"to": "bob"}, 3)
    assert {j["id"] for j in orjson.loads(run("list", "--json", *url).stdout)} == {a, b["id"], c}
    assert [j["id"] for j in orjson.loads(run("list", "-q", "thumbs", "--json", *url).stdout)] == [c]
    stats = {s["queue"]: s for s in orjson.loads(run("stats", "--json", *url).stdout)}
    assert (stats["emails"]["pending"], stats["emails"]["delayed"], stats["thumbs"]["pending"]) == (1, 1, 1)
    assert "emails" in run("stats", *url).stdout

    r = run("cancel", a, "--json", *url)
    assert r.exit_code == 0 and orjson.loads(r.stdout)["state"] == "CANCELLED"
    r = run("cancel", a, *url)
    assert r.exit_code == 1 and "409" in r.stderr
    r = run("retry", b["id"], *url)
    assert r.exit_code == 1 and "409" in r.stderr
    r = run("retry", "--all-dlq", "--json", *url)
    assert r.exit_code == 0 and orjson.loads(r.stdout) == {"redriven": 0}
    for cmd in ("show", "cancel", "retry"):
        r = run(cmd, UNKNOWN, *url)
        assert r.exit_code == 1 and f"no job {UNKNOWN}" in r.stderr, (cmd, r.output)
    r = run("enqueue", "-q", "emails", "-p", '"' + "x" * 200 + '"', *url)
    assert r.exit_code == 1 and "413" in r.stderr and "100" in r.stderr
    r = run("enqueue", "-q", "bad:name", "-p", "{}", *url)
    assert r.exit_code == 1 and "400" in r.stderr
    r = run("stats", "--url", api.base, "--token", "not-a-token")
    assert r.exit_code == 1 and "401" in r.stderr


@pytest.mark.slow
def test_a_real_gateway_process(tmp_path: Path) -> None:
    """As an operator runs it: `helios gateway` in a subprocess, `helios job` with HELIOS_URL/HELIOS_TOKEN."""
    data = tmp_path / "data"
    proc, url, _ = start_gateway(data)
    try:
        password = (data / "initial_admin_password").read_text().strip()
        token = json.loads(call(f"{url}/api/v1/auth/login", "POST",
                                {"username": "admin", "password": password})[1])["access_token"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELIOS_")}
        env.update({"HELIOS_URL": url, "HELIOS_TOKEN": token})

        def helios(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([HELIOS, "job", *args], capture_output=True, text=True, timeout=60, env=env)

        r = helios("enqueue", "--queue", "emails", "--payload", '{"to": "carol"}')
        assert r.returncode == 0, r.stderr
        job_id = r.stdout.strip()
        r = helios("show", job_id, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["payload"] == {"to": "carol"}
        r = helios("stats", "--json")
        assert [(s["queue"], s["pending"]) for s in json.loads(r.stdout)] == [("emails", 1)]
        r = helios("cancel", job_id)
        assert r.returncode == 0 and "cancelled" in r.stdout
        # The gateway owns the directory and serves its socket: --data works while it runs.
        r = subprocess.run([HELIOS, "job", "list", "--json", "--data", str(data)], capture_output=True, text=True,
                           timeout=60, env={k: v for k, v in env.items() if not k.startswith("HELIOS_")})
        assert r.returncode == 0, r.stderr
        assert [j["state"] for j in json.loads(r.stdout)] == ["CANCELLED"]
    finally:
        code, err = stop_gateway(proc)
    assert code == 0, err
    # Stopped: the same directory through --data sees the cancelled job.
    deadline = time.monotonic() + 10
    while True:
        r = subprocess.run([HELIOS, "job", "show", job_id, "--json", "--data", str(data)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "CANCELLED"
