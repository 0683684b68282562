"""The job queue's domain logic: every transition is one atomic step on the Store.

Pure logic over the `Store` interface; time (`now_ms`) and randomness (`rng`)
are passed in, so a test can drive it through any schedule.  Nothing here
knows HTTP; the gateway's handlers and `helios job --data` call it alike.

Semantics are SQS's: a lease hides a job for its visibility timeout under a
fresh fencing token; ack, nack and extend must present that token, or they
fail with `LeaseLostError` and change nothing.  (A lease past its deadline
that nobody has expired yet is still honoured: the job was not handed to
anyone else.)  A lease that runs out returns the job to PENDING (the attempt
counted), or to the DLQ once it has used its `max_attempts`.  There is no
background reaper: expired leases of a queue are handled by the next lease
on it (and by `expire`, which a service may call on a timer), in the same step.

Where things live: the hot transitions (enqueue, lease, ack, nack, extend) as
named atomic operations in ops.py (Lua on a server, its Python model on the
embedded store); the state changes in transitions.py (the models, and the
colder transitions here: cancel, redrive, expire, forget, which stay Store
transactions); listing and its cursor in listing.py, input checks in checks.py,
queue settings and backoff in policy.py, the long poll's wake-up in waker.py,
the record format's migration in migrate.py.

Cost per call on a remote store: `enqueue_batch`, `lease` and `ack_batch` are
one EVALSHA each (no WATCH, nothing retried under contention; on Redis
Cluster one per hash slot of the queues named: ops.py); `ack_batch` and
`extend` first find the queue of jobs this process does not know yet (see
below; a job leased or enqueued through this process is known); `nack` reads
its record first (its queue's backoff needs its attempts), then runs.  The
first enqueue to a queue in a process also registers the queue in job:queues
(two more round trips, once: registry.py).

Finding a job by its id alone (`get`, `cancel`, `redrive`, `ack`/`nack`/
`extend` of a job leased through another process): a record's key names its
queue (``job:{Q}:<id>``: on Redis Cluster the record must share its queue's
slot), so this reads ``job:{Q}:<id>`` for each queue Q the caller may touch,
in one MGET (split per slot by ClusterStore): first over the queues this
process knows (configured, registered or seen here), then over the rest of
the registry (`_find`).  Chosen over a locator key per job (``job:at:<id>`` ->
queue) because a locator is one more write per enqueue, in another slot (one
more round trip on a cluster, on the hot path), and must live exactly as long
as its record, whose TTL is set by transitions in the queue's slot: locators
would outlive their records or need cross-slot writes on every finish.  The
MGET costs nothing on the hot path and one round trip per miss, growing with
the number of queues (jobs.max_queues bounds it; at most FIND_KEYS keys per
MGET); a job id is remembered with its queue once found (QUEUE_OF_ENTRIES).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from helios_core.config import JobsConfig
from helios_core.errors import ConflictError, HeliosError, InvalidInputError
from helios_core.jobs import checks, ops
from helios_core.jobs.errors import (
    JobNotFoundError,
    JobStateError,
    LeaseLostError,
    PayloadTooLargeError,
    QueueNotFoundError,
    TooManyQueuesError,
)
from helios_core.jobs.labels import QueueLabels
from helios_core.jobs.listing import list_jobs
from helios_core.jobs.migrate import ensure_current
from helios_core.jobs.model import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUES_KEY,
    Job,
    JobIds,
    State,
    dedup_key,
    delayed_key,
    dlq_key,
    is_job_id,
    job_key,
    leased_key,
    ready_key,
)
from helios_core.jobs.ops import MAINTENANCE_BATCH, Refused, return_expired
from helios_core.jobs.policy import ATTEMPTS_RANGE, VISIBILITY_RANGE, QueuePolicy, parse_queue_policies
from helios_core.jobs.registry import forget, register
from helios_core.jobs.stats import read_counts
from helios_core.jobs.transitions import Retention, Transitions
from helios_core.jobs.waker import Waker
from helios_core.store.base import Store, Txn

__all__ = [
    "JobQueue", "EnqueueRequest", "AckItem", "QueuePolicy", "QueueStats",
    "LeaseLostError", "JobStateError", "QueueNotFoundError", "JobNotFoundError", "PayloadTooLargeError",
    "TooManyQueuesError", "Allow", "MAX_LEASE_BATCH", "MAX_ENQUEUE_BATCH", "MAX_WAIT_SECONDS", "MAX_LEASE_QUEUES",
    "MAX_LIST_LIMIT", "parse_queue_policies",
]

T = TypeVar("T")
# Which queues the caller may touch (the gateway's permission scope); None: every queue.  A job on a
# queue it may not touch answers exactly like one that does not exist.
Allow = Callable[[str], bool] | None

MAX_LEASE_BATCH = 100
MAX_ENQUEUE_BATCH = 100
MAX_WAIT_SECONDS = 20
MAX_LEASE_QUEUES = 10
MAX_LIST_LIMIT = 1000
MAX_DELAY_MS = 366 * 86_400_000  # a delay, run_at or retry delay at most a year ahead
MAX_ERROR_CHARS = 4096  # a nack's error text is cut to this (a traceback must not make the nack fail)
MAX_NAME_CHARS = 200  # worker names, trace context
# Job id -> queue remembered per process (a job's queue never changes), so that ack and extend
# know the keys and the permission scope of a job without reading its record first.  An ack
# forgets its job, so what stays is jobs not finished yet (and, past the cap, one MGET each).
QUEUE_OF_ENTRIES = 20_000
# An enqueue refused for jobs.max_queues first looks for empty queues to forget, at most this often.
FORGET_EVERY_MS = 1000
# Finding jobs by id alone reads job:{Q}:<id> of every queue: at most this many keys per MGET.
FIND_KEYS = 2000
# Queues of jobs seen here, looked at first when finding a job by id (the oldest dropped past this).
SEEN_QUEUES = 1000
# Registering again a queue forgotten meanwhile by another process, at most this many times per enqueue.
REGISTER_ATTEMPTS = 3


@dataclass(frozen=True)
class EnqueueRequest:
    queue: str
    payload: Any
    dedup_id: str | None = None
    delay_ms: int = 0  # or run_at_ms; not both
    run_at_ms: int | None = None
    priority: int = 0
    max_attempts: int | None = None  # None: the queue's
    visibility_timeout_s: int | None = None  # None: the queue's
    trace: str | None = None
    producer: str = ""  # who enqueues (the gateway: the user's id); dedup ids are per producer


@dataclass(frozen=True)
class AckItem:
    job_id: str
    lease_token: str
    result: Any = None


@dataclass(frozen=True)
class QueueStats:
    queue: str
    pending: int  # due now (ready)
    delayed: int  # PENDING but not yet due (delay or retry backoff)
    in_progress: int
    done: int  # DONE + CANCELLED still retained
    failed: int  # in the DLQ
    oldest_pending_age_ms: int | None  # now - the oldest PENDING job's created_ms

    def to_dict(self) -> dict[str, Any]:
        """The API's shape (GET /api/v1/jobs/stats), with the age also in ms."""
        age = self.oldest_pending_age_ms
        return {"queue": self.queue, "pending": self.pending, "delayed": self.delayed,
                "in_progress": self.in_progress, "done": self.done, "failed": self.failed,
                "oldest_pending_age_seconds": None if age is None else age / 1000,
                "oldest_pending_age_ms": age}


class JobQueue:
    def __init__(self, store: Store, config: JobsConfig, rng: random.Random | None = None) -> None:
        self.store = store
        self.config = config
        self.rng = rng or random.Random()
        self.policies = parse_queue_policies(config)
        self._default = QueuePolicy.defaults(config)
        self._retention = Retention(config.done_retention_seconds * 1000, config.dlq_retention_seconds * 1000)
        # Queues this process registered (or saw registered) in job:queues, so that enqueue registers
        # and check_queue reads job:queues only the first time.  Advisory: another process may have
        # forgotten one since; the enqueue script then refuses it, and it is registered again
        # (registry.py).
        self._registered: dict[str, None] = {}  # (oldest dropped past SEEN_QUEUES: see _note_registered)
        self._seen: dict[str, None] = {}  # queues of jobs seen here (SEEN_QUEUES; where _find looks first)
        self._forgot_ms: int | None = None  # when forget_empty last ran on an enqueue refused for the cap
        self._ids = JobIds()
        self.labels = QueueLabels(self.policies)  # a queue's name as a metric label (bounded)
        self._queue_of: dict[str, str] = {}  # job id -> its queue (QUEUE_OF_ENTRIES, oldest dropped first)
        self._current = False  # the store's job records are all in the current form (jobs/migrate.py)

    async def prepare(self) -> None:
        """Migrate the store's job records to the current form if that was not done yet (jobs/migrate.py).
        Every operation that needs it does it first; calling it at start keeps it off the first request."""
        await self._ensure_current()

    async def _ensure_current(self) -> None:
        if not self._current:
            await ensure_current(self.store)
            self._current = True

    def _remember(self, jobs: Sequence[Job]) -> None:
        known = self._queue_of
        seen = self._seen
        for job in jobs:
            q = known[job.id] = sys.intern(job.queue)  # one string per queue, not one per job
            if q not in seen:
                seen[q] = None
                if len(seen) > SEEN_QUEUES:
                    del seen[next(iter(seen))]
        while len(known) > QUEUE_OF_ENTRIES:
            del known[next(iter(known))]

    async def _queues_of(self, ids: Sequence[str], allow: Allow = None) -> dict[str, str]:
        """The queue of each of `ids` that has a record (on a queue `allow` lets through): remembered,
        else found (`_find`)."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._queue_of]
        if missing:
            await self._find(missing, allow)
        return {i: self._queue_of[i] for i in ids if i in self._queue_of}

    async def _find(self, ids: list[str], allow: Allow = None) -> list[Job]:
        """The jobs of `ids` that exist on a queue `allow` lets through (remembered): job:{Q}:<id> read
        for each such queue Q, first those this process knows, then the rest of the registry; at most
        FIND_KEYS keys per MGET, stopping once every id is found (see the module doc)."""
        await self._ensure_current()
        found: list[Job] = []
        tried: set[str] = set()
        for stage in range(2):
            names = [*self.policies, *self._registered, *self._seen] if stage == 0 else await self.queues()
            todo = [q for q in dict.fromkeys(names) if q not in tried and (allow is None or allow(q))]
            tried.update(todo)
            per = max(1, FIND_KEYS // len(ids))
            for start in range(0, len(todo), per):
                chunk = todo[start:start + per]
                raws = await self.store.mget([job_key(q, i) for q in chunk for i in ids])
                jobs = [Job.decode(raw) for raw in raws if raw is not None]
                self._remember(jobs)
                found += jobs
                ids = [i for i in ids if i not in self._queue_of]
                if not ids:
                    return found
        return found

    def policy(self, queue: str) -> QueuePolicy:
        return self.policies.get(queue, self._default)

    async def check_queue(self, queue: str) -> None:
        """InvalidInputError for a malformed name; QueueNotFoundError for a queue that does not exist
        (strict mode: not configured; otherwise: neither configured nor ever enqueued to)."""
        checks.queue_name(queue)
        if queue in self.policies:
            return
        if self.config.strict_queues:
            raise QueueNotFoundError(
                f"queue {queue!r} does not exist: jobs.strict_queues is on and jobs.queues has no entry for "
                f"it; add one (\"{queue}\" alone takes the defaults) or use a configured queue",
                detail={"queue": queue})
        if queue in self._registered:
            return
        if await self.store.zscore(QUEUES_KEY, queue) is None:
            raise QueueNotFoundError(
                f"queue {queue!r} does not exist: nothing was ever enqueued to it; enqueue a job to create it, "
                f"or name it in jobs.queues", detail={"queue": queue})
        self._note_registered([queue])

    # -- enqueue ---------------------------------------------------------------------------

    async def enqueue(self, req: EnqueueRequest, now_ms: int) -> tuple[Job, bool]:
        """Validate and add a job; returns (job, created).  created is False when req.dedup_id was
        seen on this queue within the dedup window: the job it first made is returned, unchanged."""
        return (await self.enqueue_batch([req], now_ms))[0]

    async def enqueue_batch(self, reqs: Sequence[EnqueueRequest], now_ms: int) -> list[tuple[Job, bool]]:
        """Up to MAX_ENQUEUE_BATCH jobs in ONE transaction (all or nothing; validation first).  On Redis
        Cluster one per hash slot of the batch's queues: each slot's jobs all or nothing (ops.py)."""
        checks.int_field(len(reqs), "number of jobs", 1, MAX_ENQUEUE_BATCH)
        jobs = [self._new_job(r, now_ms, f"jobs[{i}]." if len(reqs) > 1 else "") for i, r in enumerate(reqs)]
        keys = [None if j.dedup_id is None else dedup_key(j.queue, checks.producer(r.producer), j.dedup_id)
                for j, r in zip(jobs, reqs, strict=True)]
        if self.config.strict_queues:
            for job in jobs:
                await self.check_queue(job.queue)
        window_ms = self.config.dedup_window_seconds * 1000
        await self._ensure_current()
        result: list[tuple[Job, bool] | None] = [None] * len(jobs)
        todo = list(range(len(jobs)))
        fresh = frozenset(j.queue for j in jobs if j.queue not in self._registered)
        for _ in range(REGISTER_ATTEMPTS):
            if fresh:
                await self._register(fresh, now_ms)  # r1 (registry.py)
            out, unlisted = await ops.enqueue(self.store, [jobs[i] for i in todo], [keys[i] for i in todo], now_ms,
                                              window_ms, fresh)
            if fresh:
                await register(self.store, self._configured(fresh), now_ms, None)  # r3
                self._note_registered(fresh)
            for i, outcome in zip(todo, out, strict=True):
                result[i] = outcome
            todo = [i for i in todo if result[i] is None]
            if not todo:
                break
            # Forgotten by another process since this one registered them (registry.py): register
            # them again, with the queues of the jobs their slot's refusal left unwritten.
            self._unnote_registered(unlisted)
            fresh = frozenset(unlisted) | (fresh & {jobs[i].queue for i in todo})
        else:
            raise ConflictError("the job queue's registry kept forgetting the queues of this enqueue while it "
                                "ran (found empty by another process's sweep each time); the jobs of these queues "
                                "were not enqueued: try again", detail={"queues": sorted(fresh)})
        done = [r for r in result if r is not None]
        self._remember([job for job, _ in done])
        return done

    def _configured(self, queues: frozenset[str]) -> list[tuple[str, bool]]:
        return [(q, q in self.policies) for q in sorted(queues)]

    async def _register(self, queues: frozenset[str], now_ms: int) -> None:
        """Add `queues` to the registry, refused (TooManyQueuesError) past jobs.max_queues."""
        capped = await register(self.store, self._configured(queues), now_ms, self.config.max_queues)
        if capped is not None:
            # Queues emptied since the last sweep still count: forget them (at most once a
            # second, so a caller at the cap cannot make every enqueue a sweep), then try again.
            if (self._forgot_ms is None or now_ms - self._forgot_ms >= FORGET_EVERY_MS) and \
                    await self._forget_for_room(now_ms):
                capped = await register(self.store, self._configured(queues), now_ms, self.config.max_queues)
        if capped is not None:
            raise TooManyQueuesError(
                f"cannot create queue {capped.queue!r}: {capped.live} queues hold jobs and jobs.max_queues is "
                f"{self.config.max_queues}; enqueue to an existing queue, let empty queues be forgotten (their "
                f"jobs done and past retention), or raise jobs.max_queues",
                detail={"queue": capped.queue, "limit": self.config.max_queues})

    async def _forget_for_room(self, now_ms: int) -> bool:
        self._forgot_ms = now_ms
        return bool(await self.forget_empty(now_ms))

    def _new_job(self, req: EnqueueRequest, now_ms: int, where: str) -> Job:
        if not isinstance(req, EnqueueRequest):
            raise InvalidInputError(f"{where or 'job'} must be an EnqueueRequest")
        queue = checks.queue_name(req.queue, where + "queue")
        checks.json_size(req.payload, where + "payload", self.config.max_payload_bytes)
        policy = self.policy(queue)
        priority = checks.int_field(req.priority, where + "priority", PRIORITY_MIN, PRIORITY_MAX)
        max_attempts = policy.max_attempts if req.max_attempts is None else \
            checks.int_field(req.max_attempts, where + "max_attempts", *ATTEMPTS_RANGE)
        visibility = policy.visibility_timeout_s if req.visibility_timeout_s is None else \
            checks.int_field(req.visibility_timeout_s, where + "visibility_timeout", *VISIBILITY_RANGE, "seconds")
        return Job(
            id=self._ids.next(now_ms), queue=queue, payload=req.payload, state=State.PENDING, created_ms=now_ms,
            available_ms=self._available_ms(req, now_ms, where), max_attempts=max_attempts,
            visibility_timeout_s=visibility, priority=priority, dedup_id=checks.dedup_id(req.dedup_id),
            trace=checks.text_field(req.trace, where + "trace", MAX_NAME_CHARS, optional=True), updated_ms=now_ms,
        )

    @staticmethod
    def _available_ms(req: EnqueueRequest, now_ms: int, where: str) -> int:
        delay = checks.int_field(req.delay_ms, where + "delay_ms", 0, MAX_DELAY_MS, "ms")
        if req.run_at_ms is None:
            return now_ms + delay
        if delay:
            raise InvalidInputError(f"{where}delay_ms and {where}run_at_ms exclude each other: give one of them")
        run_at = checks.int_field(req.run_at_ms, where + "run_at_ms", 0, now_ms + MAX_DELAY_MS,
                                  "(ms since the epoch, at most a year ahead)")
        return max(run_at, now_ms)

    # -- leasing ---------------------------------------------------------------------------

    async def lease(self, queues: Sequence[str], max_jobs: int, now_ms: int, *, worker: str,
                    visibility_timeout_s: int | None = None) -> list[Job]:
        """Lease up to max_jobs due jobs from `queues` (in the order given, highest priority first within
        a queue) in one transaction (on Redis Cluster one per slot, in turn, until max_jobs are leased).
        Expired leases of these queues are returned to PENDING first and
        due delayed jobs promoted.  Each leased job: IN_PROGRESS, attempts + 1, a fresh lease token,
        deadline now + visibility (the request's, else the job's)."""
        qs = await self._lease_args(queues, max_jobs, worker, visibility_timeout_s)
        jobs, _ = await self._lease(qs, max_jobs, now_ms, worker, visibility_timeout_s, wake=False)
        return jobs

    async def _lease_args(self, queues: Sequence[str], max_jobs: int, worker: str,
                          visibility_timeout_s: int | None) -> list[str]:
        if isinstance(queues, str) or not isinstance(queues, Sequence):
            raise InvalidInputError(f"queues must be a list of 1..{MAX_LEASE_QUEUES} queue names")
        checks.int_field(len(queues), "number of queues", 1, MAX_LEASE_QUEUES)
        checks.int_field(max_jobs, "max", 1, MAX_LEASE_BATCH)
        checks.text_field(worker, "worker", MAX_NAME_CHARS)
        if visibility_timeout_s is not None:
            checks.int_field(visibility_timeout_s, "visibility_timeout", *VISIBILITY_RANGE, "seconds")
        qs = list(dict.fromkeys(queues))
        for q in qs:
            # A lease may name a queue nothing was enqueued to yet: a worker is often started before its
            # producer, and the long poll then wakes on that queue's first enqueue (as a Redis BLPOP on a
            # missing key, or an SQS consumer).  Only jobs.strict_queues refuses names it does not know.
            if self.config.strict_queues:
                await self.check_queue(q)
            else:
                checks.queue_name(q)
        return qs

    async def _lease(self, queues: list[str], max_jobs: int, now_ms: int, worker: str,
                     visibility_timeout_s: int | None, *, wake: bool = True) -> tuple[list[Job], int | None]:
        """The leased jobs, and (with `wake`) when the next delayed job or lease deadline of these queues
        is due: then the leases and delayed jobs are read past now, up to a batch, to see the next one.
        One atomic step on the store (ops.lease)."""
        await self._ensure_current()
        jobs, due = await ops.lease(self.store, queues, max_jobs, now_ms, worker, visibility_timeout_s,
                                    self._retention.dlq_ms, wake=wake)
        self._remember(jobs)
        return jobs, due

    async def lease_wait(self, queues: Sequence[str], max_jobs: int, clock: Callable[[], int], wait_ms: int, *,
                         worker: str, visibility_timeout_s: int | None = None) -> list[Job]:
        """Long poll: lease; if nothing, wait for an enqueue (Store.subscribe on the ready/delayed keys of
        `queues`) or until the earliest delayed job or lease deadline of those queues is due, then lease
        again; return [] once wait_ms has passed.  No polling loop on the store."""
        checks.int_field(wait_ms, "wait", 0, MAX_WAIT_SECONDS * 1000, "ms")
        qs = await self._lease_args(queues, max_jobs, worker, visibility_timeout_s)
        if wait_ms == 0:
            return (await self._lease(qs, max_jobs, clock(), worker, visibility_timeout_s))[0]
        deadline = clock() + wait_ms
        waker = Waker(self.store, [k for q in qs for k in (ready_key(q), delayed_key(q))])
        try:
            # Watching before the first attempt: an enqueue right after it cannot slip by unseen.
            await waker.ready(wait_ms / 1000)
            while True:
                waker.clear()  # what changes from here on wakes the wait below
                jobs, due = await self._lease(qs, max_jobs, clock(), worker, visibility_timeout_s)
                now = clock()
                if jobs or now >= deadline:
                    return jobs
                until = deadline if due is None else min(deadline, due)
                await waker.wait(max(0, until - now) / 1000)
        finally:
            waker.close()

    # -- finishing -------------------------------------------------------------------------

    async def ack(self, job_id: str, lease_token: str, result: Any, now_ms: int, allow: Allow = None) -> Job:
        """IN_PROGRESS with this token -> DONE (result kept, record TTL = done retention).
        NotFoundError for an unknown id; LeaseLostError (nothing changed) for any other state or token."""
        outcome = (await self.ack_batch([AckItem(job_id, lease_token, result)], now_ms, allow))[0]
        if isinstance(outcome, HeliosError):
            raise outcome
        return outcome

    async def ack_batch(self, items: Sequence[AckItem], now_ms: int, allow: Allow = None) -> list[Job | HeliosError]:
        """Many acks in ONE transaction (on Redis Cluster one per slot of their queues); each item gets
        its Job or its error, in order."""
        checks.int_field(len(items), "number of acks", 1, MAX_LEASE_BATCH)
        out: list[Job | HeliosError | None] = []  # None: its outcome comes from the operation
        calls: list[tuple[str, str, Any, str]] = []
        where: list[int] = []
        problems = [self._ack_problem(item) for item in items]
        queues = await self._queues_of([it.job_id for it, p in zip(items, problems, strict=True) if p is None],
                                       allow)
        for item, problem in zip(items, problems, strict=True):
            if problem is None:
                q = queues.get(item.job_id)
                if q is None or (allow is not None and not allow(q)):
                    problem = _not_found(item.job_id)
                else:
                    where.append(len(out))
                    calls.append((item.job_id, item.lease_token, item.result, q))
            out.append(problem)
        if calls:
            await self._ensure_current()
            known = self._queue_of
            for i, outcome in zip(where, await ops.ack(self.store, calls, now_ms, self._retention.done_ms),
                                  strict=True):
                out[i] = settled = _settled(outcome, "ack")
                if isinstance(settled, Job):  # DONE for good: its queue need not be remembered
                    known.pop(settled.id, None)
        return [o if o is not None else _not_found("?") for o in out]  # (no None is left)

    def _ack_problem(self, item: AckItem) -> HeliosError | None:
        try:
            if not isinstance(item, AckItem):
                raise InvalidInputError("each ack must be an AckItem")
            _check_id(item.job_id)
            checks.text_field(item.lease_token, "lease_token", MAX_NAME_CHARS)
            checks.json_size(item.result, "result", self.config.max_payload_bytes)
        except HeliosError as e:
            return e
        return None

    async def nack(self, job_id: str, lease_token: str, error: str, now_ms: int,
                   retry_delay_ms: int | None = None, *, release: bool = False, allow: Allow = None) -> Job:
        """Give the job back: PENDING after retry_delay_ms (default: backoff with full jitter) while
        attempts < max_attempts, else FAILED into the DLQ with `error` as last_error.

        `release`: the job never ran (a worker shutting down hands back jobs it leased but did not
        start): PENDING at once, this delivery not counted as an attempt, last_error kept as it was.
        """
        _check_id(job_id)
        checks.text_field(lease_token, "lease_token", MAX_NAME_CHARS)
        if not isinstance(error, str):
            raise InvalidInputError("error must be a string")
        error = error if len(error) <= MAX_ERROR_CHARS else error[:MAX_ERROR_CHARS - 1] + "…"
        if retry_delay_ms is not None:
            checks.int_field(retry_delay_ms, "retry_delay_ms", 0, MAX_DELAY_MS, "ms")
        # The record first, for its queue (keys, scope, policy) and attempts (the backoff): if the
        # token holds the lease now, it held it then, and only a new lease changes the attempts.
        u = self.rng.random()  # drawn once per valid nack, whatever its outcome (a seeded rng replays)
        job = await self.get(job_id, allow)
        delay = retry_delay_ms if retry_delay_ms is not None else self.policy(job.queue).retry_delay_ms(job.attempts, u)
        await self._ensure_current()
        return _settled_or_raise(await ops.nack(
            self.store, job_id, lease_token, job.queue, now_ms, release=release, error=error, delay_ms=delay,
            dlq_ms=self._retention.dlq_ms), "nack")

    async def extend(self, job_id: str, lease_token: str, visibility_timeout_s: int, now_ms: int,
                     allow: Allow = None) -> Job:
        """Move the lease deadline to now + visibility_timeout_s; same token."""
        _check_id(job_id)
        checks.text_field(lease_token, "lease_token", MAX_NAME_CHARS)
        checks.int_field(visibility_timeout_s, "visibility_timeout", *VISIBILITY_RANGE, "seconds")

        q = (await self._queues_of([job_id], allow)).get(job_id)
        if q is None or (allow is not None and not allow(q)):
            raise _not_found(job_id)
        await self._ensure_current()
        return _settled_or_raise(
            await ops.extend(self.store, job_id, lease_token, q, visibility_timeout_s, now_ms), "extend")

    async def expire(self, now_ms: int, queues: Sequence[str] | None = None) -> int:
        """Return jobs whose lease deadline passed to PENDING (due now; the attempt is counted), or to
        the DLQ when they have no attempts left.  All queues when None.  Returns how many moved."""
        names = await self.queues() if queues is None else [checks.queue_name(q) for q in queues]
        # A plain read first: most queues have no lease due, and then no transaction is needed (the
        # gateway's reaper asks every queue every second).  One due meanwhile waits for the next call.
        names = [q for q in names if await self.store.zrangebyscore(leased_key(q), "-inf", now_ms, count=1)]

        async def body(q: str, tx: Transitions) -> tuple[int, bool]:
            expiring = await tx.txn.zrangebyscore(leased_key(q), "-inf", now_ms, count=MAINTENANCE_BATCH)
            await tx.load(q, [m.decode() for m, _ in expiring])
            return len(return_expired(tx, q, expiring)), len(expiring) == MAINTENANCE_BATCH

        return await self._drain(now_ms, names, body)

    async def _drain(self, now_ms: int, queues: list[str],
                     body: Callable[[str, Transitions], Awaitable[tuple[int, bool]]]) -> int:
        """Run `body` per queue, one transaction per batch, while it says a full batch was handled."""
        total = 0
        for q in queues:
            more = True
            while more:
                moved, more = await self._run(now_ms, partial(body, q))
                total += moved
        return total

    # -- admin -----------------------------------------------------------------------------

    async def redrive(self, job_id: str, now_ms: int, allow: Allow = None) -> Job:
        """FAILED -> PENDING on its queue, attempts reset to 0; JobStateError otherwise."""
        return await self._from_state(job_id, State.FAILED, "redriven", now_ms,
                                      lambda tx, job: tx.to_pending(job, now_ms, attempts=0), allow)

    async def _from_state(self, job_id: str, state: State, done: str, now_ms: int,
                          change: Callable[[Transitions, Job], Job], allow: Allow) -> Job:
        """One job's transition that only a job in `state` may take (JobStateError otherwise)."""
        _check_id(job_id)
        q = (await self._queues_of([job_id], allow)).get(job_id)
        if q is None or (allow is not None and not allow(q)):
            raise _not_found(job_id)

        async def body(tx: Transitions) -> Job:
            job = _found(job_id, await tx.load_one(q, job_id), allow)
            if job.state is not state:
                raise JobStateError(f"job {job_id} is {job.state}: only a {state} job can be {done}",
                                    detail={"state": str(job.state)})
            return change(tx, job)

        return await self._run(now_ms, body)

    async def redrive_all(self, now_ms: int, queue: str | None = None, allow: Allow = None) -> int:
        """Every job in the DLQ of `queue` (all queues `allow` lets through when None) back to PENDING;
        returns how many."""
        if queue is not None:
            await self.check_queue(queue)
        names = [q for q in await self.queues() if allow is None or allow(q)] if queue is None else [queue]

        async def body(q: str, tx: Transitions) -> tuple[int, bool]:
            # Only jobs that failed before this call: one failing again meanwhile stays in the DLQ.
            entries = await tx.txn.zrangebyscore(dlq_key(q), "-inf", now_ms, count=MAINTENANCE_BATCH)
            moved = 0
            for (member, _), job in zip(entries, await tx.load(q, [m.decode() for m, _ in entries]), strict=True):
                if job is None or job.state is not State.FAILED:
                    tx.drop(dlq_key(q), member.decode())
                    continue
                tx.to_pending(job, now_ms, attempts=0)
                moved += 1
            return moved, len(entries) == MAINTENANCE_BATCH

        return await self._drain(now_ms, names, body)

    async def cancel(self, job_id: str, now_ms: int, allow: Allow = None) -> Job:
        """PENDING -> CANCELLED (kept for the done retention); JobStateError otherwise."""
        return await self._from_state(job_id, State.PENDING, "cancelled", now_ms,
                                      lambda tx, job: tx.finish(job, State.CANCELLED), allow)

    # -- reading ---------------------------------------------------------------------------

    async def get(self, job_id: str, allow: Allow = None) -> Job:
        """NotFoundError when unknown (or expired by retention)."""
        _check_id(job_id)
        q = self._queue_of.get(job_id)
        if q is None:
            job = next(iter(await self._find([job_id], allow)), None)
        else:
            await self._ensure_current()
            raw = await self.store.get(job_key(q, job_id))
            job = None if raw is None else Job.decode(raw)
        job = _found(job_id, job, allow)
        self._remember([job])
        return job

    async def stats(self, now_ms: int, queue: str | None = None, allow: Allow = None) -> list[QueueStats]:
        """Counts per queue (all queues `allow` lets through when None).

        `done` and `failed` leave out index entries past retention not pruned yet.
        `oldest_pending_age_ms` reads every member of the queue's ready and delayed
        sets (a job id carries its creation time): O(pending) per call.  Stats of
        every queue also forget the queues found empty (the gateway's reaper asks
        for them every 15 s): so the queues listed, and the reaper's work, follow
        the queues that hold jobs, not every name ever enqueued to.
        """
        if queue is not None:
            await self.check_queue(queue)
            return [await self._stats(queue, now_ms)]
        out = [await self._stats(q, now_ms) for q in await self.queues() if allow is None or allow(q)]
        empty = [s.queue for s in out if not (s.pending or s.delayed or s.in_progress or s.done or s.failed)]
        if empty:
            await self.forget_empty(now_ms, empty)
        return out

    async def forget_empty(self, now_ms: int, queues: Sequence[str] | None = None) -> list[str]:
        """Drop from job:queues each queue (of `queues`; all registered when None) that holds no job:
        nothing ready, delayed or leased, and nothing in its done or DLQ index younger than the
        retention (those older are records already expired: the index keys go too).  A queue
        forgotten comes back with its next enqueue; one that gets a job while it is forgotten is
        kept (registry.py).  Three round trips per empty queue; returns the names."""
        await self._ensure_current()
        names = [m.decode() for m, _ in await self.store.zrangebyscore(QUEUES_KEY)] if queues is None else queues
        gone = [q for q in names
                if await forget(self.store, q, now_ms, self._retention.done_ms, self._retention.dlq_ms)]
        self._unnote_registered(gone)
        return gone

    def _note_registered(self, queues: Iterable[str]) -> None:
        """Remember `queues` as registered.  Bounded: names a caller invents, forgotten by another
        process's sweep, would otherwise pile up here; one dropped costs its next enqueue a
        registration call again."""
        registered = self._registered
        registered.update(dict.fromkeys(queues))
        while len(registered) > SEEN_QUEUES:
            del registered[next(iter(registered))]

    def _unnote_registered(self, queues: Iterable[str]) -> None:
        for q in queues:
            self._registered.pop(q, None)

    async def _stats(self, q: str, now_ms: int) -> QueueStats:
        # One snapshot (jobs/stats.py): separate reads of a busy queue did not add up.
        pending, delayed, in_progress, done, failed, oldest = await read_counts(
            self.store, q, now_ms - self._retention.done_ms, now_ms - self._retention.dlq_ms)
        return QueueStats(queue=q, pending=pending, delayed=delayed, in_progress=in_progress, done=done,
                          failed=failed, oldest_pending_age_ms=None if oldest is None else max(0, now_ms - oldest))

    async def queues(self) -> list[str]:
        """Configured queues and every queue enqueued to, sorted."""
        registered = [m.decode() for m, _ in await self.store.zrangebyscore(QUEUES_KEY)]
        return sorted(set(self.policies) | set(registered))

    # -- transactions ----------------------------------------------------------------------

    async def _run(self, now_ms: int, body: Callable[[Transitions], Awaitable[T]]) -> T:
        """One Store transaction around `body`: its transitions, index pruning, then the writes."""
        last: list[Transitions] = []

        async def fn(txn: Txn) -> T:
            tx = Transitions(txn, now_ms, self._retention)
            out = await body(tx)
            await tx.prune()
            tx.flush()
            last[:] = [tx]
            return out

        out: T = await self.store.transact(fn)
        last[0].committed()
        return out

    # Last in the class: below it, `list` in an annotation would name this method.
    async def list(self, queue: str, state: State | None, now_ms: int, *, cursor: str | None = None,
                   limit: int = 100) -> tuple[list[Job], str | None]:
        """Jobs of a queue, by state (all states when None), in a stable order; returns (jobs, next cursor
        or None at the end).  The cursor is opaque to callers."""
        await self.check_queue(queue)
        if state is not None and (not isinstance(state, str) or state not in State.__members__):
            raise InvalidInputError(f"state must be one of {', '.join(State)}, got {state!r}")
        state = None if state is None else State(state)
        checks.int_field(limit, "limit", 1, MAX_LIST_LIMIT)
        if cursor is not None and not isinstance(cursor, str):
            raise InvalidInputError("cursor must be a string")
        return await list_jobs(self.store, queue, state, cursor or None, limit)


# -- helpers of the transactions --------------------------------------------------------------


def _check_id(job_id: Any) -> None:
    if not is_job_id(job_id):
        raise JobNotFoundError(f"no job {job_id!r}: a job id is 26 characters of Crockford base32",
                               detail={"id": str(job_id)[:64]})


def _not_found(job_id: str) -> JobNotFoundError:
    return JobNotFoundError(f"no job {job_id} (never made, or removed after its retention)", detail={"id": job_id})


def _found(job_id: str, job: Job | None, allow: Allow = None) -> Job:
    if job is None or (allow is not None and not allow(job.queue)):
        raise _not_found(job_id)
    return job


def _settled(outcome: Job | Refused, what: str) -> Job | HeliosError:
    """An operation's outcome for one job: the job as it now is, or the error saying why nothing changed."""
    if isinstance(outcome, Job):
        return outcome
    job_id = outcome.job_id
    if outcome.why == "missing":
        return _not_found(job_id)
    if outcome.why == "state":
        return LeaseLostError(f"cannot {what} job {job_id}: it is {outcome.state}, not leased; nothing changed",
                              detail={"state": str(outcome.state)})
    return LeaseLostError(f"cannot {what} job {job_id}: the lease token is not its current lease (the lease "
                          f"expired and the job was leased again?); nothing changed",
                          detail={"state": str(outcome.state)})


def _settled_or_raise(outcome: Job | Refused, what: str) -> Job:
    done = _settled(outcome, what)
    if isinstance(done, HeliosError):
        raise done
    return done
