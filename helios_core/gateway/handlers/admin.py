"""/admin: users, roles, grants, sessions and API tokens, rate limits, store operations, the audit log.

Every change is audited (the account flows in `AuthService`, the rest here).
"""

from __future__ import annotations

from typing import Any

from helios_core.digits import plain_int
from helios_core.errors import InvalidInputError
from helios_core.gateway.base import BaseHandler, perm
from helios_core.rbac import Role, validate_role_name

__all__ = [
    "UsersHandler", "UserHandler", "UserPasswordHandler", "UserRoleHandler", "UserSessionsHandler",
    "UserSessionHandler", "UserTokensHandler", "RolesHandler", "RoleHandler", "RateLimitHandler", "SnapshotHandler",
    "AofRewriteHandler", "StatsHandler", "AuditHandler",
]


def _str_list(body: dict[str, Any], name: str, default: list[str]) -> list[str]:
    value = body.get(name, default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{name}: expected a list of strings")
    return value


def _opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"{name}: expected a string")
    return value


class UsersHandler(BaseHandler):
    route = "/admin/users"
    needs = {"GET": perm("admin:users"), "POST": perm("admin:users")}

    async def get(self) -> None:
        self.write_json({"users": await self.gw.auth.list_users()})

    async def post(self) -> None:
        body = self.json_body()
        roles = _str_list(body, "roles", ["user"])
        user, generated = await self.gw.auth.create_user(body.get("username"), _opt_str(body, "password"), roles,
                                                         self.wall_ms(), self.actor(), by=self.me())
        out = await self.gw.auth.describe(user)
        if generated is not None:
            out["password"] = generated
        self.write_json(out, 201)


class UserHandler(BaseHandler):
    route = "/admin/users/{username}"
    needs = {"GET": perm("admin:users"), "PATCH": perm("admin:users"), "DELETE": perm("admin:users")}

    async def get(self, username: str) -> None:
        self.write_json(await self.gw.auth.describe(await self.gw.auth.users.require(username)))

    async def patch(self, username: str) -> None:
        body = self.json_body()
        unknown = set(body) - {"disabled"}
        if unknown:
            raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: disabled "
                                    f"(passwords: POST /admin/users/{{username}}/password)")
        disabled = body.get("disabled")
        if not isinstance(disabled, bool):
            raise InvalidInputError("disabled: expected true or false")
        user = await self.gw.auth.set_disabled(username, disabled, self.wall_ms(), self.actor(), by=self.me())
        self.write_json(await self.gw.auth.describe(user))

    async def delete(self, username: str) -> None:
        await self.gw.auth.remove_user(username, self.wall_ms(), self.actor(), by=self.me())
        self.set_status(204)
        self.finish()


class UserPasswordHandler(BaseHandler):
    route = "/admin/users/{username}/password"
    needs = {"POST": perm("admin:users")}

    async def post(self, username: str) -> None:
        body = self.json_body() if self.body else {}
        user, generated = await self.gw.auth.set_password(username, _opt_str(body, "password"), self.wall_ms(),
                                                          self.actor(), by=self.me())
        out = await self.gw.auth.describe(user)
        if generated is not None:
            out["password"] = generated
        self.write_json(out)


class UserRoleHandler(BaseHandler):
    route = "/admin/users/{username}/roles/{role}"
    needs = {"PUT": perm("admin:roles"), "DELETE": perm("admin:roles")}

    async def put(self, username: str, role: str) -> None:
        changed = await self.gw.auth.grant(username, role, self.wall_ms(), self.actor(), by=self.me())
        user = await self.gw.auth.users.require(username)
        self.write_json({**await self.gw.auth.describe(user), "changed": changed})

    async def delete(self, username: str, role: str) -> None:
        changed = await self.gw.auth.revoke(username, role, self.wall_ms(), self.actor(), by=self.me())
        user = await self.gw.auth.users.require(username)
        self.write_json({**await self.gw.auth.describe(user), "changed": changed})


class UserSessionsHandler(BaseHandler):
    route = "/admin/users/{username}/sessions"
    needs = {"GET": perm("admin:sessions"), "DELETE": perm("admin:sessions")}

    async def get(self, username: str) -> None:
        _, sessions = await self.gw.auth.sessions_of(username)
        self.write_json({"sessions": [s.public() for s in sessions]})

    async def delete(self, username: str) -> None:
        n = await self.gw.auth.revoke_all_sessions(username, self.wall_ms(), self.actor(), by=self.me())
        self.write_json({"sessions_revoked": n})


class UserSessionHandler(BaseHandler):
    route = "/admin/users/{username}/sessions/{session_id}"
    needs = {"DELETE": perm("admin:sessions")}

    async def delete(self, username: str, session_id: str) -> None:
        user = await self.gw.auth.users.require(username)
        await self.gw.auth.revoke_session(user.id, session_id, self.wall_ms(), self.actor(), user.username,
                                          by=self.me())
        self.set_status(204)
        self.finish()


class UserTokensHandler(BaseHandler):
    """API tokens: long-lived access tokens for clients that run for days (a worker)."""

    route = "/admin/users/{username}/tokens"
    needs = {"POST": perm("admin:sessions")}

    async def post(self, username: str) -> None:
        body = self.json_body()
        unknown = set(body) - {"ttl_seconds", "label"}
        if unknown:
            raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))}; allowed: ttl_seconds, label")
        if "ttl_seconds" not in body:
            raise InvalidInputError("ttl_seconds: required (the token's lifetime in seconds)")
        token = await self.gw.auth.issue_api_token(username, body["ttl_seconds"], body.get("label"), self.wall_ms(),
                                                   self.actor(), issuer=self.me())
        self.write_json(token.to_json(), 201)


def _role_from(body: dict[str, Any], name: str) -> Role:
    unknown = set(body) - {"name", "permissions", "description"}
    if unknown:
        raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))}; "
                                f"allowed: name, permissions, description")
    return Role.build(validate_role_name(name), _str_list(body, "permissions", []),
                      _opt_str(body, "description") or "")


class RolesHandler(BaseHandler):
    route = "/admin/roles"
    needs = {"GET": perm("admin:roles"), "POST": perm("admin:roles")}

    async def get(self) -> None:
        self.write_json({"roles": [r.to_json() for r in await self.gw.auth.roles.list()]})

    async def post(self) -> None:
        body = self.json_body()
        name = body.get("name")
        if not isinstance(name, str):
            raise InvalidInputError("name: expected a string")
        role = _role_from(body, name)
        await self.gw.auth.put_role(role, self.wall_ms(), self.actor(), create_only=True, by=self.me())
        self.write_json((await self.gw.auth.roles.get(role.name)).to_json(), 201)


class RoleHandler(BaseHandler):
    route = "/admin/roles/{role}"
    needs = {"GET": perm("admin:roles"), "PUT": perm("admin:roles"), "DELETE": perm("admin:roles")}

    async def get(self, role: str) -> None:
        self.write_json((await self.gw.auth.roles.get(role)).to_json())

    async def put(self, role: str) -> None:
        body = self.json_body()
        if body.get("name", role) != role:
            raise InvalidInputError("name: must match the role in the path (roles cannot be renamed)")
        new = _role_from(body, role)
        created = await self.gw.auth.put_role(new, self.wall_ms(), self.actor(), by=self.me())
        self.write_json((await self.gw.auth.roles.get(role)).to_json(), 201 if created else 200)

    async def delete(self, role: str) -> None:
        await self.gw.auth.delete_role(role, self.wall_ms(), self.actor(), by=self.me())
        self.set_status(204)
        self.finish()


class RateLimitHandler(BaseHandler):
    route = "/admin/ratelimit"
    needs = {"GET": perm("admin:ratelimit"), "PUT": perm("admin:ratelimit")}

    async def _show(self) -> None:
        limiter = self.gw.limiter
        self.write_json({"enabled": self.gw.config.ratelimit.enabled,
                         "effective": (await limiter.settings()).to_json(),
                         "overrides": await limiter.overrides()})

    async def get(self) -> None:
        await self._show()

    async def put(self) -> None:
        change = self.json_body()
        await self.gw.limiter.update_overrides(change)
        await self.gw.audit.record(self.wall_ms(), "ratelimit.update", self.actor(), detail=change)
        await self._show()


class SnapshotHandler(BaseHandler):
    route = "/admin/snapshot"
    needs = {"POST": perm("admin:store")}
    action = "store.snapshot"

    async def post(self) -> None:
        try:
            info = await self.run()
        except Exception as e:
            await self.gw.audit.record(self.wall_ms(), self.action, self.actor(), result="failed",
                                       detail={"error": str(e)})
            raise
        await self.gw.audit.record(self.wall_ms(), self.action, self.actor(),
                                   detail={k: info[k] for k in ("seq", "lastsave") if k in info})
        self.write_json(info)

    async def run(self) -> dict[str, Any]:
        return await self.gw.ops.snapshot()


class AofRewriteHandler(SnapshotHandler):
    """ATLAS compacts its AOF by snapshotting (the parts it covers are deleted); Redis by BGREWRITEAOF."""

    route = "/admin/aof-rewrite"
    action = "store.aof_rewrite"

    async def run(self) -> dict[str, Any]:
        return await self.gw.ops.aof_rewrite()


class StatsHandler(BaseHandler):
    route = "/admin/stats"
    needs = {"GET": perm("admin:store")}

    async def get(self) -> None:
        self.write_json({**await self.gw.ops.stats(), "inflight_requests": self.gw.inflight})


class AuditHandler(BaseHandler):
    route = "/admin/audit"
    needs = {"GET": perm("admin:audit")}

    async def get(self) -> None:
        q = self.get_query_argument
        limit = q("limit", "100")
        since = q("since_ms", None)
        if plain_int(limit) is None:
            raise InvalidInputError("limit: expected 1..1000")
        if since is not None and plain_int(since) is None:
            raise InvalidInputError("since_ms: expected a time in ms since the epoch")
        events, cursor = await self.gw.audit.query(
            limit=int(limit), cursor=q("cursor", None) or None, since_ms=int(since) if since else None,
            action=q("action", None) or None, actor=q("actor", None) or None, result=q("result", None) or None)
        self.write_json({"events": events, "cursor": cursor})
