"""/api/v1/auth: register, login, logout, refresh, me, password, sessions."""

from __future__ import annotations

from helios_core.errors import NotFoundError, RateLimitedError
from helios_core.gateway.base import AUTHENTICATED, PUBLIC, BaseHandler

__all__ = ["RegisterHandler", "LoginHandler", "LogoutHandler", "RefreshHandler", "MeHandler", "PasswordHandler",
           "SessionsHandler", "SessionHandler"]


class RegisterHandler(BaseHandler):
    route = "/api/v1/auth/register"
    needs = {"POST": PUBLIC}

    async def post(self) -> None:
        body = self.json_body()
        user = await self.gw.auth.register(body.get("username"), body.get("password"), self.wall_ms(), self.actor())
        self.write_json(await self.gw.auth.describe(user), 201)


class LoginHandler(BaseHandler):
    route = "/api/v1/auth/login"
    needs = {"POST": PUBLIC}

    async def post(self) -> None:
        body = self.json_body()
        now = self.wall_ms()
        try:
            pair = await self.gw.auth.login(body.get("username"), body.get("password"), now, self.actor(),
                                            self.request.headers.get("User-Agent"))
        except RateLimitedError:
            self.gw.metrics.rate_denied.labels("login").inc()
            raise
        self.write_json(pair.to_json(now))


class RefreshHandler(BaseHandler):
    route = "/api/v1/auth/refresh"
    needs = {"POST": PUBLIC}

    async def post(self) -> None:
        body = self.json_body()
        now = self.wall_ms()
        pair = await self.gw.auth.refresh(body.get("refresh_token"), now, self.actor())
        self.write_json(pair.to_json(now))


class LogoutHandler(BaseHandler):
    route = "/api/v1/auth/logout"
    needs = {"POST": AUTHENTICATED}

    async def post(self) -> None:
        await self.gw.auth.logout(self.me(), self.wall_ms(), self.actor())
        self.set_status(204)
        self.finish()


class MeHandler(BaseHandler):
    route = "/api/v1/auth/me"
    needs = {"GET": AUTHENTICATED}

    async def get(self) -> None:
        p = self.me()
        user = await self.gw.auth.users.get(p.user_id)
        if user is None:
            raise NotFoundError("user does not exist", code="user_not_found")
        self.write_json({**user.public(list(p.roles)), "permissions": p.permissions(), "session_id": p.session_id})


class PasswordHandler(BaseHandler):
    route = "/api/v1/auth/password"
    needs = {"POST": AUTHENTICATED}

    async def post(self) -> None:
        body = self.json_body()
        n = await self.gw.auth.change_password(self.me(), body.get("current_password"),
                                               body.get("new_password"), self.wall_ms(), self.actor())
        self.write_json({"sessions_revoked": n})


class SessionsHandler(BaseHandler):
    route = "/api/v1/auth/sessions"
    needs = {"GET": AUTHENTICATED}

    async def get(self) -> None:
        p = self.me()
        sessions = await self.gw.auth.sessions.list(p.user_id)
        self.write_json({"sessions": [s.public(p.session_id) for s in sessions]})


class SessionHandler(BaseHandler):
    route = "/api/v1/auth/sessions/{session_id}"
    needs = {"DELETE": AUTHENTICATED}

    async def delete(self, session_id: str) -> None:
        p = self.me()
        await self.gw.auth.revoke_session(p.user_id, session_id, self.wall_ms(), self.actor(), p.username)
        self.set_status(204)
        self.finish()
