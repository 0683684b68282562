"""JWT keys and verification, including the attacks a gateway must refuse."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from helios_core.auth.tokens import KeyRing, parse_key_spec
from helios_core.errors import AuthenticationError, ConfigError

NOW = 1_800_000_000_000
S1 = "k1=" + "a" * 40
S2 = "k2=" + "b" * 40


def ring(*specs: str, algs: tuple[str, ...] = ("HS256",), **kw: object) -> KeyRing:
    return KeyRing.from_specs(specs or (S1,), algs, issuer="helios", audience="helios", leeway_s=10, **kw)


def refused(r: KeyRing, token: str, match: str, now: int = NOW) -> None:
    with pytest.raises(AuthenticationError, match=match):
        r.verify(token, now)


def forge(claims: dict, key: str | bytes, alg: str = "HS256", kid: str | None = "k1") -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def good_claims(**over: object) -> dict:
    now = NOW // 1000
    return {"iss": "helios", "aud": "helios", "sub": "u_1", "jti": "j", "iat": now, "nbf": now, "exp": now + 60,
            **over}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_issue_then_verify() -> None:
    r = ring()
    token, claims = r.issue("u_1", NOW, 900, {"sid": "s_1"})
    got = r.verify(token, NOW + 1000)
    assert got["sub"] == "u_1" and got["sid"] == "s_1" and got["exp"] == NOW // 1000 + 900
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    assert set(claims) >= {"sub", "jti", "iat", "exp", "iss", "aud", "nbf"}


def test_kid_rotation_keeps_old_tokens_valid() -> None:
    old = ring(S1)
    token, _ = old.issue("u_1", NOW, 900)
    rotated = ring(S2, S1)
    assert rotated.verify(token, NOW)["sub"] == "u_1"
    new, _ = rotated.issue("u_1", NOW, 900)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    refused(ring(S2), token, "unknown or missing key id")  # k1 dropped: its tokens stop working


def test_alg_none_is_refused() -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "k1"}).encode())
    payload = b64(json.dumps(good_claims()).encode())
    refused(ring(), f"{header}.{payload}.", "algorithm 'none' is not accepted")


def test_alg_outside_the_allow_list_is_refused() -> None:
    token = forge(good_claims(), "a" * 64, "HS512")
    refused(ring(), token, "HS512.* not accepted")


def test_tampered_payload_is_refused() -> None:
    token, _ = ring().issue("u_1", NOW, 900)
    h, _, sig = token.split(".")
    evil = b64(json.dumps(good_claims(sub="u_admin")).encode())
    refused(ring(), f"{h}.{evil}.{sig}", "bad signature")


def test_wrong_secret_is_refused() -> None:
    refused(ring(), forge(good_claims(), "z" * 40), "bad signature")


def test_expired_nbf_iat() -> None:
    r = ring()
    refused(r, forge(good_claims(exp=NOW // 1000 - 11), "a" * 40), "expired")
    assert r.verify(forge(good_claims(exp=NOW // 1000 - 5), "a" * 40), NOW)  # within the leeway
    refused(r, forge(good_claims(nbf=NOW // 1000 + 300), "a" * 40), "nbf")
    refused(r, forge(good_claims(iat=NOW // 1000 + 300), "a" * 40), "iat")
    refused(r, forge(good_claims(exp="tomorrow"), "a" * 40), "must be a number")


def test_wrong_audience_and_issuer() -> None:
    refused(ring(), forge(good_claims(aud="other"), "a" * 40), "audience")
    refused(ring(), forge(good_claims(iss="evil"), "a" * 40), "issuer")


@pytest.mark.parametrize("claim", ["sub", "jti", "iat", "exp", "iss", "aud"])
def test_required_claims(claim: str) -> None:
    c = good_claims()
    del c[claim]
    refused(ring(), forge(c, "a" * 40), "audience|issuer|missing claim")


def test_missing_kid_and_garbage() -> None:
    refused(ring(), forge(good_claims(), "a" * 40, kid=None), "key id")
    refused(ring(), "not.a.jwt", "malformed")
    refused(ring(), "", "malformed")


@pytest.fixture
def rsa_pem(tmp_path: Path) -> tuple[Path, Path, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv = tmp_path / "rsa.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub_bytes = key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    pub = tmp_path / "rsa.pub.pem"
    pub.write_bytes(pub_bytes)
    return priv, pub, pub_bytes


def test_rs256_sign_and_verify_with_public_key_only(rsa_pem: tuple[Path, Path, bytes]) -> None:
    priv, pub, _ = rsa_pem
    signer = ring(f"r1=file:{priv}", algs=("RS256",))
    token, _ = signer.issue("u_1", NOW, 60)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    # A verifier may hold only the public key, as long as a signing key comes first.
    verifier = ring(S1, f"r1=file:{pub}", algs=("HS256", "RS256"))
    assert verifier.verify(token, NOW)["sub"] == "u_1"


def test_hs_rs_confusion_is_refused(rsa_pem: tuple[Path, Path, bytes]) -> None:
    priv, _, pub_bytes = rsa_pem
    # Even with HS256 allowed, an HS256 token naming the RSA key's kid is refused:
    # the attacker "signs" with the public key bytes as an HMAC secret.
    r = ring(f"r1=file:{priv}", S1, algs=("RS256", "HS256"))
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "r1"}).encode())
    payload = b64(json.dumps(good_claims()).encode())
    import hashlib
    import hmac
    sig = b64(hmac.new(pub_bytes, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    refused(r, f"{header}.{payload}.{sig}", "does not fit key 'r1'")
    # And the other way: an RS256 token naming the HMAC key.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(r, forge(good_claims(), key, "RS256", kid="k1"), "does not fit key 'k1'")


def test_ec_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    p = tmp_path / "ec.pem"
    p.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    r = ring(f"e1=file:{p}", algs=("ES256",))
    token, _ = r.issue("u", NOW, 60)
    assert r.verify(token, NOW)["sub"] == "u"


def test_key_configuration_errors(tmp_path: Path, rsa_pem: tuple[Path, Path, bytes]) -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        parse_key_spec("k=short")
    with pytest.raises(ConfigError, match="KID=SECRET"):
        parse_key_spec("no-equals-sign")
    with pytest.raises(ConfigError, match="cannot read"):
        parse_key_spec(f"k=file:{tmp_path}/missing.pem")
    with pytest.raises(ConfigError, match="unsupported JWT algorithm"):
        ring(algs=("none",))
    with pytest.raises(ConfigError, match="given twice"):
        ring(S1, S1)
    _, pub, _ = rsa_pem
    with pytest.raises(ConfigError, match="must be a secret or a private key"):
        ring(f"r=file:{pub}", algs=("RS256",))
    with pytest.raises(ConfigError, match="fits none"):
        ring(S1, algs=("RS256",))
    secret_file = tmp_path / "secret"
    secret_file.write_text("s" * 40 + "\n")
    assert parse_key_spec(f"k=file:{secret_file}").verify_key == b"s" * 40
