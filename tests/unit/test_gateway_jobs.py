"""The jobs API over HTTP (/api/v1/jobs): a real gateway on an unused port over an embedded store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from helios_core.gateway.app import rate_limit_settings
from helios_core.jobs.model import new_job_id
from helios_core.observability.metrics import REGISTRY
from helios_core.rbac import RoleStore, role_key
from helios_core.store import EmbeddedStore
from tests.unit.test_gateway_harness import Api, Response, run_gateway, test_config

JOBS = "/api/v1/jobs"
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Tokens:
    def __init__(self, admin: str, user: str, worker: str) -> None:
        self.admin, self.user, self.worker = admin, user, worker


async def tokens(api: Api) -> Tokens:
    return Tokens(await api.admin_token(), await api.make_user("producer", ["user"]),
                  await api.make_user("runner", ["worker"]))


async def enqueue(api: Api, token: str, queue: str, payload: Any = None, **extra: Any) -> dict[str, Any]:
    r = await api.call("POST", JOBS, token=token, json={"queue": queue, "payload": payload, **extra})
    assert r.code == 201, r.body
    return r.json()["job"]  # type: ignore[no-any-return]


async def lease(api: Api, token: str, queues: list[str], **extra: Any) -> list[dict[str, Any]]:
    r = await api.call("POST", f"{JOBS}/lease", token=token, json={"queues": queues, **extra})
    assert r.code == 200, r.body
    return r.json()["jobs"]  # type: ignore[no-any-return]


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def bad(r: Response, *words: str, code: str = "invalid_input", status: int = 400) -> None:
    assert r.code == status and r.error_code == code, (r.code, r.body)
    message = r.json()["error"]["message"]
    for w in words:
        assert w in message, (w, message)


# -- producers ----------------------------------------------------------------------------------------


def test_enqueue_get_and_dedup(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        before = metric("jobs_enqueued_total", queue="emails")
        r = await api.call("POST", JOBS, token=t.user, headers={"traceparent": PARENT},
                           json={"queue": "emails", "payload": {"to": "a@example.com"}, "priority": 5,
                                 "max_attempts": 3, "visibility_timeout": 60, "delay_seconds": 0})
        assert r.code == 201, r.body
        out = r.json()
        job = out["job"]
        assert out["created"] is True
        assert r.headers["Location"] == f"{JOBS}/{job['id']}"
        assert job["queue"] == "emails" and job["payload"] == {"to": "a@example.com"}
        assert job["state"] == "PENDING" and job["attempts"] == 0 and job["lease"] is None
        assert job["priority"] == 5 and job["max_attempts"] == 3 and job["visibility_timeout_s"] == 60
        assert job["trace"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")  # this hop's span, same trace
        assert metric("jobs_enqueued_total", queue="emails") == before + 1

        got = await api.call("GET", r.headers["Location"], token=t.worker)
        assert got.code == 200 and got.json() == {"job": job}

        first = await api.call("POST", JOBS, token=t.user, json={"queue": "emails", "payload": 1, "dedup_id": "d-1"})
        again = await api.call("POST", JOBS, token=t.user, json={"queue": "emails", "payload": 2, "dedup_id": "d-1"})
        assert first.code == 201 and again.code == 200
        assert again.json()["created"] is False
        assert again.json()["job"] == first.json()["job"]  # the first job, unchanged (payload 1)
        assert again.headers["Location"] == first.headers["Location"]
        assert metric("jobs_enqueued_total", queue="emails") == before + 2  # dedup hits do not count

        later = await enqueue(api, t.user, "emails", "later", delay_seconds=30)
        assert later["available_ms"] >= later["created_ms"] + 30000
        at = await enqueue(api, t.user, "emails", "at", run_at_ms=later["created_ms"] + 90000)
        assert at["available_ms"] == later["created_ms"] + 90000

    run_gateway(tmp_path, body)


@pytest.mark.parametrize(("doc", "words"), [
    ({"payload": 1}, ["queue", "queue name"]),
    ({"queue": "a:b", "payload": 1}, ["queue", "A-Z"]),
    ({"queue": "x" * 81, "payload": 1}, ["queue"]),
    ({"queue": "q\n", "payload": 1}, ["queue"]),
    ({"queue": 7, "payload": 1}, ["queue"]),
    ({"queue": "q"}, ["payload", "required"]),
    ({"queue": "q", "payload": 1, "delay_seconds": -1}, ["delay_seconds", "from 0"]),
    ({"queue": "q", "payload": 1, "delay_seconds": "5"}, ["delay_seconds"]),
    ({"queue": "q", "payload": 1, "delay_seconds": True}, ["delay_seconds"]),
    ({"queue": "q", "payload": 1, "delay_seconds": 1, "run_at_ms": 5}, ["not both"]),
    ({"queue": "q", "payload": 1, "run_at_ms": -5}, ["run_at_ms"]),
    ({"queue": "q", "payload": 1, "priority": 5000}, ["priority", "-1000 to 1000"]),
    ({"queue": "q", "payload": 1, "priority": "high"}, ["priority", "integer"]),
    ({"queue": "q", "payload": 1, "priority": 1.5}, ["priority"]),
    ({"queue": "q", "payload": 1, "max_attempts": 0}, ["max_attempts", "1 to 1000"]),
    ({"queue": "q", "payload": 1, "visibility_timeout": 0}, ["visibility_timeout"]),
    ({"queue": "q", "payload": 1, "visibility_timeout": 43201}, ["visibility_timeout"]),
    ({"queue": "q", "payload": 1, "dedup_id": ""}, ["dedup_id"]),
    ({"queue": "q", "payload": 1, "dedup_id": 12}, ["dedup_id", "string"]),
    ({"queue": "q", "payload": 1, "delay": 5}, ["unknown field(s) delay", "delay_seconds"]),
])
def test_enqueue_rejects_bad_fields(tmp_path: Path, doc: dict[str, Any], words: list[str]) -> None:
    async def body(api: Api) -> None:
        bad(await api.call("POST", JOBS, token=await api.admin_token(), json=doc), *words)

    run_gateway(tmp_path, body)


def test_enqueue_bodies_and_sizes(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        bad(await api.call("POST", JOBS, token=admin, body=b"{not json"), "invalid JSON")
        bad(await api.call("POST", JOBS, token=admin, body=b"[1]"), "JSON object")
        bad(await api.call("POST", JOBS, token=admin, body=b""), "got nothing")
        r = await api.call("POST", JOBS, token=admin, json={"queue": "big", "payload": "x" * 2000})
        bad(r, code="payload_too_large", status=413)
        assert (await api.call("POST", JOBS, token=admin, json={"queue": "big", "payload": "x" * 500})).code == 201

    run_gateway(tmp_path, body, **{"jobs.max_payload_bytes": 1024})


def test_batch_enqueue(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        r = await api.call("POST", f"{JOBS}/batch", token=t.user, json={"jobs": [
            {"queue": "b1", "payload": 1}, {"queue": "b2", "payload": 2, "dedup_id": "x"},
            {"queue": "b2", "payload": 3, "dedup_id": "y"}]})
        assert r.code == 201, r.body
        out = r.json()["jobs"]
        assert [(o["job"]["queue"], o["job"]["payload"], o["created"]) for o in out] == \
            [("b1", 1, True), ("b2", 2, True), ("b2", 3, True)]
        r = await api.call("POST", f"{JOBS}/batch", token=t.user, json={"jobs": [
            {"queue": "b2", "payload": 9, "dedup_id": "x"}, {"queue": "b1", "payload": 4}]})
        assert r.code == 201
        assert [(o["job"]["payload"], o["created"]) for o in r.json()["jobs"]] == [(2, False), (4, True)]

        # One bad item: 400 naming it, and nothing enqueued.
        r = await api.call("POST", f"{JOBS}/batch", token=t.user, json={"jobs": [
            {"queue": "b3", "payload": 1}, {"queue": "no:pe", "payload": 2}]})
        bad(r, "jobs[1].queue")
        r = await api.call("POST", f"{JOBS}/batch", token=t.user, json={"jobs": [
            {"queue": "b3", "payload": 1}, {"queue": "b3", "payload": 2, "priority": 9999}]})
        bad(r, "jobs[1].priority")
        bad(await api.call("POST", f"{JOBS}/batch", token=t.user, json={"jobs": [{"queue": "b3", "payload": 1}, 5]}),
            "jobs[1]", "JSON object")
        assert (await api.call("GET", f"{JOBS}/stats?queue=b3", token=t.admin)).error_code == "queue_not_found"
        bad(await api.call("POST", f"{JOBS}/batch", token=t.user, json={"jobs": []}), "jobs", "1 to 100")
        many = [{"queue": "b1", "payload": i} for i in range(101)]
        bad(await api.call("POST", f"{JOBS}/batch", token=t.user, json={"jobs": many}), "1 to 100")
        bad(await api.call("POST", f"{JOBS}/batch", token=t.user, json={"job": []}), "unknown field(s) job")

    run_gateway(tmp_path, body)


# -- workers ------------------------------------------------------------------------------------------


def test_lease_and_ack(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        job = await enqueue(api, t.user, "work", {"n": 1})
        assert [j["id"] for j in await lease(api, t.worker, ["work"])] == [job["id"]]
        # The first lease took it; a second finds nothing and, with no wait, answers at once.
        assert await lease(api, t.worker, ["work"]) == []

        other = await enqueue(api, t.user, "work", {"n": 2})
        start = api.clock()
        [got] = await lease(api, t.worker, ["work"], visibility_timeout=120)
        assert got["id"] == other["id"] and got["state"] == "IN_PROGRESS" and got["attempts"] == 1
        lease_info = got["lease"]
        assert lease_info["worker"] == "runner" and lease_info["token"]  # the default name: the user's
        assert start + 120000 <= lease_info["deadline_ms"] <= api.clock() + 120000
        shown = (await api.call("GET", f"{JOBS}/{got['id']}", token=t.worker)).json()["job"]
        assert "token" not in shown["lease"] and shown["lease"]["worker"] == "runner"

        before = metric("jobs_finished_total", queue="work", outcome="done")
        r = await api.call("POST", f"{JOBS}/{got['id']}/ack", token=t.worker,
                           json={"lease_token": lease_info["token"], "result": {"ok": True}})
        assert r.code == 200, r.body
        done = r.json()["job"]
        assert done["state"] == "DONE" and done["result"] == {"ok": True} and done["finished_ms"]
        assert metric("jobs_finished_total", queue="work", outcome="done") == before + 1
        # Acking again: the lease is gone.
        r = await api.call("POST", f"{JOBS}/{got['id']}/ack", token=t.worker,
                           json={"lease_token": lease_info["token"]})
        bad(r, code="lease_lost", status=409)

        named = await enqueue(api, t.user, "work", 3)
        [mine] = await lease(api, t.worker, ["work"], worker="box-7/pid-12", max=5)
        assert mine["id"] == named["id"] and mine["lease"]["worker"] == "box-7/pid-12"

    run_gateway(tmp_path, body)


@pytest.mark.parametrize(("doc", "words", "code", "status"), [
    ({}, ["queues"], "invalid_input", 400),
    ({"queues": []}, ["queues", "1 to 10"], "invalid_input", 400),
    ({"queues": "lq"}, ["queues"], "invalid_input", 400),
    ({"queues": [f"q{i}" for i in range(11)]}, ["queues", "1 to 10"], "invalid_input", 400),
    ({"queues": ["lq", "bad name"]}, ["queues[1]"], "invalid_input", 400),
    ({"queues": ["lq"], "max": 10000}, ["max", "1 to 100"], "invalid_input", 400),
    ({"queues": ["lq"], "max": 0}, ["max"], "invalid_input", 400),
    ({"queues": ["lq"], "max": "2"}, ["max", "integer"], "invalid_input", 400),
    ({"queues": ["lq"], "wait_seconds": 60}, ["wait_seconds", "0 to 20"], "invalid_input", 400),
    ({"queues": ["lq"], "wait_seconds": -1}, ["wait_seconds"], "invalid_input", 400),
    ({"queues": ["lq"], "wait_seconds": "5"}, ["wait_seconds"], "invalid_input", 400),
    ({"queues": ["lq"], "visibility_timeout": 0}, ["visibility_timeout"], "invalid_input", 400),
    ({"queues": ["lq"], "worker": ""}, ["worker"], "invalid_input", 400),
    ({"queues": ["lq"], "worker": 5}, ["worker"], "invalid_input", 400),
    ({"queues": ["lq"], "wait": 5}, ["unknown field(s) wait"], "invalid_input", 400),
])
def test_lease_rejects_bad_fields(tmp_path: Path, doc: dict[str, Any], words: list[str], code: str,
                                  status: int) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        await enqueue(api, admin, "lq", 1)
        bad(await api.call("POST", f"{JOBS}/lease", token=admin, json=doc), *words, code=code, status=status)

    run_gateway(tmp_path, body)


def test_fencing_a_stale_token_changes_nothing(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        job = await enqueue(api, t.user, "fence", "p")
        [first] = await lease(api, t.worker, ["fence"], visibility_timeout=5, worker="slow")
        api.clock.advance(6000)  # the lease ran out; another worker gets the job
        [second] = await lease(api, t.worker, ["fence"], visibility_timeout=60, worker="fast")
        assert second["id"] == job["id"] and second["attempts"] == 2
        stale, fresh = first["lease"]["token"], second["lease"]["token"]
        assert stale != fresh
        path = f"{JOBS}/{job['id']}"
        before = (await api.call("GET", path, token=t.admin)).json()["job"]
        for action, extra in (("ack", {"result": "late"}), ("nack", {"error": "late"}),
                              ("extend", {"visibility_timeout": 600})):
            r = await api.call("POST", f"{path}/{action}", token=t.worker, json={"lease_token": stale, **extra})
            bad(r, code="lease_lost", status=409)
        assert (await api.call("GET", path, token=t.admin)).json()["job"] == before  # unchanged
        assert before["lease"]["worker"] == "fast" and before["state"] == "IN_PROGRESS"
        r = await api.call("POST", f"{path}/ack", token=t.worker, json={"lease_token": fresh, "result": "ok"})
        assert r.code == 200 and r.json()["job"]["result"] == "ok"

    run_gateway(tmp_path, body)


def test_nack_retry_dlq_and_redrive(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        job = await enqueue(api, t.user, "flaky", "p", max_attempts=2)
        path = f"{JOBS}/{job['id']}"
        retried = metric("jobs_finished_total", queue="flaky", outcome="retried")
        failed = metric("jobs_finished_total", queue="flaky", outcome="failed")
        [got] = await lease(api, t.worker, ["flaky"])
        r = await api.call("POST", f"{path}/nack", token=t.worker,
                           json={"lease_token": got["lease"]["token"], "error": "boom", "retry_delay_seconds": 0})
        assert r.code == 200, r.body
        assert r.json()["job"]["state"] == "PENDING" and r.json()["job"]["last_error"] == "boom"
        assert metric("jobs_finished_total", queue="flaky", outcome="retried") == retried + 1
        [got] = await lease(api, t.worker, ["flaky"])
        assert got["attempts"] == 2
        r = await api.call("POST", f"{path}/nack", token=t.worker, json={"lease_token": got["lease"]["token"]})
        assert r.code == 200 and r.json()["job"]["state"] == "FAILED"
        assert metric("jobs_finished_total", queue="flaky", outcome="failed") == failed + 1

        dlq = (await api.call("GET", f"{JOBS}/dlq?queue=flaky", token=t.worker)).json()
        assert [j["id"] for j in dlq["jobs"]] == [job["id"]] and dlq["cursor"] is None
        bad(await api.call("POST", f"{path}/retry", token=t.worker), code="forbidden", status=403)
        r = await api.call("POST", f"{path}/retry", token=t.admin)
        assert r.code == 200 and r.json()["job"]["state"] == "PENDING" and r.json()["job"]["attempts"] == 0
        bad(await api.call("POST", f"{path}/retry", token=t.admin), code="job_state", status=409)

        # Fail it again, then redrive the whole DLQ of the queue.
        for _ in range(2):
            [got] = await lease(api, t.worker, ["flaky"])
            await api.call("POST", f"{path}/nack", token=t.worker,
                           json={"lease_token": got["lease"]["token"], "retry_delay_seconds": 0})
        assert (await api.call("GET", path, token=t.admin)).json()["job"]["state"] == "FAILED"
        bad(await api.call("POST", f"{JOBS}/dlq/redrive", token=t.admin, json={"queue": "a b"}), "queue")
        r = await api.call("POST", f"{JOBS}/dlq/redrive", token=t.admin, json={"queue": "flaky"})
        assert r.code == 200 and r.json() == {"redriven": 1}
        r = await api.call("POST", f"{JOBS}/dlq/redrive", token=t.admin)  # no body: every queue
        assert r.code == 200 and r.json() == {"redriven": 0}
        assert (await api.call("GET", f"{JOBS}/dlq?queue=flaky", token=t.admin)).json()["jobs"] == []

    run_gateway(tmp_path, body)


def test_nack_and_extend_fields(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        job = await enqueue(api, t.user, "ext", "p", visibility_timeout=30)
        [got] = await lease(api, t.worker, ["ext"])
        token, path = got["lease"]["token"], f"{JOBS}/{job['id']}"
        bad(await api.call("POST", f"{path}/nack", token=t.worker, json={"lease_token": token,
                                                                        "retry_delay_seconds": -1}),
            "retry_delay_seconds")
        bad(await api.call("POST", f"{path}/nack", token=t.worker, json={"lease_token": token, "error": 5}), "error")
        bad(await api.call("POST", f"{path}/ack", token=t.worker, json={}), "lease_token", "required")
        bad(await api.call("POST", f"{path}/ack", token=t.worker, json={"lease_token": 5}), "lease_token")
        bad(await api.call("POST", f"{path}/extend", token=t.worker, json={"lease_token": token,
                                                                          "visibility_timeout": 0}),
            "visibility_timeout")

        now = api.clock()
        r = await api.call("POST", f"{path}/extend", token=t.worker,
                           json={"lease_token": token, "visibility_timeout": 300})
        assert r.code == 200, r.body
        moved = r.json()["job"]["lease"]
        assert moved["deadline_ms"] >= now + 300000 and "token" not in moved
        r = await api.call("POST", f"{path}/extend", token=t.worker, json={"lease_token": token})
        assert r.code == 200  # the job's own visibility timeout (30 s)
        assert now + 30000 <= r.json()["job"]["lease"]["deadline_ms"] < now + 300000
        r = await api.call("POST", f"{path}/ack", token=t.worker, json={"lease_token": token})
        assert r.code == 200 and r.json()["job"]["state"] == "DONE"

    run_gateway(tmp_path, body)


def test_batch_ack_mixed_outcomes(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        for i in range(3):
            await enqueue(api, t.user, "many", i)
        leased = await lease(api, t.worker, ["many"], max=3)
        assert len(leased) == 3
        a, b, c = leased
        unknown = new_job_id(api.clock())
        before = metric("jobs_finished_total", queue="many", outcome="done")
        r = await api.call("POST", f"{JOBS}/ack", token=t.worker, json={"acks": [
            {"id": a["id"], "lease_token": a["lease"]["token"], "result": "A"},
            {"id": b["id"], "lease_token": "stale-token"},
            {"id": unknown, "lease_token": "whatever"},
            {"id": c["id"], "lease_token": c["lease"]["token"]}]})
        assert r.code == 200, r.body
        results = r.json()["results"]
        assert results[0] == {"id": a["id"], "ok": True, "state": "DONE"}
        assert results[1]["id"] == b["id"] and results[1]["ok"] is False
        assert results[1]["error"]["code"] == "lease_lost" and results[1]["error"]["message"]
        assert results[2]["id"] == unknown and results[2]["ok"] is False
        assert results[2]["error"]["code"] in ("job_not_found", "not_found")
        assert results[3] == {"id": c["id"], "ok": True, "state": "DONE"}
        assert metric("jobs_finished_total", queue="many", outcome="done") == before + 2
        got = (await api.call("GET", f"{JOBS}/{a['id']}", token=t.worker)).json()["job"]
        assert got["state"] == "DONE" and got["result"] == "A"
        assert (await api.call("GET", f"{JOBS}/{b['id']}", token=t.worker)).json()["job"]["state"] == "IN_PROGRESS"

        one = {"id": b["id"], "lease_token": b["lease"]["token"]}
        r = await api.call("POST", f"{JOBS}/ack", token=t.worker, json={"acks": [one, one]})
        assert r.code == 200, r.body
        twice = r.json()["results"]
        assert twice[0] == {"id": b["id"], "ok": True, "state": "DONE"}
        assert twice[1]["ok"] is False and twice[1]["error"]["code"] == "lease_lost"  # acked once only
        assert metric("jobs_finished_total", queue="many", outcome="done") == before + 3
        bad(await api.call("POST", f"{JOBS}/ack", token=t.worker, json={"acks": []}), "acks", "1 to 100")
        bad(await api.call("POST", f"{JOBS}/ack", token=t.worker, json={"acks": [one] * 101}), "1 to 100")
        bad(await api.call("POST", f"{JOBS}/ack", token=t.worker, json={"acks": [{"id": b["id"]}]}),
            "acks[0].lease_token")
        bad(await api.call("POST", f"{JOBS}/ack", token=t.worker, json={"acks": [{**one, "x": 1}]}),
            "acks[0].unknown field(s) x")
        bad(await api.call("POST", f"{JOBS}/ack", token=t.worker, json={"acks": ["nope"]}), "acks[0]")

    run_gateway(tmp_path, body)


def test_long_poll_is_woken_by_an_enqueue(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        await enqueue(api, t.user, "poll", "warm-up")
        assert len(await lease(api, t.worker, ["poll"])) == 1  # the queue exists and is empty now

        async def producer() -> dict[str, Any]:
            await asyncio.sleep(0.2)
            return await enqueue(api, t.user, "poll", "wake up")

        got, made = await asyncio.gather(lease(api, t.worker, ["poll"], wait_seconds=5), producer())
        assert [j["id"] for j in got] == [made["id"]]
        assert got[0]["lease"]["token"]

    run_gateway(tmp_path, body)


def test_long_poll_on_a_queue_that_does_not_exist_yet_wakes_on_its_first_enqueue(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        assert await lease(api, t.worker, ["brand-new"]) == []  # 200 and nothing: not a 404

        async def producer() -> dict[str, Any]:
            await asyncio.sleep(0.2)
            return await enqueue(api, t.user, "brand-new", "first")

        got, made = await asyncio.gather(lease(api, t.worker, ["other-new", "brand-new"], wait_seconds=5),
                                         producer())
        assert [j["id"] for j in got] == [made["id"]]

    run_gateway(tmp_path, body)


def test_long_poll_ends_when_the_gateway_drains(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        await enqueue(api, t.user, "quiet", 1)
        await lease(api, t.worker, ["quiet"])
        gw = api.service.gateway
        poll = asyncio.ensure_future(lease(api, t.worker, ["quiet"], wait_seconds=20))
        while gw.inflight == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        gw.drain()
        assert await asyncio.wait_for(poll, 10) == []  # well before the 20 s wait

    run_gateway(tmp_path, body)


# -- inspection, administration, permissions ----------------------------------------------------------


def test_a_long_poll_whose_client_left_leases_nothing(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        await enqueue(api, t.user, "left", 1)
        await lease(api, t.worker, ["left"])
        gw = api.service.gateway
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        doc = b'{"queues": ["left"], "wait_seconds": 20}'
        writer.write(b"POST /api/v1/jobs/lease HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t.worker.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(doc) + doc)
        await writer.drain()
        while gw.inflight == 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # past authentication, waiting in lease_wait
        writer.close()
        while gw.inflight:
            await asyncio.sleep(0.01)
        job = await enqueue(api, t.user, "left", 2)
        await asyncio.sleep(0.1)
        assert (await api.call("GET", f"{JOBS}/{job['id']}", token=t.admin)).json()["job"]["state"] == "PENDING"
        [got] = await lease(api, t.worker, ["left"])
        assert got["id"] == job["id"] and got["attempts"] == 1

    run_gateway(tmp_path, body)


def test_list_and_stats(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        ids = [(await enqueue(api, t.user, "listed", i))["id"] for i in range(3)]
        await lease(api, t.worker, ["listed"])
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            path = f"{JOBS}?queue=listed&limit=1" + (f"&cursor={cursor}" if cursor else "")
            page = (await api.call("GET", path, token=t.worker)).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids)
        pending = (await api.call("GET", f"{JOBS}?queue=listed&state=PENDING", token=t.worker)).json()["jobs"]
        in_progress = (await api.call("GET", f"{JOBS}?queue=listed&state=IN_PROGRESS", token=t.worker)).json()
        assert len(pending) == 2 and len(in_progress["jobs"]) == 1
        assert all(j["state"] == "PENDING" for j in pending)
        assert "token" not in in_progress["jobs"][0]["lease"]

        bad(await api.call("GET", JOBS, token=t.worker), "queue")
        bad(await api.call("GET", f"{JOBS}?queue=listed&state=LOST", token=t.worker), "state", "PENDING")
        bad(await api.call("GET", f"{JOBS}?queue=listed&limit=0", token=t.worker), "limit", "1 to 1000")
        bad(await api.call("GET", f"{JOBS}?queue=listed&limit=1001", token=t.worker), "limit")
        bad(await api.call("GET", f"{JOBS}?queue=unknown", token=t.worker), code="queue_not_found", status=404)
        bad(await api.call("GET", f"{JOBS}/dlq", token=t.worker), "queue")
        bad(await api.call("GET", f"{JOBS}/dlq?queue=unknown", token=t.worker), code="queue_not_found", status=404)

        r = await api.call("GET", f"{JOBS}/stats?queue=listed", token=t.worker)
        assert r.code == 200, r.body
        [s] = r.json()["queues"]
        assert {k: s[k] for k in ("queue", "pending", "delayed", "in_progress", "done", "failed")} == \
            {"queue": "listed", "pending": 2, "delayed": 0, "in_progress": 1, "done": 0, "failed": 0}
        assert isinstance(s["oldest_pending_age_seconds"], int | float) and s["oldest_pending_age_seconds"] >= 0
        every = (await api.call("GET", f"{JOBS}/stats", token=t.worker)).json()["queues"]
        assert "listed" in [q["queue"] for q in every]
        bad(await api.call("GET", f"{JOBS}/stats?queue=unknown", token=t.worker), code="queue_not_found", status=404)
        bad(await api.call("GET", f"{JOBS}/stats?queue=a:b", token=t.worker), "queue")

    run_gateway(tmp_path, body)


def test_cancel_and_unknown_jobs(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        job = await enqueue(api, t.user, "cq", 1)
        path = f"{JOBS}/{job['id']}"
        before = metric("jobs_finished_total", queue="cq", outcome="cancelled")
        bad(await api.call("POST", f"{path}/cancel", token=t.worker), code="forbidden", status=403)
        r = await api.call("POST", f"{path}/cancel", token=t.admin)
        assert r.code == 200 and r.json()["job"]["state"] == "CANCELLED"
        assert metric("jobs_finished_total", queue="cq", outcome="cancelled") == before + 1
        bad(await api.call("POST", f"{path}/cancel", token=t.admin), code="job_state", status=409)
        assert await lease(api, t.worker, ["cq"]) == []

        missing = new_job_id(api.clock())
        for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry")):
            r = await api.call(method, f"{JOBS}/{missing}{suffix}", token=t.admin)
            assert r.code == 404 and r.error_code == "job_not_found", (suffix, r.body)
        for not_an_id in ("nope", "x" * 26, missing.lower(), "%7Bid%7D"):
            bad(await api.call("GET", f"{JOBS}/{not_an_id}", token=t.admin), code="job_not_found", status=404)
            r = await api.call("POST", f"{JOBS}/{not_an_id}/ack", token=t.worker, json={"lease_token": "t"})
            bad(r, code="job_not_found", status=404)
        # The fixed paths are not taken for job ids.
        assert (await api.call("GET", f"{JOBS}/stats", token=t.admin)).code == 200
        bad(await api.call("GET", f"{JOBS}/batch", token=t.admin), code="method_not_allowed", status=405)
        bad(await api.call("GET", f"{JOBS}/lease", token=t.admin), code="method_not_allowed", status=405)

    run_gateway(tmp_path, body)


def test_roles(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        readonly = await api.make_user("reader", ["readonly"])
        job = await enqueue(api, t.user, "rbac", 1)  # user: enqueue
        bad(await api.call("POST", f"{JOBS}/lease", token=t.user, json={"queues": ["rbac"]}),
            "jobs:work", code="forbidden", status=403)
        bad(await api.call("GET", f"{JOBS}/{job['id']}", token=t.user), "jobs:read", code="forbidden", status=403)
        bad(await api.call("POST", JOBS, token=t.worker, json={"queue": "rbac", "payload": 1}),
            "jobs:enqueue", code="forbidden", status=403)
        [got] = await lease(api, t.worker, ["rbac"])  # worker: lease, read
        assert got["id"] == job["id"]
        assert (await api.call("GET", f"{JOBS}/stats", token=t.worker)).code == 200
        bad(await api.call("POST", f"{JOBS}/dlq/redrive", token=t.worker), code="forbidden", status=403)
        for method, path in (("POST", JOBS), ("POST", f"{JOBS}/lease"), ("GET", f"{JOBS}/stats")):
            r = await api.call(method, path, token=readonly, json={} if method == "POST" else None)
            assert r.code == 403, (path, r.body)
        assert (await api.call("GET", f"{JOBS}/stats")).code == 401

    run_gateway(tmp_path, body)


# -- the gateway around the queue ---------------------------------------------------------------------


def test_reaper_expires_leases_and_refreshes_depth(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        t = await tokens(api)
        job = await enqueue(api, t.user, "reaped", 1)
        await enqueue(api, t.user, "reaped", 2, delay_seconds=3600)
        [got] = await lease(api, t.worker, ["reaped"], visibility_timeout=1)
        assert got["id"] == job["id"]
        expired = metric("jobs_finished_total", queue="reaped", outcome="expired")
        api.clock.advance(2000)
        reaper = api.service.reaper
        await reaper.tick()
        await reaper.refresh_depth()
        back = (await api.call("GET", f"{JOBS}/{job['id']}", token=t.admin)).json()["job"]
        assert back["state"] == "PENDING" and back["lease"] is None and back["attempts"] == 1
        # The background reaper may have moved it first: together they count it once.
        assert metric("jobs_finished_total", queue="reaped", outcome="expired") == expired + 1
        assert metric("worker_job_queue_depth", queue="reaped", state="pending") == 1
        assert metric("worker_job_queue_depth", queue="reaped", state="delayed") == 1
        text = (await api.call("GET", "/metrics")).body.decode()
        assert 'worker_job_queue_depth{queue="reaped",state="in_progress"} 0.0' in text

        async def broken(now_ms: int, queues: Any = None) -> int:
            raise RuntimeError("store away")

        api.service.gateway.jobs.expire = broken  # type: ignore[method-assign]
        await reaper.tick()  # logged, not raised
        await reaper.tick()

    run_gateway(tmp_path, body)


def test_reaper_stops_with_the_gateway(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        reaper = api.service.reaper
        assert reaper._task is not None and not reaper._task.done()
        await api.service.shutdown(1)
        assert reaper._task is None
        await reaper.stop()  # twice is fine

    run_gateway(tmp_path, body)


def test_workers_get_a_larger_rate_limit_by_default() -> None:
    settings = rate_limit_settings(test_config())
    assert settings.roles["worker"].limit == 60000 and settings.roles["worker"].window_s == 60
    assert settings.policy_for(("user:runner",), ("user", "worker")).name == "worker"
    configured = rate_limit_settings(test_config(**{"ratelimit.roles": ["worker 50 1"]}))
    assert configured.roles["worker"].limit == 50


def test_a_data_dir_from_before_the_worker_role_gets_it(tmp_path: Path) -> None:
    async def main() -> None:
        config = test_config()
        store = await EmbeddedStore.open(tmp_path / "data", config.atlas)
        try:
            roles = RoleStore(store)
            await roles.seed()
            await store.delete(role_key("worker"))  # as a data dir seeded before the role existed
            edited = (await roles.get("user")).build("user", ["kv:read"], "edited", True)
            await roles.put(edited)
            assert await roles.seed() == ["worker"]
            assert (await roles.get("worker")).permissions == ("jobs:work", "jobs:read")
            assert (await roles.get("user")).permissions == ("kv:read",)  # an edit survives
        finally:
            await store.close()

    asyncio.run(main())


def test_a_queue_name_with_a_trailing_newline_is_refused_everywhere(tmp_path: Path) -> None:
    # Issue 10: a pattern anchored with "$" lets "emails\n" through; names must match whole.
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        await enqueue(api, admin, "emails", 1)
        for r in (await api.call("POST", JOBS, token=admin, json={"queue": "emails\n", "payload": 1}),
                  await api.call("POST", f"{JOBS}/batch", token=admin, json={"jobs": [{"queue": "emails\n",
                                                                                      "payload": 1}]}),
                  await api.call("POST", f"{JOBS}/lease", token=admin, json={"queues": ["emails\n"]}),
                  await api.call("GET", f"{JOBS}?queue=emails%0A", token=admin),
                  await api.call("GET", f"{JOBS}/stats?queue=emails%0A", token=admin),
                  await api.call("POST", f"{JOBS}/dlq/redrive", token=admin, json={"queue": "emails\n"})):
            bad(r, "queue", "1 to 80 characters")

    run_gateway(tmp_path, body)
