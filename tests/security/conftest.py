"""Shared fixtures of the security suite (one module per OWASP API Top 10 (2023) category).

A real gateway on an unused loopback port over an embedded store in a tmp dir
(`tests/unit/test_gateway_harness.py`), plus helpers that give a test a user
holding exactly the permissions it names.  Other modules import from here:

    from tests.security.conftest import PASSWORD, Api, run_gateway, user_with

    def test_x(tmp_path):
        async def body(api: Api) -> None:
            token = await user_with(api, "ops", ["admin:roles"])
            r = await api.call("POST", "/admin/roles", token=token, json={...})
            assert r.code == 403, r.body
        run_gateway(tmp_path, body)

Keep this module small and stable: other helpers' tests depend on its names.
"""

from __future__ import annotations

from tests.unit.test_gateway_harness import Api, Clock, Response, gateway, run_gateway, test_config

__all__ = ["PASSWORD", "Api", "Clock", "Response", "gateway", "run_gateway", "test_config", "make_role",
           "user_with", "user_with_roles"]

# Long enough, not all whitespace, not a common password: passes the password policy.
PASSWORD = "correct-horse-battery-staple"


async def make_role(api: Api, name: str, permissions: list[str]) -> None:
    """Create (or replace) role `name` with `permissions`, as the bootstrap admin."""
    r = await api.call("PUT", f"/admin/roles/{name}", token=await api.admin_token(),
                       json={"name": name, "permissions": permissions})
    assert r.code in (200, 201), r.body


async def user_with_roles(api: Api, username: str, roles: list[str], password: str = PASSWORD) -> str:
    """Create `username` holding `roles` (as the bootstrap admin); returns an access token of theirs."""
    r = await api.call("POST", "/admin/users", token=await api.admin_token(),
                       json={"username": username, "password": password, "roles": roles})
    assert r.code == 201, r.body
    return str((await api.login(username, password))["access_token"])


async def user_with(api: Api, username: str, permissions: list[str], password: str = PASSWORD) -> str:
    """Create `username` holding exactly `permissions` (through its own role `<username>-role`).

    Returns an access token of theirs.
    """
    role = f"{username}-role"
    await make_role(api, role, permissions)
    return await user_with_roles(api, username, [role], password)
