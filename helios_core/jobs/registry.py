"""The queue registry, ``job:queues``, and why registering and forgetting a queue are safe together.

The registry lists every queue that may hold jobs: stats, the reaper
(`JobQueue.expire`), `JobQueue.queues` and finding a job by its id read it.
Its key is in a slot of its own, so on Redis Cluster no script can write it
together with a queue's keys (``job:{Q}:...``).  So registering is a call of
its own before the enqueue, made once per process per queue (the queue's
`JobQueue._registered`), and each queue keeps, in its own slot, a key saying
that it is registered: ``job:{Q}:listed``.  The enqueue script refuses a queue
whose listed key is gone (forgotten since this process registered it), and
writes nothing: the caller registers it again.

The invariant: a queue holding jobs is in the registry.  Registering (r) and
forgetting (f) run in these steps:

    r1  JOB_REGISTER: add Q to job:queues (refused past jobs.max_queues)
    r2  JOB_ENQUEUE with Q fresh: set job:{Q}:listed and write the jobs, one step in Q's slot
    r3  add Q to job:queues again (no cap)

    f1  one transaction in Q's slot: if Q holds no job, delete job:{Q}:listed (and its indexes)
    f2  remove Q from job:queues
    f3  if job:{Q}:listed exists again, add Q to job:queues again

Jobs are only written by a step that finds Q listed, or lists it (r2).  Jobs
written before f1 make f1 find the queue not empty: nothing is forgotten.
Jobs written after f1 were written by an r2 (a plain enqueue finds listed
gone, is refused and goes through r1-r3), and whichever of r3 and f3 runs
last puts Q back: if r2 ran before f3, f3 finds listed; if after, r3 runs
after f3, so after f2.  What the steps can leave is the harmless opposite, a
registered queue without jobs (a later sweep forgets it).  Between f2 and
f3 (or r3) a job just enqueued to a queue being forgotten is missing from the
registry for a moment: a lookup by id then answers 404 and stats leave its
queue out, once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from helios_core.jobs.model import QUEUES_KEY, delayed_key, dlq_key, done_key, leased_key, listed_key, ready_key
from helios_core.store.base import Key, Store, Txn
from helios_core.store.scripts import JOB_REGISTER, ScriptOp

__all__ = ["REGISTER_OP", "QueueCapped", "register", "forget"]


@dataclass(frozen=True)
class QueueCapped:
    """A registration refused: `queue` would be one more than the cap allows, `live` queues exist."""

    queue: str
    live: int


async def _register_model(txn: Txn, keys: list[bytes], args: list[bytes]) -> list[Any]:
    now, cap = int(args[0]), int(args[1])
    queues = [(args[i], args[i + 1] == b"1") for i in range(2, len(args), 2)]
    if cap >= 0:
        capped = [q for q, configured in queues if not configured and await txn.zscore(keys[0], q) is None]
        if capped:
            live = await txn.zcard(keys[0])
            if live + len(capped) > cap:
                return [-2, capped[0], live]
    txn.zadd(keys[0], {q: now for q, _ in queues})
    return [1]


REGISTER_OP: ScriptOp = replace(JOB_REGISTER, txn_model=_register_model)


async def register(store: Store, queues: list[tuple[str, bool]], now_ms: int,
                   max_queues: int | None) -> QueueCapped | None:
    """Add `queues` (name, configured) to the registry, or none of them when one more unconfigured
    queue than `max_queues` would be live (None: no cap)."""
    args: list[Key | int | float] = [now_ms, -1 if max_queues is None else max_queues]
    for q, configured in queues:
        args += [q, int(configured)]
    reply = await store.run_script(REGISTER_OP, [QUEUES_KEY], args)
    if int(reply[0]) == -2:
        return QueueCapped(reply[1].decode(), int(reply[2]))
    return None


async def forget(store: Store, queue: str, now_ms: int, done_ms: int, dlq_ms: int) -> bool:
    """Drop `queue` from the registry if it holds no job: nothing ready, delayed or leased, and
    nothing in its done or DLQ index younger than its retention (entries older are of records
    already expired: those indexes go too).  Steps f1-f3 of the module doc; whether it was dropped."""
    done, dlq = done_key(queue), dlq_key(queue)

    async def empty(txn: Txn) -> bool:
        for key in (ready_key(queue), delayed_key(queue), leased_key(queue)):
            if await txn.zcard(key):
                return False
        for key, keep_ms in ((done, done_ms), (dlq, dlq_ms)):
            if await txn.zrangebyscore(key, now_ms - keep_ms, "+inf", count=1):
                return False
        txn.delete(done, dlq, listed_key(queue))
        return True

    emptied: bool = await store.transact(empty)
    if not emptied:
        return False
    await store.transact(lambda txn: txn.zrem(QUEUES_KEY, queue))
    if await store.exists(listed_key(queue)):  # registered again meanwhile: jobs may be there
        await register(store, [(queue, True)], now_ms, None)
        return False
    return True
