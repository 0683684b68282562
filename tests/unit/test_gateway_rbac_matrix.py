"""The RBAC matrix, generated from the handlers' declared permissions.

Every endpoint x every seeded role x no token.  The expected status comes
from the declaration (`needs`) and the seeded role's permissions, not from a
hand-written table, so a new endpoint is covered the day it is routed:

- no token on an endpoint that authenticates: 401;
- a role whose grants do not give the declared permission (on the resource,
  for key-scoped grants): 403;
- otherwise: anything but 401/403 (the handler ran; 404 or 400 is fine).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helios_core.gateway.base import Need
from helios_core.gateway.routes import HANDLERS
from helios_core.rbac import SEEDED_ROLES, allowed, compile_grants
from tests.unit.test_gateway_harness import Api, run_gateway

ROLES = [*SEEDED_ROLES, None]  # None: no token

# Values for path parameters.  KV keys get two cases: a shared key and one in
# the caller's own namespace (the seeded `user` role's scope).
PARAMS = {"username": "matrix-target", "role": "readonly", "session_id": "s_missing"}
KV_KEYS = ["shared/doc", "users/{uid}/doc"]


def cases() -> list[tuple[str, str, str, str | None]]:
    out = []
    for h in HANDLERS:
        for method in h.needs:
            paths = [h.route]
            if "{key}" in h.route:
                paths = [h.route.replace("{key}", k) for k in KV_KEYS]
            elif h.route == "/api/v1/kv":
                paths = ["/api/v1/kv?prefix=shared/", "/api/v1/kv?prefix=users/{uid}/"]
            for path in paths:
                for role in ROLES:
                    out.append((method, h.route, path, role))
    return out


def expected(need: Need, role: str | None, resource: str | None, uid: str) -> str:
    if role is None:
        return "401" if need.authenticate else "pass"
    if need.permission is None:
        return "pass"
    grants = compile_grants(SEEDED_ROLES[role][1])
    return "pass" if allowed(grants, need.permission, resource, uid) else "403"


def test_every_routed_method_is_in_the_matrix() -> None:
    routed = {(m, h.route) for h in HANDLERS for m in h.needs}
    assert {(m, r) for m, r, _, _ in cases()} == routed


def test_rbac_matrix(tmp_path: Path) -> None:
    failures: list[str] = []
    checked = 0

    async def body(api: Api) -> None:
        nonlocal checked
        admin = await api.admin_token()
        uids = {}
        for role in SEEDED_ROLES:
            if role != "admin":
                await api.make_user(f"as-{role}", [role])
        for role in SEEDED_ROLES:
            name = "admin" if role == "admin" else f"as-{role}"
            me = await api.call("GET", "/api/v1/auth/me",
                                token=await api.admin_token() if role == "admin" else
                                (await api.login(name, "password-123"))["access_token"])
            uids[role] = me.json()["id"]
        await api.call("POST", "/admin/users", token=admin, json={"username": "matrix-target"})
        handlers = {h.route: h for h in HANDLERS}
        for method, route, path_tmpl, role in cases():
            uid = uids.get(role, "nobody") if role else "nobody"
            path = path_tmpl.replace("{uid}", uid)
            for name, value in PARAMS.items():
                path = path.replace("{" + name + "}", value)
            need = handlers[route].needs[method]
            resource = None
            if need.resource:
                resource = re.sub(r"^/api/v1/kv/", "", path)
            elif need.resource_query:
                resource = path.split("prefix=", 1)[1]
            want = expected(need, role, resource, uid)
            # A fresh session per call: logout, password and session calls must not spoil the next one.
            token = None
            if role is not None:
                name = "admin" if role == "admin" else f"as-{role}"
                password = api.admin_password if role == "admin" else "password-123"
                token = (await api.login(name, password))["access_token"]
            r = await api.call(method, path, token=token, json={} if method in ("POST", "PUT", "PATCH") else None)
            got = str(r.code)
            if got == "403" and r.error_code != "forbidden":
                got = "403-" + r.error_code  # refused by the handler (e.g. closed registration), not RBAC
            ok = got == want if want != "pass" else got not in ("401", "403")
            checked += 1
            if not ok:
                failures.append(f"{method} {path} as {role}: expected {want}, got {got} {r.body[:120]!r}")

    run_gateway(tmp_path, body, timeout=300, **{"auth.open_registration": True})
    assert checked == len(cases()) > 100
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("role", list(SEEDED_ROLES))
def test_seeded_roles_are_what_the_docs_say(role: str) -> None:
    assert compile_grants(SEEDED_ROLES[role][1])  # parseable
