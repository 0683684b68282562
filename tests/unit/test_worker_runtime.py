"""The Worker in process, against a real gateway in process: slots, acks, nacks, lease loss, timeouts, shutdown.

The end-to-end runs as an operator starts it (signals, --exec, a gateway that comes and goes, SIGKILL) are in
tests/integration/test_worker_process.py.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from helios_core.errors import AuthenticationError
from helios_core.observability.metrics import REGISTRY
from helios_core.worker.client import AckResult, JobsClient
from helios_core.worker.config import WorkerConfig
from helios_core.worker.handlers import JobContext, PythonRunner
from helios_core.worker.runtime import LEASE_AHEAD_MAX_RUN_S, SHUTDOWN_ERROR, Backoff, Worker
from tests.unit.test_gateway_harness import Api, run_gateway

Handler = Callable[..., Any]


class CountingClient(JobsClient):
    """The real client, counting the requests the worker makes (to see acks being grouped, leases sent ahead,
    heartbeats made only when due)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.acks = 0
        self.ack_batches: list[int] = []
        self.extends = 0
        self.leases: list[tuple[int, int]] = []  # (max_jobs, jobs running when it was sent)
        self.worker: Worker | None = None

    async def lease(self, *a: Any, **kw: Any) -> list[dict[str, Any]]:
        self.leases.append((kw["max_jobs"], self.worker.running if self.worker else -1))
        return await super().lease(*a, **kw)

    async def extend(self, *a: Any, **kw: Any) -> dict[str, Any]:
        self.extends += 1
        return await super().extend(*a, **kw)

    async def ack(self, job_id: str, lease_token: str, result: Any = None) -> dict[str, Any]:
        self.acks += 1
        return await super().ack(job_id, lease_token, result)

    async def ack_batch(self, acks: Any) -> list[AckResult]:
        self.ack_batches.append(len(acks))
        return await super().ack_batch(acks)


@asynccontextmanager
async def worker(api: Api, fn: Handler, queues: tuple[str, ...] = ("q",), *, token: str | None = None,
                 client_cls: type[JobsClient] = CountingClient, **cfg: Any) -> AsyncIterator[tuple[Worker, Any]]:
    """A Worker running fn on `queues` as a task; stopped (drained) on exit.  Yields (worker, its task)."""
    client = client_cls(api.base, token or await api.admin_token())
    cfg.setdefault("backoff_initial_s", 0.05)
    cfg.setdefault("wait_s", 1)
    w = Worker(client, PythonRunner(fn), WorkerConfig(queues=queues, name="test-worker", **cfg),
               rng=random.Random(1))
    if isinstance(client, CountingClient):
        client.worker = w
    task = asyncio.create_task(w.run())
    try:
        yield w, task
    finally:
        try:
            if not task.done():  # a test that waited for it has seen its outcome already
                w.request_stop()
                w.request_stop()
                await asyncio.wait_for(task, 30)
        finally:
            await client.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def gw(tmp_path: Path, body: Callable[[Api, JobsClient], Awaitable[None]], **overrides: Any) -> None:
    async def main(api: Api) -> None:
        async with JobsClient(api.base, await api.admin_token()) as jobs:
            await body(api, jobs)

    run_gateway(tmp_path, main, timeout=90, **overrides)


# -- running and acking -----------------------------------------------------------------------


def test_burst_runs_everything_acks_in_groups_and_exits(tmp_path: Path) -> None:
    async def double(payload: int, ctx: JobContext) -> dict[str, Any]:
        return {"n": payload * 2, "attempt": ctx.attempt}

    async def body(api: Api, jobs: JobsClient) -> None:
        ids = [e.job["id"] for e in await jobs.enqueue_batch([{"queue": "burst", "payload": i} for i in range(40)])]
        async with worker(api, double, ("burst",), concurrency=8, burst=True) as (w, task):
            await asyncio.wait_for(asyncio.shield(task), 30)  # exits by itself once drained
            client = w.client
            assert isinstance(client, CountingClient)
        for i, job_id in enumerate(ids):
            job = await jobs.get(job_id)
            assert job["state"] == "DONE" and job["result"] == {"n": i * 2, "attempt": 1}
        assert client.acks + sum(client.ack_batches) == 40
        assert client.ack_batches, "jobs that finish together are acked in one request"
        assert metric("worker_jobs_total", queue="burst", outcome="ok") == 40
        assert metric("worker_inflight") == 0

    gw(tmp_path, body)


def test_sync_handler_failure_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    calls: list[int] = []

    def fails(payload: Any, ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError(f"cannot do {payload}")

    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("dlq", "it", max_attempts=3)).job
        async with worker(api, fails, ("dlq",)):
            async def dead() -> bool:
                return (await jobs.get(job["id"]))["state"] == "FAILED"
            await until(dead, "the job in the DLQ")
        got = await jobs.get(job["id"])
        assert calls == [1, 2, 3] and got["attempts"] == 3
        assert got["last_error"].startswith("RuntimeError: cannot do it\n") and "Traceback" in got["last_error"]
        assert metric("worker_jobs_total", queue="dlq", outcome="error") == 3

    gw(tmp_path, body, **{"jobs.backoff_base_ms": 10, "jobs.backoff_cap_ms": 50})


def test_timeout_stops_the_run_and_fails_the_job(tmp_path: Path) -> None:
    stopped: list[bool] = []

    async def hangs(payload: Any, ctx: JobContext) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append(True)
            raise

    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("slow", None, max_attempts=1)).job
        async with worker(api, hangs, ("slow",), timeout_s=0.3):
            async def failed() -> bool:
                return (await jobs.get(job["id"]))["state"] == "FAILED"
            await until(failed, "the job to fail")
        assert (await jobs.get(job["id"]))["last_error"] == "timed out after 0.3s" and stopped == [True]

    gw(tmp_path, body)


def test_sync_handler_that_outlives_its_timeout_keeps_its_slot_but_not_the_burst_exit(tmp_path: Path) -> None:
    let_go = threading.Event()

    def stubborn(payload: Any, ctx: JobContext) -> str:
        let_go.wait(30)  # ignores ctx.cancelled: a thread cannot be interrupted
        return "late"

    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("stubborn", None, max_attempts=1)).job
        try:
            async with worker(api, stubborn, ("stubborn",), timeout_s=0.2, burst=True) as (w, task):
                await asyncio.wait_for(asyncio.shield(task), 20)
                assert w.running == 0 and w._free() == 0  # the thread still holds the only slot
            got = await jobs.get(job["id"])
            assert got["state"] == "FAILED" and got["last_error"] == "timed out after 0.2s"
        finally:
            let_go.set()

    gw(tmp_path, body)


def test_a_handler_that_raises_cancelled_error_itself_fails_its_job(tmp_path: Path) -> None:
    async def cancels(payload: Any, ctx: JobContext) -> None:
        raise asyncio.CancelledError()

    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("selfcancel", 1, max_attempts=1)).job
        async with worker(api, cancels, ("selfcancel",)) as (w, _):
            async def failed() -> bool:
                return (await jobs.get(job["id"]))["state"] == "FAILED"
            await until(failed, "the job to fail")
            await until(lambda: _true(not w._slots and w.running == 0), "the slot to be free")
        assert "CancelledError" in (await jobs.get(job["id"]))["last_error"]

    gw(tmp_path, body)


# -- leasing ahead, heartbeats only when due --------------------------------------------------


def test_leases_ahead_while_jobs_are_short_never_holding_more_than_a_batch(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []  # (jobs waiting for a slot, jobs running) as each job runs
    holder: dict[str, Worker] = {}

    async def short(payload: int, ctx: JobContext) -> int:
        w = holder["w"]
        seen.append((len(w._waiting), w.running))
        await asyncio.sleep(0.005)
        return payload

    async def body(api: Api, jobs: JobsClient) -> None:
        first = (await jobs.enqueue("ahead", -1)).job
        async with worker(api, short, ("ahead",), concurrency=4) as (w, _):
            holder["w"] = w
            client = w.client
            assert isinstance(client, CountingClient)

            async def done(job_id: str) -> bool:
                return (await jobs.get(job_id))["state"] == "DONE"
            await until(lambda: done(first["id"]), "the first job")
            # Before any job had finished, a lease asked for free slots only.
            assert client.leases[0] == (4, 0)
            ids = [e.job["id"] for e in await jobs.enqueue_batch([{"queue": "ahead", "payload": i}
                                                                   for i in range(60)])]
            for job_id in ids:
                await until(lambda j=job_id: done(j), "every job")
        assert all(waiting <= 4 and running <= 4 for waiting, running in seen)
        assert any(waiting for waiting, _ in seen), "jobs leased ahead waited for a slot"
        # Leases went out while every slot was busy, asking for at most a batch beyond the free slots.
        assert any(running == 4 for _, running in client.leases[1:])
        assert all(asked <= 8 - running for asked, running in client.leases)

    gw(tmp_path, body)


def test_jobs_leased_ahead_that_wait_too_long_go_back_unstarted_and_leasing_ahead_pauses(tmp_path: Path) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def handler(payload: str, ctx: JobContext) -> str:
        ran.append(payload)
        if payload == "long":
            await release.wait()
        return payload

    async def body(api: Api, jobs: JobsClient) -> None:
        warm = (await jobs.enqueue("stale", "warm")).job
        async with worker(api, handler, ("stale",), visibility_s=3) as (w, _):
            async def state(job_id: str, want: str) -> bool:
                return (await jobs.get(job_id))["state"] == want
            await until(lambda: state(warm["id"], "DONE"), "the warm-up job")  # the average says: short jobs
            # A backlog (full lease answers): the worker leases ahead.
            long, nxt, last = [e.job for e in await jobs.enqueue_batch(
                [{"queue": "stale", "payload": p} for p in ("long", "next", "last")])]
            await until(lambda: _true(w.running == 1 and len(w._waiting) == 1), "a job leased ahead")
            # It waits for the only slot; after a third of its visibility (1 s) it goes back (its nack then
            # has 2 s to reach the gateway: room enough on a loaded CI box).
            await until(lambda: _true(metric("worker_jobs_total", queue="stale", outcome="released") == 1),
                        "the waiting job to be given back")
            got = await jobs.get(nxt["id"])
            assert got["state"] == "PENDING" and got["attempts"] == 0 and "next" not in ran
            assert w._run_avg is not None and w._run_avg >= LEASE_AHEAD_MAX_RUN_S and w._want() == 0
            assert (await jobs.get(last["id"]))["state"] == "PENDING"
            release.set()
            for job in (nxt, last):
                await until(lambda j=job: state(j["id"], "DONE"), "the other jobs to run once the slot is free")
        assert (await jobs.get(long["id"]))["state"] == "DONE"
        assert (await jobs.get(nxt["id"]))["attempts"] == 1 and sorted(ran[2:]) == ["last", "next"]

    gw(tmp_path, body)


def test_stop_gives_back_jobs_leased_ahead_unstarted(tmp_path: Path) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def handler(payload: str, ctx: JobContext) -> str:
        ran.append(payload)
        if payload == "long":
            await release.wait()
        return payload

    async def body(api: Api, jobs: JobsClient) -> None:
        warm = (await jobs.enqueue("aheadstop", "warm")).job
        async with worker(api, handler, ("aheadstop",), grace_s=10) as (w, task):
            async def done(job_id: str) -> bool:
                return (await jobs.get(job_id))["state"] == "DONE"
            await until(lambda: done(warm["id"]), "the warm-up job")
            long, nxt, last = [e.job for e in await jobs.enqueue_batch(
                [{"queue": "aheadstop", "payload": p} for p in ("long", "next", "last")])]
            await until(lambda: _true(w.running == 1 and len(w._waiting) == 1), "a job leased ahead")
            w.request_stop()
            release.set()
            await asyncio.wait_for(asyncio.shield(task), 20)
        assert (await jobs.get(long["id"]))["state"] == "DONE"
        for job in (nxt, last):
            got = await jobs.get(job["id"])
            assert got["state"] == "PENDING" and got["attempts"] == 0 and got["last_error"] is None
        assert ran == ["warm", "long"]
        assert metric("worker_jobs_total", queue="aheadstop", outcome="shutdown") == 1

    gw(tmp_path, body)


def test_quick_jobs_never_heartbeat_and_a_long_one_is_extended_at_a_third(tmp_path: Path) -> None:
    async def handler(payload: float, ctx: JobContext) -> None:
        await asyncio.sleep(payload)

    async def body(api: Api, jobs: JobsClient) -> None:
        quick = [e.job["id"] for e in await jobs.enqueue_batch([{"queue": "beat", "payload": 0}
                                                                 for _ in range(30)])]
        async with worker(api, handler, ("beat",), concurrency=8, visibility_s=3) as (w, _):
            client = w.client
            assert isinstance(client, CountingClient)

            async def done(job_id: str) -> bool:
                return (await jobs.get(job_id))["state"] == "DONE"
            for job_id in quick:
                await until(lambda j=job_id: done(j), "the quick jobs")
            assert client.extends == 0
            assert not w._cohorts, "no heartbeat timer outlives its jobs"
            # 1.6 s with a visibility of 3 s: extended once a third (1 s) has passed since its lease.
            long = (await jobs.enqueue("beat", 1.6)).job
            await until(lambda: done(long["id"]), "the long job")
        assert client.extends >= 1
        assert (await jobs.get(long["id"]))["attempts"] == 1

    gw(tmp_path, body)


# -- leases taken over ------------------------------------------------------------------------


def test_lease_lost_before_the_ack_is_logged_and_dropped(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def waits(payload: Any, ctx: JobContext) -> str:
        await release.wait()
        return "late"

    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("lost", 1)).job
        async with worker(api, waits, ("lost",), visibility_s=30) as (w, _):
            await until(lambda: _true(w.running == 1), "the job to start")
            api.clock.advance(60_000)  # the lease runs out (on the gateway's clock) ...
            taken = await jobs.lease(["lost"], worker="other")  # ... and someone else takes the job
            assert [j["id"] for j in taken] == [job["id"]]
            release.set()
            await until(lambda: _true(metric("worker_jobs_total", queue="lost", outcome="lease_lost") == 1),
                        "the ack to be refused")
            # The worker goes on with other work.
            nxt = (await jobs.enqueue("lost", 2)).job

            async def done() -> bool:
                return (await jobs.get(nxt["id"]))["state"] == "DONE"
            await until(done, "the next job")
        got = await jobs.get(job["id"])
        assert got["state"] == "IN_PROGRESS" and got["lease"]["worker"] == "other" and got["result"] is None

    gw(tmp_path, body)


def test_heartbeat_that_finds_the_lease_lost_cancels_the_run(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def long(payload: Any, ctx: JobContext) -> None:
        seen["ctx"] = ctx
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen["cancelled"] = True
            raise

    async def body(api: Api, jobs: JobsClient) -> None:
        await jobs.enqueue("hb", 1)
        async with worker(api, long, ("hb",)) as (w, _):
            await until(lambda: _true("ctx" in seen), "the job to start")
            api.clock.advance(60_000)
            assert len(await jobs.lease(["hb"], worker="other")) == 1
            seen["ctx"].heartbeat()  # an extend now: 409
            await until(lambda: _true(w.running == 0), "the run to be cancelled")
        assert seen["cancelled"] and seen["ctx"].cancelled
        assert metric("worker_jobs_total", queue="hb", outcome="lease_lost") == 1

    gw(tmp_path, body)


# -- shutdown ---------------------------------------------------------------------------------


def test_stop_lets_running_jobs_finish_then_gives_the_rest_back(tmp_path: Path) -> None:
    quick_may_finish = asyncio.Event()

    async def handler(payload: str, ctx: JobContext) -> str:
        if payload == "quick":
            await quick_may_finish.wait()
            return "finished"
        await asyncio.sleep(3600)
        return "never"

    async def body(api: Api, jobs: JobsClient) -> None:
        ids = {p: (await jobs.enqueue("stop", p)).job["id"] for p in ("quick", "slow1", "slow2")}
        async with worker(api, handler, ("stop",), concurrency=3, grace_s=1.0) as (w, task):
            await until(lambda: _true(w.running == 3), "three running jobs")
            w.request_stop()
            quick_may_finish.set()
            await asyncio.wait_for(asyncio.shield(task), 20)
        assert (await jobs.get(ids["quick"]))["result"] == "finished"
        for p in ("slow1", "slow2"):
            job = await jobs.get(ids[p])
            assert job["state"] == "PENDING" and job["last_error"] == SHUTDOWN_ERROR
        # retry_delay 0: due at once.
        assert {j["id"] for j in await jobs.lease(["stop"], max_jobs=5)} == {ids["slow1"], ids["slow2"]}

    gw(tmp_path, body)


def test_second_stop_gives_jobs_back_without_waiting_for_the_grace(tmp_path: Path) -> None:
    async def hangs(payload: Any, ctx: JobContext) -> None:
        await asyncio.sleep(3600)

    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("abort", 1)).job
        async with worker(api, hangs, ("abort",), grace_s=3600) as (w, task):
            await until(lambda: _true(w.running == 1), "the job to start")
            w.request_stop()
            await asyncio.sleep(0.1)
            assert not task.done()
            w.request_stop()
            await asyncio.wait_for(asyncio.shield(task), 10)
        assert (await jobs.get(job["id"]))["state"] == "PENDING"

    gw(tmp_path, body)


def test_jobs_leased_as_the_stop_comes_are_given_back_unstarted(tmp_path: Path) -> None:
    started: list[Any] = []
    holder: dict[str, Worker] = {}

    class StopOnLease(JobsClient):
        async def lease(self, *a: Any, **kw: Any) -> list[dict[str, Any]]:
            jobs = await super().lease(*a, **kw)
            if jobs:
                holder["w"].request_stop()
            return jobs

    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("late", 1)).job
        async with worker(api, lambda p, c: started.append(p), ("late",), client_cls=StopOnLease) as (w, task):
            holder["w"] = w
            await asyncio.wait_for(asyncio.shield(task), 10)
        got = await jobs.get(job["id"])
        assert started == [] and got["state"] == "PENDING" and got["last_error"] is None and got["attempts"] == 0

    gw(tmp_path, body)


# -- the gateway says no ----------------------------------------------------------------------


def test_a_refused_token_stops_the_worker_with_the_error(tmp_path: Path) -> None:
    async def body(api: Api, jobs: JobsClient) -> None:
        await jobs.enqueue("q", 1)
        async with worker(api, lambda p: p, token="bad-token") as (_, task):
            with pytest.raises(AuthenticationError):
                await asyncio.wait_for(asyncio.shield(task), 10)

    gw(tmp_path, body)


def test_burst_on_a_queue_that_does_not_exist_exits(tmp_path: Path) -> None:
    async def body(api: Api, jobs: JobsClient) -> None:
        async with worker(api, lambda p: p, ("never-enqueued",), burst=True) as (_, task):
            await asyncio.wait_for(asyncio.shield(task), 10)

    gw(tmp_path, body)


def test_backoff_grows_jittered_and_capped() -> None:
    b = Backoff(0.5, 4.0, random.Random(7))
    delays = [b.next() for _ in range(8)]
    for n, d in enumerate(delays):
        cap = min(4.0, 0.5 * 2 ** n)
        assert cap / 2 <= d <= cap
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next() <= 0.5


async def _true(v: bool) -> bool:
    return v

