"""RBAC: permission grammar and matching (pure), then roles and assignments on an embedded store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helios_core.config import AtlasConfig
from helios_core.errors import ConflictError, InvalidInputError, NotFoundError
from helios_core.rbac import (
    SEEDED_ROLES,
    Grant,
    Role,
    RoleStore,
    allowed,
    compile_grants,
    parse_grant,
    uncovered,
)
from helios_core.store import EmbeddedStore


def test_parse_grants() -> None:
    assert parse_grant("kv:read") == Grant("kv:read")
    assert parse_grant("kv:write@users/{user}/") == Grant("kv:write", "users/{user}/")
    assert parse_grant("*") == Grant("*")
    assert parse_grant("admin:*") == Grant("admin:*")
    for bad in ("", "KV:read", "kv:read@", "kv read", "kv:", ":x", "kv:re*d"):
        with pytest.raises(InvalidInputError):
            parse_grant(bad)


@pytest.mark.parametrize(("grants", "needed", "resource", "ok"), [
    (["kv:read"], "kv:read", "a", True),
    (["kv:read"], "kv:write", "a", False),
    (["*"], "admin:users", None, True),
    (["kv:*"], "kv:write", "x", True),
    (["kv:*"], "admin:users", None, False),
    (["admin:*"], "admin:roles", None, True),
    (["kv:read@users/{user}/"], "kv:read", "users/u1/notes", True),
    (["kv:read@users/{user}/"], "kv:read", "users/u2/notes", False),
    (["kv:read@users/{user}/"], "kv:read", "users/u1", False),  # the prefix includes the slash
    (["kv:read@users/{user}/"], "kv:read", None, False),  # scoped grants need a resource
    (["kv:read@users/{user}/"], "kv:read", "", False),  # listing everything is not in scope
    (["kv:read@public/", "kv:read@users/{user}/"], "kv:read", "public/x", True),
], ids=str)
def test_allowed(grants: list[str], needed: str, resource: str | None, ok: bool) -> None:
    assert allowed(compile_grants(grants), needed, resource, "u1") is ok


@pytest.mark.parametrize(("held", "wanted", "wanted_uid", "ok"), [
    (["*"], "*", None, True),
    (["*"], "kv:write@users/", "u2", True),
    (["kv:*"], "*", None, False),
    (["kv:*"], "kv:*", None, True),
    (["kv:read"], "kv:*", None, False),
    (["kv:write@users/"], "kv:write", None, False),  # a scope never covers the unscoped permission
    (["kv:write@users/"], "kv:write@users/{user}/", None, True),
    (["kv:write@users/"], "kv:write@users/u2/x", "u2", True),
    (["kv:write@users/"], "kv:write@{user}/", None, False),  # {user}/ may be anywhere, not under users/
    (["kv:write@users/{user}/"], "kv:write@users/{user}/", None, True),  # a role as written: same template
    (["kv:write@users/{user}/"], "kv:write@users/{user}/", "u2", False),  # another user's namespace
    (["kv:write@users/{user}/"], "kv:write@users/{user}/", "u1", True),  # one's own
    (["kv:write@users/{user}/"], "kv:write@users/u1/a", None, True),
    (["kv:write@users/{user}/"], "kv:write@users/", None, False),
    (["admin:roles"], "admin:users", None, False),
], ids=str)
def test_covers(held: list[str], wanted: str, wanted_uid: str | None, ok: bool) -> None:
    assert (uncovered(compile_grants(held), "u1", [parse_grant(wanted)], wanted_uid) == []) is ok


def test_role_build_validates() -> None:
    with pytest.raises(InvalidInputError, match="role name"):
        Role.build("Bad Name", [])
    with pytest.raises(InvalidInputError, match="list"):
        Role.build("ok", "kv:read")  # type: ignore[arg-type]
    r = Role.build("ok", ["kv:read", "kv:read"])
    assert r.permissions == ("kv:read",)


def run(tmp_path: Path, body) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        store = await EmbeddedStore.open(tmp_path / "data", AtlasConfig(save=()))
        try:
            await body(RoleStore(store))
        finally:
            await store.close()

    asyncio.run(main())


def test_seed_is_idempotent_and_keeps_edits(tmp_path: Path) -> None:
    async def body(roles: RoleStore) -> None:
        assert sorted(await roles.seed()) == sorted(SEEDED_ROLES)
        await roles.put(Role.build("readonly", ["kv:read@public/"]))
        assert await roles.seed() == []
        ro = await roles.get("readonly")
        assert ro.permissions == ("kv:read@public/",) and ro.builtin
        with pytest.raises(ConflictError, match="built in"):
            await roles.delete("readonly")

    run(tmp_path, body)


def test_custom_roles_and_assignments(tmp_path: Path) -> None:
    async def body(roles: RoleStore) -> None:
        await roles.seed()
        assert await roles.put(Role.build("ops", ["admin:store"], "operators"), create_only=True)
        with pytest.raises(ConflictError):
            await roles.put(Role.build("ops", []), create_only=True)
        assert [r.name for r in await roles.list()] == ["admin", "ops", "readonly", "user", "worker"]
        assert await roles.grant("u1", "ops") is True
        assert await roles.grant("u1", "ops") is False
        with pytest.raises(NotFoundError):
            await roles.grant("u1", "nope")
        assert list(await roles.roles_of("u1")) == ["ops"]
        assert [g.name for g in await roles.grants_for(["ops"])] == ["admin:store"]
        await roles.put(Role.build("ops", ["admin:audit"]))  # edits apply at the next lookup
        assert [g.name for g in await roles.grants_for(["ops"])] == ["admin:audit"]
        await roles.delete("ops")
        assert await roles.grants_for(["ops"]) == ()  # a deleted role gives nothing
        assert await roles.revoke("u1", "ops") is True
        assert await roles.revoke("u1", "ops") is False

    run(tmp_path, body)
