"""The job queue against a plain in-memory model, driven by hypothesis through random schedules.

Each test case opens a real embedded store (engine clock = the model's clock)
on its own event loop, then runs random enqueues, leases, acks (with current,
stale and made-up tokens), nacks, extends, redrives, cancels, expiries and
time steps.  The model predicts every answer exactly, including which jobs a
lease hands out and the jittered retry delay (it draws from an identically
seeded rng), and after every step the store must hold what the model holds:
each job in exactly the index its state names, the same counts, no job lost.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from helios_core.atlas.engine import Engine
from helios_core.config import AtlasConfig, JobsConfig
from helios_core.errors import HeliosError
from helios_core.jobs import AckItem, EnqueueRequest, Job, JobQueue, JobStateError, LeaseLostError, State
from helios_core.jobs.model import delayed_key, dlq_key, done_key, job_key, leased_key, ready_key, ready_score
from helios_core.jobs.policy import full_jitter_ms
from helios_core.store import EmbeddedStore

T = TypeVar("T")
T0 = 1_800_000_000_000
QUEUES = ("a", "b")
SEED = 20261127
CONFIG = JobsConfig(backoff_base_ms=200, backoff_cap_ms=2000, dedup_window_seconds=5, visibility_timeout_seconds=10)
INDEX = {"ready": ready_key, "delayed": delayed_key, "leased": leased_key, "dlq": dlq_key, "done": done_key}


@dataclass
class M:
    """A job as the model sees it."""

    id: str
    queue: str
    priority: int
    max_attempts: int
    visibility_s: int
    available: int
    where: str  # the index it must be in: ready, delayed, leased, dlq or done
    state: State = State.PENDING
    attempts: int = 0
    token: str | None = None
    deadline: int | None = None
    tokens: list[str] = field(default_factory=list)  # every token it was leased under


class Model:
    def __init__(self) -> None:
        self.now = T0
        self.jobs: dict[str, M] = {}
        self.dedup: dict[tuple[str, str], tuple[str, int]] = {}  # (queue, dedup id) -> (job id, expires)
        self.rng = random.Random(SEED)  # the queue's rng, drawn the same way

    def of(self, queue: str, where: str) -> list[M]:
        return [j for j in self.jobs.values() if j.queue == queue and j.where == where]

    def to_pending(self, j: M, available: int) -> None:
        j.state, j.available, j.token, j.deadline = State.PENDING, available, None, None
        j.where = "ready" if available <= self.now else "delayed"

    def expire(self, queue: str) -> int:
        moved = 0
        for j in self.of(queue, "leased"):
            if j.deadline is not None and j.deadline <= self.now:
                moved += 1
                if j.attempts >= j.max_attempts:
                    j.state, j.where, j.token, j.deadline = State.FAILED, "dlq", None, None
                else:
                    self.to_pending(j, self.now)
        return moved

    def lease(self, queues: list[str], n: int, visibility_s: int | None) -> list[str]:
        out: list[str] = []
        for q in dict.fromkeys(queues):
            self.expire(q)
            for j in self.of(q, "delayed"):
                if j.available <= self.now:
                    j.where = "ready"
            ready = sorted(self.of(q, "ready"), key=lambda j: (ready_score(j.priority, j.available), j.id))
            for j in ready[:n - len(out)]:
                j.state, j.where, j.attempts = State.IN_PROGRESS, "leased", j.attempts + 1
                j.deadline = self.now + (visibility_s or j.visibility_s) * 1000
                out.append(j.id)
        return out

    def holds(self, job_id: str, token: str) -> bool:
        j = self.jobs[job_id]
        return j.state is State.IN_PROGRESS and j.token == token


class JobQueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.dir = tempfile.mkdtemp(prefix="helios-jobs-")
        self.loop = asyncio.new_event_loop()
        self.store: EmbeddedStore = self.run(self._open())
        self.q = JobQueue(self.store, CONFIG, random.Random(SEED))

    async def _open(self) -> EmbeddedStore:
        engine = Engine.open(self.dir, AtlasConfig(appendfsync="no", save=()), clock=lambda: self.model.now)
        engine.attach()
        return EmbeddedStore(engine)

    def teardown(self) -> None:
        try:
            self.run(self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def pick(self, i: int, prefer: State | None = None) -> M:
        """The i-th job (mod), among those in state `prefer` if there are any."""
        jobs = sorted(self.model.jobs.values(), key=lambda j: j.id)
        preferred = [j for j in jobs if j.state is prefer]
        return (preferred or jobs)[i % len(preferred or jobs)]

    def token_for(self, j: M, kind: str) -> str:
        if kind == "current" and j.token is not None:
            return j.token
        if kind == "stale" and j.tokens:
            return j.tokens[0]
        return "made-up-token"

    def note_leased(self, jobs: list[Job]) -> None:
        for job in jobs:
            assert job.lease is not None
            m = self.model.jobs[job.id]
            m.token = job.lease.token
            m.tokens.append(job.lease.token)

    # -- rules ----------------------------------------------------------------------------

    @initialize(sizes=st.tuples(st.integers(1, 4), st.integers(1, 4)))
    def some_jobs(self, sizes: tuple[int, int]) -> None:
        """Both queues exist and hold a few jobs from the start, so every rule has work."""
        for queue, n in zip(QUEUES, sizes, strict=True):
            for i in range(n):
                self.enqueue(queue, i % 2, 0, 2, None, None)

    @rule(queue=st.sampled_from(QUEUES), priority=st.sampled_from([-3, 0, 0, 5]),
          delay=st.sampled_from([0, 0, 0, 300, 4000]), max_attempts=st.integers(1, 3),
          dedup=st.sampled_from([None, None, "x", "y"]), visibility=st.sampled_from([None, 1, 30]))
    def enqueue(self, queue: str, priority: int, delay: int, max_attempts: int, dedup: str | None,
                visibility: int | None) -> None:
        m = self.model
        req = EnqueueRequest(queue, {"n": len(m.jobs)}, dedup_id=dedup, delay_ms=delay, priority=priority,
                             max_attempts=max_attempts, visibility_timeout_s=visibility)
        job, created = self.run(self.q.enqueue(req, m.now))
        hit = m.dedup.get((queue, dedup)) if dedup else None
        if hit is not None and hit[1] > m.now:
            assert not created and job.id == hit[0]
            return
        assert created and job.id not in m.jobs
        m.jobs[job.id] = M(job.id, queue, priority, max_attempts, visibility or 10, m.now + delay,
                           "ready" if delay == 0 else "delayed")
        if dedup:
            m.dedup[(queue, dedup)] = (job.id, m.now + 5000)

    @rule(queues=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2), n=st.integers(1, 4),
          visibility=st.sampled_from([None, 2, 60]))
    def lease(self, queues: list[str], n: int, visibility: int | None) -> None:
        got = self.run(self.q.lease(queues, n, self.model.now, worker="w", visibility_timeout_s=visibility))
        assert [j.id for j in got] == self.model.lease(queues, n, visibility)
        self.note_leased(got)

    @rule(n=st.integers(1, 3))
    def lease_both(self, n: int) -> None:
        """(A second lease rule, so that leases are as frequent as the ways to end them.)"""
        self.lease(list(QUEUES), n, None)

    @precondition(lambda self: self.model.jobs)
    @rule(i=st.integers(0, 1000), kind=st.sampled_from(["current", "current", "stale", "made-up"]))
    def ack(self, i: int, kind: str) -> None:
        j = self.pick(i, State.IN_PROGRESS)
        token = self.token_for(j, kind)
        if self.model.holds(j.id, token):
            done = self.run(self.q.ack(j.id, token, {"ok": j.id}, self.model.now))
            assert done.state is State.DONE and done.result == {"ok": j.id}
            j.state, j.where, j.token, j.deadline = State.DONE, "done", None, None
        else:
            self.expect_refused(LeaseLostError, self.q.ack(j.id, token, None, self.model.now))

    @precondition(lambda self: self.model.jobs)
    @rule(picks=st.lists(st.tuples(st.integers(0, 1000), st.sampled_from(["current", "stale"])), min_size=1,
                         max_size=5))
    def ack_batch(self, picks: list[tuple[int, str]]) -> None:
        jobs = [(self.pick(i, State.IN_PROGRESS), kind) for i, kind in picks]
        items = [AckItem(j.id, self.token_for(j, kind), "r") for j, kind in jobs]
        out = self.run(self.q.ack_batch(items, self.model.now))
        for item, result in zip(items, out, strict=True):
            if self.model.holds(item.job_id, item.lease_token):
                assert isinstance(result, Job) and result.state is State.DONE
                j = self.model.jobs[item.job_id]
                j.state, j.where, j.token, j.deadline = State.DONE, "done", None, None
            else:
                assert isinstance(result, LeaseLostError)

    @precondition(lambda self: self.model.jobs)
    @rule(i=st.integers(0, 1000), kind=st.sampled_from(["current", "current", "stale"]),
          delay=st.sampled_from([None, None, 0, 700]))
    def nack(self, i: int, kind: str, delay: int | None) -> None:
        m, j = self.model, self.pick(i, State.IN_PROGRESS)
        token = self.token_for(j, kind)
        u = m.rng.random()  # the queue draws once per (valid) nack, whatever its outcome
        if not m.holds(j.id, token):
            self.expect_refused(LeaseLostError, self.q.nack(j.id, token, "e", m.now, retry_delay_ms=delay))
            return
        job = self.run(self.q.nack(j.id, token, "e", m.now, retry_delay_ms=delay))
        if j.attempts >= j.max_attempts:
            j.state, j.where, j.token, j.deadline = State.FAILED, "dlq", None, None
        else:
            wait = delay if delay is not None else full_jitter_ms(j.attempts, 200, 2000, u)
            m.to_pending(j, m.now + wait)
        assert job.state is j.state
        if j.state is State.PENDING:
            assert job.available_ms == j.available

    @precondition(lambda self: self.model.jobs)
    @rule(i=st.integers(0, 1000), kind=st.sampled_from(["current", "stale"]), visibility=st.sampled_from([1, 20]))
    def extend(self, i: int, kind: str, visibility: int) -> None:
        m, j = self.model, self.pick(i, State.IN_PROGRESS)
        token = self.token_for(j, kind)
        if m.holds(j.id, token):
            job = self.run(self.q.extend(j.id, token, visibility, m.now))
            j.deadline = m.now + visibility * 1000
            assert job.lease is not None and job.lease.deadline_ms == j.deadline
        else:
            self.expect_refused(LeaseLostError, self.q.extend(j.id, token, visibility, m.now))

    @rule(ms=st.sampled_from([1, 250, 1000, 2500, 10_000, 31_000, 31_000]))
    def advance(self, ms: int) -> None:
        self.model.now += ms

    @rule()
    def expire(self) -> None:
        known = sorted({j.queue for j in self.model.jobs.values()})
        assert self.run(self.q.expire(self.model.now)) == sum(self.model.expire(q) for q in known)

    @precondition(lambda self: self.model.jobs)
    @rule(i=st.integers(0, 1000))
    def redrive(self, i: int) -> None:
        m, j = self.model, self.pick(i, State.FAILED if i % 2 else None)
        if j.state is not State.FAILED:
            self.expect_refused(JobStateError, self.q.redrive(j.id, m.now))
            return
        self.run(self.q.redrive(j.id, m.now))
        j.attempts = 0
        m.to_pending(j, m.now)

    @precondition(lambda self: self.model.jobs)
    @rule(queue=st.sampled_from([None, *QUEUES]))
    def redrive_all(self, queue: str | None) -> None:
        m = self.model
        failed = [j for j in m.jobs.values() if j.state is State.FAILED and queue in (None, j.queue)]
        assert self.run(self.q.redrive_all(m.now, queue)) == len(failed)
        for j in failed:
            j.attempts = 0
            m.to_pending(j, m.now)

    @precondition(lambda self: self.model.jobs)
    @rule(i=st.integers(0, 1000))
    def cancel(self, i: int) -> None:
        m, j = self.model, self.pick(i)  # (mostly not PENDING: cancelling all work would end the story)
        if j.state is not State.PENDING:
            self.expect_refused(JobStateError, self.q.cancel(j.id, m.now))
            return
        assert self.run(self.q.cancel(j.id, m.now)).state is State.CANCELLED
        j.state, j.where = State.CANCELLED, "done"

    def expect_refused(self, error: type[HeliosError], call: Coroutine[Any, Any, Any]) -> None:
        try:
            self.run(call)
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        self.run(self._check())

    async def _check(self) -> None:
        m, s = self.model, self.store
        where: dict[str, str] = {}
        for q in QUEUES:
            for name, key in INDEX.items():
                for member, _ in await s.zrangebyscore(key(q)):
                    job_id = member.decode()
                    assert job_id not in where, f"{job_id} in two indexes: {where[job_id]} and {name}"
                    where[job_id] = name
        assert set(where) == set(m.jobs), "every job is in an index, and only known jobs are"
        raws = await s.mget([job_key(j.queue, i) for i, j in m.jobs.items()])
        for j, raw in zip(m.jobs.values(), raws, strict=True):
            assert raw is not None, f"job {j.id} lost"
            job = Job.decode(raw)
            assert where[j.id] == j.where, (j.id, where[j.id], j)
            assert (job.state, job.attempts, job.queue) == (j.state, j.attempts, j.queue), (job, j)
            if j.state in (State.PENDING, State.IN_PROGRESS):
                assert job.attempts <= job.max_attempts
            if j.state is State.IN_PROGRESS:
                assert job.lease is not None and job.lease.token == j.token and job.lease.deadline_ms == j.deadline
            else:
                assert job.lease is None
            if j.state is State.PENDING:
                assert job.available_ms == j.available
        for qs in await self.q.stats(m.now) if m.jobs else []:
            count = {w: len(m.of(qs.queue, w)) for w in INDEX}
            assert (qs.pending, qs.delayed, qs.in_progress, qs.failed, qs.done) == \
                (count["ready"], count["delayed"], count["leased"], count["dlq"], count["done"])


JobQueueMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestJobQueueStateful = JobQueueMachine.TestCase
