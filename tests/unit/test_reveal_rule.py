"""The reveal rule on the embedded store: nothing leaves `Store.transact` (a result, or an
exception the gateway turns into an HTTP error) before every write it observed is durable.

Each test lets one caller write (its fsync will fail) and, in the same loop pass, another
caller observe that write.  The observer must get the durability error, never an answer
built on a write that the failed fsync then rolls back.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from helios_core.atlas.engine import Engine
from helios_core.atlas.fsops import FaultyFs
from helios_core.config import AtlasConfig, JobsConfig
from helios_core.errors import AofWriteError, ConflictError
from helios_core.jobs import EnqueueRequest, JobQueue, LeaseLostError
from helios_core.ratelimit import RATE_TAKE_OP
from helios_core.rbac import Role, RoleStore
from helios_core.store import EmbeddedStore
from helios_core.store.base import Txn

T0 = 1_800_000_000_000


def run(tmp_path: Path, body: Callable[[EmbeddedStore, FaultyFs], Awaitable[None]]) -> None:
    async def main() -> None:
        fs = FaultyFs()
        engine = Engine.open(tmp_path / "data", AtlasConfig(appendfsync="always", save=()), clock=lambda: T0, fs=fs)
        engine.attach()
        store = EmbeddedStore(engine)
        try:
            await asyncio.wait_for(body(store, fs), 20)
        finally:
            fs.heal()
            engine._probe_disk()
            await store.close()

    asyncio.run(main())


async def both(first: Awaitable[Any], second: Awaitable[Any]) -> tuple[Any, Any]:
    """Run two callers in the same loop pass; exceptions are returned, not raised."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    return a, b


def test_role_exists_409_waits_for_the_write_it_saw(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        roles = RoleStore(store)
        fs.fail("fsync")  # the creating write's fsync fails: the role never existed
        made, refused = await both(roles.put(Role.build("ops", ["admin:store"])),
                                   roles.put(Role.build("ops", ["admin:audit"]), create_only=True))
        assert isinstance(made, AofWriteError)
        assert isinstance(refused, AofWriteError), f"revealed a write that was rolled back: {refused!r}"
        assert await store.get("rbac:{auth}:role:ops") is None

    run(tmp_path, body)


def test_job_dedup_hit_waits_for_the_job_it_returns(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        q = JobQueue(store, JobsConfig(), random.Random(7))
        await q.enqueue(EnqueueRequest("warm", 0), T0)  # the queue exists (its registration is durable)
        fs.fail("fsync")
        first, hit = await both(q.enqueue(EnqueueRequest("warm", 1, dedup_id="d1"), T0),
                                q.enqueue(EnqueueRequest("warm", 2, dedup_id="d1"), T0))
        assert isinstance(first, AofWriteError)
        assert isinstance(hit, AofWriteError), f"a dedup hit revealed a job that was rolled back: {hit!r}"

    run(tmp_path, body)


def test_lease_lost_waits_for_the_ack_it_saw(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        q = JobQueue(store, JobsConfig(), random.Random(7))
        await q.enqueue(EnqueueRequest("q", 1), T0)
        (job,) = await q.lease(["q"], 1, T0, worker="w1")
        assert job.lease is not None
        fs.fail("fsync")  # the first ack's fsync fails: the job is still leased afterwards
        acked, lost = await both(q.ack(job.id, job.lease.token, None, T0),            # the worker acks,
                                 q.extend(job.id, job.lease.token, 60, T0))           # its heartbeat saw the ack
        assert isinstance(acked, AofWriteError)
        assert not isinstance(lost, LeaseLostError), "LeaseLost revealed an ack that was rolled back"
        assert isinstance(lost, AofWriteError)
        fs.heal()
        store.engine._probe_disk()
        await q.ack(job.id, job.lease.token, None, T0)  # the lease was never lost

    run(tmp_path, body)


def test_transact_waits_for_every_read_not_only_the_last(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        await store.transact(lambda t: t.set("old", b"1"))

        async def read_both(t: Txn) -> tuple[bytes | None, bytes | None]:
            return await t.get("new"), await t.get("old")  # the last read saw only durable data

        fs.fail("fsync")
        wrote, seen = await both(store.transact(lambda t: t.set("new", b"2")), store.transact(read_both))
        assert isinstance(wrote, AofWriteError)
        assert isinstance(seen, AofWriteError), f"returned {seen!r} built on a rolled-back write"

    run(tmp_path, body)


def test_an_exception_from_fn_waits_too(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        async def refuse_if_taken(t: Txn) -> None:
            if await t.get("name") is not None:
                raise ConflictError("name taken", code="taken")

        fs.fail("fsync")
        wrote, refused = await both(store.transact(lambda t: t.set("name", b"x")), store.transact(refuse_if_taken))
        assert isinstance(wrote, AofWriteError)
        assert isinstance(refused, AofWriteError), f"raised {refused!r} about a rolled-back write"

    run(tmp_path, body)


def test_a_durable_observation_is_not_delayed_or_replaced(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        await store.transact(lambda t: t.set("name", b"x"))

        async def refuse_if_taken(t: Txn) -> None:
            if await t.get("name") is not None:
                raise ConflictError("name taken", code="taken")

        with pytest.raises(ConflictError, match="name taken"):
            await store.transact(refuse_if_taken)

    run(tmp_path, body)


def test_read_and_run_script_waits_for_the_value_it_read(tmp_path: Path) -> None:
    """The gateway's one-step read (a value beside the rate-limit bucket) reveals nothing a failed
    fsync rolls back; the bucket write itself (durable=False) is not waited for."""
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        take = [2, 3600, T0, 1]
        fs.fail("fsync")
        wrote, seen = await both(store.set("kv:x", b"secret"),
                                 store.read_and_run_script(["kv:x"], RATE_TAKE_OP, ["rate:u"], take, durable=False))
        assert isinstance(wrote, AofWriteError)
        assert isinstance(seen, AofWriteError), f"returned {seen!r} built on a rolled-back write"

    run(tmp_path, body)


def test_read_and_run_script_does_not_wait_for_its_own_bucket(tmp_path: Path) -> None:
    async def body(store: EmbeddedStore, fs: FaultyFs) -> None:
        await store.set("kv:x", b"durable")
        fs.fail("fsync")  # the bucket's record will never be durable: not waited for (durable=False)
        got = await store.read_and_run_script(["kv:x"], RATE_TAKE_OP, ["rate:u"], [2, 3600, T0, 1], durable=False)
        assert got == ([b"durable"], [1, 1, 1800_000, 0])

    run(tmp_path, body)
