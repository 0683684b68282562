"""API5:2023 Broken Function Level Authorization: a principal grants only what it holds.

Attacks by holders of partial admin roles (issue 10, items 1 and 2) and names
that pass a `$`-anchored check with a trailing newline (item 9).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helios_core.errors import InvalidInputError
from helios_core.gateway.base import request_id_of
from helios_core.rbac import parse_grant, validate_role_name
from tests.security.conftest import PASSWORD, Api, make_role, run_gateway, user_with, user_with_roles


def _lacks(r: object, permission: str) -> None:
    code = r.code  # type: ignore[attr-defined]
    assert code == 403, r.body  # type: ignore[attr-defined]
    err = r.json()["error"]  # type: ignore[attr-defined]
    assert err["code"] == "exceeds_own_grants" and permission in err["message"], err


# -- item 1: roles, role assignment and API tokens --------------------------------------------


def test_roles_holder_cannot_make_itself_admin(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        ops = await user_with(api, "ops", ["admin:roles"])
        r = await api.call("POST", "/admin/roles", token=ops, json={"name": "god", "permissions": ["*"]})
        _lacks(r, "*")
        r = await api.call("PUT", "/admin/users/ops/roles/admin", token=ops)
        _lacks(r, "*")
        me = await api.call("GET", "/api/v1/auth/me", token=ops)
        assert me.json()["roles"] == ["ops-role"] and "*" not in me.json()["permissions"]
        # What it holds it may grant: a role with admin:roles only.
        r = await api.call("POST", "/admin/roles", token=ops, json={"name": "ops2", "permissions": ["admin:roles"]})
        assert r.code == 201, r.body

    run_gateway(tmp_path, body)


def test_scope_is_part_of_what_is_held(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        ops = await user_with(api, "ops", ["admin:roles", "kv:write@users/"])
        r = await api.call("POST", "/admin/roles", token=ops, json={"name": "w", "permissions": ["kv:write"]})
        _lacks(r, "kv:write")
        r = await api.call("POST", "/admin/roles", token=ops, json={"name": "w", "permissions": ["kv:*@users/"]})
        _lacks(r, "kv:*@users/")
        r = await api.call("POST", "/admin/roles", token=ops,
                           json={"name": "w", "permissions": ["kv:write@users/{user}/"]})
        assert r.code == 201, r.body

    run_gateway(tmp_path, body)


def test_editing_or_deleting_a_stronger_role_is_refused(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        await make_role(api, "strong", ["kv:read", "admin:store"])
        ops = await user_with(api, "ops", ["admin:roles", "kv:read"])
        # Dropping admin:store from it would be "changing" a permission the caller lacks.
        r = await api.call("PUT", "/admin/roles/strong", token=ops, json={"name": "strong", "permissions": ["kv:read"]})
        _lacks(r, "admin:store")
        r = await api.call("DELETE", "/admin/roles/strong", token=ops)
        _lacks(r, "admin:store")
        r = await api.call("PUT", "/admin/roles/readonly", token=ops,
                           json={"name": "readonly", "permissions": ["kv:read", "admin:users"]})
        _lacks(r, "admin:users")
        # Taking a role away needs its permissions too: admin's `*` stays.
        r = await api.call("DELETE", "/admin/users/admin/roles/admin", token=ops)
        _lacks(r, "*")
        r = await api.call("GET", "/admin/roles/strong", token=ops)
        assert r.json()["permissions"] == ["kv:read", "admin:store"]

    run_gateway(tmp_path, body)


def test_sessions_holder_cannot_mint_a_token_for_a_stronger_user(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        sess = await user_with(api, "sess", ["admin:sessions"])
        r = await api.call("POST", "/admin/users/admin/tokens", token=sess, json={"ttl_seconds": 3600})
        _lacks(r, "*")

    run_gateway(tmp_path, body)


# -- item 2: user administration --------------------------------------------------------------


def test_users_holder_cannot_create_an_admin_or_take_over_one(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        hr = await user_with(api, "hr", ["admin:users"])
        r = await api.call("POST", "/admin/users", token=hr,
                           json={"username": "mole", "password": PASSWORD, "roles": ["admin"]})
        _lacks(r, "*")
        r = await api.call("POST", "/admin/users/admin/password", token=hr, json={"password": PASSWORD})
        _lacks(r, "*")
        r = await api.call("PATCH", "/admin/users/admin", token=hr, json={"disabled": True})
        _lacks(r, "*")
        r = await api.call("DELETE", "/admin/users/admin", token=hr)
        _lacks(r, "*")
        # The admin is untouched: the old password still works.
        assert await api.admin_token()

    run_gateway(tmp_path, body)


def test_sessions_holder_cannot_end_a_stronger_users_sessions(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        sess = await user_with(api, "sess", ["admin:sessions"])
        r = await api.call("DELETE", "/admin/users/admin/sessions", token=sess)
        _lacks(r, "*")
        sid = (await api.call("GET", "/api/v1/auth/me", token=admin)).json()["session_id"]
        r = await api.call("DELETE", f"/admin/users/admin/sessions/{sid}", token=sess)
        _lacks(r, "*")
        assert (await api.call("GET", "/api/v1/auth/me", token=admin)).code == 200

    run_gateway(tmp_path, body)


def test_users_holder_manages_users_it_covers(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        await make_role(api, "desk", ["admin:users", "kv:read@users/", "kv:write@users/", "jobs:enqueue"])
        desk = await user_with_roles(api, "desk", ["desk"])
        r = await api.call("POST", "/admin/users", token=desk,
                           json={"username": "carol", "password": PASSWORD, "roles": ["user"]})
        assert r.code == 201, r.body
        r = await api.call("POST", "/admin/users/carol/password", token=desk, json={})
        assert r.code == 200, r.body
        r = await api.call("PATCH", "/admin/users/carol", token=desk, json={"disabled": True})
        assert r.code == 200, r.body
        r = await api.call("DELETE", "/admin/users/carol", token=desk)
        assert r.code == 204, r.body

    run_gateway(tmp_path, body)


def test_the_last_superuser_stays(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        await user_with_roles(api, "root2", ["admin"])
        # With two `*` holders, one may go.
        r = await api.call("PATCH", "/admin/users/root2", token=admin, json={"disabled": True})
        assert r.code == 200, r.body
        r = await api.call("DELETE", "/admin/users/admin/roles/admin", token=admin)
        assert r.code == 409 and r.error_code == "last_superuser", r.body
        assert "last enabled user holding '*'" in r.json()["error"]["message"]
        r = await api.call("PUT", "/admin/roles/admin", token=admin, json={"name": "admin", "permissions": ["kv:*"]})
        assert r.code == 409 and r.error_code == "last_superuser", r.body
        await make_role(api, "root", ["*"])
        r = await api.call("PUT", "/admin/users/root2/roles/root", token=admin)
        assert r.code == 200, r.body
        r = await api.call("PATCH", "/admin/users/root2", token=admin, json={"disabled": False})
        assert r.code == 200, r.body
        r = await api.call("DELETE", "/admin/users/admin/roles/admin", token=admin)
        assert r.code == 200, r.body  # root2 still holds `*`
        root2 = (await api.login("root2", PASSWORD))["access_token"]
        r = await api.call("DELETE", "/admin/users/root2/roles/admin", token=root2)
        assert r.code == 200, r.body  # root2 still holds `*` through role root
        r = await api.call("DELETE", "/admin/roles/root", token=root2)
        assert r.code == 409 and r.error_code == "last_superuser", r.body
        r = await api.call("DELETE", "/admin/users/root2", token=admin)  # admin is no `*` holder now
        assert r.code == 403, r.body

    run_gateway(tmp_path, body)


# -- item 9: names with a trailing newline ----------------------------------------------------


def test_names_with_a_trailing_newline_are_refused(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        r = await api.call("POST", "/admin/roles", token=admin, json={"name": "ops\n", "permissions": []})
        assert r.code == 400, r.body
        r = await api.call("POST", "/admin/roles", token=admin, json={"name": "ops", "permissions": ["kv:read\n"]})
        assert r.code == 400, r.body
        r = await api.call("POST", "/admin/users", token=admin,
                           json={"username": "eve", "password": PASSWORD, "roles": ["user\n"]})
        assert r.code == 400, r.body

    run_gateway(tmp_path, body)


def test_request_ids_and_key_ids_are_checked_whole() -> None:
    # HTTP clients refuse to send a newline in a header, so these are checked where they are parsed.
    assert request_id_of("abc\n") != "abc\n" and request_id_of("abc") == "abc"
    with pytest.raises(InvalidInputError):
        parse_grant("kv:read\n")
    assert validate_role_name("ops") == "ops"
    with pytest.raises(InvalidInputError):
        validate_role_name("ops\n")
