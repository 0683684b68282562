"""Sessions: the access and refresh tokens of one login, and their revocation.

A login opens a session (a refresh-token *family*).  Every token issued has a
record at ``auth:{auth}:token:SHA256(token)`` whose TTL is the token's lifetime; a
token whose record is gone is refused, so deleting the record revokes it at
once.  The session record ``auth:{auth}:session:USER:SESSION`` lists the
family's live tokens, so revoking a session deletes exactly those records.

Refresh tokens are opaque random strings that rotate on every use: the used
one is marked spent (its record kept until it would have expired) and a new
pair is issued.  Presenting a spent refresh token again means it was copied:
the whole family is revoked (RFC 6819 5.2.2.3, OAuth 2.0 Security BCP 4.14).

An API token (`issue_api_token`) is an access token with a long lifetime for
a client that runs for days (`helios worker`).  It gets a session of its own
(kind ``api_token``, with a label) holding just that token and no refresh
token, so everything that ends sessions ends it too: revoking the session,
a password change, disabling or removing the user.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from helios_core.auth.tokens import KeyRing, token_hash
from helios_core.auth.users import user_key
from helios_core.errors import AuthenticationError
from helios_core.store.base import Store, Txn

__all__ = ["Session", "TokenPair", "ApiToken", "Sessions", "token_key", "session_key", "TOKEN_PREFIX",
           "SESSION_PREFIX", "LOGIN", "API_TOKEN"]

# Every auth key carries the hash tag {auth} (one Redis Cluster slot: see helios_core/auth/migrate.py).
TOKEN_PREFIX = "auth:{auth}:token:"
SESSION_PREFIX = "auth:{auth}:session:"
REFRESH_PREFIX = "rt_"
LOGIN = "login"  # session kinds
API_TOKEN = "api_token"


def token_key(thash: str) -> str:
    return TOKEN_PREFIX + thash


def session_key(user_id: str, sid: str) -> str:
    return f"{SESSION_PREFIX}{user_id}:{sid}"


@dataclass
class Session:
    sid: str
    uid: str
    created_ms: int
    last_used_ms: int
    expires_ms: int
    client: str | None = None
    user_agent: str | None = None
    refresh: str = ""  # hash of the family's current refresh token
    access: dict[str, int] = field(default_factory=dict)  # hash -> expiry of live access tokens
    kind: str = LOGIN  # or API_TOKEN (records written before API tokens existed are logins)
    label: str | None = None  # what an API token is for, as its issuer said

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> Session:
        return cls(**orjson.loads(raw))

    def token_hashes(self) -> list[str]:
        return [*self.access, *([self.refresh] if self.refresh else [])]

    def public(self, current_sid: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.sid, "kind": self.kind, "label": self.label, "created_ms": self.created_ms,
                               "last_used_ms": self.last_used_ms, "expires_ms": self.expires_ms,
                               "client": self.client, "user_agent": self.user_agent}
        if current_sid is not None:
            out["current"] = self.sid == current_sid
        return out


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    access_expires_ms: int
    refresh_token: str
    refresh_expires_ms: int
    session_id: str
    user_id: str

    def to_json(self, now_ms: int) -> dict[str, Any]:
        return {
            "access_token": self.access_token, "token_type": "Bearer",
            "expires_in": max(0, -(-(self.access_expires_ms - now_ms) // 1000)),
            "refresh_token": self.refresh_token,
            "refresh_expires_in": max(0, -(-(self.refresh_expires_ms - now_ms) // 1000)),
            "session_id": self.session_id,
        }


@dataclass(frozen=True)
class ApiToken:
    token: str
    expires_ms: int
    session_id: str
    label: str | None

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "expires_ms": self.expires_ms, "session_id": self.session_id}


@dataclass(frozen=True)
class _Minted:
    pair: TokenPair
    access_hash: str
    refresh_hash: str

    def write(self, txn: Txn) -> None:
        p = self.pair
        txn.set(token_key(self.access_hash), orjson.dumps(
            {"kind": "access", "uid": p.user_id, "sid": p.session_id, "exp_ms": p.access_expires_ms}),
            pxat=p.access_expires_ms)
        txn.set(token_key(self.refresh_hash), orjson.dumps(
            {"kind": "refresh", "uid": p.user_id, "sid": p.session_id, "exp_ms": p.refresh_expires_ms}),
            pxat=p.refresh_expires_ms)


class Sessions:
    def __init__(self, store: Store, keys: KeyRing, access_ttl_s: int, refresh_ttl_s: int) -> None:
        self.store = store
        self.keys = keys
        self.access_ttl_s = access_ttl_s
        self.refresh_ttl_s = refresh_ttl_s

    def _mint(self, uid: str, sid: str, now_ms: int) -> _Minted:
        # Made before the transaction: a transaction function must have no side
        # effects, since a remote store may run it more than once.
        access, claims = self.keys.issue(uid, now_ms, self.access_ttl_s, {"sid": sid})
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        pair = TokenPair(access, claims["exp"] * 1000, refresh, now_ms + self.refresh_ttl_s * 1000, sid, uid)
        return _Minted(pair, token_hash(access), token_hash(refresh))

    async def open(self, uid: str, now_ms: int, client: str | None = None,
                   user_agent: str | None = None) -> TokenPair:
        sid = "s_" + secrets.token_hex(8)
        m = self._mint(uid, sid, now_ms)
        p = m.pair
        sess = Session(sid, uid, now_ms, now_ms, p.refresh_expires_ms, client, (user_agent or "")[:256] or None,
                       m.refresh_hash, {m.access_hash: p.access_expires_ms})

        def fn(txn: Txn) -> None:
            m.write(txn)
            txn.set(session_key(uid, sid), sess.encode(), pxat=sess.expires_ms)

        await self.store.transact(fn)
        return p

    async def issue_api_token(self, uid: str, ttl_s: int, now_ms: int, label: str | None = None,
                              client: str | None = None) -> ApiToken | None:
        """A session holding one access token valid for `ttl_s`; None if the user is gone or disabled."""
        sid = "s_" + secrets.token_hex(8)
        token, claims = self.keys.issue(uid, now_ms, ttl_s, {"sid": sid})
        exp_ms = claims["exp"] * 1000
        h = token_hash(token)
        sess = Session(sid, uid, now_ms, now_ms, exp_ms, client, None, "", {h: exp_ms}, API_TOKEN, label)

        async def fn(txn: Txn) -> bool:
            # Checked with the write, so a user disabled meanwhile never gets a live token.
            user_raw = await txn.get(user_key(uid))
            if user_raw is None or orjson.loads(user_raw).get("disabled"):
                return False
            txn.set(token_key(h), orjson.dumps({"kind": "access", "uid": uid, "sid": sid, "exp_ms": exp_ms}),
                    pxat=exp_ms)
            txn.set(session_key(uid, sid), sess.encode(), pxat=exp_ms)
            return True

        ok: bool = await self.store.transact(fn)
        return ApiToken(token, exp_ms, sid, label) if ok else None

    async def refresh(self, refresh_token: str, now_ms: int, client: str | None = None) -> TokenPair:
        """Rotate: a new pair for a valid refresh token; reuse of a spent one revokes the family."""
        if not isinstance(refresh_token, str) or not refresh_token.startswith(REFRESH_PREFIX):
            raise AuthenticationError("invalid refresh token", code="invalid_token")
        h = token_hash(refresh_token)
        rec_raw = await self.store.get(token_key(h))
        if rec_raw is None:
            raise AuthenticationError("refresh token expired or revoked", code="invalid_token")
        rec = orjson.loads(rec_raw)
        if rec.get("kind") != "refresh":
            raise AuthenticationError("invalid refresh token", code="invalid_token")
        uid, sid = rec["uid"], rec["sid"]
        m = self._mint(uid, sid, now_ms)

        async def fn(txn: Txn) -> str:
            cur_raw, sess_raw, user_raw = await txn.mget([token_key(h), session_key(uid, sid), user_key(uid)])
            if cur_raw is None:
                return "gone"
            cur = orjson.loads(cur_raw)
            if cur.get("spent"):
                txn.delete(token_key(h))
                if sess_raw is not None:
                    _revoke(txn, Session.decode(sess_raw))
                return "reused"
            if sess_raw is None:
                return "gone"
            if user_raw is None or orjson.loads(user_raw).get("disabled"):
                _revoke(txn, Session.decode(sess_raw))
                return "user"
            sess = Session.decode(sess_raw)
            txn.set(token_key(h), orjson.dumps({**cur, "spent": True}), pxat=cur["exp_ms"])
            m.write(txn)
            sess.access = {k: exp for k, exp in sess.access.items() if exp > now_ms}
            sess.access[m.access_hash] = m.pair.access_expires_ms
            sess.refresh = m.refresh_hash
            sess.last_used_ms = now_ms
            sess.expires_ms = m.pair.refresh_expires_ms
            if client:
                sess.client = client
            txn.set(session_key(uid, sid), sess.encode(), pxat=sess.expires_ms)
            return "ok"

        outcome: str = await self.store.transact(fn)
        if outcome == "reused":
            raise AuthenticationError("refresh token reuse detected: the session is revoked; log in again",
                                      code="refresh_reused", detail={"uid": uid, "sid": sid})
        if outcome == "user":
            raise AuthenticationError("account disabled or removed", code="account_disabled")
        if outcome != "ok":
            raise AuthenticationError("refresh token expired or revoked", code="invalid_token")
        return m.pair

    async def revoke(self, uid: str, sid: str) -> bool:
        """Revoke one session and every live token of it; False if there was none."""

        async def fn(txn: Txn) -> bool:
            raw = await txn.get(session_key(uid, sid))
            if raw is None:
                return False
            _revoke(txn, Session.decode(raw))
            return True

        return await self.store.transact(fn)

    async def _keys(self, uid: str) -> list[bytes]:
        return await self.store.scan_all(f"{SESSION_PREFIX}{uid}:")

    async def revoke_all(self, uid: str) -> int:
        """Revoke every session of the user; returns how many there were."""
        keys = await self._keys(uid)
        if not keys:
            return 0

        async def fn(txn: Txn) -> int:
            n = 0
            for raw in await txn.mget(list(keys)):
                if raw is not None:
                    _revoke(txn, Session.decode(raw))
                    n += 1
            return n

        return await self.store.transact(fn)

    async def list(self, uid: str) -> list[Session]:
        keys = await self._keys(uid)
        raws = await self.store.mget(list(keys)) if keys else []
        return sorted((Session.decode(r) for r in raws if r is not None), key=lambda s: s.created_ms)


def _revoke(txn: Txn, sess: Session) -> None:
    txn.delete(session_key(sess.uid, sess.sid), *(token_key(h) for h in sess.token_hashes()))
