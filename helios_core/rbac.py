"""Role-based access control: roles, permissions, and who has which.

A permission is a string such as ``kv:read``, ``jobs:enqueue`` or
``admin:users``.  A granted permission may

- use ``*`` as a whole part: ``*`` grants everything, ``kv:*`` every ``kv:``
  permission;
- be scoped to a key prefix with ``@``: ``kv:write@users/{user}/`` grants
  ``kv:write`` only on keys under that prefix, where ``{user}`` expands to the
  caller's user id, so one role gives every user a private namespace.

Roles live at ``rbac:{auth}:role:ROLE`` (JSON: name, description, permissions,
builtin) and a user's roles at ``rbac:{auth}:user_roles:USER`` (a JSON list).
Nothing is cached between requests, so a role change applies to the next one
(AuthService.authenticate reuses a Principal only while the stored bytes it was
made from, re-read on every request, are unchanged).

Grant only what you hold.  Every administrative power that hands out
permissions (create, edit or delete a role; assign or remove one; mint an API
token; act on a user as a stronger one could) is checked here, in
`require_covered`, against the caller's own grants, scope included: ``*``
covers everything, ``kv:*`` every ``kv:`` permission, ``kv:write@users/``
covers ``kv:write@users/{user}/`` but not ``kv:write``.  `RoleStore` runs the
check inside the transaction that makes the change, so what is checked is
what is changed.  A grantor of None is the local owner (`helios user --data`),
whose authority is the data directory's file permissions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from helios_core.errors import ConflictError, InvalidInputError, NotFoundError, PermissionDeniedError
from helios_core.store.base import Store, Txn

__all__ = [
    "Grant",
    "Grantor",
    "Role",
    "RoleStore",
    "SEEDED_ROLES",
    "KNOWN_PERMISSIONS",
    "parse_grant",
    "compile_grants",
    "allowed",
    "role_key",
    "user_roles_key",
    "validate_role_name",
    "covers",
    "uncovered",
    "require_covered",
    "is_superuser",
]

# Under the auth keys' hash tag {auth}: a user's roles are read beside its token and record (one slot).
ROLE_PREFIX = "rbac:{auth}:role:"
USER_ROLES_PREFIX = "rbac:{auth}:user_roles:"

# What the built-in services check.  Custom roles may name others (a later
# service's), but these are the ones documented in the admin API.
KNOWN_PERMISSIONS: tuple[str, ...] = (
    "kv:read", "kv:write", "jobs:enqueue", "jobs:work", "jobs:read", "jobs:admin",
    "admin:users", "admin:roles", "admin:sessions", "admin:ratelimit", "admin:store", "admin:audit",
    "admin:proxy",
)

SEEDED_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("Everything.", ("*",)),
    "user": ("Own KV namespace users/{id}/ and enqueuing jobs.",
             ("kv:read@users/{user}/", "kv:write@users/{user}/", "jobs:enqueue")),
    "readonly": ("Read every KV key.", ("kv:read",)),
    "worker": ("Lease and run jobs.", ("jobs:work", "jobs:read")),
}

# fullmatch, never `$`: `$` also matches before a trailing newline ("ops\n").
_NAME_RE = re.compile(r"(\*|[a-z][a-z0-9_-]*)(:(\*|[a-z][a-z0-9_-]*))*")
_ROLE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_PREFIX_MAX = 256


def role_key(role: str) -> str:
    return ROLE_PREFIX + role


def user_roles_key(user_id: str) -> str:
    return USER_ROLES_PREFIX + user_id


@dataclass(frozen=True)
class Grant:
    name: str  # e.g. "kv:read", "kv:*", "*"
    prefix: str | None = None  # key prefix, may contain "{user}"

    def matches(self, needed: str, resource: str | None, user_id: str) -> bool:
        if not _name_matches(self.name, needed):
            return False
        if self.prefix is None:
            return True
        if resource is None:
            return False
        return resource.startswith(self.prefix.replace("{user}", user_id))


def _name_matches(granted: str, needed: str) -> bool:
    if granted == needed or granted == "*":
        return True
    if granted.endswith(":*"):
        return needed.startswith(granted[:-1])
    return False


def parse_grant(text: str) -> Grant:
    """``name`` or ``name@prefix``; InvalidInputError says what is wrong."""
    if not isinstance(text, str) or not text:
        raise InvalidInputError("a permission must be a non-empty string such as 'kv:read'")
    name, at, prefix = text.partition("@")
    if not _NAME_RE.fullmatch(name):
        raise InvalidInputError(f"bad permission {text!r}: the name must look like 'kv:read', 'kv:*' or '*'")
    if at and not prefix:
        raise InvalidInputError(f"bad permission {text!r}: nothing after '@' (give a key prefix)")
    if len(prefix) > _PREFIX_MAX or not prefix.isprintable():
        raise InvalidInputError(f"bad permission {text[:80]!r}: the key prefix must be printable and at most "
                                f"{_PREFIX_MAX} characters")
    return Grant(name, prefix if at else None)


def compile_grants(permissions: Iterable[str]) -> tuple[Grant, ...]:
    return tuple(parse_grant(p) for p in permissions)


def allowed(grants: Iterable[Grant], needed: str, resource: str | None, user_id: str) -> bool:
    """Does any grant give `needed` on `resource` (a KV key or listing prefix, or None)?"""
    return any(g.matches(needed, resource, user_id) for g in grants)


def validate_role_name(name: str) -> str:
    if not isinstance(name, str) or not _ROLE_RE.fullmatch(name):
        shown = repr(name[:80]) if isinstance(name, str) else type(name).__name__
        raise InvalidInputError(f"bad role name {shown}: use 1-64 of a-z 0-9 _ . - starting with a letter")
    return name


# -- grant only what you hold ------------------------------------------------------------------


class Grantor(Protocol):
    """Who exercises an administrative power (an authenticated `Principal`)."""

    @property
    def user_id(self) -> str: ...

    @property
    def username(self) -> str: ...

    @property
    def grants(self) -> tuple[Grant, ...]: ...


def _text(g: Grant) -> str:
    return g.name + (f"@{g.prefix}" if g.prefix is not None else "")


def covers(held: Grant, held_uid: str, wanted: Grant, wanted_uid: str | None = None) -> bool:
    """Does `held` (of user `held_uid`) give at least what `wanted` gives?

    `wanted_uid` None: `wanted` is a permission as written in a role, and
    ``{user}`` stands for whoever gets the role; a held ``{user}`` template
    then covers the same template.  Otherwise `wanted` is what user
    `wanted_uid` holds, so both templates are expanded to their users.
    """
    if not _name_matches(held.name, wanted.name):
        return False
    if held.prefix is None:
        return True
    if wanted.prefix is None:
        return False
    if wanted_uid is None and wanted.prefix.startswith(held.prefix):
        return True
    want = wanted.prefix if wanted_uid is None else wanted.prefix.replace("{user}", wanted_uid)
    return "{user}" not in want and want.startswith(held.prefix.replace("{user}", held_uid))


def uncovered(held: Iterable[Grant], held_uid: str, wanted: Iterable[Grant],
              wanted_uid: str | None = None) -> list[str]:
    """The permissions of `wanted` that no grant of `held` covers (sorted, as written)."""
    held = tuple(held)
    return sorted({_text(w) for w in wanted if not any(covers(h, held_uid, w, wanted_uid) for h in held)})


def require_covered(by: Grantor | None, wanted: Iterable[Grant], action: str, *,
                    wanted_uid: str | None = None) -> None:
    """PermissionDeniedError (403) naming what `by` lacks to `action` (e.g. "create role 'ops'")."""
    if by is None:
        return
    missing = uncovered(by.grants, by.user_id, wanted, wanted_uid)
    if missing:
        raise PermissionDeniedError(
            f"cannot {action}: it involves permission(s) {by.username} does not hold: {', '.join(missing)} "
            f"(you can grant, change or act on only what your own roles give you)", code="exceeds_own_grants")


def is_superuser(grants: Iterable[Grant]) -> bool:
    """Holds the unscoped ``*``: everything, including every administrative power."""
    return any(g.name == "*" and g.prefix is None for g in grants)


@dataclass(frozen=True)
class Role:
    name: str
    permissions: tuple[str, ...]
    description: str = ""
    builtin: bool = False
    grants: tuple[Grant, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(cls, name: str, permissions: Sequence[str], description: str = "", builtin: bool = False) -> Role:
        validate_role_name(name)
        if isinstance(permissions, str) or not isinstance(permissions, Sequence):
            raise InvalidInputError("permissions: expected a list of strings")
        if not isinstance(description, str):
            raise InvalidInputError("description: expected a string")
        perms = tuple(dict.fromkeys(permissions))
        return cls(name, perms, description, builtin, compile_grants(perms))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "permissions": list(self.permissions),
                "builtin": self.builtin}

    @classmethod
    def from_raw(cls, raw: bytes) -> Role:
        d = orjson.loads(raw)
        return cls.build(d["name"], d.get("permissions", []), d.get("description", ""), d.get("builtin", False))


class RoleStore:
    """Roles and user-role assignments in the Store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Parsing is cached by the stored bytes, so an edited role is re-read at once.
        self._parsed: dict[bytes, Role] = {}

    def _role(self, raw: bytes) -> Role:
        role = self._parsed.get(raw)
        if role is None:
            if len(self._parsed) > 1024:
                self._parsed.clear()
            role = self._parsed[raw] = Role.from_raw(raw)
        return role

    async def seed(self) -> list[str]:
        """Create the built-in roles that do not exist; returns the names created."""

        async def fn(txn: Txn) -> list[str]:
            names = list(SEEDED_ROLES)
            existing = await txn.mget([role_key(n) for n in names])
            created = []
            for name, raw in zip(names, existing, strict=True):
                if raw is None:
                    desc, perms = SEEDED_ROLES[name]
                    txn.set(role_key(name), orjson.dumps(Role.build(name, perms, desc, True).to_json()))
                    created.append(name)
            return created

        return await self.store.transact(fn)

    async def get(self, name: str) -> Role:
        raw = await self.store.get(role_key(name))
        if raw is None:
            raise NotFoundError(f"role {name!r} does not exist", code="role_not_found")
        return self._role(raw)

    async def list(self) -> list[Role]:
        raws = await self.store.mget(list(await self.store.scan_all(ROLE_PREFIX)))
        return sorted((self._role(r) for r in raws if r is not None), key=lambda r: r.name)

    async def put(self, role: Role, *, create_only: bool = False, by: Grantor | None = None) -> bool:
        """Create or replace a role; returns True when it was created.

        `by` must hold every permission of the new definition and of the old one.
        """

        async def fn(txn: Txn) -> bool:
            raw = await txn.get(role_key(role.name))
            if raw is not None and create_only:
                raise ConflictError(f"role {role.name!r} already exists", code="role_exists")
            old = self._role(raw) if raw is not None else None
            verb = "create" if old is None else "change"
            require_covered(by, role.grants + (old.grants if old else ()), f"{verb} role {role.name!r}")
            stored = Role.build(role.name, role.permissions, role.description, bool(old and old.builtin))
            txn.set(role_key(role.name), orjson.dumps(stored.to_json()))
            return old is None

        return await self.store.transact(fn)

    async def delete(self, name: str, *, by: Grantor | None = None) -> Role:
        """Delete a custom role (users who had it lose it at their next request); returns it."""

        async def fn(txn: Txn) -> Role:
            raw = await txn.get(role_key(name))
            if raw is None:
                raise NotFoundError(f"role {name!r} does not exist", code="role_not_found")
            role = self._role(raw)
            if role.builtin:
                raise ConflictError(f"role {name!r} is built in and cannot be deleted", code="role_builtin")
            require_covered(by, role.grants, f"delete role {name!r}")
            txn.delete(role_key(name))
            return role

        return await self.store.transact(fn)

    async def roles_of(self, user_id: str) -> Sequence[str]:
        raw = await self.store.get(user_roles_key(user_id))
        return tuple(orjson.loads(raw)) if raw else ()

    async def grants_for(self, role_names: Sequence[str]) -> tuple[Grant, ...]:
        """Every grant of the named roles (roles deleted meanwhile give nothing)."""
        if not role_names:
            return ()
        return self.grants_from(await self.store.mget([role_key(r) for r in role_names]))

    def grants_from(self, raws: Sequence[bytes | None]) -> tuple[Grant, ...]:
        """The grants of stored role definitions (None: a role deleted meanwhile, giving nothing)."""
        return tuple(g for raw in raws if raw is not None for g in self._role(raw).grants)

    async def grant(self, user_id: str, role: str, *, by: Grantor | None = None) -> bool:
        """Give `user_id` the role; returns False when they had it already."""

        async def fn(txn: Txn) -> bool:
            role_raw, roles_raw = await txn.mget([role_key(role), user_roles_key(user_id)])
            if role_raw is None:
                raise NotFoundError(f"role {role!r} does not exist", code="role_not_found")
            require_covered(by, self._role(role_raw).grants, f"assign role {role!r}")
            roles = list(orjson.loads(roles_raw)) if roles_raw else []
            if role in roles:
                return False
            txn.set(user_roles_key(user_id), orjson.dumps([*roles, role]))
            return True

        return await self.store.transact(fn)

    async def revoke(self, user_id: str, role: str, *, by: Grantor | None = None) -> bool:
        """Take the role away; returns False when the user did not have it."""

        async def fn(txn: Txn) -> bool:
            role_raw, roles_raw = await txn.mget([role_key(role), user_roles_key(user_id)])
            if role_raw is not None:
                require_covered(by, self._role(role_raw).grants, f"remove role {role!r}")
            roles = list(orjson.loads(roles_raw)) if roles_raw else []
            if role not in roles:
                return False
            txn.set(user_roles_key(user_id), orjson.dumps([r for r in roles if r != role]))
            return True

        return await self.store.transact(fn)

    async def require_grantable(self, roles: Sequence[str], by: Grantor | None, action: str) -> None:
        """`by` holds every permission of the named roles (those that exist)."""
        if by is not None and roles:
            raws = await self.store.mget([role_key(r) for r in roles])
            require_covered(by, self.grants_from(raws), action)
