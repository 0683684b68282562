"""JobsClient against a real gateway (in process, on an unused port): every method, every error mapping."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tornado.testing import bind_unused_port

from helios_core.errors import AuthenticationError, InvalidInputError, PermissionDeniedError, RateLimitedError
from helios_core.jobs import JobNotFoundError, JobStateError, LeaseLostError, QueueNotFoundError
from helios_core.worker.client import (
    AckRequest,
    GatewayUnavailableError,
    JobsClient,
    enqueue_body,
    is_transient,
)
from tests.unit.test_gateway_harness import Api, run_gateway


def with_client(tmp_path: Path, body: object, **overrides: object) -> None:
    async def main(api: Api) -> None:
        async with JobsClient(api.base, await api.admin_token()) as jobs:
            await body(api, jobs)  # type: ignore[operator]

    run_gateway(tmp_path, main, timeout=60, **overrides)


def test_producer_worker_and_operator_round_trip(tmp_path: Path) -> None:
    async def body(api: Api, jobs: JobsClient) -> None:
        first = await jobs.enqueue("emails", {"to": "a@example.com"}, dedup_id="d1", priority=5)
        assert first.created and first.job["state"] == "PENDING" and first.job["priority"] == 5
        again = await jobs.enqueue("emails", {"to": "other"}, dedup_id="d1")
        assert not again.created and again.job["id"] == first.job["id"]
        batch = await jobs.enqueue_batch([enqueue_body("emails", i, max_attempts=1) for i in range(3)])
        assert [e.created for e in batch] == [True, True, True]

        leased = await jobs.lease(["emails"], max_jobs=10, visibility_timeout=60, worker="w1")
        assert len(leased) == 4 and leased[0]["id"] == first.job["id"]  # highest priority first
        assert all(j["lease"]["token"] and j["lease"]["worker"] == "w1" for j in leased)
        a, b, c, d = leased
        extended = await jobs.extend(a["id"], a["lease"]["token"], visibility_timeout=120)
        assert extended["lease"]["deadline_ms"] > a["lease"]["deadline_ms"] and "token" not in extended["lease"]
        assert (await jobs.ack(a["id"], a["lease"]["token"], {"sent": True}))["state"] == "DONE"
        results = await jobs.ack_batch([AckRequest(b["id"], b["lease"]["token"], 1),
                                        AckRequest(c["id"], "not-the-token")])
        assert results[0].ok and results[0].state == "DONE"
        assert not results[1].ok and isinstance(results[1].error, LeaseLostError)
        failed = await jobs.nack(d["id"], d["lease"]["token"], error="boom", retry_delay_seconds=0)
        assert failed["state"] == "FAILED" and failed["last_error"] == "boom"  # max_attempts 1: to the DLQ

        got = await jobs.get(a["id"])
        assert got["result"] == {"sent": True}
        page = await jobs.list("emails", state="DONE", limit=1)
        assert len(page.jobs) == 1 and page.cursor is not None
        rest = await jobs.list("emails", state="DONE", cursor=page.cursor)
        assert {j["id"] for j in page.jobs + rest.jobs} == {a["id"], b["id"]}
        dlq = await jobs.dlq("emails")
        assert [j["id"] for j in dlq.jobs] == [d["id"]] and dlq.cursor is None
        assert (await jobs.retry(d["id"]))["state"] == "PENDING"
        assert (await jobs.cancel(d["id"]))["state"] == "CANCELLED"
        assert await jobs.redrive("emails") == 0
        stats = await jobs.stats("emails")
        assert stats[0]["queue"] == "emails" and stats[0]["in_progress"] == 1  # c: its ack had the wrong token
        assert await jobs.lease(["emails"], wait_seconds=0) == []

    with_client(tmp_path, body)


def test_errors_become_helios_errors(tmp_path: Path) -> None:
    async def body(api: Api, jobs: JobsClient) -> None:
        job = (await jobs.enqueue("q", None)).job
        with pytest.raises(LeaseLostError) as lost:
            await jobs.ack(job["id"], "stale")
        assert lost.value.status == 409 and lost.value.code == "lease_lost" and not is_transient(lost.value)
        with pytest.raises(JobStateError):
            await jobs.retry(job["id"])
        with pytest.raises(JobNotFoundError):
            await jobs.get("01M8E2WKENWG50FS5EWZFGTJG8")
        with pytest.raises(QueueNotFoundError):
            await jobs.stats("never-used")
        assert await jobs.lease(["never-used"]) == []  # a lease waits for the queue's first job instead
        with pytest.raises(InvalidInputError, match="max"):
            await jobs.lease(["q"], max_jobs=101)
        async with JobsClient(api.base, "not-a-token") as anon:
            with pytest.raises(AuthenticationError):
                await anon.lease(["q"])
        producer = await api.make_user("producer", ["user"])
        async with JobsClient(api.base, producer) as p:
            assert (await p.enqueue("q", 1)).created
            with pytest.raises(PermissionDeniedError):
                await p.lease(["q"])

    with_client(tmp_path, body)


def test_rate_limit_gives_retry_after(tmp_path: Path) -> None:
    async def body(api: Api, jobs: JobsClient) -> None:
        with pytest.raises(RateLimitedError) as limited:
            for _ in range(20):
                await jobs.stats()
        assert limited.value.retry_after_ms >= 1000 and is_transient(limited.value)

    with_client(tmp_path, body, **{"ratelimit.default": (5, 60)})


def test_unreachable_gateway_is_transient() -> None:
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there now

    async def main() -> None:
        async with JobsClient(f"http://127.0.0.1:{port}", "t", timeout=5) as jobs:
            with pytest.raises(GatewayUnavailableError, match="cannot reach the gateway") as down:
                await jobs.lease(["q"])
        assert down.value.code == "unreachable" and is_transient(down.value)

    asyncio.run(main())
