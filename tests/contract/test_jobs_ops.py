"""The job queue's atomic operations (jobs/ops.py): the Lua and its Python model agree, on every backend.

Hypothesis draws a sequence of enqueues (dedup ids, delays, priorities,
attempts), leases (several queues, visibility overrides, the wake bound),
acks, nacks, releases and extends with current, stale and wrong tokens, and
jumps of the clock.  Each sequence runs twice on the same backend from an
empty job keyspace: once through the Lua (store/scripts.py's JOB_*: EVALSHA
on atlasd and redis-server, the engine's own Lua on the embedded store) and
once through the Python model (the op's `txn_model`, run as one
`Store.transact`).  After every step the replies and everything stored
under ``job:`` (values, TTLs present, index members and scores) must be equal.
On Redis Cluster the operations over several queues run one script per slot.

Also here: a store written in the layouts before one hash tag per queue (and
records of the older compact form) is migrated once, and the queue works on
it (`jobs.migrate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from typing import Any, cast

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helios_core.clock import wall_ms
from helios_core.config import JobsConfig
from helios_core.jobs import EnqueueRequest, JobQueue, State, registry
from helios_core.jobs import ops as jobops
from helios_core.jobs.migrate import CURRENT, FORMAT_KEY, ensure_current, migrate
from helios_core.jobs.model import (
    QUEUES_KEY,
    Job,
    Lease,
    dedup_key,
    id_of_key,
    is_current_record,
    is_job_id,
    job_key,
    listed_key,
    new_job_id,
    ready_score,
)
from helios_core.store import Store
from helios_core.store.base import Key, to_bytes
from helios_core.store.scripts import ScriptOp

QUEUES = ["qa", "qb"]
ZSETS = (b":ready", b":delayed", b":leased", b":dlq", b":done")
DONE_MS, DLQ_MS, WINDOW_MS = 50_000, 80_000, 30_000


class LuaStore:
    """Runs each op as its Lua (no model): EVALSHA on a server, the engine's Lua when embedded."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def slot(self, key: Key) -> int:
        return self.store.slot(key)

    async def run_script(self, op: ScriptOp, keys: list[Any], args: list[Any], *, durable: bool = True) -> Any:
        return await self.store.run_script(dataclasses.replace(op, txn_model=None), keys, args, durable=durable)


class ModelStore:
    """Runs each op's Python model as one transaction of the store (WATCH/MULTI on a server)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def slot(self, key: Key) -> int:
        return self.store.slot(key)

    async def run_script(self, op: ScriptOp, keys: list[Any], args: list[Any], *, durable: bool = True) -> Any:
        model = op.txn_model
        assert model is not None
        kb, ab = [to_bytes(k) for k in keys], [to_bytes(a) for a in args]
        return await self.store.transact(lambda txn: model(txn, kb, ab))


async def clear(s: Store) -> None:
    keys = await s.scan_all(b"job:")
    if keys:
        await s.delete(*keys)


async def dump(s: Store) -> dict[bytes, Any]:
    """Everything under job:, as comparable values (a TTL only as present or not: servers keep real time)."""
    out: dict[bytes, Any] = {}
    for key in sorted(await s.scan_all(b"job:")):
        if key.endswith(ZSETS) or key == QUEUES_KEY.encode():
            out[key] = await s.zrangebyscore(key)
        else:
            raw = await s.get(key)
            if raw is not None and is_job_id(id_of_key(key).decode()):
                assert is_current_record(raw), raw  # (whichever wrote it: the Lua or the model)
                out[key] = (orjson.loads(raw), await s.pttl(key) > 0)
            else:
                out[key] = (raw, await s.pttl(key) > 0)
    return out


def reply_view(reply: Any) -> Any:
    """Records in a reply compared as JSON (and checked to be in the current form)."""
    if isinstance(reply, list):
        return [reply_view(r) for r in reply]
    if isinstance(reply, tuple):
        return tuple(reply_view(r) for r in reply)
    if isinstance(reply, Job):
        return reply.to_dict()
    return reply


job_spec = st.tuples(st.sampled_from(QUEUES), st.integers(0, 5), st.none() | st.sampled_from(["d1", "d2"]),
                     st.sampled_from([0, 0, 0, 500, 5000]), st.integers(-2, 2), st.integers(1, 3),
                     st.sampled_from([1, 2, 10]))
token_kind = st.sampled_from(["current", "current", "stale", "wrong"])
step = st.one_of(
    st.tuples(st.just("enqueue"), st.lists(job_spec, min_size=1, max_size=4)),
    st.tuples(st.just("lease"), st.sampled_from([["qa"], ["qb"], ["qa", "qb"], ["qb", "qa"]]), st.integers(1, 4),
              st.sampled_from([0, 0, 1, 3]), st.booleans()),
    st.tuples(st.just("ack"), st.lists(st.tuples(st.integers(0, 50), token_kind), min_size=1, max_size=3)),
    st.tuples(st.just("nack"), st.integers(0, 50), token_kind, st.booleans(), st.sampled_from([0, 700, 3000])),
    st.tuples(st.just("extend"), st.integers(0, 50), token_kind, st.sampled_from([1, 5])),
    st.tuples(st.just("tick"), st.sampled_from([300, 1000, 2500, 11_000, 60_000])),
    st.tuples(st.just("unlist"), st.sampled_from(QUEUES)),  # as a sweep's f1 would (registry.py)
)


async def play(s: Store, runner: Any, steps: list[tuple[Any, ...]], t0: int) -> list[Any]:
    """Run `steps` through `runner` (LuaStore or ModelStore); the replies and a dump after each step."""
    await clear(s)
    now = t0
    jobs: list[Job] = []  # every job made, in order (what a step's index picks from)
    tokens: dict[str, list[str]] = {}  # job id -> its lease tokens, oldest first
    listed: set[str] = set()  # queues registered (and so marked listed by their first enqueue)
    out: list[Any] = []

    def token(i: int, kind: str) -> tuple[str, str]:
        job = jobs[i % len(jobs)]
        held = tokens.get(job.id, [])
        if kind == "current" and held:
            return job.id, held[-1]
        if kind == "stale" and len(held) > 1:
            return job.id, held[-2]
        return job.id, "not-a-token"

    for n, st_ in enumerate(steps):
        kind = st_[0]
        reply: Any = None
        if kind == "tick":
            now += st_[1]
        elif kind == "enqueue":
            batch, keys = [], []
            for q, payload, dedup, delay, prio, attempts, vis in st_[1]:
                rand = (1000 * n + len(batch)).to_bytes(10, "big")  # (the same ids in both runs)
                batch.append(Job(id=new_job_id(now, rand), queue=q, payload={"n": payload, "é": [1.5, None]},
                                 state=State.PENDING, created_ms=now, available_ms=now + delay, max_attempts=attempts,
                                 visibility_timeout_s=vis, priority=prio, dedup_id=dedup, updated_ms=now))
                keys.append(None if dedup is None else dedup_key(q, "p", dedup))
            queues = sorted({(j.queue, j.queue == "qa") for j in batch})
            fresh = frozenset(q for q, _ in queues if q not in listed)
            capped = await registry.register(runner, queues, now, 10)
            made, unlisted = await jobops.enqueue(runner, batch, keys, now, WINDOW_MS, fresh)
            reply = [capped, made, unlisted]
            if unlisted:  # refused, nothing written in its slot: as the queue does, register them again
                assert None in made
                todo = [i for i, m in enumerate(made) if m is None]
                again, still = await jobops.enqueue(runner, [batch[i] for i in todo], [keys[i] for i in todo], now,
                                                    WINDOW_MS, fresh | frozenset(unlisted))
                assert still == [] and None not in again
                made = [m for m in made if m is not None] + again
                reply.append(again)
            listed.update(q for q, _ in queues)
            assert capped is None
            jobs += [j for j, created in made if created]  # type: ignore[misc]
        elif kind == "unlist":
            await s.delete(listed_key(st_[1]))  # (`listed` keeps it: the next enqueue finds it unlisted)
            continue
        elif kind == "lease":
            _, qs, k, vis, wake = st_
            got, due = await jobops.lease(runner, qs, k, now, "w", vis or None, DLQ_MS, wake=wake,
                                          tokens=[f"t{n}x{i}" for i in range(k)])
            for job in got:
                assert job.lease is not None
                tokens.setdefault(job.id, []).append(job.lease.token)
            reply = (got, due)
        elif not jobs:
            continue
        elif kind == "ack":
            items = []
            for i, kind_ in st_[1]:
                job_id, tok = token(i, kind_)
                items.append((job_id, tok, {"ok": i}, jobs[i % len(jobs)].queue))
            reply = await jobops.ack(runner, items, now, DONE_MS)
        elif kind == "nack":
            job_id, tok = token(st_[1], st_[2])
            reply = await jobops.nack(runner, job_id, tok, jobs[st_[1] % len(jobs)].queue, now, release=st_[3],
                                      error="boom \"ü\"\n", delay_ms=st_[4], dlq_ms=DLQ_MS)
        elif kind == "extend":
            job_id, tok = token(st_[1], st_[2])
            reply = await jobops.extend(runner, job_id, tok, jobs[st_[1] % len(jobs)].queue, st_[3], now)
        out.append((n, kind, reply_view(reply), await dump(s)))
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=3, max_size=14))
@example(steps=[("enqueue", [("qa", 0, None, 0, 0, 1, 1)]), ("unlist", "qa"),  # (an enqueue refused, then again)
                ("enqueue", [("qa", 1, "d1", 0, 0, 1, 1), ("qb", 2, None, 500, 1, 2, 1)])])
def test_the_lua_and_the_model_agree(run_store, steps: list) -> None:
    async def body(s: Store) -> None:
        t0 = wall_ms()
        by_lua = await play(s, LuaStore(s), steps, t0)
        by_model = await play(s, ModelStore(s), steps, t0)
        for lua, model in zip(by_lua, by_model, strict=True):
            assert lua == model, steps[lua[0]]

    run_store(body)


def _old_store_jobs(now: int) -> list[Job]:
    """Jobs in every state, as a store of the layout before one tag per queue holds them."""
    def job(n: int, q: str, state: State, **kw: Any) -> Job:
        return Job(id=new_job_id(now - 10_000 + n, n.to_bytes(10, "big")), queue=q, payload={"n": n, "é": 1.5},
                   state=state, created_ms=now - 10_000 + n, available_ms=now - 10_000 + n, max_attempts=3,
                   visibility_timeout_s=30, updated_ms=now - 5000, **kw)

    return [
        job(0, "qa", State.PENDING, priority=5),
        job(1, "qa", State.PENDING),
        job(2, "qa", State.IN_PROGRESS, attempts=1, lease=Lease("tok-2", "w1", now + 20_000)),
        job(3, "qa", State.DONE, attempts=1, result={"ok": True}, finished_ms=now - 1000),
        job(4, "qb", State.FAILED, attempts=3, last_error="boom", finished_ms=now - 2000),
        job(5, "qb", State.PENDING, attempts=1, dedup_id="order-17").with_(available_ms=now + 60_000),
    ]


async def _write_old_layout(s: Store, jobs: list[Job], now: int) -> dict[bytes, int]:
    """The keys as the code before format "3" wrote them: job:<id>, job:ready:Q ..., job:dedup:Q:P:D;
    job 1's record in the compact JSON of format "1".  Returns the TTL (ms) given to each key with one."""
    ttls = {b"job:" + jobs[3].id.encode(): 600_000, b"job:" + jobs[4].id.encode(): 900_000,
            b"job:dedup:qb:u1:order-17": 300_000}
    index = {0: "ready", 1: "ready", 2: "leased", 3: "done", 4: "dlq", 5: "delayed"}
    scores = {0: ready_score(5, jobs[0].available_ms), 1: ready_score(0, jobs[1].available_ms), 2: now + 20_000,
              3: now - 1000, 4: now - 2000, 5: now + 60_000}

    for n, job in enumerate(jobs):
        key = b"job:" + job.id.encode()
        await s.set(key, orjson.dumps(job.to_dict()) if n == 1 else job.encode(), px=ttls.get(key))
    await s.set(b"job:dedup:qb:u1:order-17", jobs[5].id, px=ttls[b"job:dedup:qb:u1:order-17"])
    await s.set(FORMAT_KEY, b"2")
    for n, job in enumerate(jobs):
        await s.transact(lambda t, n=n, job=job: t.zadd(f"job:{index[n]}:{job.queue}", {job.id: scores[n]}))
    await s.transact(lambda t: t.zadd(QUEUES_KEY, {"qa": now - 9000, "qb": now - 9000}))
    return ttls


def test_a_store_in_the_old_layout_is_migrated_once(run_store) -> None:
    """Format "3": every key of the older layout moves under its queue's tag, values, TTLs, leases
    and dedup keys kept; the queue then works on them; a second run changes nothing."""
    async def body(s: Store) -> None:
        await clear(s)
        now = wall_ms()
        jobs = _old_store_jobs(now)
        ttls = await _write_old_layout(s, jobs, now)
        q = JobQueue(s, JobsConfig(), random.Random(1))
        await q.prepare()
        assert await s.get(FORMAT_KEY) == CURRENT
        keys = sorted(k.decode() for k in await s.scan_all(b"job:"))
        assert keys == sorted(["job:format", "job:queues", "job:{qb}:dedup:u1:order-17",
                               "job:{qa}:ready", "job:{qa}:leased", "job:{qa}:done", "job:{qb}:dlq",
                               "job:{qb}:delayed", *(job_key(j.queue, j.id) for j in jobs)]), keys
        for n, job in enumerate(jobs):
            raw = await s.get(job_key(job.queue, job.id))
            assert raw is not None and is_current_record(raw) and Job.decode(raw) == job
            if n != 1:
                assert raw == job.encode(), "a record of the current form is copied byte for byte"
            ttl = await s.pttl(job_key(job.queue, job.id))
            old_ttl = ttls.get(b"job:" + job.id.encode())
            assert (ttl == -1) if old_ttl is None else (0 < ttl <= old_ttl), (n, ttl)
        assert 0 < await s.pttl("job:{qb}:dedup:u1:order-17") <= 300_000
        assert await s.zrangebyscore("job:{qa}:leased") == [(jobs[2].id.encode(), now + 20_000)]
        assert [m for m, _ in await s.zrangebyscore("job:{qa}:ready")] == [jobs[0].id.encode(), jobs[1].id.encode()]
        assert await q.queues() == ["qa", "qb"]

        # The queue works on what moved: the leased job's worker acks with its token, the ready jobs
        # lease in their order, the dedup id still names its job, the stats add up.
        assert (await q.ack(jobs[2].id, "tok-2", "done", now)).state is State.DONE
        got = await q.lease(["qa"], 5, now, worker="w2")
        assert [j.id for j in got] == [jobs[0].id, jobs[1].id]
        again, created = await q.enqueue(EnqueueRequest("qb", "dup", dedup_id="order-17", producer="u1"), now)
        assert not created and again.id == jobs[5].id
        assert (await q.redrive(jobs[4].id, now)).state is State.PENDING
        stats = {st.queue: (st.pending, st.delayed, st.in_progress, st.done, st.failed) for st in await q.stats(now)}
        assert stats == {"qa": (0, 0, 2, 2, 0), "qb": (1, 1, 0, 0, 0)}
        assert await ensure_current(s) == 0 and await migrate(s, now) == 0

    run_store(body)


class _Crash(Exception):
    pass


class _CrashAfter:
    """A Store that fails its n-th transaction: a migration cut short."""

    def __init__(self, store: Store, n: int) -> None:
        self._store, self._n = store, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def transact(self, fn: Any, **kw: Any) -> Any:
        self._n -= 1
        if self._n == 0:
            raise _Crash
        return await self._store.transact(fn, **kw)


def test_the_migration_cut_short_or_run_twice_at_once_moves_each_key_once(run_store) -> None:
    async def body(s: Store) -> None:
        now = wall_ms()
        jobs = _old_store_jobs(now)
        await clear(s)
        await _write_old_layout(s, jobs, now)
        with contextlib.suppress(_Crash):
            await ensure_current(cast(Store, _CrashAfter(s, 4)), now)  # three keys moved, then a crash
        assert await s.get(FORMAT_KEY) == b"2", "the format is written last"
        assert len([k for k in await s.scan_all(b"job:{") if not k.endswith((b":ready", b":listed"))]) >= 3
        # A record moved, then changed under its new name, before its old name was deleted: the new wins.
        await s.set(b"job:" + jobs[0].id.encode(), orjson.dumps(jobs[0].to_dict()))
        changed = jobs[0].with_(priority=-5).encode()
        await s.set(job_key("qa", jobs[0].id), changed)
        old = [k for k in await s.scan_all(b"job:") if k[4:5] != b"{" and k.count(b":") != 2
               and k not in (QUEUES_KEY.encode(), FORMAT_KEY.encode())]
        # Two processes finish it at once: each key moves once (job 0's new name is taken).
        moved = await asyncio.gather(migrate(s, now), migrate(s, now))
        assert sum(moved) == len(old) - 1, (moved, old)
        assert await s.get(job_key("qa", jobs[0].id)) == changed
        assert not [k for k in await s.scan_all(b"job:") if k[4:5] != b"{" and
                    k not in (QUEUES_KEY.encode(), FORMAT_KEY.encode())]
        for job in jobs[1:]:
            raw = await s.get(job_key(job.queue, job.id))
            assert raw is not None and Job.decode(raw) == job
        assert await ensure_current(s, now) == 0 and await s.get(FORMAT_KEY) == CURRENT

    run_store(body)
