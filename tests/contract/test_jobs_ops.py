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

Also here: records of the older compact form are migrated once, and the
queue works on them (`jobs.migrate`).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.clock import wall_ms
from helios_core.config import JobsConfig
from helios_core.jobs import AckItem, EnqueueRequest, JobQueue, State
from helios_core.jobs import ops as jobops
from helios_core.jobs.migrate import FORMAT_KEY, ensure_current
from helios_core.jobs.model import Job, dedup_key, is_current_record, is_job_id, job_key, new_job_id
from helios_core.store import Store
from helios_core.store.base import to_bytes
from helios_core.store.scripts import ScriptOp

QUEUES = ["qa", "qb"]
ZSETS = ("job:ready:", "job:delayed:", "job:leased:", "job:dlq:", "job:done:")
DONE_MS, DLQ_MS, WINDOW_MS = 50_000, 80_000, 30_000


class LuaStore:
    """Runs each op as its Lua (no model): EVALSHA on a server, the engine's Lua when embedded."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def run_script(self, op: ScriptOp, keys: list[Any], args: list[Any], *, durable: bool = True) -> Any:
        return await self.store.run_script(dataclasses.replace(op, txn_model=None), keys, args, durable=durable)


class ModelStore:
    """Runs each op's Python model as one transaction of the store (WATCH/MULTI on a server)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def run_script(self, op: ScriptOp, keys: list[Any], args: list[Any], *, durable: bool = True) -> Any:
        model = op.txn_model
        assert model is not None
        kb, ab = [to_bytes(k) for k in keys], [to_bytes(a) for a in args]
        return await self.store.transact(lambda txn: model(txn, kb, ab))


async def clear(s: Store) -> None:
    keys: list[bytes] = []
    cursor = "0"
    while True:
        cursor, page = await s.scan(b"job:", cursor, 500)
        keys += page
        if cursor == "0":
            break
    if keys:
        await s.delete(*set(keys))


async def dump(s: Store) -> dict[bytes, Any]:
    """Everything under job:, as comparable values (a TTL only as present or not: servers keep real time)."""
    keys: set[bytes] = set()
    cursor = "0"
    while True:
        cursor, page = await s.scan(b"job:", cursor, 500)
        keys.update(page)
        if cursor == "0":
            break
    out: dict[bytes, Any] = {}
    for key in sorted(keys):
        if key.startswith(tuple(z.encode() for z in ZSETS)) or key == b"job:queues":
            out[key] = await s.zrangebyscore(key)
        else:
            raw = await s.get(key)
            if raw is not None and is_job_id(key[4:].decode()):
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
)


async def play(s: Store, runner: Any, steps: list[tuple[Any, ...]], t0: int) -> list[Any]:
    """Run `steps` through `runner` (LuaStore or ModelStore); the replies and a dump after each step."""
    await clear(s)
    now = t0
    jobs: list[Job] = []  # every job made, in order (what a step's index picks from)
    tokens: dict[str, list[str]] = {}  # job id -> its lease tokens, oldest first
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
            reply = await jobops.enqueue(runner, batch, keys, queues, now, WINDOW_MS, 10)
            if isinstance(reply, list):
                jobs += [j for j, created in reply if created]
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
def test_the_lua_and_the_model_agree(run_store, steps: list) -> None:
    async def body(s: Store) -> None:
        t0 = wall_ms()
        by_lua = await play(s, LuaStore(s), steps, t0)
        by_model = await play(s, ModelStore(s), steps, t0)
        for lua, model in zip(by_lua, by_model, strict=True):
            assert lua == model, steps[lua[0]]

    run_store(body)


def test_a_queue_on_old_records_migrates_them_once(run_store) -> None:
    """Records as the code before the operations wrote them (one compact JSON object) are rewritten
    on first use, TTLs kept; the queue then leases, acks and nacks them; a second run changes nothing."""
    async def body(s: Store) -> None:
        await clear(s)
        await s.delete(FORMAT_KEY)
        now = wall_ms()
        old = JobQueue(s, JobsConfig(), random.Random(1))
        await old.prepare()
        made = [job for job, _ in await old.enqueue_batch([EnqueueRequest("qa", {"i": i}) for i in range(4)], now)]
        leased = await old.lease(["qa"], 1, now, worker="w")
        assert leased[0].lease is not None
        await old.ack(leased[0].id, leased[0].lease.token, "r", now)
        # Rewrite every record as the older code encoded it, and forget that the store was migrated.
        for job in made:
            raw = await s.get(job_key(job.id))
            assert raw is not None and is_current_record(raw)
            ttl = await s.pttl(job_key(job.id))
            await s.set(job_key(job.id), orjson.dumps(Job.decode(raw).to_dict()), px=ttl if ttl > 0 else None)
        await s.delete(FORMAT_KEY)
        q = JobQueue(s, JobsConfig(), random.Random(1))
        assert (await q.get(made[1].id)).payload == {"i": 1}  # (read either form)
        got = await q.lease(["qa"], 2, now + 1, worker="w2")
        assert [j.id for j in got] == [made[1].id, made[2].id]
        for job in made:
            raw = await s.get(job_key(job.id))
            assert raw is not None and is_current_record(raw), raw
        assert await s.pttl(job_key(made[0].id)) > 0, "the DONE record keeps its retention TTL"
        assert await s.get(FORMAT_KEY) == b"2"
        assert got[0].lease is not None and got[1].lease is not None
        out = await q.ack_batch([AckItem(got[0].id, got[0].lease.token, {"x": "ü"})], now + 2)
        assert isinstance(out[0], Job) and out[0].state is State.DONE and out[0].result == {"x": "ü"}
        nacked = await q.nack(got[1].id, got[1].lease.token, "e", now + 2, retry_delay_ms=0)
        assert nacked.state is State.PENDING and nacked.last_error == "e"
        assert await ensure_current(s) == 0

    run_store(body)
