"""GET /api/v1/jobs/stats's counts come from one instant, on every Store backend.

Jobs move (pending -> in progress -> done) while stats are read; every
snapshot must account for each job exactly once.  Read one index after
another, they did not (done=20008 beside in_progress=56 with 20,008 jobs).
"""

from __future__ import annotations

import asyncio
import random

from helios_core.clock import wall_ms
from helios_core.config import JobsConfig
from helios_core.jobs import AckItem, EnqueueRequest, JobQueue
from helios_core.store import Store

JOBS = 100


def test_stats_add_up_while_jobs_move(run_store) -> None:
    async def body(s: Store) -> None:
        q = JobQueue(s, JobsConfig(), random.Random(1))
        first, _ = (await q.enqueue_batch([EnqueueRequest("snap", {"n": i}) for i in range(JOBS)], wall_ms()))[0]
        done = asyncio.Event()

        async def mover() -> None:
            while True:
                leased = await q.lease(["snap"], 3, wall_ms(), worker="w")
                if not leased:
                    break
                await asyncio.sleep(0)  # let a stats read land between the lease and the ack
                await q.ack_batch([AckItem(j.id, j.lease.token) for j in leased if j.lease], wall_ms())
            done.set()

        task = asyncio.create_task(mover())
        seen = 0
        while not done.is_set():
            (st,) = await q.stats(wall_ms(), "snap")
            assert st.pending + st.delayed + st.in_progress + st.done + st.failed == JOBS, st
            if st.pending:
                assert st.oldest_pending_age_ms is not None and st.oldest_pending_age_ms >= 0
            seen += 1
            await asyncio.sleep(0)  # the embedded store answers without yielding: let the mover run
        await task
        (st,) = await q.stats(wall_ms(), "snap")
        assert (st.pending, st.in_progress, st.done, st.oldest_pending_age_ms) == (0, 0, JOBS, None)
        assert seen >= 1 and first.id

    run_store(body)
