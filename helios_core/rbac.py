"""Role-based access control: roles, permissions, and who has which.

A permission is a string such as ``kv:read``, ``jobs:enqueue`` or
``admin:users``.  A granted permission may

- use ``*`` as a whole part: ``*`` grants everything, ``kv:*`` every ``kv:``
  permission;
- be scoped to a key prefix with ``@``: ``kv:write@users/{user}/`` grants
  ``kv:write`` only on keys under that prefix, where ``{user}`` expands to the
  caller's user id, so one role gives every user a private namespace.

Roles live at ``rbac:role:{role}`` (JSON: name, description, permissions,
builtin) and a user's roles at ``rbac:user_roles:{userId}`` (a JSON list).
Nothing is cached between requests, so a role change applies to the next one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from helios_core.errors import ConflictError, InvalidInputError, NotFoundError
from helios_core.store.base import Store, Txn

__all__ = [
    "Grant",
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
]

ROLE_PREFIX = "rbac:role:"
USER_ROLES_PREFIX = "rbac:user_roles:"

# What the built-in services check.  Custom roles may name others (a later
# service's), but these are the ones documented in the admin API.
KNOWN_PERMISSIONS: tuple[str, ...] = (
    "kv:read", "kv:write", "jobs:enqueue", "jobs:work", "jobs:read", "jobs:admin",
    "admin:users", "admin:roles", "admin:sessions", "admin:ratelimit", "admin:store", "admin:audit",
)

SEEDED_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("Everything.", ("*",)),
    "user": ("Own KV namespace users/{id}/ and enqueuing jobs.",
             ("kv:read@users/{user}/", "kv:write@users/{user}/", "jobs:enqueue")),
    "readonly": ("Read every KV key.", ("kv:read",)),
    "worker": ("Lease and run jobs.", ("jobs:work", "jobs:read")),
}

_NAME_RE = re.compile(r"^(\*|[a-z][a-z0-9_-]*)(:(\*|[a-z][a-z0-9_-]*))*$")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


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
    if not _NAME_RE.match(name):
        raise InvalidInputError(f"bad permission {text!r}: the name must look like 'kv:read', 'kv:*' or '*'")
    if at and not prefix:
        raise InvalidInputError(f"bad permission {text!r}: nothing after '@' (give a key prefix)")
    return Grant(name, prefix if at else None)


def compile_grants(permissions: Iterable[str]) -> tuple[Grant, ...]:
    return tuple(parse_grant(p) for p in permissions)


def allowed(grants: Iterable[Grant], needed: str, resource: str | None, user_id: str) -> bool:
    """Does any grant give `needed` on `resource` (a KV key or listing prefix, or None)?"""
    return any(g.matches(needed, resource, user_id) for g in grants)


def validate_role_name(name: str) -> str:
    if not isinstance(name, str) or not _ROLE_RE.match(name):
        raise InvalidInputError(
            f"bad role name {name!r}: use 1-64 of a-z 0-9 _ . - starting with a letter")
    return name


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
        names: list[bytes] = []
        cursor = "0"
        while True:
            cursor, keys = await self.store.scan(ROLE_PREFIX, cursor, 500)
            names.extend(keys)
            if cursor == "0":
                break
        raws = await self.store.mget(list(names))
        return sorted((self._role(r) for r in raws if r is not None), key=lambda r: r.name)

    async def put(self, role: Role, *, create_only: bool = False) -> bool:
        """Create or replace a role; returns True when it was created."""

        async def fn(txn: Txn) -> bool:
            raw = await txn.get(role_key(role.name))
            if raw is not None and create_only:
                raise ConflictError(f"role {role.name!r} already exists", code="role_exists")
            builtin = raw is not None and bool(orjson.loads(raw).get("builtin"))
            stored = Role.build(role.name, role.permissions, role.description, builtin)
            txn.set(role_key(role.name), orjson.dumps(stored.to_json()))
            return raw is None

        return await self.store.transact(fn)

    async def delete(self, name: str) -> None:
        """Delete a custom role; users who had it lose it at their next request."""
        role = await self.get(name)
        if role.builtin:
            raise ConflictError(f"role {name!r} is built in and cannot be deleted", code="role_builtin")
        await self.store.delete(role_key(name))

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

    async def grant(self, user_id: str, role: str) -> bool:
        """Give `user_id` the role; returns False when they had it already."""

        async def fn(txn: Txn) -> bool:
            role_raw, roles_raw = await txn.mget([role_key(role), user_roles_key(user_id)])
            if role_raw is None:
                raise NotFoundError(f"role {role!r} does not exist", code="role_not_found")
            roles = list(orjson.loads(roles_raw)) if roles_raw else []
            if role in roles:
                return False
            txn.set(user_roles_key(user_id), orjson.dumps([*roles, role]))
            return True

        return await self.store.transact(fn)

    async def revoke(self, user_id: str, role: str) -> bool:
        """Take the role away; returns False when the user did not have it."""

        async def fn(txn: Txn) -> bool:
            roles_raw = await txn.get(user_roles_key(user_id))
            roles = list(orjson.loads(roles_raw)) if roles_raw else []
            if role not in roles:
                return False
            txn.set(user_roles_key(user_id), orjson.dumps([r for r in roles if r != role]))
            return True

        return await self.store.transact(fn)
