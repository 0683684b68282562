"""OWASP API1:2023 Broken Object Level Authorization: a caller reaches only the objects its grants name.

Jobs: the ``@`` scope of a ``jobs:`` permission is a queue-name prefix
(``jobs:enqueue@emails`` covers ``emails`` and ``emails-eu``, not ``billing``), and
every jobs endpoint checks it against the queue it touches.  A job on a queue the
caller may not see answers exactly like a job that does not exist (404), so its
id reveals nothing.  Dedup ids are scoped to the principal that produced them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.security.conftest import Api, run_gateway, user_with

JOBS = "/api/v1/jobs"


async def _enqueue(api: Api, token: str, queue: str, payload: Any = None, **extra: Any) -> dict[str, Any]:
    r = await api.call("POST", JOBS, token=token, json={"queue": queue, "payload": payload, **extra})
    assert r.code in (200, 201), r.body
    return r.json()  # type: ignore[no-any-return]


async def _lease(api: Api, token: str, queue: str) -> dict[str, Any]:
    r = await api.call("POST", f"{JOBS}/lease", token=token, json={"queues": [queue]})
    assert r.code == 200 and len(r.json()["jobs"]) == 1, r.body
    return r.json()["jobs"][0]  # type: ignore[no-any-return]


def _denied(r: Any, *words: str) -> None:
    assert r.code == 403 and r.error_code == "forbidden", (r.code, r.body)
    for w in words:
        assert w in r.json()["error"]["message"], (w, r.body)


def _hidden(r: Any) -> None:
    assert r.code == 404 and r.error_code == "job_not_found", (r.code, r.body)


def test_enqueue_scope_is_a_queue_prefix(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        emails = await user_with(api, "mailer", ["jobs:enqueue@emails"])
        # Accepted before, but matched nothing: every enqueue was refused.
        for queue in ("emails", "emails-eu"):
            assert (await _enqueue(api, emails, queue, 1))["created"] is True
        r = await api.call("POST", JOBS, token=emails, json={"queue": "billing", "payload": 1})
        _denied(r, "jobs:enqueue", "'billing'")
        # A batch is refused whole when one queue in it is not covered: nothing is created.
        r = await api.call("POST", f"{JOBS}/batch", token=emails, json={"jobs": [
            {"queue": "emails", "payload": "ok"}, {"queue": "billing", "payload": "no"}]})
        _denied(r, "jobs:enqueue", "'billing'")
        admin = await api.admin_token()
        listed = await api.call("GET", f"{JOBS}?queue=emails", token=admin)
        assert [j["payload"] for j in listed.json()["jobs"]] == [1]

    run_gateway(tmp_path, body)


def test_worker_scope_covers_lease_finish_and_reads(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        scoped = await user_with(api, "mailworker", ["jobs:work@emails", "jobs:read@emails"])
        everywhere = await user_with(api, "anyworker", ["jobs:work", "jobs:read"])
        mail = (await _enqueue(api, admin, "emails", "m"))["job"]
        bill = (await _enqueue(api, admin, "billing", "b"))["job"]

        _denied(await api.call("POST", f"{JOBS}/lease", token=scoped, json={"queues": ["emails", "billing"]}),
                "jobs:work", "'billing'")
        assert (await _lease(api, scoped, "emails"))["id"] == mail["id"]

        # Another worker holds the billing job; the scoped one learns its id and token somehow.
        held = await _lease(api, everywhere, "billing")
        token = held["lease"]["token"]
        for path, doc in (("ack", {"lease_token": token}), ("nack", {"lease_token": token}),
                          ("extend", {"lease_token": token, "visibility_timeout": 60})):
            _hidden(await api.call("POST", f"{JOBS}/{bill['id']}/{path}", token=scoped, json=doc))
        r = await api.call("POST", f"{JOBS}/ack", token=scoped,
                           json={"acks": [{"id": bill["id"], "lease_token": token}]})
        assert r.code == 200 and r.json()["results"][0]["error"]["code"] == "job_not_found", r.body
        # Nothing changed: the lease is still the other worker's.
        got = await api.call("GET", f"{JOBS}/{bill['id']}", token=admin)
        assert got.json()["job"]["state"] == "IN_PROGRESS" and got.json()["job"]["attempts"] == 1

        _hidden(await api.call("GET", f"{JOBS}/{bill['id']}", token=scoped))
        assert (await api.call("GET", f"{JOBS}/{mail['id']}", token=scoped)).code == 200
        _denied(await api.call("GET", f"{JOBS}?queue=billing", token=scoped), "jobs:read", "'billing'")
        _denied(await api.call("GET", f"{JOBS}/dlq?queue=billing", token=scoped), "jobs:read", "'billing'")
        _denied(await api.call("GET", f"{JOBS}/stats?queue=billing", token=scoped), "jobs:read", "'billing'")
        stats = await api.call("GET", f"{JOBS}/stats", token=scoped)
        assert [s["queue"] for s in stats.json()["queues"]] == ["emails"], stats.body
        assert (await api.call("POST", f"{JOBS}/{bill['id']}/ack", token=everywhere,
                               json={"lease_token": token})).code == 200

    run_gateway(tmp_path, body)


def test_admin_scope_covers_cancel_and_redrive(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        ops = await user_with(api, "mailops", ["jobs:admin@emails", "jobs:read@emails"])
        # One failed job in each queue's DLQ.
        failed = {}
        for queue in ("emails", "billing"):
            await _enqueue(api, admin, queue, "f", max_attempts=1)
            job = await _lease(api, admin, queue)
            r = await api.call("POST", f"{JOBS}/{job['id']}/nack", token=admin,
                               json={"lease_token": job["lease"]["token"], "error": "boom"})
            assert r.json()["job"]["state"] == "FAILED", r.body
            failed[queue] = job["id"]
        bill = (await _enqueue(api, admin, "billing", "b"))["job"]
        _hidden(await api.call("POST", f"{JOBS}/{bill['id']}/cancel", token=ops))
        _hidden(await api.call("POST", f"{JOBS}/{failed['billing']}/retry", token=ops))
        assert (await api.call("GET", f"{JOBS}/{bill['id']}", token=admin)).json()["job"]["state"] == "PENDING"
        _denied(await api.call("POST", f"{JOBS}/dlq/redrive", token=ops, json={"queue": "billing"}),
                "jobs:admin", "'billing'")
        r = await api.call("POST", f"{JOBS}/dlq/redrive", token=ops)
        assert r.code == 200 and r.json() == {"redriven": 1}, r.body  # emails only
        left = await api.call("GET", f"{JOBS}/dlq?queue=billing", token=admin)
        assert len(left.json()["jobs"]) == 1
        mine = (await _enqueue(api, admin, "emails", "c"))["job"]
        assert (await api.call("POST", f"{JOBS}/{mine['id']}/cancel", token=ops)).code == 200

    run_gateway(tmp_path, body)


def test_dedup_ids_are_scoped_to_their_producer(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        alice = await user_with(api, "alice", ["jobs:enqueue"])
        bob = await user_with(api, "bob", ["jobs:enqueue"])
        first = await _enqueue(api, alice, "emails", {"from": "alice"}, dedup_id="invoice-7")
        assert first["created"] is True
        # Today bob got alice's job back: her payload won and he learnt her job's id.
        theirs = await _enqueue(api, bob, "emails", {"from": "bob"}, dedup_id="invoice-7")
        assert theirs["created"] is True, theirs
        assert theirs["job"]["id"] != first["job"]["id"] and theirs["job"]["payload"] == {"from": "bob"}
        # One producer's retries still collapse to one job.
        again = await _enqueue(api, alice, "emails", {"from": "alice, retried"}, dedup_id="invoice-7")
        assert again["created"] is False and again["job"]["id"] == first["job"]["id"]
        assert again["job"]["payload"] == {"from": "alice"}
        bob_again = await _enqueue(api, bob, "emails", {"from": "bob"}, dedup_id="invoice-7")
        assert bob_again["created"] is False and bob_again["job"]["id"] == theirs["job"]["id"]

    run_gateway(tmp_path, body)
