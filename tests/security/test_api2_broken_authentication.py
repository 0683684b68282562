"""API2:2023 Broken Authentication: login throttling that never locks the admin out, disabled
accounts that look like wrong passwords, a password policy, and a signing secret written safely.

Issue 10, item 6; issue 11, item 9 (the JWT secret file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helios_core.gateway import bootstrap
from helios_core.gateway.bootstrap import SECRET_FILE, signing_key_specs
from tests.security.conftest import PASSWORD, Api, Response, run_gateway, user_with_roles

LOGIN = "/api/v1/auth/login"
FROM_PROXY = {"gateway.trusted_proxies": ["127.0.0.1"]}  # so a test can speak from many addresses


async def login_from(api: Api, addr: str, username: str, password: str) -> Response:
    return await api.call("POST", LOGIN, json={"username": username, "password": password},
                          headers={"X-Forwarded-For": addr})


def test_wrong_passwords_from_anywhere_do_not_lock_the_admin_out(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        for _ in range(5):
            r = await login_from(api, "203.0.113.7", "admin", "not-the-password")
            assert r.code == 401, r.body
        # From the attacker's address the next try waits ...
        r = await login_from(api, "203.0.113.7", "admin", api.admin_password)
        assert r.code == 429 and r.error_code == "login_throttled", r.body
        # ... but the admin, elsewhere, gets in at once.
        r = await login_from(api, "198.51.100.2", "admin", api.admin_password)
        assert r.code == 200, r.body

    run_gateway(tmp_path, body, **FROM_PROXY, **{"auth.login_failures_per_user": (5, 300)})


def test_the_delay_grows_per_username_and_address(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        addr = "203.0.113.7"
        delays = []
        for _ in range(4):
            r = await login_from(api, addr, "admin", "wrong-password")
            assert r.code == 401, r.body
            r = await login_from(api, addr, "admin", "wrong-password")
            assert r.code == 429, r.body
            delays.append(int(r.headers["Retry-After"]))
            api.clock.advance(delays[-1] * 1000)
        assert delays == [1, 2, 4, 8]
        r = await login_from(api, addr, "admin", api.admin_password)
        assert r.code == 200, r.body
        # A success starts the count over.
        r = await login_from(api, addr, "admin", "wrong-password")
        assert r.code == 401, r.body

    run_gateway(tmp_path, body, **FROM_PROXY, **{"auth.login_failures_per_user": (1, 300)})


def test_the_per_username_ceiling_slows_every_address_but_not_a_correct_password(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        # 3 failures per address before it waits, 30 per username from all addresses: 15 addresses
        # spend the ceiling with 2 failures each, none of them waiting yet on its own count.
        for i in range(15):
            for _ in range(2):
                assert (await login_from(api, f"203.0.113.{i}", "admin", "wrong-password")).code == 401
        # Over the ceiling, an address that failed before waits even below its own budget ...
        r = await login_from(api, "203.0.113.0", "admin", api.admin_password)
        assert r.code == 429 and r.error_code == "login_throttled", r.body
        # ... a new address gets one try, and waits after a failure ...
        assert (await login_from(api, "192.0.2.1", "admin", "wrong-password")).code == 401
        assert (await login_from(api, "192.0.2.1", "admin", "wrong-password")).code == 429
        # ... and a correct password from a new address is never refused.
        r = await login_from(api, "198.51.100.2", "admin", api.admin_password)
        assert r.code == 200, r.body

    run_gateway(tmp_path, body, **FROM_PROXY, **{"auth.login_failures_per_user": (3, 300)})


def test_a_disabled_account_answers_like_a_wrong_password(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        await user_with_roles(api, "bob", ["user"])
        r = await api.call("PATCH", "/admin/users/bob", token=await api.admin_token(), json={"disabled": True})
        assert r.code == 200, r.body

        def shape(r: Response) -> Any:
            err = r.json()["error"]
            return r.code, err["code"], err["message"], r.headers.get("WWW-Authenticate")

        right = await api.call("POST", LOGIN, json={"username": "bob", "password": PASSWORD})
        wrong = await api.call("POST", LOGIN, json={"username": "bob", "password": PASSWORD + "x"})
        unknown = await api.call("POST", LOGIN, json={"username": "nobody", "password": PASSWORD})
        assert shape(right) == shape(wrong) == shape(unknown) == (
            401, "invalid_credentials", "invalid username or password", 'Bearer realm="helios", error="invalid_token"')

    run_gateway(tmp_path, body)


@pytest.mark.parametrize(("password", "reason"), [
    ("short-pass1", "at least 12 characters"),
    (" " * 16, "whitespace"),
    ("password1234", "too common"),
    ("Qwertyuiop123", "too common"),
])
def test_weak_passwords_are_refused_when_set(tmp_path: Path, password: str, reason: str) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        r = await api.call("POST", "/admin/users", token=admin,
                           json={"username": "carol", "password": password, "roles": ["user"]})
        assert r.code == 400 and reason in r.json()["error"]["message"], r.body
        await user_with_roles(api, "bob", ["user"])
        r = await api.call("POST", "/admin/users/bob/password", token=admin, json={"password": password})
        assert r.code == 400 and reason in r.json()["error"]["message"], r.body
        bob = (await api.login("bob", PASSWORD))["access_token"]
        r = await api.call("POST", "/api/v1/auth/password", token=bob,
                           json={"current_password": PASSWORD, "new_password": password})
        assert r.code == 400 and reason in r.json()["error"]["message"], r.body
        r = await api.call("POST", "/api/v1/auth/register", json={"username": "dave", "password": password})
        assert r.code == 400 and reason in r.json()["error"]["message"], r.body

    run_gateway(tmp_path, body, **{"auth.open_registration": True})


# -- the signing secret (issue 11, item 9) ----------------------------------------------------


def test_jwt_secret_is_written_whole_and_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = os.umask(0o022)
    try:
        # A crash (here: a failed write) while the secret is written leaves no secret file
        # behind, not an empty one that every later start refuses.
        real_write = os.write

        def torn(fd: int, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(bootstrap.os, "write", torn)
        with pytest.raises(OSError):
            signing_key_specs((), tmp_path)
        assert not (tmp_path / SECRET_FILE).exists()
        assert list(tmp_path.iterdir()) == []  # no temporary file left either
        monkeypatch.setattr(bootstrap.os, "write", real_write)
        [spec] = signing_key_specs((), tmp_path)
        path = tmp_path / SECRET_FILE
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip() == spec and "=" in spec
        assert signing_key_specs((), tmp_path) == [spec]  # kept, not made again
    finally:
        os.umask(old)
