"""A worker started before its queue's first job picks that job up promptly.

The gateway's long poll on a queue nothing was ever enqueued to waits for
that queue's first enqueue (no 404, so no backoff: with this test's backoff
settings a backoff would wait a minute or more).  With jobs.strict_queues an
unknown queue is a 404 and the worker asks again every QUEUE_MISSING_POLL_S.
"""

from __future__ import annotations

from pathlib import Path

from helios_core.worker.client import JobsClient
from helios_core.worker.runtime import QUEUE_MISSING_POLL_S
from tests.unit.test_gateway_harness import Api
from tests.unit.test_worker_runtime import CountingClient, gw, until, worker


def test_first_job_of_a_queue_made_after_the_worker_started_runs_soon(tmp_path: Path) -> None:
    assert QUEUE_MISSING_POLL_S <= 1.0

    async def body(api: Api, jobs: JobsClient) -> None:
        async with worker(api, lambda p: p * 2, ("later",), backoff_initial_s=120, backoff_max_s=600) as (w, _):
            client = w.client
            assert isinstance(client, CountingClient)

            async def asked() -> bool:  # the worker is in its long poll on the missing queue
                return len(client.leases) >= 1

            await until(asked, "the worker to ask for the missing queue", timeout=30)
            job = (await jobs.enqueue_batch([{"queue": "later", "payload": 21}]))[0].job

            async def done() -> bool:
                return (await jobs.get(job["id"]))["state"] == "DONE"

            await until(done, "the queue's first job to be done", timeout=30)
            assert (await jobs.get(job["id"]))["result"] == 42

    gw(tmp_path, body)
