"""The state changes of jobs inside one Store transaction.

`Transitions` wraps a `Txn`: the queue's operations read records through
`load` (one MGET for many jobs) and call `lease`, `finish`, `fail`, ... on
them.  Writes are collected rather than queued at once, so a job that
changes twice in one transaction (a lease that expired, returned to PENDING,
then leased again) costs one SET of its record, and all the index changes of
a batch become one ZREM and one ZADD per sorted set.  `flush` queues them on
the txn when the operation is done.

Every job sits in exactly one index, the one its state names (model.py):
a transition removes it from the old index and adds it to the new one.

Retention: DONE/CANCELLED/FAILED records get a TTL, and the indexes that list
them (``job:{Q}:done``, ``job:{Q}:dlq``) are pruned of members older than the
retention by the transactions that add to them, at most PRUNE_BATCH at a time.
A member older than the retention is safe to remove without watching it: its
record has expired, so that job can never come back under the same id.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from helios_core.jobs.model import (
    Job,
    Lease,
    State,
    delayed_key,
    dlq_key,
    done_key,
    job_key,
    leased_key,
    ready_key,
    ready_score,
)
from helios_core.store.base import Txn

__all__ = ["Transitions", "Retention", "PRUNE_BATCH", "PRUNE_SLACK_MS", "index_keys_of", "new_token"]

PRUNE_BATCH = 100
# Prune an index once its oldest member is this far past the retention: one
# read now and then removes a batch, instead of a read in every transaction.
PRUNE_SLACK_MS = 60_000


def new_token() -> str:
    """A fencing token: unguessable, since it is what lets a worker finish a job."""
    return secrets.token_urlsafe(18)


def index_keys_of(job: Job) -> tuple[str, ...]:
    """The index (or, for PENDING, the two indexes) a job in its state may be in."""
    q = job.queue
    if job.state is State.PENDING:
        return ready_key(q), delayed_key(q)
    if job.state is State.IN_PROGRESS:
        return (leased_key(q),)
    if job.state is State.FAILED:
        return (dlq_key(q),)
    return (done_key(q),)


class Retention:
    """How long finished jobs are kept, and where each index was last seen clean.

    `clean_below[key]`: no member of `key` had a score below this when it was
    last pruned.  It is advisory (one process's view), only deciding when it is
    worth reading the index again; a stale value delays pruning, never breaks it.
    """

    def __init__(self, done_ms: int, dlq_ms: int) -> None:
        self.done_ms = done_ms
        self.dlq_ms = dlq_ms
        self.clean_below: dict[str, float] = {}

    def of(self, key: str) -> int:
        return self.dlq_ms if key.endswith(":dlq") else self.done_ms

    def due(self, key: str, now_ms: int) -> bool:
        return now_ms - self.of(key) > self.clean_below.get(key, -math.inf) + PRUNE_SLACK_MS

    async def stale(self, txn: Txn, key: str, now_ms: int) -> tuple[list[bytes], float | None]:
        """Up to PRUNE_BATCH members past retention, and the new clean-below mark (None: more are left)."""
        cutoff = now_ms - self.of(key)
        entries = await txn.zrangebyscore(key, "-inf", "+inf", count=PRUNE_BATCH + 1)
        n = sum(1 for _, score in entries if score < cutoff)  # a prefix: entries come in score order
        stale = [m for m, _ in entries[:min(n, PRUNE_BATCH)]]
        if n < len(entries):
            return stale, entries[n][1]
        return stale, (now_ms if len(entries) <= PRUNE_BATCH else None)


class Transitions:
    """One transaction's job state changes (see the module doc)."""

    def __init__(self, txn: Txn, now_ms: int, retention: Retention) -> None:
        self.txn = txn
        self.now = now_ms
        self.retention = retention
        self.jobs: dict[str, Job | None] = {}  # as read, then as changed in this transaction
        self._records: dict[str, tuple[Job, int | None]] = {}  # id -> the record to write, its TTL (ms) or None
        self._index: dict[str, dict[str, float | None]] = {}  # key -> member -> score (None: remove)
        self._fresh: set[tuple[str, str]] = set()  # added here to an index it was not in before
        self._finished: set[str] = set()  # done/dlq indexes that got members: prune them
        self._clean: dict[str, float] = {}
        self.encoded: dict[str, bytes] = {}  # id -> the record as flush wrote it

    # -- reading ---------------------------------------------------------------------------

    async def load(self, queue: str, ids: list[str]) -> list[Job | None]:
        """The jobs of `queue` with these ids (None: no record), reading the ones not yet seen in one MGET."""
        missing = list(dict.fromkeys(i for i in ids if i not in self.jobs))
        if missing:
            raws = await self.txn.mget([job_key(queue, i) for i in missing])
            for job_id, raw in zip(missing, raws, strict=True):
                self.jobs[job_id] = None if raw is None else Job.decode(raw)
        return [self.jobs[i] for i in ids]

    async def load_one(self, queue: str, job_id: str) -> Job | None:
        return (await self.load(queue, [job_id]))[0]

    # -- transitions (each returns the job as it now is) ------------------------------------

    def create(self, job: Job) -> Job:
        self._put(job)
        self._index_pending(job)
        return job

    def to_pending(self, job: Job, available_ms: int, **changes: Any) -> Job:
        """Back to PENDING (retry, expired lease, redrive), due at `available_ms`; the record is kept forever."""
        self._unindex(job)
        new = job.with_(state=State.PENDING, available_ms=available_ms, lease=None, finished_ms=None,
                        updated_ms=self.now, **changes)
        self._put(new)
        self._index_pending(new)
        return new

    def promote(self, job: Job) -> None:
        """A delayed job that is due moves to the ready set (its record does not change)."""
        self._zrem(delayed_key(job.queue), job.id)
        self._zadd(ready_key(job.queue), job.id, ready_score(job.priority, job.available_ms), fresh=True)

    def lease(self, job: Job, worker: str, visibility_s: int, token: str | None = None) -> Job:
        """A ready PENDING job -> IN_PROGRESS under a fresh token (`token`, else a new one); one more attempt."""
        deadline = self.now + visibility_s * 1000
        new = job.with_(state=State.IN_PROGRESS, attempts=job.attempts + 1,
                        lease=Lease(token or new_token(), worker, deadline), updated_ms=self.now)
        self._zrem(ready_key(job.queue), job.id)
        self._zadd(leased_key(job.queue), job.id, deadline, fresh=True)
        self._put(new)
        return new

    def extend(self, job: Job, visibility_s: int) -> Job:
        lease = _lease_of(job)
        deadline = self.now + visibility_s * 1000
        new = job.with_(lease=Lease(lease.token, lease.worker, deadline), updated_ms=self.now)
        self._zadd(leased_key(job.queue), job.id, deadline)
        self._put(new)
        return new

    def finish(self, job: Job, state: State, result: Any = None) -> Job:
        """-> DONE (with its result) or CANCELLED: kept for the done retention."""
        self._unindex(job)
        new = job.with_(state=state, lease=None, result=result, finished_ms=self.now, updated_ms=self.now)
        self._put(new, self.retention.done_ms)
        self._zadd(done_key(job.queue), job.id, self.now, fresh=True)
        self._finished.add(done_key(job.queue))
        return new

    def fail(self, job: Job, error: str) -> Job:
        """-> FAILED, into the DLQ: kept for the DLQ retention (a redrive keeps it again)."""
        self._unindex(job)
        new = job.with_(state=State.FAILED, lease=None, last_error=error, finished_ms=self.now,
                        updated_ms=self.now)
        self._put(new, self.retention.dlq_ms)
        self._zadd(dlq_key(job.queue), job.id, self.now, fresh=True)
        self._finished.add(dlq_key(job.queue))
        return new

    def expire_lease(self, job: Job) -> Job:
        """An IN_PROGRESS job whose deadline passed: PENDING due now, or FAILED without attempts left.

        The attempt was counted when it was leased.
        """
        held_s = max(1, round((_lease_of(job).deadline_ms - job.updated_ms) / 1000))
        error = f"lease expired after {held_s} s (attempt {job.attempts} of {job.max_attempts})"
        if job.attempts >= job.max_attempts:
            return self.fail(job, error)
        return self.to_pending(job, self.now, last_error=error)

    def reindex_lease(self, job: Job) -> None:
        """Put a leased job's index entry back in step with its record's deadline (a repair)."""
        self._zadd(leased_key(job.queue), job.id, _lease_of(job).deadline_ms)

    def drop(self, key: str, member: str) -> None:
        """Remove an index entry that does not match its record (a repair; never expected)."""
        self._zrem(key, member)

    # -- committing ------------------------------------------------------------------------

    async def prune(self) -> None:
        for key in sorted(self._finished):
            if self.retention.due(key, self.now):
                stale, clean = await self.retention.stale(self.txn, key, self.now)
                for member in stale:
                    self._zrem(key, member.decode())
                if clean is not None:
                    self._clean[key] = clean

    def flush(self) -> None:
        """Queue the collected writes on the txn."""
        txn = self.txn
        encoded = self.encoded
        for job, ttl in self._records.values():
            raw = encoded[job.id] = job.encode()
            txn.set(job_key(job.queue, job.id), raw, px=ttl)
        for key, ops in self._index.items():
            gone = [m for m, s in ops.items() if s is None]
            txn.zrem(key, *gone)
            txn.zadd(key, {m: s for m, s in ops.items() if s is not None})

    def committed(self) -> None:
        """After the transaction was applied: remember where indexes are clean."""
        self.retention.clean_below.update(self._clean)

    # -- helpers ---------------------------------------------------------------------------

    def _put(self, job: Job, ttl_ms: int | None = None) -> None:
        self.jobs[job.id] = job
        self._records[job.id] = (job, ttl_ms)

    def _index_pending(self, job: Job) -> None:
        if job.available_ms <= self.now:
            self._zadd(ready_key(job.queue), job.id, ready_score(job.priority, job.available_ms), fresh=True)
        else:
            self._zadd(delayed_key(job.queue), job.id, job.available_ms, fresh=True)

    def _unindex(self, job: Job) -> None:
        for key in index_keys_of(job):
            self._zrem(key, job.id)

    def _zadd(self, key: str, member: str, score: float, *, fresh: bool = False) -> None:
        ops = self._index.setdefault(key, {})
        if fresh and member not in ops:  # (a removal queued here means it was in the index)
            self._fresh.add((key, member))
        ops[member] = score

    def _zrem(self, key: str, member: str) -> None:
        if (key, member) in self._fresh:
            # Added by this transaction to an index it was not in: removing it is a no-op
            # for the store, so send nothing (no write to the key, no change notification).
            self._fresh.discard((key, member))
            del self._index[key][member]
        else:
            self._index.setdefault(key, {})[member] = None


def _lease_of(job: Job) -> Lease:
    # Callers pass IN_PROGRESS jobs, which always hold a lease; a record that does not is damaged.
    if job.lease is None:
        raise ValueError(f"job {job.id} is {job.state} without a lease: its record is damaged")
    return job.lease
