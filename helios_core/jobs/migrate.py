"""Moving the job queue's keys to one hash tag per queue (format "3"), once per store.

Before format "3" a record was ``job:<id>``, its queue's indexes
``job:ready:Q`` (delayed, leased, dlq, done likewise) and a dedup key
``job:dedup:Q:producer:dedup_id``: on Redis Cluster a job operation touched
keys of several slots.  Format "3" (model.py) puts every key of queue Q under
``job:{Q}:``.  Records of the compact JSON form of format "1" (written before
the server-side operations existed) are rewritten in the current form on the
way.  What moves (values and remaining TTLs kept):

    job:<id>                     -> job:{Q}:<id>, Q the record's queue; and its entry in
                                    the index its state names, rebuilt from the record
    job:dedup:Q:<producer>:<d>   -> job:{Q}:dedup:<producer>:<d>
    job:ready:Q ... job:done:Q   deleted once every record moved (their entries are rebuilt
                                 from the records; an entry without a record was of a record
                                 already expired)
    job:queues                   kept; every queue a moved record names is added

An index entry is rebuilt as the transitions score it (transitions.py): a
PENDING job in the ready set by `ready_score` when due, else in the delayed
set by its available time; a leased job by its lease deadline, and its
record keeps its lease token and deadline, so the worker holding it acks it
as before; FAILED and DONE/CANCELLED by their finish time.  The record
wins where the old index disagreed with it, as in the scripts.

`ensure_current(store)` runs before the first job operation of a process
(`JobQueue.prepare`, at the gateway's start, and before any `helios job`
command's first operation); ``job:format`` = "3" records that it was done, so
every later process reads one key.  Idempotent, and safe with two processes
migrating at once: each record is written under its new name by one
transaction in the new name's slot that writes it (and its index entry) only
if the new name is absent (a record already there was moved by the other
process, and may have changed since: it wins), then the old name is deleted.
A migration cut short is done again by the next process (the format key is
written last).  Each step touches one slot, so this runs on Redis Cluster
too.  Not covered: a process of the older version still writing meanwhile
(stop those before upgrading).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from helios_core.clock import wall_ms
from helios_core.jobs.model import (
    Job,
    State,
    delayed_key,
    dlq_key,
    done_key,
    is_current_record,
    is_job_id,
    job_key,
    leased_key,
    ready_key,
    ready_score,
)
from helios_core.jobs.registry import register
from helios_core.store.base import Store, Txn

__all__ = ["FORMAT_KEY", "CURRENT", "ensure_current", "migrate", "OLD_INDEX_PREFIXES"]

FORMAT_KEY = "job:format"
CURRENT = b"3"
OLD_INDEX_PREFIXES = (b"job:ready:", b"job:delayed:", b"job:leased:", b"job:dlq:", b"job:done:")
_OLD_DEDUP = b"job:dedup:"


async def ensure_current(store: Store, now_ms: int | None = None) -> int:
    """Migrate unless the store says it is done; how many keys were moved."""
    if await store.get(FORMAT_KEY) == CURRENT:
        return 0
    moved = await migrate(store, wall_ms() if now_ms is None else now_ms)
    await store.set(FORMAT_KEY, CURRENT)
    return moved


async def migrate(store: Store, now_ms: int) -> int:
    """Move every key of the older layout (see the module doc); returns how many this call moved."""
    moved = 0
    queues: set[str] = set()
    old_indexes: list[bytes] = []
    for key in await store.scan_all(b"job:"):
        if is_job_id(key[4:].decode(errors="replace")):
            moved += await _move_record(store, key, now_ms, queues)
        elif key.startswith(_OLD_DEDUP):
            moved += await _move_dedup(store, key)
        elif key.startswith(OLD_INDEX_PREFIXES):
            old_indexes.append(key)
    if queues:
        # Again after the records: a sweep that forgot a queue while its records were moving in
        # (it found the queue's new keys empty first) has it back.
        await register(store, [(q, True) for q in sorted(queues)], now_ms, None)
    if old_indexes:
        await store.delete(*old_indexes)
    return moved


def index_entry(job: Job, now_ms: int) -> tuple[str, float]:
    """The index a job's record puts it in, and its score there (as transitions.py would)."""
    q = job.queue
    if job.state is State.PENDING:
        if job.available_ms <= now_ms:
            return ready_key(q), ready_score(job.priority, job.available_ms)
        return delayed_key(q), job.available_ms
    if job.state is State.IN_PROGRESS:
        # (A leased record without its lease is damaged: the next lease drops the entry, as before.)
        return leased_key(q), job.lease.deadline_ms if job.lease is not None else job.updated_ms
    finished = job.finished_ms if job.finished_ms is not None else job.updated_ms
    return (dlq_key(q) if job.state is State.FAILED else done_key(q)), finished


async def _move_record(store: Store, old: bytes, now_ms: int, queues: set[str]) -> int:
    raw = await store.get(old)
    ttl = await store.pttl(old)
    if raw is None or ttl == -2:
        return 0  # moved by another process meanwhile, or expired
    job = Job.decode(raw)
    if job.queue not in queues:
        # Registered before its first record moves in: a migration cut short leaves none unlisted.
        await register(store, [(job.queue, True)], now_ms, None)
        queues.add(job.queue)
    value = raw if is_current_record(raw) else job.encode()
    index, score = index_entry(job, now_ms)
    new = job_key(job.queue, job.id)

    async def put(txn: Txn) -> int:
        if await txn.get(new) is not None:
            return 0
        txn.set(new, value, px=ttl if ttl > 0 else None)
        txn.zadd(index, {job.id: score})
        return 1

    n: int = await store.transact(put)
    await store.delete(old)
    return n


async def _move_dedup(store: Store, old: bytes) -> int:
    queue, _, rest = old[len(_OLD_DEDUP):].partition(b":")
    new = b"job:{" + queue + b"}:dedup:" + rest
    raw = await store.get(old)
    ttl = await store.pttl(old)
    if raw is None or ttl == -2:
        return 0
    n: int = await store.transact(_put_absent(new, raw, ttl))
    await store.delete(old)
    return n


def _put_absent(key: bytes, value: bytes, ttl: int) -> Callable[[Txn], Awaitable[int]]:
    async def put(txn: Txn) -> int:
        if await txn.get(key) is not None:
            return 0
        txn.set(key, value, px=ttl if ttl > 0 else None)
        return 1

    return put
