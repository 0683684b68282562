"""`JobsClient`: the gateway's jobs API (/api/v1/jobs) over HTTP, for `helios worker` and `helios job --url`.

One aiohttp session per client, so requests reuse kept-alive connections
(a worker makes several requests per job: lease, extend, ack).  Methods
mirror the API one to one and return its JSON: a job is the dict of
`Job.public()` (with ``lease.token`` only in `lease` answers).

Errors are `HeliosError` subclasses chosen from the gateway's error body
``{"error": {"code", "message", "request_id"}}``: ``lease_lost`` ->
`LeaseLostError`, ``job_state`` -> `JobStateError`, ``queue_not_found`` ->
`QueueNotFoundError`, ``job_not_found`` -> `JobNotFoundError`, 401 -> `AuthenticationError`, 429 -> `RateLimitedError`
(``retry_after_ms`` from Retry-After), and so on.  A gateway that cannot be
reached, or answers 5xx, gives `GatewayUnavailableError`; `is_transient`
says which errors are worth retrying later.  The client itself never retries:
whether a POST may be sent twice is the caller's decision.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp
import orjson

from helios_core.digits import plain_int
from helios_core.errors import (
    AuthenticationError,
    ConflictError,
    HeliosError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from helios_core.jobs import (
    JobNotFoundError,
    JobStateError,
    LeaseLostError,
    PayloadTooLargeError,
    QueueNotFoundError,
    TooManyQueuesError,
)

__all__ = [
    "JobsClient", "Enqueued", "Page", "AckRequest", "AckResult", "GatewayUnavailableError", "is_transient",
    "enqueue_body",
]

Job = dict[str, Any]
Jobs = list[Job]  # (a method of JobsClient is called `list`)


class GatewayUnavailableError(HeliosError):
    """The gateway could not be reached, timed out, or answered 5xx: try again later."""

    code = "unavailable"
    status = 503


def is_transient(err: BaseException) -> bool:
    """True for errors that a later retry of the same request may not get (outage, overload, throttling)."""
    return isinstance(err, GatewayUnavailableError | RateLimitedError)


class Enqueued(NamedTuple):
    job: Job
    created: bool  # False: a dedup hit, `job` is the one the dedup_id first made


class Page(NamedTuple):
    jobs: list[Job]
    cursor: str | None  # pass back for the next page; None at the end


class AckRequest(NamedTuple):
    id: str
    lease_token: str
    result: Any = None


@dataclass(frozen=True)
class AckResult:
    id: str
    ok: bool
    state: str | None = None  # "DONE" when ok
    error: HeliosError | None = None  # when not ok: LeaseLostError, NotFoundError, ...


def enqueue_body(queue: str, payload: Any, *, dedup_id: str | None = None, delay_seconds: float | None = None,
                 run_at_ms: int | None = None, priority: int | None = None, max_attempts: int | None = None,
                 visibility_timeout: int | None = None) -> dict[str, Any]:
    """One job as the enqueue endpoints take it (options left out when None: the queue's defaults apply)."""
    body: dict[str, Any] = {"queue": queue, "payload": payload}
    for name, value in (("dedup_id", dedup_id), ("delay_seconds", delay_seconds), ("run_at_ms", run_at_ms),
                        ("priority", priority), ("max_attempts", max_attempts),
                        ("visibility_timeout", visibility_timeout)):
        if value is not None:
            body[name] = value
    return body


_BY_CODE: dict[str, type[HeliosError]] = {
    "lease_lost": LeaseLostError,
    "job_state": JobStateError,
    "queue_not_found": QueueNotFoundError,
    "job_not_found": JobNotFoundError,
    "payload_too_large": PayloadTooLargeError,
    "too_many_queues": TooManyQueuesError,  # a 429 that retrying soon will not cure: not transient
}
_BY_STATUS: dict[int, type[HeliosError]] = {
    400: InvalidInputError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
}


def error_from(status: int, code: str, message: str, detail: dict[str, Any] | None = None,
               retry_after_ms: int = 1000) -> HeliosError:
    """The HeliosError for one error of the API (also used for the items of a batch ack)."""
    if (status == 429 and code not in _BY_CODE) or code == "rate_limited":
        return RateLimitedError(message, retry_after_ms=retry_after_ms, code=code)
    if status >= 500:
        return GatewayUnavailableError(message, code=code, status=status, detail=detail)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, HeliosError)
    return cls(message, code=code, status=status, detail=detail)


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, aiohttp.ClientConnectorError):  # "connection refused", not aiohttp's paragraph
        errno = e.os_error.errno
        return os.strerror(errno).lower() if errno and errno > 0 else (e.os_error.strerror or str(e.os_error))
    return str(e) or type(e).__name__


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class JobsClient:
    """The jobs API of the gateway at ``url``, authenticated with the access token ``token``.

    Use as ``async with JobsClient(url, token) as jobs: ...`` or call `close`.
    ``timeout`` bounds each request (a long-poll lease gets its wait on top).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, user_agent: str = "helios-jobs-client") -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": user_agent,
                         "Content-Type": "application/json", "Accept": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> JobsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- transport ----------------------------------------------------------------------------

    def _sess(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop it was created on.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers,
                                                  connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=60))
        return self._session

    async def _call(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
                    extra_time: float = 0.0) -> Any:
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        timeout = aiohttp.ClientTimeout(total=self.timeout + extra_time)
        where: dict[str, Any] = {"method": method, "path": path}
        try:
            async with self._sess().request(method, self.url + path, params=query or None, timeout=timeout,
                                            data=orjson.dumps(body) if body is not None else None) as resp:
                raw = await resp.read()
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as e:
            reason = _reason(e)
            raise GatewayUnavailableError(f"cannot reach the gateway at {self.url}: {reason}", code="unreachable",
                                          detail=where) from None
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            data = None
            if status < 400:
                raise GatewayUnavailableError(f"{self.url}{path}: {status} answer is not JSON", code="bad_response",
                                              status=502 if status < 500 else status, detail=where) from None
        if status < 400:
            return data
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            code, message = str(err.get("code") or "error"), err["message"]
            where["request_id"] = err.get("request_id")
        else:  # not the gateway's shape: a proxy in front of it, most likely
            code, message = "http_error", f"{self.url}{path}: HTTP {status} {raw[:200].decode(errors='replace')}"
        retry_ms = 1000
        seconds = plain_int(retry_after, 9)
        if seconds is not None:
            retry_ms = seconds * 1000
        raise error_from(status, code, message, {**where, "status": status}, retry_after_ms=retry_ms)

    # -- producers ----------------------------------------------------------------------------

    async def enqueue(self, queue: str, payload: Any, *, dedup_id: str | None = None,
                      delay_seconds: float | None = None, run_at_ms: int | None = None, priority: int | None = None,
                      max_attempts: int | None = None, visibility_timeout: int | None = None) -> Enqueued:
        """POST /api/v1/jobs.  `Enqueued.created` is False on a dedup hit."""
        body = enqueue_body(queue, payload, dedup_id=dedup_id, delay_seconds=delay_seconds, run_at_ms=run_at_ms,
                            priority=priority, max_attempts=max_attempts, visibility_timeout=visibility_timeout)
        out = await self._call("POST", "/api/v1/jobs", body)
        return Enqueued(out["job"], bool(out.get("created", True)))

    async def enqueue_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[Enqueued]:
        """POST /api/v1/jobs/batch: 1..100 bodies (see `enqueue_body`), all or nothing."""
        out = await self._call("POST", "/api/v1/jobs/batch", {"jobs": list(jobs)})
        return [Enqueued(item["job"], bool(item.get("created", True))) for item in out["jobs"]]

    # -- workers ------------------------------------------------------------------------------

    async def lease(self, queues: Sequence[str], *, max_jobs: int = 1, visibility_timeout: int | None = None,
                    wait_seconds: float = 0, worker: str | None = None) -> list[Job]:
        """POST /api/v1/jobs/lease: up to ``max_jobs`` jobs (each with ``lease.token``), waiting up to
        ``wait_seconds`` (0..20) for one to arrive; [] when none did."""
        body: dict[str, Any] = {"queues": list(queues), "max": max_jobs, "wait_seconds": wait_seconds}
        if visibility_timeout is not None:
            body["visibility_timeout"] = visibility_timeout
        if worker is not None:
            body["worker"] = worker
        out = await self._call("POST", "/api/v1/jobs/lease", body, extra_time=wait_seconds)
        return list(out["jobs"])

    async def ack(self, job_id: str, lease_token: str, result: Any = None) -> Job:
        """POST /api/v1/jobs/{id}/ack: DONE.  LeaseLostError when the lease is no longer ours."""
        body: dict[str, Any] = {"lease_token": lease_token}
        if result is not None:
            body["result"] = result
        return (await self._call("POST", f"/api/v1/jobs/{_q(job_id)}/ack", body))["job"]  # type: ignore[no-any-return]

    async def ack_batch(self, acks: Sequence[AckRequest]) -> list[AckResult]:
        """POST /api/v1/jobs/ack: 1..100 acks in one transaction; one `AckResult` per ack, in order."""
        items = []
        for a in acks:
            item: dict[str, Any] = {"id": a.id, "lease_token": a.lease_token}
            if a.result is not None:
                item["result"] = a.result
            items.append(item)
        out = await self._call("POST", "/api/v1/jobs/ack", {"acks": items})
        results = []
        for r in out["results"]:
            if r.get("ok"):
                results.append(AckResult(r["id"], True, r.get("state", "DONE")))
            else:
                e = r.get("error") or {}
                code = str(e.get("code") or "error")
                status = {"job_not_found": 404, "not_found": 404, "payload_too_large": 413,
                          "invalid_input": 400}.get(code, 409)
                results.append(AckResult(r["id"], False, None, error_from(status, code, str(e.get("message", code)))))
        return results

    async def nack(self, job_id: str, lease_token: str, *, error: str | None = None,
                   retry_delay_seconds: float | None = None, release: bool = False) -> Job:
        """POST /api/v1/jobs/{id}/nack: back to PENDING (after the delay; default: the queue's backoff),
        or FAILED into the DLQ when no attempts are left.  `release`: the job never started; it is
        due at once and this delivery does not count as an attempt."""
        body: dict[str, Any] = {"lease_token": lease_token}
        if release:
            body["release"] = True
        if error is not None:
            body["error"] = error
        if retry_delay_seconds is not None:
            body["retry_delay_seconds"] = retry_delay_seconds
        return (await self._call("POST", f"/api/v1/jobs/{_q(job_id)}/nack", body))["job"]  # type: ignore[no-any-return]

    async def extend(self, job_id: str, lease_token: str, visibility_timeout: int | None = None) -> Job:
        """POST /api/v1/jobs/{id}/extend: the lease deadline moves to now + visibility_timeout."""
        body: dict[str, Any] = {"lease_token": lease_token}
        if visibility_timeout is not None:
            body["visibility_timeout"] = visibility_timeout
        return (await self._call("POST", f"/api/v1/jobs/{_q(job_id)}/extend", body))["job"]  # type: ignore[no-any-return]

    # -- operators ----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """GET /api/v1/jobs/{id}; NotFoundError (code job_not_found) when unknown."""
        return (await self._call("GET", f"/api/v1/jobs/{_q(job_id)}"))["job"]  # type: ignore[no-any-return]

    async def list(self, queue: str, *, state: str | None = None, cursor: str | None = None,
                   limit: int | None = None) -> Page:
        """GET /api/v1/jobs?queue=: one page of a queue's jobs, optionally of one state."""
        out = await self._call("GET", "/api/v1/jobs",
                               params={"queue": queue, "state": state, "cursor": cursor, "limit": limit})
        return Page(list(out["jobs"]), out.get("cursor"))

    async def dlq(self, queue: str, *, cursor: str | None = None, limit: int | None = None) -> Page:
        """GET /api/v1/jobs/dlq?queue=: one page of a queue's FAILED jobs."""
        out = await self._call("GET", "/api/v1/jobs/dlq", params={"queue": queue, "cursor": cursor, "limit": limit})
        return Page(list(out["jobs"]), out.get("cursor"))

    async def retry(self, job_id: str) -> Job:
        """POST /api/v1/jobs/{id}/retry: FAILED -> PENDING with attempts reset; JobStateError otherwise."""
        return (await self._call("POST", f"/api/v1/jobs/{_q(job_id)}/retry", {}))["job"]  # type: ignore[no-any-return]

    async def cancel(self, job_id: str) -> Job:
        """POST /api/v1/jobs/{id}/cancel: PENDING -> CANCELLED; JobStateError otherwise."""
        return (await self._call("POST", f"/api/v1/jobs/{_q(job_id)}/cancel", {}))["job"]  # type: ignore[no-any-return]

    async def redrive(self, queue: str | None = None) -> int:
        """POST /api/v1/jobs/dlq/redrive: every FAILED job of ``queue`` (all queues when None) back to PENDING."""
        out = await self._call("POST", "/api/v1/jobs/dlq/redrive", {} if queue is None else {"queue": queue})
        return int(out["redriven"])

    async def stats(self, queue: str | None = None) -> Jobs:
        """GET /api/v1/jobs/stats: per queue pending, delayed, in_progress, done, failed, oldest_pending_age."""
        out = await self._call("GET", "/api/v1/jobs/stats", params={"queue": queue})
        return list(out["queues"])

