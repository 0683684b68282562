"""Listing a queue's jobs by state, a page at a time, from the state's index.

A listing walks one or more sorted sets (PENDING: ready then delayed;
IN_PROGRESS: leased; FAILED: dlq; DONE and CANCELLED: done, filtered by
state; no state: all five) in index order, (score, id).  The cursor is the
position after the last entry examined: which index, and that entry's score
and id (keyset pagination).  Unlike an offset it does not shift when jobs
ahead of it leave the index, so a listing of a queue that does not change
returns every job exactly once; a job that changes state while you page
moves to another index and may be seen twice or not at all.

The cursor is base64url of a small JSON array (version, queue, state, index
position, score, id): opaque to callers, checked against the listing it is
passed back to.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import orjson

from helios_core.errors import InvalidInputError
from helios_core.jobs.model import Job, State, delayed_key, dlq_key, done_key, job_key, leased_key, ready_key
from helios_core.store.base import Store

__all__ = ["list_jobs", "index_plan"]

_VERSION = 1
# A page examines at most this many index entries per job asked for, so that a
# filtered listing (CANCELLED among many DONE) answers in bounded time; it may
# then return fewer jobs than asked for, with a cursor to go on.
_SCAN_FACTOR = 10


def index_plan(queue: str, state: State | None) -> list[tuple[str, frozenset[State]]]:
    """The indexes a listing walks, each with the states a job listed from it may have."""
    pending = frozenset({State.PENDING})
    plan = {
        State.PENDING: [(ready_key(queue), pending), (delayed_key(queue), pending)],
        State.IN_PROGRESS: [(leased_key(queue), frozenset({State.IN_PROGRESS}))],
        State.FAILED: [(dlq_key(queue), frozenset({State.FAILED}))],
        State.DONE: [(done_key(queue), frozenset({State.DONE}))],
        State.CANCELLED: [(done_key(queue), frozenset({State.CANCELLED}))],
    }
    if state is not None:
        return plan[state]
    finished = frozenset({State.DONE, State.CANCELLED})
    return [*plan[State.PENDING], *plan[State.IN_PROGRESS], *plan[State.FAILED], (done_key(queue), finished)]


@dataclass(frozen=True)
class _Position:
    index: int = 0
    score: float | None = None  # the last entry examined in that index (None: from its start)
    member: bytes = b""


async def list_jobs(store: Store, queue: str, state: State | None, cursor: str | None,
                    limit: int) -> tuple[list[Job], str | None]:
    plan = index_plan(queue, state)
    pos = _decode(cursor, queue, state, len(plan)) if cursor else _Position()
    jobs: list[Job] = []
    budget = limit * _SCAN_FACTOR
    while len(jobs) < limit and pos.index < len(plan) and budget > 0:
        key, states = plan[pos.index]
        want = min(limit - len(jobs), budget)
        entries, more = await _entries_after(store, key, pos, want)
        budget -= len(entries)
        raws = await store.mget([job_key(queue, m.decode()) for m, _ in entries])
        for (member, score), raw in zip(entries, raws, strict=True):
            pos = _Position(pos.index, score, member)
            job = None if raw is None else Job.decode(raw)  # None: expired, not yet pruned
            if job is not None and job.state in states:
                jobs.append(job)
        if not more:
            pos = _Position(pos.index + 1)
    return jobs, (None if pos.index >= len(plan) else _encode(pos, queue, state))


async def _entries_after(store: Store, key: str, pos: _Position, n: int) -> tuple[list[tuple[bytes, float]], bool]:
    """Up to n entries of `key` after `pos` in (score, member) order, and whether more follow."""
    if pos.score is None:
        batch = await store.zrangebyscore(key, "-inf", "+inf", count=n + 1)
        return batch[:n], len(batch) > n
    # Entries of the same score as the last one come again from an inclusive bound:
    # skip those up to the last member (Redis orders equal scores by member bytes).
    out: list[tuple[bytes, float]] = []
    offset = 0
    while True:
        want = n + 1 - len(out) + 16
        batch = await store.zrangebyscore(key, pos.score, "+inf", offset=offset, count=want)
        out += [(m, s) for m, s in batch if s > pos.score or m > pos.member]
        if len(out) > n:
            return out[:n], True
        if len(batch) < want:
            return out, False
        offset += len(batch)


def _encode(pos: _Position, queue: str, state: State | None) -> str:
    doc = [_VERSION, queue, str(state or ""), pos.index, pos.score, pos.member.decode()]
    return base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode()


def _decode(cursor: str, queue: str, state: State | None, n_indexes: int) -> _Position:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, c_queue, c_state, index, score, member = orjson.loads(raw)
        ok = (version == _VERSION and c_queue == queue and c_state == str(state or "")
              and isinstance(index, int) and 0 <= index < n_indexes
              and (score is None or isinstance(score, int | float)) and isinstance(member, str))
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        ok = False
    if not ok:
        raise InvalidInputError("cursor is not one this listing returned: pass back the cursor of the previous "
                                "page of the same queue and state, or none to start over")
    return _Position(index, None if score is None else float(score), member.encode())
