"""The route table: every handler, and its path template turned into a Tornado pattern.

A handler's `route` is an OpenAPI path template (``/api/v1/kv/{key}``); the
regular expression Tornado matches is derived from it here, so the router
and the OpenAPI document cannot disagree about what the paths are.
"""

from __future__ import annotations

import re
from typing import Any

from tornado.web import URLSpec

from helios_core.gateway.base import BaseHandler
from helios_core.gateway.handlers import admin, auth, jobs, kv, ops, proxy_admin

__all__ = ["HANDLERS", "pattern", "url_specs"]

HANDLERS: tuple[type[BaseHandler], ...] = (
    # Tornado tries the patterns in this order: the busiest paths (a KV read, a worker's
    # lease and acks) come first.  Fixed job paths stay ahead of /api/v1/jobs/{id}, which
    # would match /api/v1/jobs/stats too (job ids are checked in the handler).
    kv.KvItemHandler, kv.KvListHandler,
    jobs.LeaseHandler, jobs.AckBatchHandler, jobs.JobAckHandler, jobs.JobExtendHandler, jobs.JobNackHandler,
    jobs.JobsHandler, jobs.JobBatchHandler, jobs.DlqHandler, jobs.DlqRedriveHandler, jobs.JobStatsHandler,
    jobs.JobHandler, jobs.JobCancelHandler, jobs.JobRetryHandler,
    ops.HealthHandler, ops.ReadyHandler, ops.MetricsHandler, ops.OpenApiHandler,
    auth.RegisterHandler, auth.LoginHandler, auth.LogoutHandler, auth.RefreshHandler, auth.MeHandler,
    auth.PasswordHandler, auth.SessionsHandler, auth.SessionHandler,
    admin.UsersHandler, admin.UserHandler, admin.UserPasswordHandler, admin.UserRoleHandler,
    admin.UserSessionsHandler, admin.UserSessionHandler, admin.UserTokensHandler, admin.RolesHandler,
    admin.RoleHandler,
    admin.RateLimitHandler, admin.SnapshotHandler, admin.AofRewriteHandler, admin.StatsHandler,
    admin.AuditHandler,
    proxy_admin.ProxyRoutesHandler, proxy_admin.ProxyRouteHandler, proxy_admin.ProxyBackendsHandler,
    proxy_admin.ProxyBackendHandler, proxy_admin.ProxyPoolsHandler, proxy_admin.ProxyPoolHandler,
)

# Path parameters that may contain "/" (a KV key is any string); the rest stop at "/".
_GREEDY = {"key"}


def pattern(template: str) -> str:
    def param(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"(?P<{name}>.+)" if name in _GREEDY else f"(?P<{name}>[^/]+)"

    parts = re.split(r"(\{[a-z_]+\})", template)
    return "".join(re.sub(r"\{([a-z_]+)\}", param, p) if p.startswith("{") else re.escape(p) for p in parts)


def url_specs(gateway: Any) -> list[URLSpec]:
    return [URLSpec(pattern(h.route), h, {"gateway": gateway}, name=h.__name__) for h in HANDLERS]
