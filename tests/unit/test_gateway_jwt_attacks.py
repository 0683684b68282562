"""JWT attacks against a running gateway: each gets 401 and never reaches a handler."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.unit.test_gateway_harness import SECRET, Api, run_gateway

HS_SECRET = SECRET.split("=", 1)[1]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(sub: str, **over: object) -> dict:
    now = int(time.time())
    return {"iss": "helios", "aud": "helios", "sub": sub, "jti": "j", "iat": now, "nbf": now, "exp": now + 300,
            **over}


async def me(api: Api, token: str) -> tuple[int, str]:
    r = await api.call("GET", "/api/v1/auth/me", token=token)
    return r.code, r.error_code if r.code >= 400 else ""


def test_forged_and_broken_tokens(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        good = await api.admin_token()
        uid = jwt.decode(good, options={"verify_signature": False})["sub"]
        assert await me(api, good) == (200, "")

        def signed(**over: object) -> str:
            return jwt.encode(claims(uid, **over), HS_SECRET, algorithm="HS256", headers={"kid": "k1"})

        header_none = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
        h, p, s = good.split(".")
        attacks = {
            "alg none": f"{header_none}.{p}.",
            "tampered payload": f"{h}.{b64(json.dumps(claims('u_other')).encode())}.{s}",
            "tampered signature": f"{h}.{p}.{s[:-2]}AA",
            "expired": signed(exp=int(time.time()) - 60),
            "nbf in the future": signed(nbf=int(time.time()) + 600),
            "wrong aud": signed(aud="someone-else"),
            "wrong iss": signed(iss="evil"),
            "wrong key": jwt.encode(claims(uid), "x" * 48, algorithm="HS256", headers={"kid": "k1"}),
            "unknown kid": jwt.encode(claims(uid), HS_SECRET, algorithm="HS256", headers={"kid": "k9"}),
            # Validly signed with our own key but never issued: no token record, so refused.
            "signed but never issued": signed(),
            "garbage": "abc.def.ghi",
        }
        results = {name: await me(api, token) for name, token in attacks.items()}
        assert all(code == 401 for code, _ in results.values()), results
        assert results["expired"][1] == "token_expired"
        assert results["signed but never issued"][1] == "token_revoked"
        assert results["alg none"][1] == "invalid_token"

    run_gateway(tmp_path, body)


def test_revoked_deleted_and_disabled_users(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        alice = await api.make_user("alice", ["readonly"])
        bob = await api.make_user("bob", ["readonly"])
        carol = await api.make_user("carol", ["readonly"])
        assert (await api.call("POST", "/api/v1/auth/logout", token=alice)).code == 204
        assert await me(api, alice) == (401, "token_revoked")
        assert (await api.call("DELETE", "/admin/users/bob", token=admin)).code == 204
        assert (await me(api, bob))[0] == 401
        assert (await api.call("PATCH", "/admin/users/carol", token=admin, json={"disabled": True})).code == 200
        assert (await me(api, carol))[0] == 401
        r = await api.call("POST", "/api/v1/auth/login", json={"username": "carol", "password": "password-123"})
        assert r.code == 401 and r.error_code == "invalid_credentials"

    run_gateway(tmp_path, body)


@pytest.fixture
def rsa_files(tmp_path: Path) -> tuple[Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "signing.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, pub


def test_hs_rs_confusion_against_an_rs256_gateway(tmp_path: Path, rsa_files: tuple[Path, bytes]) -> None:
    pem, pub = rsa_files

    async def body(api: Api) -> None:
        good = await api.admin_token()
        assert jwt.get_unverified_header(good)["alg"] == "RS256"
        assert await me(api, good) == (200, "")
        uid = jwt.decode(good, options={"verify_signature": False})["sub"]
        # The classic attack: HS256 "signed" with the RSA public key (which is public) as the secret.
        header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode())
        payload = b64(json.dumps(claims(uid)).encode())
        sig = b64(hmac.new(pub, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        assert await me(api, f"{header}.{payload}.{sig}") == (401, "invalid_token")

    run_gateway(tmp_path / "gw", body, **{"auth.jwt_keys": [f"r1=file:{pem}"],
                                          "auth.jwt_algorithms": ["RS256", "HS256"]})
