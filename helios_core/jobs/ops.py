"""The job queue's hot transitions as named atomic operations: enqueue, lease, ack, nack, extend.

Each is one server-side step (store/scripts.py's JOB_* Lua, run by EVALSHA on
Redis, Valkey and atlasd: one round trip, no WATCH, nothing to retry), and
here each gets its Python model: the same transition written with
`Transitions` (transitions.py) over one transaction, which the embedded store
runs instead of the Lua (store/embedded.py: `ScriptOp.txn_model`).  Tests hold
the two to each other over random operation sequences on every backend
(tests/contract/test_jobs_ops.py).  The models return the Lua's reply, value
for value; the callers below turn replies into `Job`s and refusals.

What the scripts cannot do is decided before they run and passed in: lease
tokens (Lua has no secure randomness), a nack's backoff (the queue's policy;
read from the job's record first: the token it presents pins its attempts,
since only a lease changes both), and which queue a job must be on (the
caller's permission scope, `allow`; a job's queue never changes, so knowing it
once is knowing it for good).

Every key an operation touches is of the queues it names (``job:{Q}:...``,
model.py), so that on Redis Cluster it runs on the node of their one slot.
An operation over several queues (a lease on several, a batch of enqueues
or acks) is one script on a store where any keys go together (one server:
one round trip, atomic as before) and one script per slot on a cluster
(`by_slot`): a lease then asks the queues' slots in turn, in the order given,
until it has its jobs; enqueues and acks of different slots go concurrently,
each slot's all or nothing.

Models keep one difference from the Lua on purpose: they read records in the
older, compact JSON form too, where the Lua refuses them (jobs/migrate.py
rewrites them before the first operation).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from helios_core.jobs.model import (
    Job,
    State,
    delayed_key,
    dlq_key,
    done_key,
    id_of_key,
    job_key,
    leased_key,
    listed_key,
    queue_of_key,
    queue_prefix,
    ready_key,
    ready_score,
)
from helios_core.jobs.transitions import Retention, Transitions, new_token
from helios_core.store.base import Key, Store, Txn
from helios_core.store.scripts import JOB_ACK, JOB_ENQUEUE, JOB_EXTEND, JOB_LEASE, JOB_NACK, ScriptOp

__all__ = [
    "ENQUEUE_OP", "LEASE_OP", "ACK_OP", "NACK_OP", "EXTEND_OP", "MAINTENANCE_BATCH", "Refused",
    "enqueue", "lease", "ack", "nack", "extend", "return_expired", "promote_due", "still_ready", "next_due",
    "by_slot",
]

T = TypeVar("T")

# Expired leases and due delayed jobs handled per queue in one lease; the rest go in the next one.
MAINTENANCE_BATCH = 100

_Entries = list[tuple[bytes, float]]


@dataclass(frozen=True)
class Refused:
    """Why ack, nack or extend changed nothing: `missing` (no such job, or not on the queue the
    caller may touch), or `state`/`token` (not leased / leased under another token)."""

    job_id: str
    why: str
    state: str | None = None


# -- shared pieces of the lease (and of JobQueue.expire, a transaction) -------------------------


def return_expired(tx: Transitions, q: str, entries: _Entries) -> list[Job]:
    """Leases past their deadline back to PENDING (or the DLQ); the jobs as they now are."""
    out: list[Job] = []
    for member, score in entries:
        if score > tx.now:
            break
        job_id = member.decode()
        job = tx.jobs.get(job_id)
        if job is None or job.state is not State.IN_PROGRESS or job.lease is None:
            tx.drop(leased_key(q), job_id)
            continue
        if job.lease.deadline_ms > tx.now:
            tx.reindex_lease(job)  # (the index disagrees with the record: the record wins)
            continue
        out.append(tx.expire_lease(job))
    return out


def promote_due(tx: Transitions, q: str, entries: _Entries) -> list[tuple[float, str, Job]]:
    out: list[tuple[float, str, Job]] = []
    for member, score in entries:
        if score > tx.now:
            break
        job_id = member.decode()
        job = tx.jobs.get(job_id)
        if job is None or job.state is not State.PENDING:
            tx.drop(delayed_key(q), job_id)
            continue
        tx.promote(job)
        out.append((ready_score(job.priority, job.available_ms), job_id, job))
    return out


def still_ready(tx: Transitions, q: str, entries: _Entries) -> list[tuple[float, str, Job]]:
    out: list[tuple[float, str, Job]] = []
    for member, score in entries:
        job_id = member.decode()
        job = tx.jobs.get(job_id)
        if job is None or job.state is not State.PENDING:
            tx.drop(ready_key(q), job_id)
            continue
        out.append((score, job_id, job))
    return out


def next_due(entries: _Entries, now_ms: int, batch: int = MAINTENANCE_BATCH) -> int:
    """When the first not-yet-due entry is due; `now_ms` if a full batch was due (more may be); -1: none."""
    for _, score in entries:
        if score > now_ms:
            return int(score)
    return now_ms if len(entries) >= batch else -1


def _earliest(a: int, b: int) -> int:
    return b if a < 0 else a if b < 0 else min(a, b)


# -- the models (what the embedded store runs; the Lua's reply, value for value) -------------------


class _Record(bytes):
    """A record in a model's reply: the bytes the Lua would reply, carrying the Job they encode, so
    that the caller in the same process need not decode them again."""

    job: Job


def _record(tx: Transitions, job: Job) -> _Record:
    raw = _Record(tx.encoded[job.id])  # (as flush wrote it: call after _commit)
    raw.job = job
    return raw


def _job_of(raw: bytes) -> Job:
    return raw.job if isinstance(raw, _Record) else Job.decode(raw)


def _holder(job: Job | None, token: str, queue: str) -> tuple[Job | None, list[Any]]:
    if job is None or (queue and job.queue != queue):
        return None, [0, None, b""]
    state = b'"%s"' % job.state.encode()
    if job.state is not State.IN_PROGRESS or job.lease is None:
        return None, [2, state, b"state"]
    if job.lease.token != token:
        return None, [2, state, b"token"]
    return job, []


async def _commit(tx: Transitions) -> None:
    await tx.prune()
    tx.flush()


async def _enqueue_model(txn: Txn, keys: list[bytes], args: list[bytes]) -> list[Any]:
    window, nq = int(args[0]), int(args[1])
    fresh = [args[2 + i] == b"1" for i in range(nq)]
    unlisted = [i + 1 for i in range(nq) if not fresh[i] and not await txn.exists(keys[i])]
    if unlisted:
        return [-3, *unlisted]
    for i in range(nq):
        if fresh[i]:
            txn.set(keys[i], b"1")
    entries: list[tuple[bytes, bytes, bytes | None, bytes, bytes]] = []
    k, a = nq, 2 + nq
    while a < len(args):
        dedup = keys[k + 2] if args[a] == b"1" else None
        entries.append((keys[k], keys[k + 1], dedup, args[a + 1], args[a + 2]))
        k, a = k + (2 if dedup is None else 3), a + 3
    dedups = [e[2] for e in entries if e[2] is not None]
    seen = dict(zip(dedups, await txn.mget(list[Key](dedups)), strict=True)) if dedups else {}
    # A dedup key's job is on the dedup key's queue: its record is under the same prefix.
    firsts = [(d, d[:d.index(b"}:") + 2] + i) for d, i in seen.items() if i is not None]
    records = dict(zip([d for d, _ in firsts], await txn.mget([r for _, r in firsts]), strict=True)) \
        if firsts else {}
    out: list[Any] = [1]
    made: dict[Key, bytes] = {}
    index: dict[bytes, dict[Key, float]] = {}
    for rec_key, index_key, dedup, score, record in entries:
        if dedup is not None:
            existing = made.get(dedup) or records.get(dedup)
            if existing is not None:
                out += [0, existing]
                continue
        job_id = id_of_key(rec_key)
        txn.set(rec_key, record)
        index.setdefault(index_key, {})[job_id] = float(score)
        if dedup is not None:
            txn.set(dedup, job_id, px=window)
            made[dedup] = record
        out += [1, None]
    for key, members in index.items():
        txn.zadd(key, members)
    return out


async def _lease_model(txn: Txn, keys: list[bytes], args: list[bytes]) -> list[Any]:
    now, max_jobs, worker, vis_over = int(args[0]), int(args[1]), orjson.loads(args[2]), int(args[3])
    upto, dlq_ms, batch, tokens = args[4].decode(), int(args[5]), int(args[6]), args[7:]
    tx = Transitions(txn, now, Retention(dlq_ms, dlq_ms))
    leased: list[Job] = []
    due = -1
    for qi in range(len(keys) // 4):
        lk, dk, rk = (k.decode() for k in keys[4 * qi:4 * qi + 3])
        q = queue_of_key(lk)
        expiring = await txn.zrangebyscore(lk, "-inf", upto, count=batch)
        later = await txn.zrangebyscore(dk, "-inf", upto, count=batch)
        await tx.load(q, [m.decode() for m, score in [*expiring, *later] if score <= now])
        returned = [(ready_score(j.priority, j.available_ms), j.id, j)
                    for j in return_expired(tx, q, expiring) if j.state is State.PENDING]
        promoted = promote_due(tx, q, later)
        room = max_jobs - len(leased)
        if room > 0:
            # The best `room` of the ready set as the Lua sees it (after the returns and promotions
            # above were added to it): the best of those just added and the set's best `room` before.
            ready = await txn.zrangebyscore(rk, count=room)
            await tx.load(q, [m.decode() for m, _ in ready])
            candidates = sorted(returned + promoted + still_ready(tx, q, ready), key=lambda c: (c[0], c[1]))
            for _, _, job in candidates[:room]:
                visibility = vis_over or job.visibility_timeout_s
                leased.append(tx.lease(job, worker, visibility, tokens[len(leased)].decode()))
        due = _earliest(due, _earliest(next_due(expiring, now, batch), next_due(later, now, batch)))
    await _commit(tx)
    return [due, *(_record(tx, job) for job in leased)]


async def _ack_model(txn: Txn, keys: list[bytes], args: list[bytes]) -> list[Any]:
    now, done_ms = int(args[0]), int(args[1])
    tx = Transitions(txn, now, Retention(done_ms, done_ms))
    ids = [id_of_key(keys[3 * i]).decode() for i in range(len(keys) // 3)]
    by_queue: dict[str, list[str]] = {}
    for i, job_id in enumerate(ids):
        by_queue.setdefault(queue_of_key(keys[3 * i]), []).append(job_id)
    for q, some in by_queue.items():
        await tx.load(q, some)
    out: list[Any] = []
    for i, job_id in enumerate(ids):
        token, result, queue = args[2 + 3 * i].decode(), args[3 + 3 * i], args[4 + 3 * i].decode()
        job, refused = _holder(tx.jobs[job_id], token, queue)
        if job is None:
            out += refused
            continue
        out += [1, tx.finish(job, State.DONE, orjson.loads(result)), b""]
    await _commit(tx)
    return [_record(tx, v) if isinstance(v, Job) else v for v in out]


async def _nack_model(txn: Txn, keys: list[bytes], args: list[bytes]) -> list[Any]:
    now, token, queue, mode = int(args[0]), args[1].decode(), args[2].decode(), args[3]
    error, delay, dlq_ms = orjson.loads(args[4]), int(args[5]), int(args[6])
    tx = Transitions(txn, now, Retention(dlq_ms, dlq_ms))
    job, refused = _holder(await tx.load_one(queue_of_key(keys[0]), id_of_key(keys[0]).decode()), token, queue)
    if job is None:
        return refused
    if mode == b"release":
        new = tx.to_pending(job, now, attempts=max(0, job.attempts - 1))
    elif job.attempts >= job.max_attempts:
        new = tx.fail(job, error)
    else:
        new = tx.to_pending(job, now + delay, last_error=error)
    await _commit(tx)
    return [1, _record(tx, new), b""]


async def _extend_model(txn: Txn, keys: list[bytes], args: list[bytes]) -> list[Any]:
    now, token, queue, visibility = int(args[0]), args[1].decode(), args[2].decode(), int(args[3])
    tx = Transitions(txn, now, Retention(0, 0))
    job, refused = _holder(await tx.load_one(queue_of_key(keys[0]), id_of_key(keys[0]).decode()), token, queue)
    if job is None:
        return refused
    new = tx.extend(job, visibility)
    await _commit(tx)
    return [1, _record(tx, new), b""]


ENQUEUE_OP: ScriptOp = replace(JOB_ENQUEUE, txn_model=_enqueue_model)
LEASE_OP: ScriptOp = replace(JOB_LEASE, txn_model=_lease_model)
ACK_OP: ScriptOp = replace(JOB_ACK, txn_model=_ack_model)
NACK_OP: ScriptOp = replace(JOB_NACK, txn_model=_nack_model)
EXTEND_OP: ScriptOp = replace(JOB_EXTEND, txn_model=_extend_model)


# -- the callers -----------------------------------------------------------------------------


def _outcome(job_id: str, code: Any, value: Any, why: Any) -> Job | Refused:
    if int(code) == 1:
        return _job_of(value)
    if int(code) == 0:
        return Refused(job_id, "missing")
    return Refused(job_id, why.decode() if isinstance(why, bytes) else str(why), orjson.loads(value))


def by_slot(store: Store, items: Sequence[T], queue: Callable[[T], str]) -> list[list[T]]:
    """`items` in groups that one script may cover: all of them on one server, those of queues in one
    hash slot on Redis Cluster (Store.slot of the queue's prefix); groups and items in their first order."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(store.slot(queue_prefix(queue(item))), []).append(item)
    return list(groups.values())


async def enqueue(store: Store, jobs: list[Job], dedup_keys: list[str | None], now_ms: int, window_ms: int,
                  fresh: frozenset[str] = frozenset()) -> tuple[list[tuple[Job, bool] | None], list[str]]:
    """Write `jobs`, skipping those whose dedup key names a live job (that job comes back instead, with
    False).  Each queue must be listed (registered: jobs/registry.py), or be in `fresh` (just registered
    by the caller: it is marked listed).  Returns per job (job, created), or None when its queue's slot
    wrote nothing because a queue there was not listed; and the queues found not listed."""
    order = {id(job): i for i, job in enumerate(jobs)}
    out: list[tuple[Job, bool] | None] = [None] * len(jobs)
    unlisted: list[str] = []

    async def one(group: list[tuple[Job, str | None]]) -> None:
        queues = list(dict.fromkeys(job.queue for job, _ in group))
        keys: list[Key] = [listed_key(q) for q in queues]
        args: list[Key | int | float] = [window_ms, len(queues), *(int(q in fresh) for q in queues)]
        for job, dedup in group:
            due = job.available_ms <= now_ms
            keys += [job_key(job.queue, job.id), ready_key(job.queue) if due else delayed_key(job.queue)]
            score = int(ready_score(job.priority, job.available_ms)) if due else job.available_ms
            if dedup is not None:
                keys.append(dedup)
            args += [0 if dedup is None else 1, score, job.encode()]
        reply = await store.run_script(ENQUEUE_OP, keys, args)
        if int(reply[0]) == -3:
            unlisted.extend(queues[int(i) - 1] for i in reply[1:])
            return
        for i, (job, _) in enumerate(group):
            created = int(reply[1 + 2 * i]) == 1
            out[order[id(job)]] = (job, True) if created else (_job_of(reply[2 + 2 * i]), False)

    await _each(one, by_slot(store, list(zip(jobs, dedup_keys, strict=True)), lambda jd: jd[0].queue))
    # (On a cluster the slots' scripts finish in any order: the queues in the order of the jobs.)
    found = set(unlisted)
    return out, [q for q in dict.fromkeys(job.queue for job in jobs) if q in found]


async def _each(fn: Callable[[list[T]], Any], groups: list[list[T]]) -> None:
    """fn on each group: concurrently when there are several (Redis Cluster: one node each)."""
    if len(groups) == 1:
        await fn(groups[0])
    else:
        await asyncio.gather(*(fn(g) for g in groups))


async def lease(store: Store, queues: list[str], max_jobs: int, now_ms: int, worker: str, visibility_s: int | None,
                dlq_ms: int, *, wake: bool, tokens: list[str] | None = None) -> tuple[list[Job], int | None]:
    """The leased jobs, and (with `wake`) when the next delayed job or lease deadline of `queues` is due.
    `tokens`: the lease tokens to hand out, max_jobs of them (default: fresh random ones).  On Redis
    Cluster the queues' slots are asked in turn until the batch is full (the next due time is then
    of the slots asked: it only matters when no job was leased, and then every slot was asked)."""
    tokens = tokens if tokens is not None else [new_token() for _ in range(max_jobs)]
    leased: list[Job] = []
    due = -1
    for group in by_slot(store, queues, str):
        room = max_jobs - len(leased)
        if room <= 0:
            break
        keys: list[Key] = [k for q in group for k in (leased_key(q), delayed_key(q), ready_key(q), dlq_key(q))]
        args: list[Key | int | float] = [now_ms, room, orjson.dumps(worker), visibility_s or 0,
                                         "+inf" if wake else now_ms, dlq_ms, MAINTENANCE_BATCH]
        args += tokens[len(leased):]
        reply = await store.run_script(LEASE_OP, keys, args)
        due = _earliest(due, int(reply[0]))
        leased += [_job_of(raw) for raw in reply[1:]]
    return leased, (None if due < 0 else due)


async def ack(store: Store, items: list[tuple[str, str, Any, str]], now_ms: int, done_ms: int) -> list[Job | Refused]:
    """Ack (job id, token, result, its queue) items (one step per slot); each its Job or why not."""
    out: list[Job | Refused | None] = [None] * len(items)

    async def one(group: list[tuple[int, tuple[str, str, Any, str]]]) -> None:
        keys: list[Key] = []
        args: list[Key | int | float] = [now_ms, done_ms]
        for _, (job_id, token, result, queue) in group:
            keys += [job_key(queue, job_id), leased_key(queue), done_key(queue)]
            args += [token, orjson.dumps(result), queue]
        reply = await store.run_script(ACK_OP, keys, args)
        for n, (i, item) in enumerate(group):
            out[i] = _outcome(item[0], *reply[3 * n:3 * n + 3])

    await _each(one, by_slot(store, list(enumerate(items)), lambda it: it[1][3]))
    return [o if o is not None else Refused(items[i][0], "missing") for i, o in enumerate(out)]


async def nack(store: Store, job_id: str, token: str, queue: str, now_ms: int, *, release: bool, error: str,
               delay_ms: int, dlq_ms: int) -> Job | Refused:
    keys: list[Key] = [job_key(queue, job_id), leased_key(queue), ready_key(queue), delayed_key(queue),
                       dlq_key(queue)]
    args: list[Key | int | float] = [now_ms, token, queue, "release" if release else "retry", orjson.dumps(error),
                                     delay_ms, dlq_ms]
    return _outcome(job_id, *await store.run_script(NACK_OP, keys, args))


async def extend(store: Store, job_id: str, token: str, queue: str, visibility_s: int, now_ms: int) -> Job | Refused:
    keys: list[Key] = [job_key(queue, job_id), leased_key(queue)]
    return _outcome(job_id, *await store.run_script(EXTEND_OP, keys, [now_ms, token, queue, visibility_s]))
