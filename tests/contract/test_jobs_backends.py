"""The job queue on every Store backend: embedded, atlasd over RESP, and a real redis-server.

A subset of tests/unit/test_jobs_queue.py where the backends differ in how a
transaction runs (remote: WATCH/MULTI/EXEC, retried on conflict) and how a
change is announced (remote: pub/sub).  Remote servers keep real time, so
`now` is the wall clock; nothing here waits for a TTL.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from helios_core.clock import wall_ms
from helios_core.config import JobsConfig
from helios_core.jobs import AckItem, EnqueueRequest, Job, JobQueue, LeaseLostError, State, TooManyQueuesError
from helios_core.jobs.model import job_key, leased_key, ready_key
from helios_core.store import Store

Q = "work"


def queue(s: Store) -> JobQueue:
    return JobQueue(s, JobsConfig(), random.Random(1))


def test_enqueue_lease_ack_in_batches(run_store) -> None:
    async def body(s: Store) -> None:
        q, now = queue(s), wall_ms()
        made = await q.enqueue_batch([EnqueueRequest(Q, {"n": i}) for i in range(100)], now)
        assert [job.payload for job, _ in made] == [{"n": i} for i in range(100)]
        leased = await q.lease([Q], 100, now, worker="w")
        assert [j.payload["n"] for j in leased] == list(range(100))
        out = await q.ack_batch([AckItem(j.id, j.lease.token, j.payload) for j in leased if j.lease], now)
        assert all(isinstance(r, Job) and r.state is State.DONE for r in out)
        stats = (await q.stats(now))[0]
        assert (stats.pending, stats.in_progress, stats.done) == (0, 0, 100)

    run_store(body)


def test_concurrent_leases_hand_out_each_job_once(run_store) -> None:
    async def body(s: Store) -> None:
        q, now = queue(s), wall_ms()
        await q.enqueue_batch([EnqueueRequest(Q, i) for i in range(30)], now)
        batches = await asyncio.gather(*(q.lease([Q], 2, now, worker=f"w{i}") for i in range(20)))
        ids = [j.id for batch in batches for j in batch]
        assert len(ids) == 30 and len(set(ids)) == 30

    run_store(body)


def test_a_stale_token_changes_nothing(run_store) -> None:
    async def body(s: Store) -> None:
        q, now = queue(s), wall_ms()
        job, _ = await q.enqueue(EnqueueRequest(Q, "p"), now)
        (first,) = await q.lease([Q], 1, now, worker="slow")
        (second,) = await q.lease([Q], 1, now + 30_000, worker="fast")  # the first lease ran out
        assert first.lease and second.lease and second.attempts == 2
        before = (await s.get(job_key(job.id)), await s.zscore(leased_key(Q), job.id))
        for call in (q.ack(job.id, first.lease.token, None, now), q.nack(job.id, first.lease.token, "e", now),
                     q.extend(job.id, first.lease.token, 60, now)):
            try:
                await call
            except LeaseLostError:
                continue
            raise AssertionError("a stale token was accepted")
        assert (await s.get(job_key(job.id)), await s.zscore(leased_key(Q), job.id)) == before
        assert (await q.ack(job.id, second.lease.token, "ok", now)).state is State.DONE

    run_store(body)


def test_dedup(run_store) -> None:
    async def body(s: Store) -> None:
        q, now = queue(s), wall_ms()
        first, created = await q.enqueue(EnqueueRequest(Q, 1, dedup_id="d"), now)
        again, created_again = await q.enqueue(EnqueueRequest(Q, 2, dedup_id="d"), now)
        assert created and not created_again and again == first
        assert await s.zcard(ready_key(Q)) == 1
        other, created_other = await q.enqueue(EnqueueRequest(Q, 3, dedup_id="d", producer="u_b"), now)
        assert created_other and other.id != first.id, "dedup ids are per producer"

    run_store(body)


def test_lease_wait_is_woken_by_an_enqueue(run_store) -> None:
    async def body(s: Store) -> None:
        q = queue(s)
        await q.enqueue(EnqueueRequest(Q, "seed"), wall_ms())
        await q.lease([Q], 1, wall_ms(), worker="w")

        async def producer() -> Job:
            await asyncio.sleep(0.1)  # let the poller start waiting
            return (await q.enqueue(EnqueueRequest(Q, "wake"), wall_ms()))[0]

        task = asyncio.create_task(producer())
        got = await q.lease_wait([Q], 1, wall_ms, 10_000, worker="poller")
        assert [j.id for j in got] == [(await task).id]
        assert await q.lease_wait([Q], 1, wall_ms, 100, worker="poller") == []

    run_store(body)


def test_queue_cap_and_forgetting(run_store) -> None:
    async def body(s: Store) -> None:
        q, now = JobQueue(s, JobsConfig(max_queues=2, done_retention_seconds=1), random.Random(1)), wall_ms()
        await q.enqueue_batch([EnqueueRequest("a", 1), EnqueueRequest("b", 2)], now)
        with pytest.raises(TooManyQueuesError):
            await q.enqueue(EnqueueRequest("c", 3), now)
        (job,) = await q.lease(["a"], 1, now, worker="w")
        await q.ack(job.id, job.lease.token if job.lease else "", None, now)
        # The done job counts until its retention (1 s) ends; `now` is passed in, nothing waits.
        assert [x.queue for x in await q.stats(now)] == ["a", "b"] and await q.queues() == ["a", "b"]
        assert await q.forget_empty(now + 1001) == ["a"]
        await q.enqueue(EnqueueRequest("c", 3), now + 1001)
        assert await q.queues() == ["b", "c"]

    run_store(body)
