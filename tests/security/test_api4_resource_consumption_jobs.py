"""OWASP API4:2023 Unrestricted Resource Consumption: the job queue.

A plain user once made 35,000 queues with batch enqueues; then the gateway
idled at 40-55% CPU (its reaper visited every name ever used each second),
/metrics grew to 15 MB and /healthz stalled for 5 s.  Now live queues are
capped (jobs.max_queues, 429 beyond it), empty queues are forgotten so the
reaper and stats follow the queues that hold jobs, and per-queue metric labels
are capped.
"""

from __future__ import annotations

from pathlib import Path

from helios_core.jobs.labels import MAX_QUEUE_LABELS, OTHER
from helios_core.observability.metrics import REGISTRY
from tests.security.conftest import Api, run_gateway, user_with_roles

JOBS = "/api/v1/jobs"


def _batch(queues: list[str]) -> dict[str, object]:
    return {"jobs": [{"queue": q, "payload": 1} for q in queues]}


def test_a_plain_user_cannot_create_queues_without_bound(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        user = await user_with_roles(api, "flooder", ["user"])
        admin = await api.admin_token()
        for start in range(0, 20, 10):
            r = await api.call("POST", f"{JOBS}/batch", token=user,
                               json=_batch([f"f{i}" for i in range(start, start + 10)]))
            assert r.code == 201, r.body
        r = await api.call("POST", f"{JOBS}/batch", token=user, json=_batch(["f0", "f20"]))
        assert r.code == 429 and r.error_code == "too_many_queues", r.body
        message = r.json()["error"]["message"]
        assert "'f20'" in message and "jobs.max_queues is 20" in message, message
        assert len((await api.call("GET", f"{JOBS}?queue=f0", token=admin)).json()["jobs"]) == 1, "all or nothing"
        # Queues that exist take more work; a configured queue is always accepted.
        assert (await api.call("POST", JOBS, token=user, json={"queue": "f3", "payload": 2})).code == 201
        assert (await api.call("POST", JOBS, token=user, json={"queue": "reports", "payload": 2})).code == 201

        # The operator cancels the flood; once the cancelled jobs are past retention the queues are forgotten
        # by the next stats (the reaper asks every 15 s), and the reaper only visits what holds jobs.
        for i in range(20):
            listed = (await api.call("GET", f"{JOBS}?queue=f{i}", token=admin)).json()["jobs"]
            for job in listed:
                assert (await api.call("POST", f"{JOBS}/{job['id']}/cancel", token=admin)).code == 200
        api.clock.advance(60_000 + 1)
        stats = await api.call("GET", f"{JOBS}/stats", token=admin)
        assert stats.code == 200, stats.body
        assert await api.service.gateway.jobs.queues() == ["reports"]
        assert (await api.call("POST", JOBS, token=user, json={"queue": "fresh", "payload": 3})).code == 201

    run_gateway(tmp_path, body, **{"jobs.max_queues": 20, "jobs.queues": ["reports"],
                                   "jobs.done_retention_seconds": 60})


def test_per_queue_metric_labels_are_capped(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        user = await user_with_roles(api, "labeller", ["user"])
        names = [f"lbl{i}" for i in range(MAX_QUEUE_LABELS + 30)]
        for start in range(0, len(names), 100):
            r = await api.call("POST", f"{JOBS}/batch", token=user, json=_batch(names[start:start + 100]))
            assert r.code == 201, r.body
        labelled = {q for q in names if REGISTRY.get_sample_value("jobs_enqueued_total", {"queue": q})}
        assert len(labelled) <= MAX_QUEUE_LABELS, len(labelled)
        assert (REGISTRY.get_sample_value("jobs_enqueued_total", {"queue": OTHER}) or 0) >= 30
        # The reaper's depth gauges go through the same cap: the queues past it are summed into OTHER.
        await api.service.reaper.refresh_depth()
        depth = {s.labels["queue"]: s.value for m in REGISTRY.collect() if m.name == "worker_job_queue_depth"
                 for s in m.samples if s.labels["state"] == "pending"}
        assert len(depth) <= MAX_QUEUE_LABELS + 1, len(depth)
        assert depth[OTHER] >= 30 and sum(depth.values()) >= len(names)

    run_gateway(tmp_path, body)
