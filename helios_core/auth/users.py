"""User accounts in the Store.

``auth:{auth}:user:ID`` holds the user (JSON), ``auth:{auth}:username:NAME``
maps a username to its id.  Both change in one transaction, so a username is
never taken twice and never points at a missing user.  Usernames are
case-insensitive (stored lower-case) so ``Admin`` and ``admin`` are one account.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson

from helios_core.errors import ConflictError, InvalidInputError, NotFoundError
from helios_core.rbac import role_key, user_roles_key
from helios_core.store.base import Store, Txn

__all__ = ["User", "UserDirectory", "normalize_username", "user_key", "username_key"]

# Every auth key carries the hash tag {auth} (one Redis Cluster slot: see helios_core/auth/migrate.py).
USER_PREFIX = "auth:{auth}:user:"
USERNAME_PREFIX = "auth:{auth}:username:"
_USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9_.@-]{0,63}")  # fullmatch: `$` lets a trailing "\n" through


def user_key(user_id: str) -> str:
    return USER_PREFIX + user_id


def username_key(username: str) -> str:
    return USERNAME_PREFIX + username


def normalize_username(name: object) -> str:
    if not isinstance(name, str) or len(name) > 128:
        raise InvalidInputError("username: expected a string of at most 64 characters")
    n = name.strip().lower()
    if not _USERNAME_RE.fullmatch(n):
        raise InvalidInputError("username: 1-64 characters of a-z 0-9 _ . @ -, starting with a letter or digit")
    return n


@dataclass(frozen=True)
class User:
    id: str
    username: str
    password_hash: str
    created_ms: int
    updated_ms: int
    disabled: bool = False

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> User:
        return cls(**orjson.loads(raw))

    def public(self, roles: list[str] | None = None) -> dict[str, Any]:
        """What the API shows: never the hash."""
        out: dict[str, Any] = {"id": self.id, "username": self.username, "created_ms": self.created_ms,
                               "updated_ms": self.updated_ms, "disabled": self.disabled}
        if roles is not None:
            out["roles"] = roles
        return out


class UserDirectory:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, username: str, password_hash: str, roles: list[str], now_ms: int) -> User:
        """A new user with `roles` (which must exist); ConflictError if the name is taken."""
        name = normalize_username(username)
        user = User("u_" + secrets.token_hex(8), name, password_hash, now_ms, now_ms)
        roles = list(dict.fromkeys(roles))

        async def fn(txn: Txn) -> str:
            if await txn.exists(username_key(name)):
                raise ConflictError(f"user {name!r} already exists", code="user_exists")
            found = await txn.mget([role_key(r) for r in roles]) if roles else []
            missing = [r for r, raw in zip(roles, found, strict=True) if raw is None]
            if missing:
                raise NotFoundError(f"role(s) {', '.join(missing)} do not exist", code="role_not_found")
            txn.set(user_key(user.id), user.encode())
            txn.set(username_key(name), user.id)
            txn.set(user_roles_key(user.id), orjson.dumps(roles))
            return user.id

        _: str = await self.store.transact(fn)
        return user

    async def get(self, user_id: str) -> User | None:
        raw = await self.store.get(user_key(user_id))
        return User.decode(raw) if raw is not None else None

    async def by_name(self, username: str) -> User | None:
        try:
            name = normalize_username(username)
        except InvalidInputError:
            return None
        uid = await self.store.get(username_key(name))
        return await self.get(uid.decode()) if uid is not None else None

    async def require(self, username: str) -> User:
        user = await self.by_name(username)
        if user is None:
            raise NotFoundError(f"user {username!r} does not exist", code="user_not_found")
        return user

    async def list(self) -> list[User]:
        keys = await self.store.scan_all(USER_PREFIX)
        raws = await self.store.mget(list(keys)) if keys else []
        return sorted((User.decode(r) for r in raws if r is not None), key=lambda u: u.username)

    async def any_exist(self) -> bool:
        cursor = "0"
        while True:  # a page may come back empty (expired keys) before the scan is done
            cursor, page = await self.store.scan(USER_PREFIX, cursor, 100)
            if page:
                return True
            if cursor == "0":
                return False

    async def update(self, user_id: str, now_ms: int, **changes: Any) -> User:
        """Change fields (password_hash, disabled) of an existing user atomically."""

        async def fn(txn: Txn) -> User:
            raw = await txn.get(user_key(user_id))
            if raw is None:
                raise NotFoundError("user does not exist", code="user_not_found")
            user = replace(User.decode(raw), **changes, updated_ms=now_ms)
            txn.set(user_key(user_id), user.encode())
            return user

        return await self.store.transact(fn)

    async def delete(self, user: User) -> None:
        """Remove the user, their name and their roles (sessions are the caller's to revoke first)."""

        def fn(txn: Txn) -> None:
            txn.delete(user_key(user.id), username_key(user.username), user_roles_key(user.id))

        await self.store.transact(fn)
