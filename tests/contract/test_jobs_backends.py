"""The job queue on every Store backend: embedded, atlasd over RESP, a real redis-server, Redis Cluster.

A subset of tests/unit/test_jobs_queue.py where the backends differ in how a
transaction runs (remote: WATCH/MULTI/EXEC, retried on conflict), how a
change is announced (remote: pub/sub) and which keys one step may touch
(cluster: one hash slot; a queue's keys share its tag, the registry is
written by calls of its own).  Remote servers keep real time, so `now` is
the wall clock; nothing here waits for a TTL.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from helios_core.clock import wall_ms
from helios_core.config import JobsConfig
from helios_core.jobs import (
    AckItem,
    EnqueueRequest,
    Job,
    JobNotFoundError,
    JobQueue,
    LeaseLostError,
    State,
    TooManyQueuesError,
)
from helios_core.jobs.model import QUEUES_KEY, job_key, leased_key, ready_key
from helios_core.store import Store
from helios_core.store.scripts import ScriptOp

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
        before = (await s.get(job_key(Q, job.id)), await s.zscore(leased_key(Q), job.id))
        for call in (q.ack(job.id, first.lease.token, None, now), q.nack(job.id, first.lease.token, "e", now),
                     q.extend(job.id, first.lease.token, 60, now)):
            try:
                await call
            except LeaseLostError:
                continue
            raise AssertionError("a stale token was accepted")
        assert (await s.get(job_key(Q, job.id)), await s.zscore(leased_key(Q), job.id)) == before
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


def test_several_queues_in_one_lease_and_one_batch(run_store) -> None:
    """A batch of enqueues and a lease over several queues: one step on one server, one per slot on a
    cluster (the queues here are in three slots); the lease takes the queues in the order given."""
    async def body(s: Store) -> None:
        q, now = queue(s), wall_ms()
        names = ["q1", "q2", "q3"]
        made = await q.enqueue_batch([EnqueueRequest(n, {"q": n, "i": i}) for i in range(3) for n in names], now)
        assert all(created for _, created in made) and len(made) == 9
        got = await q.lease(["q3", "q1", "q2"], 5, now, worker="w")
        assert [j.queue for j in got] == ["q3", "q3", "q3", "q1", "q1"]
        out = await q.ack_batch([AckItem(j.id, j.lease.token) for j in got if j.lease], now)
        assert all(isinstance(r, Job) and r.state is State.DONE for r in out)
        rest = await q.lease(names, 10, now, worker="w")
        assert sorted((j.queue, j.payload["i"]) for j in rest) == [("q1", 2), ("q2", 0), ("q2", 1), ("q2", 2)]
        assert {st.queue: (st.done, st.in_progress) for st in await q.stats(now)} == \
            {"q1": (2, 1), "q2": (0, 3), "q3": (3, 0)}

    run_store(body)


def test_a_job_is_found_by_its_id_from_another_process(run_store) -> None:
    """Another process (another gateway) knows nothing of a job but its id: get, ack, cancel and
    redrive find its queue among the registered ones; a queue the caller may not touch is not searched."""
    async def body(s: Store) -> None:
        here, now = queue(s), wall_ms()
        (a, _), (b, _), (c, _) = await here.enqueue_batch(
            [EnqueueRequest("alpha", 1), EnqueueRequest("beta", 2), EnqueueRequest("beta", 3, max_attempts=1)], now)
        (leased,) = await here.lease(["alpha"], 1, now, worker="w")
        (retried, dying) = await here.lease(["beta"], 2, now, worker="w")
        assert [leased.id, retried.id, dying.id] == [a.id, b.id, c.id]
        assert leased.lease and retried.lease and dying.lease
        await here.nack(b.id, retried.lease.token, "boom", now, retry_delay_ms=0)
        await here.nack(c.id, dying.lease.token, "fatal", now)  # one attempt: into the DLQ

        there = queue(s)  # nothing remembered
        assert (await there.get(b.id)).queue == "beta"
        with pytest.raises(JobNotFoundError):
            await queue(s).get(a.id, allow=lambda qn: qn != "alpha")
        assert (await queue(s).ack(a.id, leased.lease.token, "ok", now)).state is State.DONE
        assert (await queue(s).cancel(b.id, now)).state is State.CANCELLED
        assert (await queue(s).redrive(c.id, now)).state is State.PENDING
        with pytest.raises(JobNotFoundError):
            await queue(s).get("01" + "A" * 24)  # a well-formed id of no job

    run_store(body)


class Paused:
    """A Store in front of another that runs a hook just before its n-th call of one method (to put
    another process's steps between two steps of this one's)."""

    def __init__(self, store: Store, method: str, n: int, hook: Callable[[], Awaitable[Any]]) -> None:
        self._store, self._method, self._n, self._hook = store, method, n, hook
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if name != self._method:
            return target

        async def call(*args: Any, **kw: Any) -> Any:
            self.calls += 1
            if self.calls == self._n:
                await self._hook()
            return await target(*args, **kw)

        return call


def _ran_op(name: str) -> Callable[[ScriptOp], bool]:
    return lambda op: op.name == name


@pytest.mark.parametrize("step", ["f2", "f3"])
def test_forgetting_a_queue_never_loses_one_that_just_got_a_job(run_store, step: str) -> None:
    """registry.py: a sweep forgets an empty queue (f1: unlist it, f2: drop it from job:queues, f3:
    put it back if listed again) while a new process enqueues to it (r1 register, r2 enqueue, r3
    register again), its steps between the sweep's; the queue ends registered with its job."""
    async def body(s: Store) -> None:
        now = wall_ms()
        cfg = JobsConfig(done_retention_seconds=1)
        first = JobQueue(s, cfg, random.Random(1))
        (job, _), = await first.enqueue_batch([EnqueueRequest(Q, "old")], now)
        (got,) = await first.lease([Q], 1, now, worker="w")
        await first.ack(job.id, got.lease.token if got.lease else "", None, now)
        later = now + 1001  # the done job past its retention: Q is empty

        async def enqueue() -> None:
            await JobQueue(s, cfg, random.Random(2)).enqueue(EnqueueRequest(Q, "new"), later)

        # f1 is the sweep's first transaction, f2 its second; f3 its `exists`.
        method, n = ("transact", 2) if step == "f2" else ("exists", 1)
        sweeper = JobQueue(cast(Store, Paused(s, method, n, enqueue)), cfg, random.Random(3))
        assert await sweeper.forget_empty(later, [Q]) == []
        assert await s.zscore(QUEUES_KEY, Q) is not None
        assert [(st.queue, st.pending) for st in await queue(s).stats(later)] == [(Q, 1)]

    run_store(body)


def test_an_enqueue_that_registered_before_the_sweep_is_registered_after_it(run_store) -> None:
    """r1, then the whole sweep (f1-f3: the queue is still empty, it is forgotten), then r2 and r3."""
    async def body(s: Store) -> None:
        now = wall_ms()
        sweeper = queue(s)

        async def sweep() -> None:
            assert await sweeper.forget_empty(now, [Q]) == [Q]
            assert await s.zscore(QUEUES_KEY, Q) is None

        # The enqueuer's first run_script is r1 (JOB_REGISTER), its second r2 (JOB_ENQUEUE).
        enqueuer = JobQueue(cast(Store, Paused(s, "run_script", 2, sweep)), JobsConfig(), random.Random(1))
        job, _ = await enqueuer.enqueue(EnqueueRequest(Q, "x"), now)
        assert await s.zscore(QUEUES_KEY, Q) is not None and await queue(s).get(job.id) == job

    run_store(body)


def test_a_process_whose_queue_was_forgotten_registers_it_again(run_store) -> None:
    """A process that registered a queue long ago enqueues to it after another forgot it: the enqueue
    finds the queue unlisted, writes nothing, registers it again and enqueues."""
    async def body(s: Store) -> None:
        now = wall_ms()
        cfg = JobsConfig(done_retention_seconds=1)
        old = JobQueue(s, cfg, random.Random(1))
        (job, _), = await old.enqueue_batch([EnqueueRequest(Q, 1)], now)
        (got,) = await old.lease([Q], 1, now, worker="w")
        await old.ack(job.id, got.lease.token if got.lease else "", None, now)
        assert await JobQueue(s, cfg).forget_empty(now + 1001) == [Q]
        again, created = await old.enqueue(EnqueueRequest(Q, 2), now + 1002)
        assert created and await old.queues() == [Q]
        assert [(st.queue, st.pending) for st in await queue(s).stats(now + 1002)] == [(Q, 1)]
        assert (await queue(s).get(again.id)).payload == 2

    run_store(body)
