"""JWT access tokens: signing keys with `kid` rotation, and strict verification.

Verification trusts nothing in the token before its signature checks out:

- the header's ``alg`` must be in the configured allow-list (``none`` never
  is) *and* fit the type of the key its ``kid`` names, so an HMAC token can
  never be checked against an RSA public key (HS/RS confusion) nor the
  other way round;
- ``sub``, ``jti``, ``iat``, ``exp``, ``iss`` and ``aud`` are required and
  ``iss``/``aud`` must be ours;
- ``exp``, ``nbf`` and ``iat`` are checked here against the caller's
  ``now_ms`` (with a small leeway), not the wall clock inside PyJWT, so tests
  and callers control time.

Several keys may be configured: the first signs, all verify, so a new key
can be put first while tokens signed with the old one stay valid until
they expire.

A token whose signature and claims checked out once is remembered (by its
full text, signature included) so the next request with it skips the
signature work: PyJWT's pure-Python base64 checks cost more than the rest of
a KV read.  The times are still checked on every use, and revocation is the
token record's business, not this cache's.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from helios_core.errors import AuthenticationError, ConfigError

__all__ = ["SigningKey", "KeyRing", "token_hash", "parse_key_spec", "generate_secret", "SUPPORTED_ALGORITHMS"]

REQUIRED_CLAIMS = ("sub", "jti", "iat", "exp", "iss", "aud")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
SUPPORTED_ALGORITHMS = (*HMAC_ALGORITHMS, *RSA_ALGORITHMS, *EC_ALGORITHMS.values(), "EdDSA")
MIN_SECRET_BYTES = 32
_KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def token_hash(token: str) -> str:
    """The id a token's record is stored under: sha256 hex of the token text."""
    return hashlib.sha256(token.encode()).hexdigest()


def generate_secret() -> str:
    return secrets.token_urlsafe(48)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithms: frozenset[str]  # which algorithms this key's type can be used with
    verify_key: Any  # bytes secret or a cryptography public key
    sign_key: Any | None  # None: a verify-only (public) key


def parse_key_spec(spec: str, where: str = "auth.jwt_keys") -> SigningKey:
    """``KID=SECRET`` or ``KID=file:PATH`` (a PEM key, or a file holding a secret)."""
    kid, eq, value = spec.partition("=")
    kid = kid.strip()
    if not eq or not _KID_RE.fullmatch(kid) or not value:
        raise ConfigError(f"expected KID=SECRET or KID=file:PATH with KID of A-Z a-z 0-9 . _ -, got "
                          f"{spec.split('=')[0]!r}=...", key=where)
    if value.startswith("file:"):
        path = Path(value[5:])
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"key {kid!r}: cannot read {path}: {e.strerror}", key=where) from None
        if b"-----BEGIN" in data:
            return _pem_key(kid, data, where)
        value = data.decode(errors="replace").strip()
    secret = value.encode()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"key {kid!r}: an HMAC secret must be at least {MIN_SECRET_BYTES} bytes", key=where)
    return SigningKey(kid, frozenset(HMAC_ALGORITHMS), secret, secret)


def _pem_key(kid: str, data: bytes, where: str) -> SigningKey:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    except ImportError:
        raise ConfigError(f"key {kid!r} is a PEM key: asymmetric JWT keys need the 'cryptography' package "
                          f"(pip install cryptography)", key=where) from None
    private: Any = None
    try:
        private = serialization.load_pem_private_key(data, password=None)
        public: Any = private.public_key()
    except (ValueError, TypeError):
        try:
            public = serialization.load_pem_public_key(data)
        except ValueError as e:
            raise ConfigError(f"key {kid!r}: not a PEM private or public key ({e})", key=where) from None
    if isinstance(public, rsa.RSAPublicKey):
        algs = frozenset(RSA_ALGORITHMS)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS.get(public.curve.name)
        if alg is None:
            raise ConfigError(f"key {kid!r}: unsupported curve {public.curve.name}", key=where)
        algs = frozenset({alg})
    elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        algs = frozenset({"EdDSA"})
    else:
        raise ConfigError(f"key {kid!r}: unsupported key type {type(public).__name__}", key=where)
    return SigningKey(kid, algs, public, private)


class KeyRing:
    """The keys tokens are signed and verified with, and the rules a token must meet."""

    def __init__(self, keys: Sequence[SigningKey], algorithms: Iterable[str], *, issuer: str, audience: str,
                 leeway_s: int = 0) -> None:
        algorithms = tuple(algorithms)
        bad = [a for a in algorithms if a not in SUPPORTED_ALGORITHMS]
        if bad or not algorithms:
            raise ConfigError(f"unsupported JWT algorithm(s) {', '.join(bad) or '(none given)'}; "
                              f"allowed: {', '.join(SUPPORTED_ALGORITHMS)}", key="auth.jwt_algorithms")
        if not keys:
            raise ConfigError("no JWT signing key", key="auth.jwt_keys")
        seen: set[str] = set()
        for k in keys:
            if k.kid in seen:
                raise ConfigError(f"key id {k.kid!r} given twice", key="auth.jwt_keys")
            seen.add(k.kid)
        signer = keys[0]
        if signer.sign_key is None:
            raise ConfigError(f"the first key ({signer.kid!r}) signs, so it must be a secret or a private key",
                              key="auth.jwt_keys")
        sign_algs = [a for a in algorithms if a in signer.algorithms]
        if not sign_algs:
            raise ConfigError(f"the first key ({signer.kid!r}) fits none of auth.jwt_algorithms "
                              f"({', '.join(algorithms)}); it can sign {', '.join(sorted(signer.algorithms))}",
                              key="auth.jwt_algorithms")
        self.keys = {k.kid: k for k in keys}
        self.signer = signer
        self._sign_key: Any = signer.sign_key
        self.sign_algorithm = sign_algs[0]
        self.algorithms = frozenset(algorithms)
        self.issuer = issuer
        self.audience = audience
        self.leeway_ms = leeway_s * 1000
        self._jwt = jwt.PyJWT()
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.cache_size = 10000

    @classmethod
    def from_specs(cls, specs: Iterable[str], algorithms: Iterable[str], *, issuer: str, audience: str,
                   leeway_s: int = 0) -> KeyRing:
        return cls([parse_key_spec(s) for s in specs], algorithms, issuer=issuer, audience=audience,
                   leeway_s=leeway_s)

    def issue(self, sub: str, now_ms: int, ttl_s: int, extra: Mapping[str, Any] | None = None) -> tuple[str, dict]:
        """A signed token for `sub` valid for `ttl_s` from `now_ms`; returns (token, claims)."""
        now = now_ms // 1000
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "sub": sub, "jti": secrets.token_urlsafe(12),
            "iat": now, "nbf": now, "exp": now + ttl_s, **(extra or {}),
        }
        token = jwt.encode(claims, self._sign_key, algorithm=self.sign_algorithm,
                           headers={"kid": self.signer.kid, "typ": "JWT"})
        return token, claims

    def verify(self, token: str, now_ms: int) -> dict[str, Any]:
        """The token's claims if it is valid at `now_ms`; AuthenticationError otherwise."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_signature(token)
            self._verified[token] = claims
            if len(self._verified) > self.cache_size:
                self._verified.popitem(last=False)
        self._check_times(claims, now_ms)
        return claims

    def _verify_signature(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise _invalid(f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid("unknown or missing key id (kid)")
        if alg not in key.algorithms:  # e.g. HS256 signed with an RSA public key as the "secret"
            raise _invalid(f"algorithm {alg} does not fit key {kid!r}")
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token, key.verify_key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False},
            )
        except jwt.InvalidAudienceError:
            raise _invalid("wrong audience (aud)") from None
        except jwt.InvalidIssuerError:
            raise _invalid("wrong issuer (iss)") from None
        except jwt.MissingRequiredClaimError as e:
            raise _invalid(f"missing claim {e.claim!r}") from None
        except jwt.PyJWTError:
            raise _invalid("bad signature or malformed token") from None
        if not isinstance(claims["sub"], str) or not isinstance(claims["jti"], str):
            raise _invalid("sub and jti must be strings")
        for name in ("exp", "iat", "nbf"):
            v = claims.get(name)
            if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)):
                raise _invalid(f"claim {name!r} must be a number")
        return claims

    def _check_times(self, claims: Mapping[str, Any], now_ms: int) -> None:
        leeway = self.leeway_ms
        if claims["exp"] * 1000 <= now_ms - leeway:
            raise AuthenticationError("token expired", code="token_expired")
        nbf = claims.get("nbf")
        if nbf is not None and nbf * 1000 > now_ms + leeway:
            raise _invalid("token not valid yet (nbf)")
        if claims["iat"] * 1000 > now_ms + leeway:
            raise _invalid("token issued in the future (iat)")


def _invalid(why: str) -> AuthenticationError:
    return AuthenticationError(f"invalid token: {why}", code="invalid_token")
