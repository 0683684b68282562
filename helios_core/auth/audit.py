"""The audit log: who did what, when, from where, and with what result.

Events are members of one sorted set, ``audit:{auth}:log``, scored by the negated
time in ms, so an ascending range read (the one the Store offers) walks them
newest first.  Each is written with a durable transaction: an event the
caller was told about survives a crash.  The set is trimmed to
``max_entries`` (oldest first) in the same transaction that grows it.

An event takes at most `MAX_EVENT_BYTES`: anyone can make the gateway write
one (a failed login), so what it copies from a request is cut to size, and
the event lists what was cut under ``cut`` (cut strings end in ``[cut]``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from helios_core.errors import InvalidInputError
from helios_core.store.base import Store, Txn

__all__ = ["AuditLog", "Actor", "AUDIT_KEY", "MAX_EVENT_BYTES", "bounded"]

AUDIT_KEY = "audit:{auth}:log"  # under the auth keys' hash tag: written beside them
_PAGE = 500
MAX_EVENT_BYTES = 4096
_FIELD_CHARS = 128  # of actor, actor_id, client, target (at most 4 bytes each in UTF-8)
_DETAIL_CHARS = 256  # of each string in the detail
_CUT = "[cut]"


@dataclass(frozen=True)
class Actor:
    """Who acts: a user of the API, or an operator's CLI (name "cli:<login>")."""

    name: str | None = None
    id: str | None = None
    client: str | None = None


class AuditLog:
    def __init__(self, store: Store, max_entries: int = 100000) -> None:
        self.store = store
        self.max_entries = max_entries

    async def record(self, now_ms: int, action: str, actor: Actor | None = None, *, target: str | None = None,
                     result: str = "ok", detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
        actor = actor or Actor()
        event = bounded({"id": secrets.token_hex(8), "time_ms": now_ms, "action": action, "actor": actor.name,
                         "actor_id": actor.id, "client": actor.client, "target": target, "result": result,
                         "detail": dict(detail or {})})
        member = orjson.dumps(event)
        limit = self.max_entries
        slack = max(1, limit // 100)  # trim in batches, not on every write

        async def fn(txn: Txn) -> int:
            txn.zadd(AUDIT_KEY, {member: -now_ms})
            n = await txn.zcard(AUDIT_KEY) + 1
            if n > limit + slack:
                # Scores are -time: the oldest events have the highest scores.
                oldest = await txn.zrangebyscore(AUDIT_KEY, "-inf", "+inf", offset=limit - 1, count=n - limit)
                txn.zrem(AUDIT_KEY, *(m for m, _ in oldest))
            return n

        _: int = await self.store.transact(fn)
        return event

    async def query(self, *, limit: int = 100, cursor: str | None = None, since_ms: int | None = None,
                    action: str | None = None, actor: str | None = None,
                    result: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Newest-first events matching the filters; returns (events, next cursor or None)."""
        if not 1 <= limit <= 1000:
            raise InvalidInputError("limit: expected 1..1000")
        score, skip = _parse_cursor(cursor)
        hi: float | str = -since_ms if since_ms is not None else "+inf"
        out: list[dict[str, Any]] = []
        while len(out) < limit:
            page = await self.store.zrangebyscore(AUDIT_KEY, score, hi, offset=skip, count=_PAGE)
            if not page:
                return out, None
            for member, s in page:
                if s == score:
                    skip += 1
                else:
                    score, skip = s, 1
                event = orjson.loads(member)
                if ((action is None or event["action"] == action) and (actor is None or event["actor"] == actor)
                        and (result is None or event["result"] == result)):
                    out.append(event)
                    if len(out) == limit:
                        break
            if len(page) < _PAGE and len(out) < limit:
                return out, None
        return out, f"{_fmt(score)}:{skip}"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + _CUT


def _cut_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _cut(value, _DETAIL_CHARS)
    if isinstance(value, dict):
        return {_cut(str(k), _DETAIL_CHARS): _cut_strings(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cut_strings(v) for v in value]
    return value


def bounded(event: dict[str, Any]) -> dict[str, Any]:
    """`event` cut to at most MAX_EVENT_BYTES encoded; what was cut is listed under "cut"."""
    cut = []
    for k in ("actor", "actor_id", "client", "target", "action", "result"):
        v = event.get(k)
        if isinstance(v, str) and len(v) > _FIELD_CHARS:
            event[k] = _cut(v, _FIELD_CHARS)
            cut.append(k)
    detail = event["detail"]
    size = len(orjson.dumps(detail))
    budget = MAX_EVENT_BYTES - len(orjson.dumps({**event, "detail": {}, "cut": [*cut, "detail"]})) - 32
    if size > budget:
        detail = _cut_strings(detail)
        text = orjson.dumps(detail)
        if len(text) > budget:  # still too big (many small parts): keep only its size
            detail = {"bytes": size}
        cut.append("detail")
        event["detail"] = detail
    if cut:
        event["cut"] = cut
    return event


def _fmt(score: float | str) -> str:
    return str(int(score)) if isinstance(score, float) and score.is_integer() else str(score)


def _parse_cursor(cursor: str | None) -> tuple[float | str, int]:
    """A cursor is "<score>:<how many events with that score were already returned>"."""
    if not cursor:
        return "-inf", 0
    try:
        s, n = cursor.split(":")
        skip = int(n)
        if skip < 0:
            raise ValueError
        return float(s), skip
    except ValueError:
        raise InvalidInputError("cursor: not a cursor this API returned") from None
