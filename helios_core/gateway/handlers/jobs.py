"""/api/v1/jobs: enqueue, lease, ack/nack/extend, inspect and administer jobs (the contract: the
OpenAPI operations in openapi.py; the logic: `helios_core.jobs.JobQueue`).

Handlers parse and check every field here, so a mistake is a 400 that names
the field and what it takes, and then make exactly one domain call: a worker's
lease or ack costs the store one transaction besides authentication and the
rate limit.  Durations are seconds in the API and milliseconds in the domain.

Permissions: the ``@`` scope of a ``jobs:`` grant is a queue-name prefix
(``jobs:work@emails`` covers ``emails`` and ``emails-eu``).  `prepare` lets in a
caller holding the method's permission on some scope; the handler then checks
it against every queue the request names (403 naming permission and queue),
and passes the domain an `allow` for the queues a job id leads to: a job on a
queue the caller may not touch answers like one that does not exist (404).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine, Mapping
from typing import Any

from helios_core.digits import plain_int
from helios_core.errors import HeliosError, InvalidInputError, NotFoundError, PermissionDeniedError
from helios_core.gateway.base import BaseHandler, Need, perm
from helios_core.jobs.checks import MAX_DEDUP_ID_CHARS
from helios_core.jobs.model import PRIORITY_MAX, PRIORITY_MIN, QUEUE_NAME_RE, Job, State, is_job_id
from helios_core.jobs.policy import ATTEMPTS_RANGE, VISIBILITY_RANGE
from helios_core.jobs.queue import (
    MAX_DELAY_MS,
    MAX_ENQUEUE_BATCH,
    MAX_LEASE_BATCH,
    MAX_LEASE_QUEUES,
    MAX_LIST_LIMIT,
    MAX_NAME_CHARS,
    MAX_WAIT_SECONDS,
    AckItem,
    EnqueueRequest,
    QueueStats,
)

__all__ = [
    "JobsHandler", "JobBatchHandler", "LeaseHandler", "AckBatchHandler", "DlqHandler", "DlqRedriveHandler",
    "JobStatsHandler", "JobHandler", "JobAckHandler", "JobNackHandler", "JobExtendHandler", "JobCancelHandler",
    "JobRetryHandler",
]

# The domain's limits, in the API's units (the domain checks them again).
MAX_DELAY_SECONDS = MAX_DELAY_MS // 1000
MAX_RUN_AT_MS = (1 << 42) - 1  # the ready set's score keeps 42 bits of time; the domain allows a year ahead
VISIBILITY_MIN, VISIBILITY_MAX = VISIBILITY_RANGE
MAX_ACK_BATCH = MAX_LEASE_BATCH  # JobQueue.ack_batch takes what one lease can give
LIST_LIMIT_MAX = MAX_LIST_LIMIT

_ENQUEUE_FIELDS = frozenset({"queue", "payload", "dedup_id", "delay_seconds", "run_at_ms", "priority",
                             "max_attempts", "visibility_timeout"})
_LEASE_FIELDS = frozenset({"queues", "max", "visibility_timeout", "wait_seconds", "worker"})
_ACK_FIELDS = frozenset({"lease_token", "result"})
_ACK_ITEM_FIELDS = frozenset({"id", "lease_token", "result"})
_NACK_FIELDS = frozenset({"lease_token", "error", "retry_delay_seconds", "release"})
_EXTEND_FIELDS = frozenset({"lease_token", "visibility_timeout"})


# -- parsing: every message names the field and what it takes ------------------------------------------


def _only(doc: Mapping[str, Any], allowed: frozenset[str], where: str = "") -> None:
    unknown = doc.keys() - allowed
    if unknown:
        raise InvalidInputError(f"{where}unknown field(s) {', '.join(sorted(unknown))}; "
                                f"allowed: {', '.join(sorted(allowed))}")


def _object(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{where}: expected a JSON object")
    return doc


def _int(doc: Mapping[str, Any], name: str, lo: int, hi: int, where: str = "") -> int | None:
    """An optional integer field (absent or null: None)."""
    v = doc.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise InvalidInputError(f"{where}{name}: expected an integer from {lo} to {hi}, got {_show(v)}")
    return v


def _seconds_ms(doc: Mapping[str, Any], name: str, hi: int, where: str = "") -> int | None:
    """An optional duration in seconds (fractions allowed), as milliseconds."""
    v = doc.get(name)
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or not 0 <= v <= hi:
        raise InvalidInputError(f"{where}{name}: expected a number of seconds from 0 to {hi}, got {_show(v)}")
    return round(v * 1000)


def _str(doc: Mapping[str, Any], name: str, where: str = "", *, max_chars: int = MAX_NAME_CHARS) -> str | None:
    """An optional string field (absent or null: None)."""
    v = doc.get(name)
    if v is None:
        return None
    if not isinstance(v, str) or not 1 <= len(v) <= max_chars:
        raise InvalidInputError(f"{where}{name}: expected a string of 1 to {max_chars} characters, got {_show(v)}")
    return v


def _queue(v: Any, field: str) -> str:
    # fullmatch: the pattern's "$" would also let a trailing newline through.
    if not isinstance(v, str) or not QUEUE_NAME_RE.fullmatch(v):
        raise InvalidInputError(f"{field}: expected a queue name of 1 to 80 characters A-Z a-z 0-9 _ -, "
                                f"got {_show(v)}")
    return v


def _show(v: Any) -> str:
    text = repr(v) if not isinstance(v, dict | list) else type(v).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _enqueue_request(doc: Any, trace: str, producer: str, where: str = "") -> EnqueueRequest:
    # `trace`: the enqueuing request's traceparent (its span when tracing is on): the worker continues it.
    d = _object(doc, where.rstrip(".") or "request body")
    _only(d, _ENQUEUE_FIELDS, where)
    queue = _queue(d.get("queue"), f"{where}queue")
    if "payload" not in d:
        raise InvalidInputError(f"{where}payload: required (any JSON value)")
    delay_ms = _seconds_ms(d, "delay_seconds", MAX_DELAY_SECONDS, where)
    run_at_ms = _int(d, "run_at_ms", 0, MAX_RUN_AT_MS, where)
    if delay_ms is not None and run_at_ms is not None:
        raise InvalidInputError(f"{where}delay_seconds, {where}run_at_ms: give one or neither, not both")
    priority = _int(d, "priority", PRIORITY_MIN, PRIORITY_MAX, where)
    return EnqueueRequest(
        queue=queue, payload=d["payload"], dedup_id=_str(d, "dedup_id", where, max_chars=MAX_DEDUP_ID_CHARS),
        delay_ms=delay_ms or 0,
        run_at_ms=run_at_ms, priority=priority or 0,
        max_attempts=_int(d, "max_attempts", *ATTEMPTS_RANGE, where),
        visibility_timeout_s=_int(d, "visibility_timeout", VISIBILITY_MIN, VISIBILITY_MAX, where),
        trace=trace or None, producer=producer)


def _job_id(job_id: str) -> str:
    # Not a ULID: it cannot exist, and the store need not be asked.
    if len(job_id) != 26 or not is_job_id(job_id):
        raise NotFoundError(f"job {job_id!r} does not exist", code="job_not_found")
    return job_id


def _required_str(doc: Mapping[str, Any], name: str, where: str = "", max_chars: int = MAX_NAME_CHARS) -> str:
    v = _str(doc, name, where, max_chars=max_chars)
    if v is None:
        raise InvalidInputError(f"{where}{name}: required (a string)")
    return v


def _token(doc: Mapping[str, Any], where: str = "") -> str:
    return _required_str(doc, "lease_token", where)


def _stats(s: QueueStats) -> dict[str, Any]:
    age = s.oldest_pending_age_ms
    return {"queue": s.queue, "pending": s.pending, "delayed": s.delayed, "in_progress": s.in_progress,
            "done": s.done, "failed": s.failed,
            "oldest_pending_age_seconds": None if age is None else max(0, age) / 1000}


class _JobsBase(BaseHandler):
    def _authorize(self, need: Need) -> None:
        # The queue is in the body or the job: here only "holds this permission on some queue".
        p = self.me()
        name = need.permission
        if name is None or any(g.matches(name, None if g.prefix is None else g.prefix.replace("{user}", p.user_id),
                                         p.user_id) for g in p.grants):
            return
        super()._authorize(need)

    def _permission(self) -> str:
        return self.needs[self.request.method or ""].permission or ""  # every jobs endpoint declares one

    def allow(self, queue: str) -> bool:
        """May the caller use this method's permission on `queue`?"""
        return self.me().can(self._permission(), queue)

    def require(self, queues: list[str]) -> None:
        for queue in queues:
            if not self.allow(queue):
                p = self.me()
                raise PermissionDeniedError(
                    f"permission {self._permission()} on queue {queue!r} is not granted to {p.username} "
                    f"(roles: {', '.join(p.roles) or 'none'}; a jobs: permission's @ scope is a queue-name prefix)")

    def _body(self, allowed: frozenset[str], *, optional: bool = False) -> dict[str, Any]:
        if optional and not self.body.strip():
            return {}
        doc = self.json_body()
        _only(doc, allowed)
        return doc

    def _job(self, job: Job, status: int = 200) -> None:
        self.write_json({"job": job.public()}, status)

    def _listing_args(self) -> tuple[str, str | None, int]:
        q = self.get_query_argument
        # strip=False: Tornado would strip "emails\n" to "emails"; a name is taken as sent, or refused.
        queue = _queue(q("queue", None, strip=False), "queue")
        cursor = q("cursor", None) or None
        if cursor is not None and len(cursor) > 512:
            raise InvalidInputError("cursor: not a cursor this API returned")
        raw = q("limit", "100")
        limit = plain_int(raw)
        if limit is None or not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidInputError(f"limit: expected an integer from 1 to {LIST_LIMIT_MAX}, got {_show(raw)}")
        return queue, cursor, limit

    def _page(self, jobs: list[Job], cursor: str | None) -> None:
        self.write_json({"jobs": [j.public() for j in jobs], "cursor": cursor})


# -- producers --------------------------------------------------------------------------------------


class JobsHandler(_JobsBase):
    route = "/api/v1/jobs"
    needs = {"POST": perm("jobs:enqueue"), "GET": perm("jobs:read")}

    async def post(self) -> None:
        req = _enqueue_request(self.json_body(), self.traceparent, self.me().user_id)
        self.require([req.queue])
        job, created = await self.gw.jobs.enqueue(req, self.now_ms())
        if created:
            self.gw.job_metrics.enqueue(self.gw.jobs.labels(job.queue))
        self.set_header("Location", f"/api/v1/jobs/{job.id}")
        self.write_json({"job": job.public(), "created": created}, 201 if created else 200)

    async def get(self) -> None:
        queue, cursor, limit = self._listing_args()
        raw_state = self.get_query_argument("state", None) or None
        state = None
        if raw_state is not None:
            if raw_state not in State.__members__:
                raise InvalidInputError(f"state: expected one of {', '.join(State)}, got {_show(raw_state)}")
            state = State(raw_state)
        self.require([queue])
        jobs, nxt = await self.gw.jobs.list(queue, state, self.now_ms(), cursor=cursor, limit=limit)
        self._page(jobs, nxt)


class JobBatchHandler(_JobsBase):
    route = "/api/v1/jobs/batch"
    needs = {"POST": perm("jobs:enqueue")}

    async def post(self) -> None:
        doc = self._body(frozenset({"jobs"}))
        items = doc.get("jobs")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ENQUEUE_BATCH:
            raise InvalidInputError(f"jobs: expected a list of 1 to {MAX_ENQUEUE_BATCH} enqueue requests")
        trace, producer = self.traceparent, self.me().user_id
        reqs = [_enqueue_request(item, trace, producer, f"jobs[{i}].") for i, item in enumerate(items)]
        self.require(list(dict.fromkeys(r.queue for r in reqs)))
        out = await self.gw.jobs.enqueue_batch(reqs, self.now_ms())
        metrics, label = self.gw.job_metrics, self.gw.jobs.labels
        for job, created in out:
            if created:
                metrics.enqueue(label(job.queue))
        self.write_json({"jobs": [{"job": job.public(), "created": created} for job, created in out]}, 201)


# -- workers ----------------------------------------------------------------------------------------


class LeaseHandler(_JobsBase):
    """Lease jobs, waiting up to wait_seconds for one (a long poll that ends early when the gateway
    drains or the client goes away)."""

    route = "/api/v1/jobs/lease"
    needs = {"POST": perm("jobs:work")}

    _poll: asyncio.Future[list[Job]] | None = None

    async def post(self) -> None:
        doc = self._body(_LEASE_FIELDS)
        queues = doc.get("queues")
        if not isinstance(queues, list) or not 1 <= len(queues) <= MAX_LEASE_QUEUES:
            raise InvalidInputError(f"queues: expected a list of 1 to {MAX_LEASE_QUEUES} queue names")
        names = list(dict.fromkeys(_queue(q, f"queues[{i}]") for i, q in enumerate(queues)))
        max_jobs = _int(doc, "max", 1, MAX_LEASE_BATCH) or 1
        visibility = _int(doc, "visibility_timeout", VISIBILITY_MIN, VISIBILITY_MAX)
        wait_ms = _seconds_ms(doc, "wait_seconds", MAX_WAIT_SECONDS) or 0
        worker = _str(doc, "worker") or self.me().username
        self.require(names)
        jq = self.gw.jobs
        if wait_ms <= 0 or self.gw.draining:
            jobs = await jq.lease(names, max_jobs, self.now_ms(), worker=worker, visibility_timeout_s=visibility)
        else:
            jobs = await self._long_poll(jq.lease_wait(names, max_jobs, self.gw.clock, wait_ms, worker=worker,
                                                       visibility_timeout_s=visibility))
        self.link_traces(j.trace for j in jobs)  # each job's trace: the span that enqueued it
        self.write_json({"jobs": [j.public(with_token=True) for j in jobs]})

    async def _long_poll(self, coro: Coroutine[Any, Any, list[Job]]) -> list[Job]:
        # The wait happens in the domain (a Store subscription, no polling); the gateway only
        # decides when to stop listening.  Cancelling lease_wait is safe while it waits; in the
        # instant its lease transaction waits for fsync, jobs it leased are not answered and come
        # back when their lease runs out (at-least-once, as for any lost answer).
        poll: asyncio.Future[list[Job]] = asyncio.ensure_future(coro)
        self._poll = poll
        drained = asyncio.ensure_future(self.gw.drained.wait())
        try:
            await asyncio.wait((poll, drained), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            poll.cancel()
            raise
        finally:
            drained.cancel()
            self._poll = None
        if not poll.done():
            poll.cancel()
        try:
            return await poll
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request itself is being cancelled
            return []

    def on_connection_close(self) -> None:
        # The worker went away mid-poll: stop waiting, so no job is leased to a closed connection.
        super().on_connection_close()
        if self._poll is not None:
            self._poll.cancel()


class JobAckHandler(_JobsBase):
    route = "/api/v1/jobs/{id}/ack"
    needs = {"POST": perm("jobs:work")}

    async def post(self, id: str) -> None:
        job_id = _job_id(id)
        doc = self._body(_ACK_FIELDS)
        job = await self.gw.jobs.ack(job_id, _token(doc), doc.get("result"), self.now_ms(), self.allow)
        self.link_traces([job.trace])
        self.gw.job_metrics.finish(self.gw.jobs.labels(job.queue), "done")
        self._job(job)


class JobNackHandler(_JobsBase):
    route = "/api/v1/jobs/{id}/nack"
    needs = {"POST": perm("jobs:work")}

    async def post(self, id: str) -> None:
        job_id = _job_id(id)
        doc = self._body(_NACK_FIELDS)
        token = _token(doc)
        error = doc.get("error")
        if error is not None and not isinstance(error, str):
            raise InvalidInputError(f"error: expected a string, got {_show(error)}")
        delay_ms = _seconds_ms(doc, "retry_delay_seconds", MAX_DELAY_SECONDS)
        release = doc.get("release", False)
        if not isinstance(release, bool):
            raise InvalidInputError(f"release: expected true or false, got {_show(release)}")
        job = await self.gw.jobs.nack(job_id, token, error or "", self.now_ms(), delay_ms, release=release,
                                      allow=self.allow)
        self.link_traces([job.trace])
        self.gw.job_metrics.finish(self.gw.jobs.labels(job.queue), "failed" if job.state is State.FAILED else "retried")
        self._job(job)


class JobExtendHandler(_JobsBase):
    route = "/api/v1/jobs/{id}/extend"
    needs = {"POST": perm("jobs:work")}

    async def post(self, id: str) -> None:
        job_id = _job_id(id)
        doc = self._body(_EXTEND_FIELDS)
        token = _token(doc)
        visibility = _int(doc, "visibility_timeout", VISIBILITY_MIN, VISIBILITY_MAX)
        jq = self.gw.jobs
        if visibility is None:
            # JobQueue.extend needs a number and the default is the job's own: one more read, only
            # for callers that leave it out (`helios worker` always sends it).
            visibility = (await jq.get(job_id, self.allow)).visibility_timeout_s
        self._job(await jq.extend(job_id, token, visibility, self.now_ms(), self.allow))


class AckBatchHandler(_JobsBase):
    route = "/api/v1/jobs/ack"
    needs = {"POST": perm("jobs:work")}

    async def post(self) -> None:
        doc = self._body(frozenset({"acks"}))
        acks = doc.get("acks")
        if not isinstance(acks, list) or not 1 <= len(acks) <= MAX_ACK_BATCH:
            raise InvalidInputError(f"acks: expected a list of 1 to {MAX_ACK_BATCH} objects "
                                    f"{{id, lease_token, result?}}")
        items: list[AckItem] = []
        for i, raw in enumerate(acks):
            where = f"acks[{i}]."
            entry = _object(raw, f"acks[{i}]")
            _only(entry, _ACK_ITEM_FIELDS, where)
            job_id = _required_str(entry, "id", where, max_chars=64)
            items.append(AckItem(job_id, _token(entry, where), entry.get("result")))
        # A repeated id is the domain's to answer: the second ack of a job finds it DONE (lease_lost).
        outcomes = await self.gw.jobs.ack_batch(items, self.now_ms(), self.allow)
        metrics, label = self.gw.job_metrics, self.gw.jobs.labels
        results: list[dict[str, Any]] = []
        for item, out in zip(items, outcomes, strict=True):
            if isinstance(out, HeliosError):
                results.append({"id": item.job_id, "ok": False, "error": {"code": out.code, "message": out.message}})
            else:
                metrics.finish(label(out.queue), "done")
                self.link_traces([out.trace])
                results.append({"id": item.job_id, "ok": True, "state": str(out.state)})
        self.write_json({"results": results})


# -- inspection and administration ------------------------------------------------------------------


class JobHandler(_JobsBase):
    route = "/api/v1/jobs/{id}"
    needs = {"GET": perm("jobs:read")}

    async def get(self, id: str) -> None:
        self._job(await self.gw.jobs.get(_job_id(id), self.allow))


class JobCancelHandler(_JobsBase):
    route = "/api/v1/jobs/{id}/cancel"
    needs = {"POST": perm("jobs:admin")}

    async def post(self, id: str) -> None:
        job = await self.gw.jobs.cancel(_job_id(id), self.now_ms(), self.allow)
        self.gw.job_metrics.finish(self.gw.jobs.labels(job.queue), "cancelled")
        self._job(job)


class JobRetryHandler(_JobsBase):
    route = "/api/v1/jobs/{id}/retry"
    needs = {"POST": perm("jobs:admin")}

    async def post(self, id: str) -> None:
        self._job(await self.gw.jobs.redrive(_job_id(id), self.now_ms(), self.allow))


class DlqHandler(_JobsBase):
    route = "/api/v1/jobs/dlq"
    needs = {"GET": perm("jobs:read")}

    async def get(self) -> None:
        queue, cursor, limit = self._listing_args()
        self.require([queue])
        jobs, nxt = await self.gw.jobs.list(queue, State.FAILED, self.now_ms(), cursor=cursor, limit=limit)
        self._page(jobs, nxt)


class DlqRedriveHandler(_JobsBase):
    route = "/api/v1/jobs/dlq/redrive"
    needs = {"POST": perm("jobs:admin")}

    async def post(self) -> None:
        doc = self._body(frozenset({"queue"}), optional=True)
        queue = None if doc.get("queue") is None else _queue(doc["queue"], "queue")
        if queue is not None:
            self.require([queue])
        self.write_json({"redriven": await self.gw.jobs.redrive_all(self.now_ms(), queue, self.allow)})


class JobStatsHandler(_JobsBase):
    route = "/api/v1/jobs/stats"
    needs = {"GET": perm("jobs:read")}

    async def get(self) -> None:
        raw = self.get_query_argument("queue", None, strip=False) or None
        queue = None if raw is None else _queue(raw, "queue")
        if queue is not None:
            self.require([queue])
        stats = await self.gw.jobs.stats(self.now_ms(), queue, self.allow)
        self.write_json({"queues": [_stats(s) for s in stats]})
