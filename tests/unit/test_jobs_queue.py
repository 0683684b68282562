"""The job queue on a real embedded store: every transition, error path and index it keeps.

The engine's clock is the test's clock (`env.now`), so record TTLs (retention,
dedup window) expire when the test moves time on; nothing sleeps for a TTL.
Only the long-poll tests use real time, and they assert on results, not timing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helios_core.atlas.engine import Engine
from helios_core.clock import wall_ms
from helios_core.config import AtlasConfig, JobsConfig
from helios_core.errors import ConfigError, HeliosError, InvalidInputError
from helios_core.jobs import (
    MAX_LEASE_BATCH,
    AckItem,
    EnqueueRequest,
    Job,
    JobNotFoundError,
    JobQueue,
    JobStateError,
    LeaseLostError,
    PayloadTooLargeError,
    QueueNotFoundError,
    QueuePolicy,
    State,
    TooManyQueuesError,
    parse_queue_policies,
)
from helios_core.jobs import queue as queue_module
from helios_core.jobs.model import (
    PRIORITY_MAX,
    QUEUES_KEY,
    dedup_key,
    delayed_key,
    dlq_key,
    done_key,
    job_key,
    leased_key,
    listed_key,
    ready_key,
)
from helios_core.jobs.policy import full_jitter_ms
from helios_core.jobs.transitions import PRUNE_SLACK_MS
from helios_core.store import EmbeddedStore

T0 = 1_800_000_000_000
Q = "emails"
INDEXES = (ready_key, delayed_key, leased_key, dlq_key, done_key)


@dataclass
class Env:
    q: JobQueue
    store: EmbeddedStore
    now: int = T0

    def tick(self, ms: int) -> int:
        self.now += ms
        return self.now

    @property
    def seq(self) -> int:
        """The engine's record counter: one transaction is one record."""
        return self.store.engine.seq

    async def put(self, payload: Any = None, queue: str = Q, **kw: Any) -> Job:
        job, created = await self.q.enqueue(EnqueueRequest(queue, payload, **kw), self.now)
        assert created
        return job

    async def lease(self, n: int = 1, queues: tuple[str, ...] = (Q,), worker: str = "w1", **kw: Any) -> list[Job]:
        return await self.q.lease(list(queues), n, self.now, worker=worker, **kw)

    async def lease_one(self, **kw: Any) -> Job:
        (job,) = await self.lease(1, **kw)
        return job

    async def where(self, job_id: str, queue: str = Q) -> dict[str, float]:
        """The indexes (by key) the job is a member of, with its score in each."""
        out = {}
        for index in INDEXES:
            score = await self.store.zscore(index(queue), job_id)
            if score is not None:
                out[index(queue)] = score
        return out

    async def snapshot(self, job_id: str, queue: str = Q) -> tuple[bytes | None, int, dict[str, float]]:
        """Everything stored about a job: its record, the record's TTL, and its index entries."""
        return await self.store.get(job_key(queue, job_id)), await self.store.pttl(job_key(queue, job_id)), \
            await self.where(job_id)


@asynccontextmanager
async def open_env(tmp_path: Path, **jobs: Any) -> AsyncIterator[Env]:
    env: Env | None = None
    engine = Engine.open(tmp_path / "data", AtlasConfig(appendfsync="no", save=()), clock=lambda: env.now if env
                         else T0)
    engine.attach()
    store = EmbeddedStore(engine)
    env = Env(JobQueue(store, JobsConfig(**jobs), random.Random(7)), store)
    await env.q.prepare()  # (its one write, job:format, before the tests count writes)
    try:
        yield env
    finally:
        await store.close()


def run(tmp_path: Path, body: Callable[[Env], Awaitable[None]], **jobs: Any) -> None:
    async def main() -> None:
        async with open_env(tmp_path, **jobs) as env:
            await asyncio.wait_for(body(env), 30)

    asyncio.run(main())


# -- enqueue ----------------------------------------------------------------------------------


def test_enqueue_stores_a_pending_job_and_registers_the_queue(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job = await env.put({"to": "a@example.com"}, priority=5, trace="00-abc-def-01")
        assert job.state is State.PENDING and job.attempts == 0 and job.lease is None
        assert (job.created_ms, job.available_ms, job.max_attempts, job.visibility_timeout_s) == (T0, T0, 5, 30)
        assert await env.q.get(job.id) == job
        assert await env.store.pttl(job_key(Q, job.id)) == -1  # kept until it finishes
        assert list(await env.where(job.id)) == [ready_key(Q)]
        assert await env.q.queues() == [Q]
        assert await env.store.zscore(QUEUES_KEY, Q) == T0
        assert await env.store.exists(listed_key(Q))  # what tells an enqueue in Q's slot it is registered
        env.tick(1000)
        seq = env.seq
        await env.put(2)
        # Registered once per process: a later enqueue writes its record and index alone (one step).
        assert await env.store.zscore(QUEUES_KEY, Q) == T0, "scored by when it was registered"
        assert env.seq == seq + 1

    run(tmp_path, body)


def test_every_key_of_a_queue_shares_its_hash_tag(tmp_path: Path) -> None:
    """One tag per queue (model.py): a queue's indexes, records and dedup keys are job:{Q}:..., and
    the registry and the format key are the only other job keys."""
    async def body(env: Env) -> None:
        job = await env.put(1, dedup_id="d-1")
        leased = await env.lease_one()
        assert leased.id == job.id
        keys = sorted(k.decode() for k in await env.store.scan_all(b"job:"))
        assert keys == sorted(["job:format", "job:queues", f"job:{{{Q}}}:{job.id}", f"job:{{{Q}}}:leased",
                               f"job:{{{Q}}}:listed", f"job:{{{Q}}}:dedup::d-1"]), keys

    run(tmp_path, body)


def test_enqueue_batch_is_one_transaction_and_all_or_nothing(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        seq = env.seq
        out = await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(50)], env.now)
        # The queue's first enqueue in this process registers it too, before and after (registry.py;
        # the second registration changes nothing here: no record).
        assert env.seq == seq + 2
        seq = env.seq
        out += await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(50, 100)], env.now)
        assert env.seq == seq + 1
        assert [j.payload for j, created in out] == list(range(100)) and all(c for _, c in out)
        with pytest.raises(InvalidInputError, match=r"jobs\[1\]\.priority must be -1000\.\.1000"):
            await env.q.enqueue_batch([EnqueueRequest(Q, "ok"), EnqueueRequest(Q, "bad", priority=5000)], env.now)
        assert (await env.q.stats(env.now))[0].pending == 100, "nothing of the refused batch was added"
        with pytest.raises(InvalidInputError, match=r"number of jobs must be 1\.\.100"):
            await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(101)], env.now)
        with pytest.raises(InvalidInputError, match="number of jobs"):
            await env.q.enqueue_batch([], env.now)

    run(tmp_path, body)


@pytest.mark.parametrize(("req", "message"), [
    (EnqueueRequest("bad:name", 1), "queue must be a queue name of 1-80 characters"),
    (EnqueueRequest("", 1), "queue must be a queue name"),
    (EnqueueRequest("x" * 81, 1), "queue must be a queue name"),
    (EnqueueRequest(Q, {1, 2}), "payload must be JSON-serialisable"),
    (EnqueueRequest(Q, {1: "non-str key"}), "payload must be JSON-serialisable"),
    (EnqueueRequest(Q, 1, priority=1001), r"priority must be -1000\.\.1000, got 1001"),
    (EnqueueRequest(Q, 1, priority=True), r"priority must be an integer -1000\.\.1000"),
    (EnqueueRequest(Q, 1, delay_ms=-1), r"delay_ms must be 0\.\.\d+ ms, got -1"),
    (EnqueueRequest(Q, 1, delay_ms=5, run_at_ms=T0), "exclude each other"),
    (EnqueueRequest(Q, 1, run_at_ms=T0 + 400 * 86_400_000), "run_at_ms must be"),
    (EnqueueRequest(Q, 1, max_attempts=0), r"max_attempts must be 1\.\.1000, got 0"),
    (EnqueueRequest(Q, 1, max_attempts=1001), r"max_attempts must be 1\.\.1000"),
    (EnqueueRequest(Q, 1, visibility_timeout_s=0), r"visibility_timeout must be 1\.\.43200 seconds"),
    (EnqueueRequest(Q, 1, visibility_timeout_s=43201), r"visibility_timeout must be 1\.\.43200 seconds"),
    (EnqueueRequest(Q, 1, dedup_id=""), "dedup_id must be 1-128 printable characters"),
    (EnqueueRequest(Q, 1, dedup_id="x" * 129), "dedup_id must be 1-128 printable characters"),
    (EnqueueRequest(Q, 1, dedup_id="a\nb"), "dedup_id must be 1-128 printable characters"),
    (EnqueueRequest(Q, 1, trace=5), "trace must be a string"),  # type: ignore[arg-type]
])
def test_enqueue_validation_names_the_field_and_range(tmp_path: Path, req: EnqueueRequest, message: str) -> None:
    async def body(env: Env) -> None:
        with pytest.raises(InvalidInputError, match=message) as e:
            await env.q.enqueue(req, env.now)
        assert e.value.status == 400
        assert await env.q.queues() == []

    run(tmp_path, body)


def test_payload_limit_is_413_naming_the_setting(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("x" * 998)  # 1000 bytes as JSON: at the limit
        with pytest.raises(PayloadTooLargeError, match=r"payload is 1001 bytes as JSON; the limit is 1000 bytes "
                                                       r"\(jobs.max_payload_bytes\)") as e:
            await env.put("x" * 999)
        assert e.value.status == 413 and e.value.code == "payload_too_large"

    run(tmp_path, body, max_payload_bytes=1000)


def test_unknown_queues_and_strict_mode(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        assert await env.lease() == []  # a worker may start before its queue's first job: nothing yet
        for call in (env.q.list("nope", None, env.now), env.q.stats(env.now, "nope")):
            with pytest.raises(QueueNotFoundError, match="does not exist: nothing was ever enqueued to it") as e:
                await call
            assert e.value.status == 404 and e.value.code == "queue_not_found"
        with pytest.raises(InvalidInputError, match="queue must be a queue name"):
            await env.q.check_queue("no spaces")
        await env.put(1)
        assert await env.lease() != []
        await env.q.check_queue(Q)

    run(tmp_path, body)

    async def strict(env: Env) -> None:
        await env.q.check_queue("reports")  # configured, never enqueued to
        assert await env.lease(queues=("reports",)) == []
        with pytest.raises(QueueNotFoundError, match="jobs.strict_queues is on and jobs.queues has no entry"):
            await env.put(1, queue="adhoc")
        with pytest.raises(QueueNotFoundError, match="jobs.strict_queues is on and jobs.queues has no entry"):
            await env.lease(queues=("adhoc",))
        await env.put(1, queue="reports")
        assert await env.q.queues() == ["reports"]

    run(tmp_path / "strict", strict, strict_queues=True, queues=("reports",))


def test_queue_policies_from_config(tmp_path: Path) -> None:
    cfg = JobsConfig(queues=("emails max_attempts=10 backoff_base_ms=2000", "reports visibility_timeout_seconds=600"))
    assert parse_queue_policies(cfg) == {
        "emails": QueuePolicy(30, 10, 2000, 300000), "reports": QueuePolicy(600, 5, 1000, 300000)}
    for entry, why in [
        ("", "empty entry"), ("bad:name", "queue name 'bad:name'"), ("q max_attempts", "not key=value"),
        ("q colour=blue", "not key=value with a key among visibility_timeout_seconds"),
        ("q max_attempts=ten", "max_attempts must be an integer, got 'ten'"),
        ("q max_attempts=0", r"max_attempts must be 1\.\.1000, got 0"),
        ("q visibility_timeout_seconds=99999", r"visibility_timeout_seconds must be 1\.\.43200"),
        ("q backoff_base_ms=10 backoff_cap_ms=5", "backoff_cap_ms .5. is below backoff_base_ms"),
    ]:
        with pytest.raises(ConfigError, match=why) as e:
            parse_queue_policies(JobsConfig(queues=(entry,)))
        assert e.value.key == "jobs.queues" and repr(entry) in str(e.value)
    with pytest.raises(ConfigError, match="more than one entry"):
        parse_queue_policies(JobsConfig(queues=("a", "a max_attempts=2")))

    async def body(env: Env) -> None:
        job = await env.put(1)
        other = await env.put(1, queue="other")
        assert (job.max_attempts, job.visibility_timeout_s) == (3, 30)
        assert (other.max_attempts, other.visibility_timeout_s) == (5, 30)
        assert env.q.policy(Q) == QueuePolicy(30, 3, 1000, 300000)
        assert await env.q.queues() == ["emails", "other", "reports"]

    run(tmp_path, body, queues=("emails max_attempts=3", "reports"))


# -- leasing ----------------------------------------------------------------------------------


def test_lease_hands_out_each_job_once_with_a_token(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job = await env.put("p")
        leased = await env.lease_one(worker="alpha")
        assert leased.id == job.id and leased.state is State.IN_PROGRESS and leased.attempts == 1
        assert leased.lease is not None and leased.lease.worker == "alpha" and len(leased.lease.token) >= 20
        assert leased.lease.deadline_ms == T0 + 30_000
        assert await env.where(job.id) == {leased_key(Q): T0 + 30_000}
        assert await env.lease() == [], "not handed out twice"
        assert (await env.q.get(job.id)) == leased
        assert "token" not in leased.public()["lease"] and leased.public(with_token=True)["lease"]["token"]

    run(tmp_path, body)


def test_the_id_to_queue_memory_holds_only_unfinished_jobs(tmp_path: Path) -> None:
    # A long-running gateway must not grow with every job it ever saw (make soak): an ack forgets
    # its job; a second ack of it still reads the record and is refused as before.
    async def body(env: Env) -> None:
        for i in range(50):
            await env.put(i)
        jobs = await env.lease(50)
        for job in jobs[:40]:
            assert job.lease is not None
            await env.q.ack(job.id, job.lease.token, None, env.now)
        assert len(env.q._queue_of) == 10
        done = jobs[0]
        assert done.lease is not None
        with pytest.raises(LeaseLostError, match="it is DONE, not leased"):
            await env.q.ack(done.id, done.lease.token, None, env.now)

    run(tmp_path, body)


def test_lease_order_priority_then_availability_and_queue_order(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        low = await env.put("low", priority=-5)
        first = await env.put("first")
        env.tick(1)
        second = await env.put("second")
        urgent = await env.put("urgent", priority=PRIORITY_MAX)
        other = await env.put("other", queue="b", priority=PRIORITY_MAX)
        got = await env.lease(2, queues=(Q, "b"))
        assert [j.id for j in got] == [urgent.id, first.id]
        got = await env.lease(10, queues=(Q, "b"))
        assert [j.id for j in got] == [second.id, low.id, other.id], "queues in the order given"

    run(tmp_path, body)


def test_lease_of_a_hundred_is_one_transaction(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(100)], env.now)
        await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(100, 150)], env.now)
        seq = env.seq
        got = await env.lease(MAX_LEASE_BATCH)
        assert env.seq == seq + 1
        assert [j.payload for j in got] == list(range(100))
        assert len({j.lease.token for j in got if j.lease}) == 100
        tokens = [AckItem(j.id, j.lease.token, {"n": j.payload}) for j in got if j.lease]
        seq = env.seq
        results = await env.q.ack_batch(tokens, env.now)
        assert env.seq == seq + 1
        assert all(isinstance(r, Job) and r.state is State.DONE for r in results)
        stats = (await env.q.stats(env.now))[0]
        assert (stats.pending, stats.in_progress, stats.done) == (50, 0, 100)

    run(tmp_path, body)


def test_lease_arguments_are_checked(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put(1)
        for kw, message in [({"n": 0}, r"max must be 1\.\.100"), ({"n": 101}, r"max must be 1\.\.100"),
                            ({"queues": ()}, r"number of queues must be 1\.\.10"),
                            ({"queues": tuple("abcdefghijk")}, r"number of queues must be 1\.\.10"),
                            ({"visibility_timeout_s": 0}, r"visibility_timeout must be 1\.\.43200 seconds"),
                            ({"worker": None}, "worker must be a string")]:
            with pytest.raises(InvalidInputError, match=message):
                await env.lease(**kw)
        with pytest.raises(InvalidInputError, match="queues must be a list"):
            await env.q.lease(Q, 1, env.now, worker="w")
        with pytest.raises(InvalidInputError, match=r"wait must be 0\.\.20000 ms"):
            await env.q.lease_wait([Q], 1, lambda: env.now, 20_001, worker="w")

    run(tmp_path, body)


def test_delay_and_run_at(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        later = await env.put("later", delay_ms=5000)
        at = await env.put("at", run_at_ms=T0 + 2000)
        past = await env.put("past", run_at_ms=T0 - 99_000)
        assert later.available_ms == T0 + 5000 and list(await env.where(later.id)) == [delayed_key(Q)]
        assert past.available_ms == T0 and list(await env.where(past.id)) == [ready_key(Q)]
        assert [j.id for j in await env.lease(10)] == [past.id]
        env.tick(1999)
        assert await env.lease(10) == []
        env.tick(1)
        assert [j.id for j in await env.lease(10)] == [at.id]
        env.tick(3000)
        assert [j.id for j in await env.lease(10)] == [later.id]

    run(tmp_path, body)


def test_a_promoted_delayed_job_competes_by_priority(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("plain")
        urgent = await env.put("urgent", delay_ms=10, priority=100)
        env.tick(10)
        assert [j.id for j in await env.lease(1)] == [urgent.id]

    run(tmp_path, body)


# -- ack, nack, extend and fencing -------------------------------------------------------------


def test_ack_finishes_the_job_with_its_result(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("p")
        job = await env.lease_one()
        assert job.lease is not None
        env.tick(500)
        done = await env.q.ack(job.id, job.lease.token, {"sent": True}, env.now)
        assert done.state is State.DONE and done.result == {"sent": True} and done.lease is None
        assert done.finished_ms == env.now and done.attempts == 1
        assert await env.where(job.id) == {done_key(Q): env.now}
        assert await env.store.pttl(job_key(Q, job.id)) == 7 * 86_400_000  # jobs.done_retention_seconds
        with pytest.raises(LeaseLostError, match="it is DONE, not leased; nothing changed") as e:
            await env.q.ack(job.id, job.lease.token, None, env.now)
        assert e.value.status == 409 and e.value.code == "lease_lost"

    run(tmp_path, body)


def test_result_limit_and_unknown_jobs(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put(1)
        job = await env.lease_one()
        assert job.lease is not None
        with pytest.raises(PayloadTooLargeError, match=r"result is \d+ bytes as JSON; the limit is 100 bytes"):
            await env.q.ack(job.id, job.lease.token, "x" * 200, env.now)
        with pytest.raises(InvalidInputError, match="result must be JSON-serialisable"):
            await env.q.ack(job.id, job.lease.token, object(), env.now)
        assert (await env.q.get(job.id)).state is State.IN_PROGRESS
        missing = "01" + "0" * 24
        for call in (env.q.get(missing), env.q.ack(missing, "t", None, env.now),
                     env.q.nack(missing, "t", "e", env.now), env.q.extend(missing, "t", 10, env.now),
                     env.q.cancel(missing, env.now), env.q.redrive(missing, env.now), env.q.get("not-an-id")):
            with pytest.raises(JobNotFoundError) as e:
                await call
            assert e.value.status == 404 and e.value.code == "job_not_found"

    run(tmp_path, body, max_payload_bytes=100)


def test_a_stale_token_changes_nothing(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job = await env.put("p", max_attempts=3)
        first = await env.lease_one(worker="slow")
        env.tick(30_000)  # the lease runs out...
        second = await env.lease_one(worker="fast")  # ...and the job is leased again
        assert second.id == job.id and second.attempts == 2
        assert first.lease is not None and second.lease is not None and first.lease.token != second.lease.token
        before = await env.snapshot(job.id)
        seq = env.seq
        stale = first.lease.token
        for call in (env.q.ack(job.id, stale, "late", env.now), env.q.nack(job.id, stale, "late", env.now),
                     env.q.extend(job.id, stale, 600, env.now)):
            with pytest.raises(LeaseLostError, match="the lease token is not its current lease"):
                await call
        results = await env.q.ack_batch([AckItem(job.id, stale)], env.now)
        assert isinstance(results[0], LeaseLostError)
        assert await env.snapshot(job.id) == before and env.seq == seq
        done = await env.q.ack(job.id, second.lease.token, "ok", env.now)
        assert done.state is State.DONE and done.result == "ok"

    run(tmp_path, body)


def test_ack_nack_extend_of_a_job_not_in_progress_change_nothing(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        pending = await env.put("p")
        before = await env.snapshot(pending.id)
        for call in (env.q.ack(pending.id, "guess", None, env.now), env.q.nack(pending.id, "guess", "e", env.now),
                     env.q.extend(pending.id, "guess", 60, env.now)):
            with pytest.raises(LeaseLostError, match="it is PENDING, not leased"):
                await call
        assert await env.snapshot(pending.id) == before

    run(tmp_path, body)


def test_ack_batch_mixed_outcomes_in_order(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(3)], env.now)
        a, b, c = await env.lease(3)
        assert a.lease and b.lease and c.lease
        pending = await env.put("not leased")
        items = [
            AckItem(a.id, a.lease.token, "ra"),
            AckItem(b.id, "stale-token"),
            AckItem("01" + "0" * 24, "t"),
            AckItem("garbage", "t"),
            AckItem(a.id, a.lease.token, "again"),  # the same job twice: the second finds it DONE
            AckItem(pending.id, "t"),
            AckItem(c.id, c.lease.token, "x" * 500),  # over the result limit
            AckItem(c.id, c.lease.token, "rc"),
        ]
        seq = env.seq
        out = await env.q.ack_batch(items, env.now)
        assert env.seq == seq + 1
        kinds = [type(r).__name__ if isinstance(r, HeliosError) else r.state for r in out]
        assert kinds == [State.DONE, "LeaseLostError", "JobNotFoundError", "JobNotFoundError", "LeaseLostError",
                         "LeaseLostError", "PayloadTooLargeError", State.DONE]
        assert (await env.q.get(a.id)).result == "ra" and (await env.q.get(c.id)).result == "rc"
        assert (await env.q.get(b.id)).state is State.IN_PROGRESS
        with pytest.raises(InvalidInputError, match=r"number of acks must be 1\.\.100"):
            await env.q.ack_batch([], env.now)

    run(tmp_path, body, max_payload_bytes=200)


def test_nack_retries_with_jittered_backoff_then_fails_into_the_dlq(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job = await env.put("p", max_attempts=4)
        for attempt in (1, 2, 3):
            leased = await env.lease_one()
            assert leased.attempts == attempt and leased.lease is not None
            back = await env.q.nack(job.id, leased.lease.token, f"boom {attempt}", env.now)
            assert back.state is State.PENDING and back.last_error == f"boom {attempt}" and back.lease is None
            delay = back.available_ms - env.now
            assert 0 <= delay < min(5000, 1000 * 2 ** (attempt - 1))
            if delay:
                assert await env.where(job.id) == {delayed_key(Q): back.available_ms}
                assert await env.lease() == [], "not before its backoff"
            env.tick(delay)
        last = await env.lease_one()
        assert last.attempts == 4 and last.lease is not None
        failed = await env.q.nack(job.id, last.lease.token, "gave up", env.now)
        assert failed.state is State.FAILED and failed.last_error == "gave up" and failed.finished_ms == env.now
        assert await env.where(job.id) == {dlq_key(Q): env.now}
        assert await env.store.pttl(job_key(Q, job.id)) == 14 * 86_400_000  # jobs.dlq_retention_seconds

    run(tmp_path, body, backoff_base_ms=1000, backoff_cap_ms=5000)


def test_nack_with_an_explicit_delay(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("p")
        job = await env.lease_one()
        assert job.lease is not None
        now_again = await env.q.nack(job.id, job.lease.token, "", env.now, retry_delay_ms=0)
        assert list(await env.where(job.id)) == [ready_key(Q)] and now_again.available_ms == env.now
        job = await env.lease_one()
        assert job.lease is not None
        later = await env.q.nack(job.id, job.lease.token, "e" * 10_000, env.now, retry_delay_ms=60_000)
        assert later.available_ms == env.now + 60_000 and len(later.last_error or "") == 4096
        with pytest.raises(InvalidInputError, match="retry_delay_ms must be"):
            await env.q.nack(job.id, "t", "e", env.now, retry_delay_ms=-1)

    run(tmp_path, body)


def test_release_gives_an_unstarted_job_back_without_using_an_attempt(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("p", max_attempts=1)
        job = await env.lease_one()
        assert job.lease is not None and job.attempts == 1
        back = await env.q.nack(job.id, job.lease.token, "worker stopping", env.now, release=True)
        assert back.state is State.PENDING and back.attempts == 0 and back.available_ms == env.now
        assert back.last_error is None and list(await env.where(job.id)) == [ready_key(Q)]
        job = await env.lease_one()  # its one attempt is still there: not into the DLQ
        assert job.lease is not None and job.attempts == 1
        failed = await env.q.nack(job.id, job.lease.token, "boom", env.now)
        assert failed.state is State.FAILED

    run(tmp_path, body)


def test_queue_names_must_match_entirely(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        for bad in ("q\n", "q:x", "", "a" * 81):
            with pytest.raises(InvalidInputError):
                await env.put("p", queue=bad)

    run(tmp_path, body)


def test_backoff_is_full_jitter_under_the_cap() -> None:
    rng = random.Random(3)
    for attempts in range(1, 40):
        ceiling = min(300_000, 1000 * 2 ** (attempts - 1))
        draws = [full_jitter_ms(attempts, 1000, 300_000, rng.random()) for _ in range(200)]
        assert all(0 <= d < ceiling for d in draws)
        assert max(draws) > ceiling * 0.8 and min(draws) < ceiling * 0.2, "spread over the whole range"
    assert full_jitter_ms(1000, 1000, 300_000, 0.5) == 150_000  # no overflow for huge attempt counts
    assert QueuePolicy(30, 5, 1000, 300_000).retry_delay_ms(3, 0.5) == 2000
    # Equal to rng.uniform(0, ceiling) with the same seed.
    a, b = random.Random(9), random.Random(9)
    assert full_jitter_ms(4, 1000, 300_000, a.random()) == int(b.uniform(0, 8000))


def test_extend_moves_the_deadline_and_keeps_the_token(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("p")
        job = await env.lease_one()
        assert job.lease is not None
        env.tick(20_000)
        longer = await env.q.extend(job.id, job.lease.token, 120, env.now)
        assert longer.lease is not None and longer.lease.token == job.lease.token
        assert longer.lease.deadline_ms == env.now + 120_000
        assert await env.where(job.id) == {leased_key(Q): env.now + 120_000}
        env.tick(60_000)  # past the first deadline, not the new one
        assert await env.q.expire(env.now) == 0 and await env.lease() == []
        with pytest.raises(InvalidInputError, match=r"visibility_timeout must be 1\.\.43200 seconds"):
            await env.q.extend(job.id, job.lease.token, 0, env.now)
        await env.q.ack(job.id, job.lease.token, None, env.now)

    run(tmp_path, body)


def test_expired_leases_return_to_pending_then_to_the_dlq(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job = await env.put("p", max_attempts=2)
        await env.lease_one()
        env.tick(30_000)
        assert await env.q.expire(env.now) == 1
        back = await env.q.get(job.id)
        assert back.state is State.PENDING and back.attempts == 1 and back.available_ms == env.now
        assert back.last_error == "lease expired after 30 s (attempt 1 of 2)"
        assert list(await env.where(job.id)) == [ready_key(Q)]
        await env.lease_one(visibility_timeout_s=5)
        env.tick(5000)
        assert await env.lease() == [], "the expired lease goes to the DLQ, not back out"
        failed = await env.q.get(job.id)
        assert failed.state is State.FAILED and failed.attempts == 2
        assert failed.last_error == "lease expired after 5 s (attempt 2 of 2)"
        assert list(await env.where(job.id)) == [dlq_key(Q)]
        assert await env.q.expire(env.now) == 0

    run(tmp_path, body)


def test_expire_covers_every_queue_in_batches(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        for queue in ("a", "b"):
            await env.q.enqueue_batch([EnqueueRequest(queue, i) for i in range(100)], env.now)
            await env.q.enqueue_batch([EnqueueRequest(queue, i) for i in range(30)], env.now)
            await env.lease(100, queues=(queue,))
            await env.lease(100, queues=(queue,))
        env.tick(30_000)
        assert await env.q.expire(env.now, ["a"]) == 130
        assert await env.q.expire(env.now) == 130
        assert [(s.queue, s.pending, s.in_progress) for s in await env.q.stats(env.now)] == \
            [("a", 130, 0), ("b", 130, 0)]

    run(tmp_path, body)


# -- DLQ, redrive, cancel --------------------------------------------------------------------


async def fail_job(env: Env, payload: Any = "p", queue: str = Q) -> Job:
    job = await env.put(payload, queue=queue, max_attempts=1, priority=PRIORITY_MAX)  # leased next
    leased = (await env.lease(1, queues=(queue,)))[0]
    assert leased.id == job.id and leased.lease is not None
    return await env.q.nack(job.id, leased.lease.token, "broken", env.now)


def test_redrive_and_redrive_all(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        failed = await fail_job(env)
        env.tick(10)
        back = await env.q.redrive(failed.id, env.now)
        assert back.state is State.PENDING and back.attempts == 0 and back.finished_ms is None
        assert back.available_ms == env.now and back.last_error == "broken"
        assert list(await env.where(failed.id)) == [ready_key(Q)]
        assert await env.store.pttl(job_key(Q, failed.id)) == -1, "the record is kept again"
        with pytest.raises(JobStateError, match="is PENDING: only a FAILED job can be redriven") as e:
            await env.q.redrive(failed.id, env.now)
        assert e.value.status == 409 and e.value.code == "job_state"
        await env.lease_one()  # out of the way
        many = [await fail_job(env, i) for i in range(3)] + [await fail_job(env, 9, queue="other")]
        assert await env.q.redrive_all(env.now, Q) == 3
        assert (await env.q.stats(env.now, "other"))[0].failed == 1
        assert await env.q.redrive_all(env.now) == 1
        assert [(await env.q.get(j.id)).state for j in many] == [State.PENDING] * 4
        assert await env.q.redrive_all(env.now) == 0

    run(tmp_path, body)


def test_redrive_all_moves_more_than_one_batch(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.q.enqueue_batch([EnqueueRequest(Q, i, max_attempts=1) for i in range(100)], env.now)
        await env.q.enqueue_batch([EnqueueRequest(Q, i, max_attempts=1) for i in range(50)], env.now)
        for _ in range(2):
            await env.lease(100)
        env.tick(30_000)
        assert await env.q.expire(env.now) == 150
        assert (await env.q.stats(env.now))[0].failed == 150
        assert await env.q.redrive_all(env.now) == 150
        assert (await env.q.stats(env.now))[0].pending == 150

    run(tmp_path, body)


def test_cancel(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        ready = await env.put("r")
        delayed = await env.put("d", delay_ms=60_000)
        for job in (ready, delayed):
            cancelled = await env.q.cancel(job.id, env.now)
            assert cancelled.state is State.CANCELLED and cancelled.finished_ms == env.now
            assert await env.where(job.id) == {done_key(Q): env.now}
            assert await env.store.pttl(job_key(Q, job.id)) == 7 * 86_400_000
        env.tick(60_000)
        assert await env.lease(10) == []
        leased_job = await env.put("l")
        await env.lease_one()
        for job_id, state in ((leased_job.id, "IN_PROGRESS"), (ready.id, "CANCELLED")):
            with pytest.raises(JobStateError, match=f"is {state}: only a PENDING job can be cancelled"):
                await env.q.cancel(job_id, env.now)

    run(tmp_path, body)


# -- dedup and retention ---------------------------------------------------------------------


def test_dedup_within_the_window_returns_the_first_job(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        first = await env.put("one", dedup_id="order-17")
        env.tick(200_000)
        again, created = await env.q.enqueue(EnqueueRequest(Q, "two", dedup_id="order-17"), env.now)
        assert not created and again == first
        await env.lease_one()
        again, created = await env.q.enqueue(EnqueueRequest(Q, "three", dedup_id="order-17"), env.now)
        assert not created and again.id == first.id and again.state is State.IN_PROGRESS
        elsewhere = await env.put("four", queue="other", dedup_id="order-17")
        assert elsewhere.id != first.id, "dedup ids are per queue"
        assert 0 < await env.store.pttl(dedup_key(Q, "", "order-17")) <= 100_000
        env.tick(100_000)  # the window (300 s) is over
        fresh, created = await env.q.enqueue(EnqueueRequest(Q, "five", dedup_id="order-17"), env.now)
        assert created and fresh.id != first.id and fresh.payload == "five"

    run(tmp_path, body)


def test_dedup_ids_are_per_producer(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        a, created_a = await env.q.enqueue(EnqueueRequest(Q, "a", dedup_id="d", producer="u_a"), env.now)
        b, created_b = await env.q.enqueue(EnqueueRequest(Q, "b", dedup_id="d", producer="u_b"), env.now)
        assert created_a and created_b and a.id != b.id and b.payload == "b"
        again, created = await env.q.enqueue(EnqueueRequest(Q, "a2", dedup_id="d", producer="u_a"), env.now)
        assert not created and again == a
        local, created = await env.q.enqueue(EnqueueRequest(Q, "cli", dedup_id="d"), env.now)
        assert created and local.id not in (a.id, b.id)
        with pytest.raises(InvalidInputError, match="producer must be"):
            await env.q.enqueue(EnqueueRequest(Q, 1, dedup_id="d", producer="u:a"), env.now)

    run(tmp_path, body)


def test_dedup_inside_one_batch(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        out = await env.q.enqueue_batch([EnqueueRequest(Q, 1, dedup_id="x"), EnqueueRequest(Q, 2, dedup_id="x"),
                                         EnqueueRequest(Q, 3)], env.now)
        assert [c for _, c in out] == [True, False, True] and out[0][0] == out[1][0]
        assert (await env.q.stats(env.now))[0].pending == 2

    run(tmp_path, body)


def test_retention_expires_records_and_prunes_the_indexes(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("p")
        done = await env.lease_one()
        assert done.lease is not None
        await env.q.ack(done.id, done.lease.token, None, env.now)
        failed = await fail_job(env)
        env.tick(100_000 + 1)  # past the done retention, not the DLQ's
        with pytest.raises(JobNotFoundError):
            await env.q.get(done.id)
        assert (await env.q.get(failed.id)).state is State.FAILED
        stats = (await env.q.stats(env.now))[0]
        assert (stats.done, stats.failed) == (0, 1), "expired entries are not counted"
        assert await env.store.zscore(done_key(Q), done.id) is not None, "not pruned yet: within the slack"
        env.tick(PRUNE_SLACK_MS)
        await env.put("later")
        later = await env.lease_one()
        assert later.lease is not None
        await env.q.ack(later.id, later.lease.token, None, env.now)  # a write to done:Q prunes it
        assert await env.store.zscore(done_key(Q), done.id) is None
        assert await env.store.zscore(done_key(Q), later.id) is not None
        jobs, _ = await env.q.list(Q, None, env.now)
        assert {j.id for j in jobs} == {failed.id, later.id}
        env.tick(200_000)  # past the DLQ retention too
        await fail_job(env)
        assert await env.store.zscore(dlq_key(Q), failed.id) is None

    run(tmp_path, body, done_retention_seconds=100, dlq_retention_seconds=300)


def test_pruning_is_bounded_per_transaction(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(100)], env.now)
        await env.q.enqueue_batch([EnqueueRequest(Q, i) for i in range(50)], env.now)
        for _ in range(2):
            got = await env.lease(100)
            await env.q.ack_batch([AckItem(j.id, j.lease.token) for j in got if j.lease], env.now)
        assert await env.store.zcard(done_key(Q)) == 150
        env.tick(10_000 + PRUNE_SLACK_MS + 1)
        await fail_job(env)  # (a DLQ write does not prune done:Q)
        await env.put("x")
        job = await env.lease_one()
        assert job.lease is not None
        await env.q.ack(job.id, job.lease.token, None, env.now)
        assert await env.store.zcard(done_key(Q)) == 51  # 100 pruned, 50 old + the new one left
        await env.put("y")
        job = await env.lease_one()
        assert job.lease is not None
        await env.q.ack(job.id, job.lease.token, None, env.now)
        assert await env.store.zcard(done_key(Q)) == 2

    run(tmp_path, body, done_retention_seconds=10)


# -- listing and stats ------------------------------------------------------------------------


async def mixed_queue(env: Env) -> dict[State, set[str]]:
    """Jobs in every state, many finished in the same ms (equal scores in the done index)."""
    out: dict[State, set[str]] = {s: set() for s in State}
    made = await env.q.enqueue_batch([EnqueueRequest(Q, i, priority=i % 3) for i in range(60)], env.now)
    delayed = await env.q.enqueue_batch([EnqueueRequest(Q, i, delay_ms=1000 * (i % 4 + 1)) for i in range(9)],
                                        env.now)
    got = await env.lease(40)
    await env.q.ack_batch([AckItem(j.id, j.lease.token) for j in got[:25] if j.lease], env.now)
    for j in got[25:30]:
        assert j.lease is not None
        await env.q.nack(j.id, j.lease.token, "x", env.now)
    for j in got[30:33]:
        assert j.lease is not None
        await env.q.nack(j.id, j.lease.token, "x", env.now, retry_delay_ms=0)
    for job in [j for j, _ in made if j.priority == 0][:4]:  # (not leased: the lowest priority)
        await env.q.cancel(job.id, env.now)
    for job, _ in made + delayed:
        current = await env.q.get(job.id)
        out[current.state].add(job.id)
    out[State.FAILED] = {(await fail_job(env, "f")).id for _ in range(7)}
    return out


def test_list_pages_cover_every_job_exactly_once(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        expected = await mixed_queue(env)
        assert all(expected[s] for s in State)
        everything = set().union(*expected.values())
        for state in [None, *State]:
            for limit in (1, 7, 1000):
                seen: list[str] = []
                cursor: str | None = None
                pages = 0
                while True:
                    jobs, cursor = await env.q.list(Q, state, env.now, cursor=cursor, limit=limit)
                    assert len(jobs) <= limit
                    assert all(state is None or j.state is state for j in jobs)
                    seen += [j.id for j in jobs]
                    pages += 1
                    if cursor is None:
                        break
                assert len(seen) == len(set(seen)), f"a job came twice ({state}, limit {limit})"
                assert set(seen) == (everything if state is None else expected[state]), (state, limit)
        first, _ = await env.q.list(Q, State.PENDING, env.now, limit=1000)
        ready = [j.priority for j in first if j.available_ms <= env.now]
        assert ready == sorted(ready, reverse=True) and len(set(ready)) > 1, "ready first, by priority"

    run(tmp_path, body)


def test_list_cursor_is_checked(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        for i in range(3):
            await env.put(i)
        await env.put(1, queue="other")
        jobs, cursor = await env.q.list(Q, State.PENDING, env.now, limit=1)
        assert len(jobs) == 1 and cursor is not None
        for bad_state, bad_queue, bad_cursor in [(State.DONE, Q, cursor), (State.PENDING, "other", cursor),
                                                 (State.PENDING, Q, "not-a-cursor"), (State.PENDING, Q, "e30")]:
            with pytest.raises(InvalidInputError, match="cursor is not one this listing returned"):
                await env.q.list(bad_queue, bad_state, env.now, cursor=bad_cursor)
        with pytest.raises(InvalidInputError, match=r"limit must be 1\.\.1000"):
            await env.q.list(Q, None, env.now, limit=0)
        with pytest.raises(InvalidInputError, match="state must be one of PENDING"):
            await env.q.list(Q, "RUNNING", env.now)  # type: ignore[arg-type]
        jobs, _ = await env.q.list(Q, "PENDING", env.now)  # type: ignore[arg-type]
        assert len(jobs) == 3

    run(tmp_path, body)


def test_stats_counts_each_state(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        expected = await mixed_queue(env)
        await env.put(1, queue="quiet")
        env.tick(2500)
        stats = {s.queue: s for s in await env.q.stats(env.now)}
        s = stats[Q]
        assert s.in_progress == len(expected[State.IN_PROGRESS])
        assert s.pending + s.delayed == len(expected[State.PENDING]) and s.delayed > 0
        assert s.done == len(expected[State.DONE]) + len(expected[State.CANCELLED])
        assert s.failed == len(expected[State.FAILED])
        assert s.oldest_pending_age_ms == 2500
        assert stats["quiet"].to_dict() == {
            "queue": "quiet", "pending": 1, "delayed": 0, "in_progress": 0, "done": 0, "failed": 0,
            "oldest_pending_age_seconds": 2.5, "oldest_pending_age_ms": 2500}
        assert [x.queue for x in await env.q.stats(env.now, "quiet")] == ["quiet"]

    run(tmp_path, body)


# -- long polling ---------------------------------------------------------------------------


def test_lease_wait_is_woken_by_an_enqueue(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("seed")
        await env.lease_one()  # the queue exists and is empty

        async def producer() -> Job:
            await asyncio.sleep(0.05)  # let the poller start waiting
            job, _ = await env.q.enqueue(EnqueueRequest(Q, "wake up"), wall_ms())
            return job

        task = asyncio.create_task(producer())
        got = await env.q.lease_wait([Q], 5, wall_ms, 10_000, worker="poller")
        made = await task
        assert [j.id for j in got] == [made.id] and got[0].lease is not None
        assert env.store.engine._listeners == [], "subscriptions are closed"

    run(tmp_path, body)


def test_lease_wait_wakes_when_a_delayed_job_is_due(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job, _ = await env.q.enqueue(EnqueueRequest(Q, "soon", delay_ms=100), wall_ms())
        got = await env.q.lease_wait([Q], 1, wall_ms, 10_000, worker="poller")
        assert [j.id for j in got] == [job.id]

    run(tmp_path, body)


def test_lease_wait_wakes_when_a_lease_runs_out(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        job, _ = await env.q.enqueue(EnqueueRequest(Q, "p"), wall_ms())
        (held,) = await env.q.lease([Q], 1, wall_ms(), worker="crashed", visibility_timeout_s=1)
        got = await env.q.lease_wait([Q], 1, wall_ms, 10_000, worker="poller")
        assert [j.id for j in got] == [job.id] and got[0].attempts == 2 and got[0].lease is not None
        assert held.lease is not None and got[0].lease.token != held.lease.token

    run(tmp_path, body)


def test_lease_wait_returns_nothing_after_the_wait(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("seed")
        await env.lease_one()

        async def elsewhere() -> None:
            await asyncio.sleep(0.02)
            await env.put("other queue", queue=Q + "2")  # (job:ready:emails2 starts with job:ready:emails)

        task = asyncio.create_task(elsewhere())
        assert await env.q.lease_wait([Q], 1, wall_ms, 150, worker="poller") == []
        await task
        assert await env.q.lease_wait([Q], 1, wall_ms, 0, worker="poller") == []
        assert env.store.engine._listeners == []

    run(tmp_path, body)


def test_lease_wait_closes_its_subscriptions_when_cancelled(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put("seed")
        await env.put("seed", queue="b")
        await env.lease(2, queues=(Q, "b"))
        task = asyncio.create_task(env.q.lease_wait([Q, "b"], 1, wall_ms, 10_000, worker="poller"))
        await asyncio.sleep(0.05)
        assert len(env.store.engine._listeners) == 4
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert env.store.engine._listeners == []

    run(tmp_path, body)


# -- bounded queue creation (issue 10, item 7) -------------------------------------------------------


def test_live_queues_are_capped_and_empty_ones_forgotten(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.q.enqueue_batch([EnqueueRequest(q, 1) for q in ("q1", "q2")], env.now)
        with pytest.raises(TooManyQueuesError, match=r"cannot create queue 'q3': 2 queues hold jobs and "
                                                     r"jobs.max_queues is 2") as e:
            await env.q.enqueue_batch([EnqueueRequest("q1", 2), EnqueueRequest("q3", 3)], env.now)
        assert e.value.status == 429 and e.value.code == "too_many_queues"
        assert (await env.q.stats(env.now, "q1"))[0].pending == 1, "all or nothing"
        await env.put(3, queue="q1")  # an existing queue takes more
        await env.put(4, queue="reports")  # a configured queue is always accepted
        # q2's only job is cancelled: done jobs count until their retention ends.
        (job,) = await env.lease(queues=("q2",))
        await env.q.ack(job.id, job.lease.token if job.lease else "", None, env.now)
        assert await env.q.forget_empty(env.now) == []
        env.tick(60_000 + 1)  # past jobs.done_retention_seconds
        assert await env.q.forget_empty(env.now) == ["q2"], "reports holds a job"
        assert await env.q.queues() == ["q1", "reports"]
        assert await env.store.zcard(done_key("q2")) == 0  # the stale index goes with it
        with pytest.raises(TooManyQueuesError, match="2 queues hold jobs"):  # a configured queue counts too
            await env.put(5, queue="q3")

    run(tmp_path, body, max_queues=2, queues=("reports",), done_retention_seconds=60)


def test_a_refused_enqueue_forgets_empty_queues_first(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await env.put(1, queue="old")
        (job,) = await env.lease(queues=("old",))
        await env.q.nack(job.id, job.lease.token if job.lease else "", "gone", env.now)  # max_attempts 1: DLQ
        env.tick(60_000 + 1)  # past the DLQ retention: the queue holds nothing any more
        await env.put(2, queue="new")  # no sweep ran since: the refusal looks for empty queues itself
        assert await env.q.queues() == ["new"]
        # Stats of every queue forget the empty ones too (the gateway's reaper asks every 15 s).
        (job,) = await env.lease(queues=("new",))
        await env.q.nack(job.id, job.lease.token if job.lease else "", "gone", env.now)
        env.tick(60_000 + 1)
        assert [s.queue for s in await env.q.stats(env.now)] == ["new"]
        assert await env.q.queues() == []
        with pytest.raises(QueueNotFoundError):
            await env.q.stats(env.now, "new")
        assert await env.lease(queues=("new",)) == []  # a worker still on it waits for its next enqueue

    run(tmp_path, body, max_queues=1, max_attempts=1, dlq_retention_seconds=60)


def test_a_job_is_found_by_id_over_every_registered_queue_a_few_keys_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process knows nothing of a job but its id: it reads job:{Q}:<id> for each registered
    queue (the queues it knows first), in MGETs of at most FIND_KEYS keys, and stops once found."""
    monkeypatch.setattr(queue_module, "FIND_KEYS", 2)

    async def body(env: Env) -> None:
        made = {q: await env.put(q, queue=q) for q in ("q1", "q2", "q3", "q4", "q5")}
        other = JobQueue(env.store, JobsConfig(), random.Random(1))
        reads: list[int] = []
        mget = env.store.mget

        async def counted(keys: list[Any]) -> list[bytes | None]:
            reads.append(len(keys))
            return await mget(keys)

        monkeypatch.setattr(env.store, "mget", counted)
        assert (await other.get(made["q4"].id)).payload == "q4"
        assert reads == [2, 2], "q1..q4 two at a time, then found"
        reads.clear()
        assert (await other.get(made["q4"].id)).queue == "q4" and reads == [], "remembered: a GET of its key"
        # The queues this process has seen (q4) are read first; two ids at once: a queue per MGET.
        assert await other._queues_of([made["q5"].id]) == {made["q5"].id: "q5"} and reads == [1, 2, 2]
        reads.clear()
        third = JobQueue(env.store, JobsConfig())
        found = await third._queues_of([made["q5"].id, made["q3"].id])
        assert found == {made["q5"].id: "q5", made["q3"].id: "q3"} and reads == [2, 2, 2, 1, 1]
        # A queue the caller may not touch is not read at all.
        reads.clear()
        with pytest.raises(JobNotFoundError):
            await JobQueue(env.store, JobsConfig()).get(made["q2"].id, allow=lambda q: q != "q2")
        assert sum(reads) == 4

    run(tmp_path, body)


def test_the_queues_a_process_remembers_as_registered_are_bounded(tmp_path: Path, monkeypatch) -> None:
    """Queue names come from callers: past SEEN_QUEUES the oldest are dropped (each dropped one costs
    its next enqueue a registration again, nothing more)."""
    monkeypatch.setattr(queue_module, "SEEN_QUEUES", 3)

    async def body(env: Env) -> None:
        for n in range(5):
            await env.q.enqueue(EnqueueRequest(f"q{n}", {"n": n}), env.now)
        assert list(env.q._registered) == ["q2", "q3", "q4"]
        job, created = await env.q.enqueue(EnqueueRequest("q0", {"n": 5}), env.now)  # registered again
        assert created and list(env.q._registered) == ["q3", "q4", "q0"]
        assert sorted(await env.q.queues()) == ["q0", "q1", "q2", "q3", "q4"]

    run(tmp_path, body)
