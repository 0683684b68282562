"""The job queue's domain logic: every transition is one Store transaction.

Pure logic over the `Store` interface; time (`now_ms`) and randomness (`rng`)
are passed in, so a test can drive it through any schedule.  Nothing here
knows HTTP; the gateway's handlers and `helios job --data` call it alike.

SKELETON: signatures and contracts are fixed (the gateway handlers, the
`helios job` CLI and the tests are written against them); bodies to be filled.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from helios_core.config import JobsConfig
from helios_core.errors import ConflictError, HeliosError, InvalidInputError, NotFoundError
from helios_core.jobs.model import Job, State
from helios_core.store.base import Store

__all__ = [
    "JobQueue", "EnqueueRequest", "AckItem", "QueuePolicy", "QueueStats",
    "LeaseLostError", "JobStateError", "QueueNotFoundError", "PayloadTooLargeError",
    "MAX_LEASE_BATCH", "MAX_ENQUEUE_BATCH", "MAX_WAIT_SECONDS",
]

MAX_LEASE_BATCH = 100
MAX_ENQUEUE_BATCH = 100
MAX_WAIT_SECONDS = 20


class LeaseLostError(ConflictError):
    """ack/nack/extend with a token that is not the job's current lease (409): nothing changed."""

    code = "lease_lost"


class JobStateError(ConflictError):
    """The job is not in a state that allows this (cancel a DONE job, redrive a PENDING one): 409."""

    code = "job_state"


class QueueNotFoundError(NotFoundError):
    code = "queue_not_found"


class PayloadTooLargeError(HeliosError):
    code = "payload_too_large"
    status = 413


@dataclass(frozen=True)
class QueuePolicy:
    """A queue's settings: jobs.* defaults overridden by its jobs.queues entry."""

    visibility_timeout_s: int
    max_attempts: int
    backoff_base_ms: int
    backoff_cap_ms: int


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
        raise NotImplementedError


def parse_queue_policies(config: JobsConfig) -> dict[str, QueuePolicy]:
    """jobs.queues entries ("NAME key=value ...") -> policies; ConfigError naming the entry when bad."""
    raise NotImplementedError


class JobQueue:
    def __init__(self, store: Store, config: JobsConfig, rng: random.Random | None = None) -> None:
        raise NotImplementedError

    def policy(self, queue: str) -> QueuePolicy: ...

    async def check_queue(self, queue: str) -> None:
        """InvalidInputError for a malformed name; QueueNotFoundError for a queue that does not exist
        (strict mode: not configured; otherwise: neither configured nor ever enqueued to)."""

    async def enqueue(self, req: EnqueueRequest, now_ms: int) -> tuple[Job, bool]:
        """Validate and add a job; returns (job, created).  created is False when req.dedup_id was
        seen on this queue within the dedup window: the job it first made is returned, unchanged."""
        raise NotImplementedError

    async def enqueue_batch(self, reqs: Sequence[EnqueueRequest], now_ms: int) -> list[tuple[Job, bool]]:
        """Up to MAX_ENQUEUE_BATCH jobs in ONE transaction (all or nothing; validation first)."""
        raise NotImplementedError

    async def lease(self, queues: Sequence[str], max_jobs: int, now_ms: int, *, worker: str,
                    visibility_timeout_s: int | None = None) -> list[Job]:
        """Lease up to max_jobs due jobs from `queues` (in the order given, highest priority first within
        a queue) in one transaction.  Expired leases of these queues are returned to PENDING first and
        due delayed jobs promoted.  Each leased job: IN_PROGRESS, attempts + 1, a fresh lease token,
        deadline now + visibility (the request's, else the job's)."""
        raise NotImplementedError

    async def lease_wait(self, queues: Sequence[str], max_jobs: int, clock: Callable[[], int], wait_ms: int, *,
                         worker: str, visibility_timeout_s: int | None = None) -> list[Job]:
        """Long poll: lease; if nothing, wait for an enqueue (Store.subscribe on the ready/delayed keys of
        `queues`) or until the earliest delayed job or lease deadline of those queues is due, then lease
        again; return [] once wait_ms has passed.  No polling loop on the store."""
        raise NotImplementedError

    async def ack(self, job_id: str, lease_token: str, result: Any, now_ms: int) -> Job:
        """IN_PROGRESS with this token -> DONE (result kept, record TTL = done retention).
        NotFoundError for an unknown id; LeaseLostError (nothing changed) for any other state or token."""
        raise NotImplementedError

    async def ack_batch(self, items: Sequence[AckItem], now_ms: int) -> list[Job | HeliosError]:
        """Many acks in ONE transaction; each item gets its Job or its error, in order."""
        raise NotImplementedError

    async def nack(self, job_id: str, lease_token: str, error: str, now_ms: int,
                   retry_delay_ms: int | None = None) -> Job:
        """Give the job back: PENDING after retry_delay_ms (default: backoff with full jitter) while
        attempts < max_attempts, else FAILED into the DLQ with `error` as last_error."""
        raise NotImplementedError

    async def extend(self, job_id: str, lease_token: str, visibility_timeout_s: int, now_ms: int) -> Job:
        """Move the lease deadline to now + visibility_timeout_s; same token."""
        raise NotImplementedError

    async def expire(self, now_ms: int, queues: Sequence[str] | None = None) -> int:
        """Return jobs whose lease deadline passed to PENDING (due now; the attempt is counted), or to
        the DLQ when they have no attempts left.  All queues when None.  Returns how many moved."""
        raise NotImplementedError

    async def redrive(self, job_id: str, now_ms: int) -> Job:
        """FAILED -> PENDING on its queue, attempts reset to 0; JobStateError otherwise."""
        raise NotImplementedError

    async def redrive_all(self, now_ms: int, queue: str | None = None) -> int:
        """Every job in the DLQ of `queue` (all queues when None) back to PENDING; returns how many."""
        raise NotImplementedError

    async def cancel(self, job_id: str, now_ms: int) -> Job:
        """PENDING -> CANCELLED (kept for the done retention); JobStateError otherwise."""
        raise NotImplementedError

    async def get(self, job_id: str) -> Job:
        """NotFoundError when unknown (or expired by retention)."""
        raise NotImplementedError

    async def list(self, queue: str, state: State | None, now_ms: int, *, cursor: str | None = None,
                   limit: int = 100) -> tuple[list[Job], str | None]:
        """Jobs of a queue, by state (all states when None), in a stable order; returns (jobs, next cursor
        or None at the end).  The cursor is opaque to callers."""
        raise NotImplementedError

    async def stats(self, now_ms: int, queue: str | None = None) -> list[QueueStats]:
        raise NotImplementedError

    async def queues(self) -> list[str]:
        """Configured queues and every queue enqueued to, sorted."""
        raise NotImplementedError
