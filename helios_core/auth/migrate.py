"""Moving the auth keys to their names under the `{auth}` hash tag, once per store.

Why the tag: the gateway reads a caller's token, user record and roles in
one step beside the rate-limit script (RATE_TAKE on the caller's bucket and
the settings document), and the user, role and session changes are
transactions over several of these keys.  On Redis Cluster a script or a
transaction runs on one node, so all of them share one hash tag, `{auth}`
(DESIGN.md section 7; store/cluster.py).  On one server a tag is just part
of the name.

What moves (old name -> new name; values, and remaining TTLs, kept):

    auth:user:*, auth:username:*, auth:token:*, auth:session:*,
    auth:guard:*, auth:login_failures:*     -> auth:{auth}:...
    rbac:role:*, rbac:user_roles:*          -> rbac:{auth}:...
    config:ratelimit                        -> config:{auth}:ratelimit
    audit:log (a sorted set)                -> audit:{auth}:log (merged)

Rate-limit buckets (`rate:CLIENT`) are not moved: a bucket is refillable
state with a TTL of at most its window; after the upgrade each client starts
from a full bucket once, and the old ones expire by themselves.

`ensure_current(store)` runs at the gateway's start (AuthService.bootstrap)
and before every `helios user` and `helios ratelimit` command
on a store; `auth:{auth}:format` = "2" records that it was done, so every
later process reads one key.  Each key moves in a transaction that reads the
old and the new name: two processes migrating at once move each key once
(the second finds the old key gone), a key already under its new name wins
over the old one (which is dropped), and a migration cut short is done again
by the next process.  Not covered: a process of the older version still
writing meanwhile (stop those before upgrading).  On Redis Cluster there is
nothing to move (an older process could not run there: its transactions
were cross-slot), and the old and new names of a key are in different slots,
so a key of the old form found there is refused with `cross_slot`.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable

from helios_core.auth.audit import AUDIT_KEY
from helios_core.auth.service import LOGIN_FAILURES_PREFIX, SUPERUSER_GUARD_KEY
from helios_core.auth.sessions import SESSION_PREFIX, TOKEN_PREFIX
from helios_core.auth.users import USER_PREFIX, USERNAME_PREFIX
from helios_core.ratelimit import SETTINGS_KEY
from helios_core.rbac import ROLE_PREFIX, USER_ROLES_PREFIX
from helios_core.store.base import Store, Txn

__all__ = ["FORMAT_KEY", "CURRENT", "ensure_current", "migrate", "MOVES"]

FORMAT_KEY = "auth:{auth}:format"
CURRENT = b"2"

# Old prefix -> new prefix, for string keys (the longest old prefix that matches wins).
MOVES: dict[str, str] = {
    "auth:user:": USER_PREFIX,
    "auth:username:": USERNAME_PREFIX,
    "auth:token:": TOKEN_PREFIX,
    "auth:session:": SESSION_PREFIX,
    "auth:guard:": SUPERUSER_GUARD_KEY[:-len("superusers")],
    "auth:login_failures:": LOGIN_FAILURES_PREFIX,
    "rbac:role:": ROLE_PREFIX,
    "rbac:user_roles:": USER_ROLES_PREFIX,
}
_EXACT = {"config:ratelimit": SETTINGS_KEY}
_OLD_AUDIT = "audit:log"

_CURRENT: weakref.WeakSet[Store] = weakref.WeakSet()


async def ensure_current(store: Store) -> int:
    """Migrate unless this process or the store says it is done; how many keys moved."""
    if store in _CURRENT:
        return 0
    moved = 0
    if await store.get(FORMAT_KEY) != CURRENT:
        moved = await migrate(store)
        await store.set(FORMAT_KEY, CURRENT)
    _CURRENT.add(store)
    return moved


async def migrate(store: Store) -> int:
    """Move every key of the older names (see the module doc); returns how many moved."""
    moved = 0
    for scan_prefix in ("auth:", "rbac:"):
        for key in await store.scan_all(scan_prefix):
            new = _new_name(key.decode(errors="replace"))
            if new is not None:
                n: int = await store.transact(_move_string(key, new.encode()))
                moved += n
    for old, new in _EXACT.items():
        if await store.exists(old):
            n = await store.transact(_move_string(old.encode(), new.encode()))
            moved += n
    if await store.zcard(_OLD_AUDIT):
        n = await store.transact(_merge_audit)
        moved += n
    return moved


def _new_name(key: str) -> str | None:
    best = ""
    for old in MOVES:
        if key.startswith(old) and len(old) > len(best):
            best = old
    return MOVES[best] + key[len(best):] if best else None


def _move_string(old: bytes, new: bytes) -> Callable[[Txn], Awaitable[int]]:
    async def move(txn: Txn) -> int:
        raw, current = await txn.mget([old, new])
        if raw is None:
            return 0  # moved by another process meanwhile (or expired)
        if current is None:
            ttl = await txn.pttl(old)
            txn.set(new, raw, px=ttl if ttl > 0 else None)
        txn.delete(old)
        return 1

    return move


async def _merge_audit(txn: Txn) -> int:
    entries = await txn.zrangebyscore(_OLD_AUDIT)
    if not entries:
        return 0
    txn.zadd(AUDIT_KEY, dict(entries))
    txn.delete(_OLD_AUDIT)
    return 1
