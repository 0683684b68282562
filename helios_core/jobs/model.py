"""A job and its life: the record stored at ``job:{Q}:<id>`` and the names of its indexes.

States::

    PENDING --lease--> IN_PROGRESS --ack--> DONE
       ^                   |  \\--nack / lease expired, attempts left--> PENDING (after a delay)
       |                   \\----nack / lease expired, no attempts left--> FAILED (in the DLQ)
       +----------- redrive ------------------------------------------ FAILED
    PENDING --cancel--> CANCELLED

`attempts` counts deliveries: it grows by one at each lease.  A lease carries
a fresh random token (a fencing token); ack, nack and extend must present it,
so a worker whose lease expired can never finish a job someone else holds.

Store layout: every key of a queue ``Q`` (its indexes and its jobs' records and
dedup keys) is under ``job:{Q}:``, so that they share the hash tag ``{Q}``: on
Redis Cluster one queue's keys are in one hash slot, and every operation on a
queue (a script, a transaction) runs on the one node that serves it.  On one
server the tag is just part of the name; the layout is the same on every store.
(Queue names are ``[A-Za-z0-9_-]``: never a brace or a colon.)  Members of the
indexes are job ids:

- ``job:{Q}:<id>``         the job record (JSON), with a TTL once DONE/CANCELLED/FAILED
- ``job:{Q}:ready``        sorted set of PENDING jobs that are due, by `ready_score`
                           (priority first, then availability time)
- ``job:{Q}:delayed``      PENDING jobs not yet due, by available_ms
- ``job:{Q}:leased``       IN_PROGRESS jobs by lease deadline_ms
- ``job:{Q}:dlq``          FAILED jobs by finished_ms
- ``job:{Q}:done``         DONE and CANCELLED jobs by finished_ms (pruned past retention)
- ``job:{Q}:dedup:{producer}:{dedup_id}``  the job id a producer's dedup id made, TTL = the dedup
                           window (producer: the enqueuing user's id, empty for the local CLI)
- ``job:{Q}:listed``       present while Q is in job:queues (what lets an enqueue in Q's slot know
                           that its queue is registered; jobs/registry.py)
- ``job:queues``           the registry: every queue that may hold jobs, scored by when it was
                           registered; a slot of its own, so it is written by a call of its own
                           (jobs/registry.py: once per process per queue), and a queue whose
                           indexes are all empty is forgotten (`JobQueue.forget_empty`)
- ``job:format``           "3" once every key is in this layout and every record in the current
                           form (jobs/migrate.py)

A job is found by its id alone (GET /api/v1/jobs/ID, an ack from a worker that
leased it through another gateway) by reading ``job:{Q}:<id>`` for every queue
Q the registry lists (queue.py: `JobQueue._queues_of`).

The record is JSON (any JSON reader takes it), written one member per line in
a fixed order (RECORD_FIELDS) after a version member, ``{"v":2,``.  That is
what lets the server-side operations (jobs/scripts.py) change the fields a
transition changes by splitting lines, and copy the payload, result and error
through as opaque text: a Lua JSON codec would re-encode them (key order,
number formats, unicode escapes).  orjson writes no raw newline, so a line
break only ever ends a member.  Records written before this form (one compact
JSON object) are read alike, and rewritten by `jobs.migrate.ensure_current`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "State", "Lease", "Job", "new_job_id", "ready_score", "PRIORITY_MIN", "PRIORITY_MAX",
    "QUEUE_NAME_RE", "RECORD_FIELDS", "RECORD_HEAD", "encode_record", "is_current_record",
    "queue_prefix", "job_key", "ready_key", "delayed_key", "leased_key", "dlq_key", "done_key", "listed_key",
    "QUEUES_KEY", "dedup_key", "queue_of_key", "id_of_key", "is_job_id", "job_id_ms", "JobIds",
]

PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
QUEUE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,80}")  # SQS's rule: fits in a key segment, no ':'
_JOB_ID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class State(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


def new_job_id(now_ms: int, rand: bytes | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32.

    Ids sort by creation time (to the millisecond), so a listing in id order
    is a listing in enqueue order.
    """
    r = rand if rand is not None else os.urandom(10)
    n = (now_ms & (1 << 48) - 1) << 80 | int.from_bytes(r[:10], "big")
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[n & 31])
        n >>= 5
    return "".join(reversed(out))


class JobIds:
    """Monotonic ULIDs: ids made in the same millisecond count up (the ULID spec's monotonic mode).

    Jobs with equal priority and availability are leased in id order, so this
    keeps enqueue order (FIFO) among the jobs one process makes in one ms.
    """

    def __init__(self) -> None:
        self._last_ms = -1
        self._last_rand = 0

    def next(self, now_ms: int) -> str:
        if now_ms == self._last_ms and self._last_rand < (1 << 80) - 1:
            self._last_rand += 1
        else:
            # The top bit clear leaves 2**79 increments before the random part could overflow.
            self._last_ms, self._last_rand = now_ms, int.from_bytes(os.urandom(10), "big") >> 1
        return new_job_id(now_ms, self._last_rand.to_bytes(10, "big"))


def is_job_id(s: object) -> bool:
    return isinstance(s, str) and bool(_JOB_ID_RE.fullmatch(s))


def job_id_ms(job_id: str) -> int:
    """The creation time a job id carries (its first 10 characters: 48 bits of ms)."""
    n = 0
    for c in job_id[:10]:
        n = n << 5 | _CROCKFORD.index(c)
    return n


def ready_score(priority: int, available_ms: int) -> float:
    """Order of the ready set: higher priority first, then earlier availability.

    (PRIORITY_MAX - priority) takes 11 bits and the time 42 (ms until 2109):
    53 bits, exact in a float score.
    """
    return float((PRIORITY_MAX - priority) << 42 | (available_ms & (1 << 42) - 1))


def queue_prefix(queue: str) -> str:
    """What every key of `queue` starts with: its hash tag (see the module doc)."""
    return "job:{" + queue + "}:"


def job_key(queue: str, job_id: str) -> str:
    return "job:{" + queue + "}:" + job_id


def ready_key(queue: str) -> str:
    return "job:{" + queue + "}:ready"


def delayed_key(queue: str) -> str:
    return "job:{" + queue + "}:delayed"


def leased_key(queue: str) -> str:
    return "job:{" + queue + "}:leased"


def dlq_key(queue: str) -> str:
    return "job:{" + queue + "}:dlq"


def done_key(queue: str) -> str:
    return "job:{" + queue + "}:done"


def listed_key(queue: str) -> str:
    return "job:{" + queue + "}:listed"


QUEUES_KEY = "job:queues"


def dedup_key(queue: str, producer: str, dedup_id: str) -> str:
    # Per queue, as in SQS: the same dedup id sent to two queues makes two jobs.  And per producer:
    # otherwise one user's dedup id returns another's job (their payload, their job id).  A producer
    # never holds ':' (checks.producer), so two (producer, dedup id) pairs never make one key.
    return f"job:{{{queue}}}:dedup:{producer}:{dedup_id}"


def queue_of_key(key: str | bytes) -> str:
    """The queue of a key of the layout (``job:{Q}:...`` -> Q)."""
    k = key.decode() if isinstance(key, bytes) else key
    return k[k.index("{") + 1:k.index("}")]


def id_of_key(key: bytes) -> bytes:
    """The job id of a record's key (``job:{Q}:<id>`` -> id)."""
    return key[key.rindex(b":") + 1:]


@dataclass(frozen=True)
class Lease:
    token: str
    worker: str
    deadline_ms: int


@dataclass(frozen=True)
class Job:
    id: str
    queue: str
    payload: Any
    state: State
    created_ms: int
    available_ms: int
    max_attempts: int
    visibility_timeout_s: int
    priority: int = 0
    attempts: int = 0
    lease: Lease | None = None
    last_error: str | None = None
    result: Any = None
    dedup_id: str | None = None
    trace: str | None = None  # W3C traceparent of the request that enqueued it
    finished_ms: int | None = None
    updated_ms: int = 0

    def encode(self) -> bytes:
        """The stored form: JSON, one member per line in RECORD_FIELDS order (see `encode_record`)."""
        return encode_record(self)

    @classmethod
    def decode(cls, raw: bytes) -> Job:
        d = orjson.loads(raw)
        lease = d.get("lease")
        return cls(
            id=d["id"], queue=d["queue"], payload=d.get("payload"), state=State(d["state"]),
            created_ms=d["created_ms"], available_ms=d["available_ms"], max_attempts=d["max_attempts"],
            visibility_timeout_s=d["visibility_timeout_s"], priority=d.get("priority", 0),
            attempts=d.get("attempts", 0),
            lease=Lease(lease["token"], lease["worker"], lease["deadline_ms"]) if lease else None,
            last_error=d.get("last_error"), result=d.get("result"), dedup_id=d.get("dedup_id"),
            trace=d.get("trace"), finished_ms=d.get("finished_ms"), updated_ms=d.get("updated_ms", 0),
        )

    def to_dict(self) -> dict[str, Any]:
        """The stored form (and the API's, except that the API hides the lease token)."""
        return {
            "id": self.id, "queue": self.queue, "payload": self.payload, "state": str(self.state),
            "created_ms": self.created_ms, "available_ms": self.available_ms, "max_attempts": self.max_attempts,
            "visibility_timeout_s": self.visibility_timeout_s, "priority": self.priority,
            "attempts": self.attempts,
            "lease": None if self.lease is None else {
                "token": self.lease.token, "worker": self.lease.worker, "deadline_ms": self.lease.deadline_ms},
            "last_error": self.last_error, "result": self.result, "dedup_id": self.dedup_id,
            "trace": self.trace, "finished_ms": self.finished_ms, "updated_ms": self.updated_ms,
        }

    def public(self, *, with_token: bool = False) -> dict[str, Any]:
        """The API's view: the lease token only to the worker that holds the lease."""
        d = self.to_dict()
        if d["lease"] is not None and not with_token:
            d["lease"] = {k: v for k, v in d["lease"].items() if k != "token"}
        return d

    def with_(self, **changes: Any) -> Job:
        """A copy with some fields changed (dataclasses.replace, minus its cost on the lease/ack path)."""
        unknown = changes.keys() - _JOB_FIELDS
        if unknown:
            raise TypeError(f"Job has no field(s) {', '.join(sorted(unknown))}")
        new = object.__new__(Job)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


_JOB_FIELDS = frozenset(f.name for f in fields(Job))

# The record's members after {"v":2, in order (the Lua in jobs/scripts.py indexes them by position).
RECORD_FIELDS = ("id", "queue", "state", "created_ms", "available_ms", "max_attempts", "visibility_timeout_s",
                 "priority", "attempts", "lease", "last_error", "result", "dedup_id", "trace", "finished_ms",
                 "updated_ms", "payload")
RECORD_HEAD = b'{"v":2,\n'


def _opt_int(n: int | None) -> bytes:
    return b"null" if n is None else b"%d" % n


def encode_record(job: Job) -> bytes:
    """The record: JSON, one member per line; ids, queue names, states and tokens need no escaping."""
    lease = job.lease
    lease_raw = b"null" if lease is None else b'{"token":"%s","worker":%s,"deadline_ms":%d}' % (
        lease.token.encode(), orjson.dumps(lease.worker), lease.deadline_ms)
    dumps = orjson.dumps
    return b"".join((
        RECORD_HEAD,
        b'"id":"%s",\n"queue":"%s",\n"state":"%s",\n' % (job.id.encode(), job.queue.encode(), job.state.encode()),
        b'"created_ms":%d,\n"available_ms":%d,\n"max_attempts":%d,\n"visibility_timeout_s":%d,\n'
        b'"priority":%d,\n"attempts":%d,\n' % (job.created_ms, job.available_ms, job.max_attempts,
                                                job.visibility_timeout_s, job.priority, job.attempts),
        b'"lease":', lease_raw, b',\n"last_error":', dumps(job.last_error), b',\n"result":', dumps(job.result),
        b',\n"dedup_id":', dumps(job.dedup_id), b',\n"trace":', dumps(job.trace),
        b',\n"finished_ms":', _opt_int(job.finished_ms), b',\n"updated_ms":%d' % job.updated_ms,
        b',\n"payload":', dumps(job.payload), b"}",
    ))


def is_current_record(raw: bytes) -> bool:
    return raw.startswith(RECORD_HEAD)
