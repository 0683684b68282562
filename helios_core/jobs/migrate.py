"""Rewriting job records of the older, compact JSON form into the current one, once per store.

The server-side job operations (jobs/ops.py, store/scripts.py) read and change
records only in the current form (model.encode_record: one member per line),
so before the first of them runs on a store, every record of the older form
(one compact JSON object: what HELIOS wrote before the operations existed) is
rewritten, keeping its remaining TTL.  ``job:format`` = "2" records that this
was done, so every later process checks one key.  It is idempotent: two
processes migrating at once rewrite each record to the same bytes (each
rewrite is a transaction that reads the record again first), and a migration
cut short is simply done again.  Not covered: a process of the older version
still writing records after the migration (stop those before upgrading).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from helios_core.jobs.model import Job, is_current_record, is_job_id
from helios_core.store.base import Store, Txn

__all__ = ["FORMAT_KEY", "CURRENT", "ensure_current", "migrate"]

FORMAT_KEY = "job:format"
CURRENT = b"2"


async def ensure_current(store: Store) -> int:
    """Migrate unless the store says it is done; how many records were rewritten."""
    if await store.get(FORMAT_KEY) == CURRENT:
        return 0
    moved = await migrate(store)
    await store.set(FORMAT_KEY, CURRENT)
    return moved


async def migrate(store: Store) -> int:
    """Rewrite every record of the older form (job:{id} keys); returns how many."""
    moved = 0
    cursor = "0"
    seen: set[bytes] = set()  # a key may come again in a later page over Redis
    while True:
        cursor, keys = await store.scan(b"job:", cursor, 500)
        records = [k for k in keys if k not in seen and is_job_id(k[4:].decode(errors="replace"))]
        seen.update(records)
        if records:
            for key, raw in zip(records, await store.mget(list(records)), strict=True):
                if raw is not None and not is_current_record(raw):
                    rewritten: int = await store.transact(_rewrite(key))
                    moved += rewritten
        if cursor == "0":
            return moved


def _rewrite(key: bytes) -> Callable[[Txn], Awaitable[int]]:
    async def fn(txn: Txn) -> int:
        raw = await txn.get(key)
        if raw is None or is_current_record(raw):
            return 0
        ttl = await txn.pttl(key)
        txn.set(key, Job.decode(raw).encode(), px=ttl if ttl > 0 else None)
        return 1

    return fn
