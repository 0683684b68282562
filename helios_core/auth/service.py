"""Authentication flows on the Store: bootstrap, login, refresh, logout, accounts.

Every flow takes `now_ms` and an `Actor` (who asks, from where) and writes an
audit event.  The gateway's handlers and the `helios user` command are thin
layers over this class, so both behave the same and are audited the same.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from helios_core.auth.audit import Actor, AuditLog
from helios_core.auth.passwords import MAX_PASSWORD_BYTES, PasswordHasher, check_password_policy, generate_password
from helios_core.auth.sessions import ApiToken, Session, Sessions, TokenPair, token_key
from helios_core.auth.tokens import KeyRing, token_hash
from helios_core.auth.users import User, UserDirectory, normalize_username, user_key
from helios_core.config import AuthConfig
from helios_core.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from helios_core.ratelimit import MILLI, Bucket, Policy, RateLimiter, level
from helios_core.rbac import (
    Grant,
    Role,
    RoleStore,
    allowed,
    is_superuser,
    require_covered,
    role_key,
    user_roles_key,
    validate_role_name,
)
from helios_core.store.base import Key, Store, Txn

__all__ = ["Principal", "AuthService", "ADMIN_USERNAME"]

ADMIN_USERNAME = "admin"
_LABEL_MAX = 100  # characters of an API token's label
# Changes that may take `*` from its last holder run one at a time, across every gateway on the
# store: they hold this lease while they count the holders and write (see `_superuser_guard`).
SUPERUSER_GUARD_KEY = "auth:{auth}:guard:superusers"
LOGIN_FAILURES_PREFIX = "auth:{auth}:login_failures:"
_GUARD_LEASE_MS = 10_000
_GUARD_WAIT_S = 5.0
MAX_USERNAME_CHARS = 128  # checked before anything else; a valid username has at most 64
_PRINCIPALS_MAX = 10_000  # remembered principals (one per access token in use)
_REFRESH_TOKEN_CHARS = 4096  # ours are 46 characters; more is junk (an access token given by mistake is 401)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as of this request."""

    user_id: str
    username: str
    roles: tuple[str, ...]
    grants: tuple[Grant, ...]
    session_id: str | None
    token_hash: str

    def can(self, permission: str, resource: str | None = None) -> bool:
        return allowed(self.grants, permission, resource, self.user_id)

    def permissions(self) -> list[str]:
        return sorted({g.name + (f"@{g.prefix}" if g.prefix is not None else "") for g in self.grants})


class AuthService:
    def __init__(self, store: Store, config: AuthConfig, keys: KeyRing, hasher: PasswordHasher,
                 limiter: RateLimiter, audit: AuditLog) -> None:
        self.store = store
        self.config = config
        self.keys = keys
        self.hasher = hasher
        self.limiter = limiter
        self.audit = audit
        self.users = UserDirectory(store)
        self.roles = RoleStore(store)
        self.sessions = Sessions(store, keys, config.access_token_seconds, config.refresh_token_seconds)
        n, w = config.login_failures_per_user
        self._pair_free, self._pair_window_ms = n, w * 1000
        self._user_ceiling = Policy(10 * n, w, "login-user")
        n, w = config.login_failures_per_client
        self._client_throttle = Policy(n, w, "login-client")
        # Throttled attempts are counted here, not each audited: the count rides on the
        # next event written for that username and address.
        self._throttled: dict[str, int] = {}
        self._last_roles: dict[str, tuple[str, ...]] = {}  # user id -> role names seen last
        # token -> (keys read, their values, the Principal made from them): a request whose read
        # gives the same values gets the same Principal without decoding anything (`authenticate`).
        self._principals: dict[str, tuple[list[Key], list[bytes | None], Principal]] = {}

    # -- first start -------------------------------------------------------------------

    async def bootstrap(self, now_ms: int) -> str | None:
        """Seed the built-in roles; on a store without users, create `admin`.

        Returns the admin's generated password (to be shown once), or None.  First, keys stored
        under their names before the {auth} hash tag are moved (auth/migrate.py).
        """
        from helios_core.auth.migrate import ensure_current  # (it imports this module)

        await ensure_current(self.store)
        await self.roles.seed()
        if await self.users.any_exist():
            return None
        password = generate_password()
        try:
            user = await self.users.create(ADMIN_USERNAME, await self.hasher.hash(password), ["admin"], now_ms)
        except ConflictError:  # another process bootstrapped at the same moment
            return None
        await self.audit.record(now_ms, "user.create", Actor("system"), target=user.username,
                                detail={"roles": ["admin"], "bootstrap": True})
        return password

    # -- per request -------------------------------------------------------------------

    def remembered(self, token: str, now_ms: int) -> tuple[list[Key], list[bytes | None], Principal] | None:
        """Check `token` itself (signature, times: no store read) and return what its last
        authentication was made from: the keys read, their bytes then, and the Principal they made.
        The caller may read those keys itself (with other work, in one round trip): the same bytes
        mean the same Principal, else it calls `authenticate`.  None: no such memory."""
        self.keys.verify(token, now_ms)
        return self._principals.get(token)

    async def authenticate(self, token: str, now_ms: int) -> Principal:
        """The caller a bearer token stands for; AuthenticationError (401) if it does not stand."""
        claims = self.keys.verify(token, now_ms)
        uid = claims["sub"]
        keys: list[Key]
        memo = self._principals.get(token)
        if memo is not None:
            keys, last, principal = memo
            # The same stored bytes make the same Principal: anything that changed (the
            # token's record gone, the user disabled, a role edited) changed a value read here.
            raws = await self.store.mget(keys)
            if raws == last:
                return principal
        # One read for the common case: the role definitions are fetched with the
        # token and the user, guessing the user's roles are the ones seen last time.
        # A wrong guess (roles changed) costs a second read, never a stale answer.
        thash = token_hash(token)
        guess = self._last_roles.get(uid, ())
        keys = [token_key(thash), user_key(uid), user_roles_key(uid), *(role_key(r) for r in guess)]
        raws = await self.store.mget(keys)
        rec_raw, user_raw, roles_raw = raws[0], raws[1], raws[2]
        if rec_raw is None:
            self._principals.pop(token, None)
            raise AuthenticationError("token revoked or expired", code="token_revoked")
        rec = orjson.loads(rec_raw)
        if rec.get("kind") != "access" or rec.get("uid") != uid:
            raise AuthenticationError("invalid token: not an access token for this subject", code="invalid_token")
        if user_raw is None:
            raise AuthenticationError("the token's user no longer exists", code="account_removed")
        user = User.decode(user_raw)
        if user.disabled:
            raise AuthenticationError("account disabled", code="account_disabled")
        roles = tuple(orjson.loads(roles_raw)) if roles_raw else ()
        if roles == guess:
            grants = self.roles.grants_from(raws[3:])
        else:
            grants = await self.roles.grants_for(roles)
            if len(self._last_roles) > 100_000:
                self._last_roles.clear()
            self._last_roles[uid] = roles
        principal = Principal(uid, user.username, roles, grants, rec.get("sid"), thash)
        if roles == guess:  # everything it was made from is in `raws`: remember them together
            if len(self._principals) > _PRINCIPALS_MAX:
                self._principals.clear()
            self._principals[token] = (keys, raws, principal)
        return principal

    # -- login and sessions ------------------------------------------------------------

    # Login throttling (issue 10, item 6).  Per (username, address): after
    # `_pair_free` failures each further try from there waits 1 s, 2 s, 4 s ...
    # up to the window.  Per username over all addresses, a ceiling of failures
    # per window: beyond it every address that failed before waits (2^(n-1) s after
    # its n-th failure), but an address that never failed still gets its try, so
    # an attacker spraying from many addresses slows the admin down at most to
    # "log in from where you have not typed a wrong password", never locks them out.
    # Per address over all usernames: a token bucket (password spraying).

    def _pair_key(self, name: str, client: str | None) -> str:
        return f"{LOGIN_FAILURES_PREFIX}{client or '-'}:{name}"

    async def _throttle(self, name: str, client: str | None, now_ms: int) -> str:
        """Refuse (429) an attempt that must wait; returns the pair's state key."""
        pair = self._pair_key(name, client)
        pair_raw, user_raw = await self.store.mget([pair, self.limiter.prefix + f"login-user:{name}"])
        n, last_ms = orjson.loads(pair_raw) if pair_raw else (0, 0)
        wait_ms = self._delay_ms(n - self._pair_free + 1) if n >= self._pair_free else 0
        if n and level(Bucket.decode(user_raw), self._user_ceiling, now_ms).milli < MILLI:
            wait_ms = max(wait_ms, self._delay_ms(n))
        retry = last_ms + wait_ms - now_ms
        if retry <= 0 and client:
            d = await self.limiter.hit_policy(f"login-ip:{client}", self._client_throttle, now_ms)
            retry = 0 if d.allowed else d.retry_after_ms
        if retry > 0:
            if len(self._throttled) > 100_000:
                self._throttled.clear()
            self._throttled[pair] = self._throttled.get(pair, 0) + 1
            raise RateLimitedError("too many failed logins; try again later", code="login_throttled",
                                   retry_after_ms=retry)
        return pair

    def _delay_ms(self, step: int) -> int:
        return min(self._pair_window_ms, 1000 << min(step - 1, 40))

    async def _failed(self, name: str, pair: str, now_ms: int) -> None:
        async def count(txn: Txn) -> int:
            raw = await txn.get(pair)
            n = int(orjson.loads(raw)[0]) + 1 if raw else 1
            txn.set(pair, orjson.dumps([n, now_ms]), px=self._pair_window_ms + self._delay_ms(n))
            return n

        _: int = await self.store.transact(count, durable=False)
        await self.limiter.hit_policy(f"login-user:{name}", self._user_ceiling, now_ms)

    async def _forgive(self, pair: str, client: str | None, now_ms: int) -> None:
        await self.store.transact(lambda t: t.delete(pair), durable=False)
        if client:
            await self.limiter.credit(f"login-ip:{client}", self._client_throttle, now_ms)

    def _throttled_since(self, pair: str) -> dict[str, int]:
        n = self._throttled.pop(pair, 0)
        return {"throttled_attempts": n} if n else {}

    async def _check_password(self, username: object, password: object, now_ms: int,
                              actor: Actor, action: str) -> User:
        # Sizes first, before any work or any write (issue 10, item 5).
        if not isinstance(username, str) or len(username) > MAX_USERNAME_CHARS:
            raise InvalidInputError(f"username: expected a string of at most {MAX_USERNAME_CHARS} characters")
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_BYTES \
                or len(password.encode()) > MAX_PASSWORD_BYTES:
            raise InvalidInputError(f"password: expected a string of at most {MAX_PASSWORD_BYTES} bytes")
        name = username.strip().lower()
        pair = await self._throttle(name, actor.client, now_ms)
        user = await self.users.by_name(name) if name else None
        # Unknown users are checked against a dummy hash: same time as a wrong password.
        ok = await self.hasher.verify(password, user.password_hash if user else None)
        if user is None or not ok or user.disabled:
            # A disabled account answers exactly as a wrong password does, right password or not.
            reason = "unknown user" if user is None else "wrong password" if not ok else "disabled"
            await self._failed(name, pair, now_ms)
            await self.audit.record(now_ms, action, actor, target=name or None, result="failed",
                                    detail={"reason": reason, **self._throttled_since(pair)})
            raise AuthenticationError("invalid username or password", code="invalid_credentials")
        await self._forgive(pair, actor.client, now_ms)
        self._throttled.pop(pair, None)
        return user

    async def login(self, username: object, password: object, now_ms: int, actor: Actor,
                    user_agent: str | None = None) -> TokenPair:
        user = await self._check_password(username, password, now_ms, actor, "auth.login")
        pair = await self.sessions.open(user.id, now_ms, actor.client, user_agent)
        await self.audit.record(now_ms, "auth.login", Actor(user.username, user.id, actor.client),
                                target=user.username, detail={"session": pair.session_id})
        return pair

    async def refresh(self, refresh_token: object, now_ms: int, actor: Actor) -> TokenPair:
        if not isinstance(refresh_token, str) or len(refresh_token) > _REFRESH_TOKEN_CHARS:
            raise InvalidInputError(f"refresh_token: expected a string of at most {_REFRESH_TOKEN_CHARS} characters")
        try:
            pair = await self.sessions.refresh(refresh_token, now_ms, actor.client)
        except AuthenticationError as e:
            if e.code == "refresh_reused":
                await self.audit.record(now_ms, "auth.refresh", Actor(None, e.detail.get("uid"), actor.client),
                                        target=e.detail.get("sid"), result="reuse_detected",
                                        detail={"revoked_session": e.detail.get("sid")})
            raise
        return pair

    async def logout(self, principal: Principal, now_ms: int, actor: Actor) -> None:
        """End the caller's session: its access and refresh tokens stop working at once."""
        if not principal.session_id or not await self.sessions.revoke(principal.user_id, principal.session_id):
            await self.store.delete(token_key(principal.token_hash))
        await self.audit.record(now_ms, "auth.logout", actor, target=principal.username,
                                detail={"session": principal.session_id})

    async def register(self, username: object, password: object, now_ms: int, actor: Actor) -> User:
        if not self.config.open_registration:
            raise PermissionDeniedError("registration is closed; ask an administrator for an account",
                                        code="registration_closed")
        name = normalize_username(username)
        password = check_password_policy(password, self.config.min_password_length)
        user = await self.users.create(name, await self.hasher.hash(password),
                                       list(self.config.default_roles), now_ms)
        await self.audit.record(now_ms, "auth.register", actor, target=name)
        return user

    async def change_password(self, principal: Principal, current: object, new: object, now_ms: int,
                              actor: Actor) -> int:
        """Change the caller's password after checking the current one; revokes all their sessions."""
        new = check_password_policy(new, self.config.min_password_length, "new_password")
        try:
            await self._check_password(principal.username, current, now_ms, actor, "auth.password")
        except AuthenticationError:
            raise PermissionDeniedError("current_password is wrong", code="wrong_password") from None
        await self.users.update(principal.user_id, now_ms, password_hash=await self.hasher.hash(new))
        n = await self.sessions.revoke_all(principal.user_id)
        await self.audit.record(now_ms, "auth.password", actor, target=principal.username,
                                detail={"sessions_revoked": n})
        return n

    # -- administration (admin API and `helios user`) ----------------------------------
    #
    # `by` is the API caller, held to "grant only what you hold" (rbac.require_covered):
    # it may hand out only permissions it holds, and act on a user (password,
    # disable, remove, sessions, tokens) only if it holds everything that user
    # holds, or the action would be a way up.  None is the local owner
    # (`helios user --data`), whose authority is the data directory's permissions.
    # Nobody, the owner included, may leave the store without an enabled `*` holder.

    async def _require_over(self, by: Principal | None, user: User, action: str) -> None:
        if by is None or by.user_id == user.id:
            return
        grants = await self.roles.grants_for(await self.roles.roles_of(user.id))
        require_covered(by, grants, f"{action} {user.username}", wanted_uid=user.id)

    async def _superusers(self, *, without_user: str | None = None, without_grant: tuple[str, str] | None = None,
                          role: Role | None = None, role_gone: str | None = None) -> int:
        """How many enabled users would hold `*` after the change described (one at a time)."""
        users = [u for u in await self.users.list() if not u.disabled and u.id != without_user]
        if not users:
            return 0
        raws = await self.store.mget([user_roles_key(u.id) for u in users])
        held = {u.id: [r for r in (orjson.loads(raw) if raw else []) if (u.id, r) != without_grant]
                for u, raw in zip(users, raws, strict=True)}
        names = sorted({r for rs in held.values() for r in rs})
        defs = dict(zip(names, await self.store.mget([role_key(r) for r in names]) if names else [], strict=True))

        def star(name: str) -> bool:
            if name == role_gone:
                return False
            if role is not None and name == role.name:
                return is_superuser(role.grants)
            raw = defs.get(name)
            return raw is not None and is_superuser(self.roles.grants_from([raw]))

        return sum(1 for u in users if any(star(r) for r in held[u.id]))

    async def _is_superuser(self, user: User) -> bool:
        return not user.disabled and is_superuser(await self.roles.grants_for(await self.roles.roles_of(user.id)))

    @asynccontextmanager
    async def _superuser_guard(self) -> AsyncIterator[None]:
        """Hold the store-wide lease that serialises changes which may leave no `*` holder.

        Counting the holders and then writing is two steps: two admins disabling each other at
        once would each see the other remain, and both go.  Inside the lease the second one
        counts after the first one's write.  The lease expires on its own (a crashed gateway
        cannot wedge it) after _GUARD_LEASE_MS, longer than any one change takes."""
        token = secrets.token_hex(8)

        async def take(txn: Txn) -> bool:
            if await txn.get(SUPERUSER_GUARD_KEY) is not None:
                return False
            txn.set(SUPERUSER_GUARD_KEY, token, px=_GUARD_LEASE_MS)
            return True

        deadline = time.monotonic() + _GUARD_WAIT_S
        delay = 0.005
        while True:
            taken: bool = await self.store.transact(take)
            if taken:
                break
            if time.monotonic() > deadline:
                raise ConflictError("another change to who holds '*' is in progress; try again",
                                    code="superuser_change_busy")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

        async def give_back(txn: Txn) -> bool:
            if await txn.get(SUPERUSER_GUARD_KEY) != token.encode():
                return False  # expired and taken by another change meanwhile: not ours to delete
            txn.delete(SUPERUSER_GUARD_KEY)
            return True

        try:
            yield
        finally:
            released: bool = await self.store.transact(give_back)
            del released

    @staticmethod
    def _last_superuser(what: str) -> ConflictError:
        return ConflictError(f"cannot {what}: that would leave no enabled user holding '*' (the last enabled user "
                             f"holding '*' must stay); give '*' to another user first", code="last_superuser")

    async def create_user(self, username: object, password: str | None, roles: Iterable[str], now_ms: int,
                          actor: Actor, by: Principal | None = None) -> tuple[User, str | None]:
        """Create a user; with no password, one is generated and returned (to show once)."""
        name = normalize_username(username)
        role_list = [validate_role_name(r) for r in roles]
        await self.roles.require_grantable(role_list, by, f"create user {name!r} with role(s) "
                                                          f"{', '.join(role_list)}")
        generated = None
        if password is None:
            password = generated = generate_password()
        else:
            check_password_policy(password, self.config.min_password_length)
        user = await self.users.create(name, await self.hasher.hash(password), role_list, now_ms)
        await self.audit.record(now_ms, "user.create", actor, target=name, detail={"roles": role_list})
        return user, generated

    async def set_password(self, username: str, password: str | None, now_ms: int,
                           actor: Actor, by: Principal | None = None) -> tuple[User, str | None]:
        user = await self.users.require(username)
        await self._require_over(by, user, "set the password of")
        generated = None
        if password is None:
            password = generated = generate_password()
        else:
            check_password_policy(password, self.config.min_password_length)
        user = await self.users.update(user.id, now_ms, password_hash=await self.hasher.hash(password))
        n = await self.sessions.revoke_all(user.id)
        await self.audit.record(now_ms, "user.password", actor, target=user.username,
                                detail={"sessions_revoked": n})
        return user, generated

    async def set_disabled(self, username: str, disabled: bool, now_ms: int, actor: Actor,
                           by: Principal | None = None) -> User:
        user = await self.users.require(username)
        if disabled and actor.id == user.id:
            raise ConflictError("you cannot disable your own account", code="disable_self")
        await self._require_over(by, user, "disable" if disabled else "enable")
        if disabled and await self._is_superuser(user):
            async with self._superuser_guard():
                if not await self._superusers(without_user=user.id):
                    raise self._last_superuser(f"disable {user.username}")
                user = await self.users.update(user.id, now_ms, disabled=disabled)
        else:
            user = await self.users.update(user.id, now_ms, disabled=disabled)
        n = await self.sessions.revoke_all(user.id) if disabled else 0
        await self.audit.record(now_ms, "user.disable" if disabled else "user.enable", actor,
                                target=user.username, detail={"sessions_revoked": n})
        return user

    async def remove_user(self, username: str, now_ms: int, actor: Actor, by: Principal | None = None) -> User:
        user = await self.users.require(username)
        if actor.id == user.id:
            raise ConflictError("you cannot remove your own account", code="remove_self")
        await self._require_over(by, user, "remove")
        if await self._is_superuser(user):
            async with self._superuser_guard():
                if not await self._superusers(without_user=user.id):
                    raise self._last_superuser(f"remove {user.username}")
                await self.sessions.revoke_all(user.id)
                await self.users.delete(user)
        else:
            await self.sessions.revoke_all(user.id)
            await self.users.delete(user)
        await self.audit.record(now_ms, "user.remove", actor, target=user.username)
        return user

    async def grant(self, username: str, role: str, now_ms: int, actor: Actor, by: Principal | None = None) -> bool:
        user = await self.users.require(username)
        changed = await self.roles.grant(user.id, validate_role_name(role), by=by)
        await self.audit.record(now_ms, "role.grant", actor, target=user.username,
                                detail={"role": role, "changed": changed})
        return changed

    async def revoke(self, username: str, role: str, now_ms: int, actor: Actor, by: Principal | None = None) -> bool:
        user = await self.users.require(username)
        await self.roles.require_grantable([validate_role_name(role)], by, f"remove role {role!r}")
        if role in await self.roles.roles_of(user.id) and await self._is_superuser(user):
            async with self._superuser_guard():
                if not await self._superusers(without_grant=(user.id, role)):
                    raise self._last_superuser(f"remove role {role!r} from {user.username}")
                changed = await self.roles.revoke(user.id, role, by=by)
        else:
            changed = await self.roles.revoke(user.id, role, by=by)
        await self.audit.record(now_ms, "role.revoke", actor, target=user.username,
                                detail={"role": role, "changed": changed})
        return changed

    async def put_role(self, role: Role, now_ms: int, actor: Actor, *, create_only: bool = False,
                       by: Principal | None = None) -> bool:
        """Create or change a role; returns True when it was created."""
        try:
            old: Role | None = await self.roles.get(role.name)
        except NotFoundError:
            old = None
        verb = "create" if old is None else "change"
        require_covered(by, role.grants + (old.grants if old else ()), f"{verb} role {role.name!r}")
        if old is not None and is_superuser(old.grants) and not is_superuser(role.grants):
            async with self._superuser_guard():
                if not await self._superusers(role=role):
                    raise self._last_superuser(f"take '*' from role {role.name!r}")
                created = await self.roles.put(role, create_only=create_only, by=by)
        else:
            created = await self.roles.put(role, create_only=create_only, by=by)
        await self.audit.record(now_ms, "role.create" if created else "role.update", actor, target=role.name,
                                detail={"permissions": list(role.permissions)})
        return created

    async def delete_role(self, name: str, now_ms: int, actor: Actor, by: Principal | None = None) -> None:
        role = await self.roles.get(name)
        require_covered(by, role.grants, f"delete role {name!r}")
        if is_superuser(role.grants) and not role.builtin:
            async with self._superuser_guard():
                if not await self._superusers(role_gone=name):
                    raise self._last_superuser(f"delete role {name!r}")
                await self.roles.delete(name, by=by)
        else:
            await self.roles.delete(name, by=by)
        await self.audit.record(now_ms, "role.delete", actor, target=name)

    async def revoke_all_sessions(self, username: str, now_ms: int, actor: Actor,
                                  by: Principal | None = None) -> int:
        user = await self.users.require(username)
        await self._require_over(by, user, "end the sessions of")
        n = await self.sessions.revoke_all(user.id)
        await self.audit.record(now_ms, "session.revoke_all", actor, target=user.username,
                                detail={"sessions_revoked": n})
        return n

    async def describe(self, user: User) -> dict[str, Any]:
        return user.public(list(await self.roles.roles_of(user.id)))

    async def list_users(self) -> list[dict[str, Any]]:
        users = await self.users.list()
        if not users:
            return []
        raws = await self.store.mget([user_roles_key(u.id) for u in users])
        return [u.public(list(orjson.loads(r)) if r else []) for u, r in zip(users, raws, strict=True)]

    async def issue_api_token(self, username: str, ttl_s: object, label: object, now_ms: int, actor: Actor,
                              issuer: Principal | None = None) -> ApiToken:
        """A revocable access token for `username` valid for `ttl_s` (up to auth.api_token_max_seconds).

        It is a session of the user's (listed, revoked like any other) with no
        refresh token.  `issuer` is the API caller: a token acts as its user, so
        nobody may mint one for a user holding permissions they lack themselves
        (admin:sessions alone must not be a way to become an admin).  The CLI
        on a data directory passes none: file permissions are its authority.
        """
        limit = self.config.api_token_max_seconds
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or not 1 <= ttl_s <= limit:
            raise InvalidInputError(f"ttl_seconds: expected whole seconds from 1 to {limit} "
                                    f"(auth.api_token_max_seconds), got {repr(ttl_s)[:40]}")
        if label is not None and (not isinstance(label, str) or len(label) > _LABEL_MAX
                                  or not label.isprintable()):
            raise InvalidInputError(f"label: expected printable text of at most {_LABEL_MAX} characters")
        label = (label.strip() or None) if isinstance(label, str) else None
        user = await self.users.require(username)
        await self._require_over(issuer, user, "issue a token for")
        token = None if user.disabled else await self.sessions.issue_api_token(user.id, ttl_s, now_ms, label,
                                                                               actor.client)
        if token is None:
            raise ConflictError(f"account {user.username} is disabled (or was just removed); enable it first",
                                code="account_disabled")
        await self.audit.record(now_ms, "token.issue", actor, target=user.username,
                                detail={"session": token.session_id, "label": label, "ttl_s": ttl_s,
                                        "expires_ms": token.expires_ms})
        return token

    async def sessions_of(self, username: str) -> tuple[User, Sequence[Session]]:
        user = await self.users.require(username)
        return user, await self.sessions.list(user.id)

    async def revoke_session(self, user_id: str, sid: str, now_ms: int, actor: Actor, target: str,
                             by: Principal | None = None) -> None:
        if by is not None and by.user_id != user_id:
            user = await self.users.get(user_id)
            if user is not None:
                await self._require_over(by, user, "end a session of")
        if not await self.sessions.revoke(user_id, sid):
            raise NotFoundError(f"session {sid!r} does not exist", code="session_not_found")
        await self.audit.record(now_ms, "session.revoke", actor, target=target, detail={"session": sid})
