"""The verified-token cache of `KeyRing.verify`, attacked: what it remembers must never let through a
token the full check would refuse.

It remembers a token's claims by the token's whole text once signature and claims checked out, so a
request with the same token skips PyJWT.  The times are checked on every use; revocation, a removed
or disabled user and role changes are the token record's business, checked on every request by the
gateway (the last tests here, against a running gateway, on the KV read path that reads them in one
round trip).
"""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from helios_core.auth.tokens import KeyRing
from helios_core.errors import AuthenticationError
from tests.unit.test_auth_tokens import NOW, S1, S2, forge, good_claims, refused, ring
from tests.unit.test_gateway_harness import Api, run_gateway


def test_a_tampered_signature_after_the_good_token_is_cached_is_refused() -> None:
    r = ring()
    token, _ = r.issue("u_1", NOW, 900)
    assert r.verify(token, NOW)["sub"] == "u_1"  # cached now
    h, p, s = token.split(".")
    for bad in (f"{h}.{p}.{s[:-2]}AA", f"{h}.{p}.{s[:-1]}", f"{h}.{p}.", f"{h}.{p}.{s} ", f"{h}.{p}",
                f"{h}.{p}x.{s}"):
        with pytest.raises(AuthenticationError):
            r.verify(bad, NOW)
    assert r.verify(token, NOW)["sub"] == "u_1"
    assert list(r._verified) == [token]  # no refused token was remembered


def test_the_cache_answers_as_the_full_check_does() -> None:
    # Another text of the same signature (PyJWT takes base64 padding: "...=") is its own entry,
    # checked in full; whatever a fresh ring says of a variant, the ring that cached the token says.
    r = ring()
    token, _ = r.issue("u_1", NOW, 900)
    r.verify(token, NOW)
    h, p, s = token.split(".")
    for variant in (f"{h}.{p}.{s}=", f"{h}.{p}.{s}==", f"{h}={p}.{s}", f"{h}.{p}.{s[:-1]}B"):
        assert _verdict(r, variant) == _verdict(ring(), variant), variant


def _verdict(k: KeyRing, token: str) -> str:
    try:
        return str(k.verify(token, NOW)["sub"])
    except AuthenticationError as e:
        return e.code


def test_a_token_that_fails_is_never_cached() -> None:
    r = ring()
    attacks = [forge(good_claims(), "x" * 40), forge(good_claims(aud="other"), "a" * 40),
               forge(good_claims(), "a" * 40, kid="k9"), "abc.def.ghi", "not a token"]
    for token in attacks:
        for _ in range(2):  # the second try is refused by the full check again, not by a memory
            with pytest.raises(AuthenticationError):
                r.verify(token, NOW)
    assert not r._verified


def test_an_expired_cached_token_is_refused() -> None:
    r = ring()  # leeway 10 s
    token, claims = r.issue("u_1", NOW, 60)
    r.verify(token, NOW)
    assert token in r._verified
    exp_ms = claims["exp"] * 1000
    assert r.verify(token, exp_ms + 9_999)["sub"] == "u_1"
    refused(r, token, "expired", now=exp_ms + 10_000)
    refused(r, token, "expired", now=exp_ms + 3_600_000)


def test_not_yet_valid_is_checked_on_each_use_too() -> None:
    r = ring()
    token = forge(good_claims(nbf=NOW // 1000 + 30), "a" * 40)
    refused(r, token, "not valid yet")  # signature good, time not: cached, and refused each time
    refused(r, token, "not valid yet")
    assert r.verify(token, NOW + 40_000)["sub"] == "u_1"


def test_many_distinct_tokens_do_not_grow_the_cache_past_its_bound() -> None:
    r = ring()
    r.cache_size = 50
    first, _ = r.issue("u_first", NOW, 900)
    r.verify(first, NOW)
    for i in range(500):
        token, _ = r.issue(f"u_{i}", NOW, 900)
        r.verify(token, NOW)
        assert len(r._verified) <= 50
    assert first not in r._verified
    assert r.verify(first, NOW)["sub"] == "u_first"  # evicted means checked afresh, not refused


def test_default_bound() -> None:
    assert 1000 <= ring().cache_size <= 10_000


def test_a_new_key_ring_trusts_nothing_the_old_one_cached() -> None:
    # Keys change with a restart (auth.jwt_keys is read at start): each KeyRing has its own cache.
    old = ring(S1)
    token, _ = old.issue("u_1", NOW, 900)
    old.verify(token, NOW)
    refused(ring(S2), token, "unknown or missing key id")  # k1 dropped
    same_kid = KeyRing.from_specs(["k1=" + "c" * 40], ("HS256",), issuer="helios", audience="helios")
    refused(same_kid, token, "bad signature")  # k1's secret changed
    assert ring(S2, S1).verify(token, NOW)["sub"] == "u_1"  # k1 still verifies after rotation


def test_the_cached_claims_are_the_verified_ones() -> None:
    r = ring()
    token, _ = r.issue("u_1", NOW, 900, {"sid": "s_1"})
    once = r.verify(token, NOW)
    assert r.verify(token, NOW) == once == jwt.decode(token, options={"verify_signature": False})


# -- against a running gateway: the store checks still run with the token cached ----------------


def test_logout_refuses_a_cached_token_at_once(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        assert (await api.call("PUT", "/api/v1/kv/k", token=admin, body=b"v")).code in (200, 201)
        alice = await api.make_user("alice", ["readonly"])
        for _ in range(3):  # cached and remembered: the one-step read path
            assert (await api.call("GET", "/api/v1/kv/k", token=alice)).code == 200
        assert (await api.call("POST", "/api/v1/auth/logout", token=alice)).code == 204
        r = await api.call("GET", "/api/v1/kv/k", token=alice)
        assert (r.code, r.error_code) == (401, "token_revoked")
        r = await api.call("GET", "/api/v1/kv/k", token=alice)
        assert (r.code, r.error_code) == (401, "token_revoked")

    run_gateway(tmp_path, body)


def test_a_disabled_user_with_a_cached_token_is_refused_at_once(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        assert (await api.call("PUT", "/api/v1/kv/k", token=admin, body=b"v")).code in (200, 201)
        bob = await api.make_user("bob", ["readonly"])
        for _ in range(3):
            assert (await api.call("GET", "/api/v1/kv/k", token=bob)).code == 200
        assert (await api.call("PATCH", "/admin/users/bob", token=admin, json={"disabled": True})).code == 200
        r = await api.call("GET", "/api/v1/kv/k", token=bob)
        assert r.code == 401

    run_gateway(tmp_path, body)


def test_a_tampered_token_is_refused_by_a_gateway_that_cached_the_good_one(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        admin = await api.admin_token()
        assert (await api.call("PUT", "/api/v1/kv/k", token=admin, body=b"v")).code in (200, 201)
        for _ in range(2):
            assert (await api.call("GET", "/api/v1/kv/k", token=admin)).code == 200
        h, p, s = admin.split(".")
        r = await api.call("GET", "/api/v1/kv/k", token=f"{h}.{p}.{s[:-2]}AA")
        assert (r.code, r.error_code) == (401, "invalid_token")

    run_gateway(tmp_path, body)
