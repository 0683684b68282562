"""/api/v1/kv: binary-safe values with TTLs, conditional writes and prefix listing.

A value is stored at ``kv:{key}`` exactly as sent (any bytes).  Its ETag is a
hash of the value, so ``If-Match`` works across restarts and gateways with
no extra state; a write's check and its SET run in one transaction.
"""

from __future__ import annotations

import hashlib

from helios_core.digits import plain_int
from helios_core.errors import CommandError, HeliosError, InvalidInputError, NotFoundError
from helios_core.gateway import headers as hdr
from helios_core.gateway.base import BaseHandler, perm
from helios_core.store.base import Txn

__all__ = ["KvItemHandler", "KvListHandler", "etag_of"]

PREFIX = "kv:"
MAX_KEY_BYTES = 1024
_OCTETS = "application/octet-stream"


def etag_of(value: bytes) -> str:
    return '"' + hashlib.blake2b(value, digest_size=12).hexdigest() + '"'


def _precondition(message: str) -> HeliosError:
    return HeliosError(message, code="precondition_failed", status=412)


def _etags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/") for t in header.split(",") if t.strip()]


def check_key(key: str) -> str:
    if not key:
        raise InvalidInputError("key: must not be empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidInputError(f"key: at most {MAX_KEY_BYTES} bytes")
    return key


class KvItemHandler(BaseHandler):
    route = "/api/v1/kv/{key}"
    needs = {
        "GET": perm("kv:read", resource="key", prefetch=PREFIX),  # read with the checks (BaseHandler.read)
        "PUT": perm("kv:write", resource="key"),
        "DELETE": perm("kv:write", resource="key"),
    }

    async def get(self, key: str) -> None:
        value = await self.read(PREFIX + check_key(key))
        if value is None:
            raise NotFoundError(f"key {key!r} does not exist", code="key_not_found")
        etag = etag_of(value)
        # Values made here (a hex digest, a constant): set without set_header's per-value checks.
        # (hdr.put's two dicts written here, by names in Tornado's case: this runs for every GET)
        headers = self._headers
        as_list, combined = headers._as_list, headers._combined_cache
        as_list["Etag"], combined["Etag"] = [etag], etag
        inm = self.request.headers._as_list.get("If-None-Match")  # hdr.get, by its name in Tornado's case
        if inm is not None and etag in _etags(inm[0] if len(inm) == 1 else ",".join(inm)):
            self.set_status(304)
            self.finish()
            return
        as_list["Content-Type"], combined["Content-Type"] = [_OCTETS], _OCTETS
        self.finish(value)

    async def put(self, key: str) -> None:
        k = PREFIX + check_key(key)
        value = self.body
        ttl_ms = self._ttl_ms()
        if_match = hdr.get(self.request.headers, "If-Match")
        if_none_match = hdr.get(self.request.headers, "If-None-Match")
        if if_none_match is not None and if_none_match.strip() != "*":
            raise InvalidInputError("If-None-Match: only '*' (create only if absent) is supported on PUT")

        async def fn(txn: Txn) -> str:
            cur = await txn.get(k)
            if if_none_match is not None and cur is not None:
                return "exists"
            if if_match is not None:
                if cur is None or (if_match.strip() != "*" and etag_of(cur) not in _etags(if_match)):
                    return "mismatch"
            txn.set(k, value, px=ttl_ms)
            return "created" if cur is None else "replaced"

        outcome = await self._write(fn)
        if outcome == "exists":
            raise _precondition(f"key {key!r} exists (If-None-Match: *)")
        if outcome == "mismatch":
            raise _precondition(f"key {key!r} does not match If-Match")
        etag = etag_of(value)
        hdr.put(self._headers, "ETag", etag)  # a hex digest made here: no set_header checks
        body = {"key": key, "etag": etag, "size": len(value), "ttl_seconds": ttl_ms // 1000 if ttl_ms else None}
        if outcome == "created":
            self.set_header("Location", self.request.path)
        self.write_json(body, 201 if outcome == "created" else 200)

    async def delete(self, key: str) -> None:
        k = PREFIX + check_key(key)
        if_match = self.request.headers.get("If-Match")

        async def fn(txn: Txn) -> str:
            cur = await txn.get(k)
            if cur is None:
                return "missing"
            if if_match is not None and if_match.strip() != "*" and etag_of(cur) not in _etags(if_match):
                return "mismatch"
            txn.delete(k)
            return "deleted"

        outcome = await self._write(fn)
        if outcome == "missing":
            raise NotFoundError(f"key {key!r} does not exist", code="key_not_found")
        if outcome == "mismatch":
            raise _precondition(f"key {key!r} does not match If-Match")
        self.set_status(204)
        self.finish()

    def _ttl_ms(self) -> int | None:
        raw = self.get_query_argument("ttl", None)
        if raw is None or raw == "":
            return None
        ttl = plain_int(raw)
        if ttl is None or not 1 <= ttl <= 10 * 365 * 86400:
            raise InvalidInputError("ttl: expected whole seconds from 1 to 315360000")
        return ttl * 1000

    async def _write(self, fn: object) -> str:
        try:
            return await self.gw.store.transact(fn)  # type: ignore[arg-type]
        except CommandError as e:
            if "exceeds the maximum" in e.message:
                raise HeliosError("value too large for the store (atlas.max_value_bytes)",
                                  code="payload_too_large", status=413) from None
            raise


class KvListHandler(BaseHandler):
    route = "/api/v1/kv"
    needs = {"GET": perm("kv:read", resource_query="prefix")}

    async def get(self) -> None:
        prefix = self.get_query_argument("prefix", "")
        cursor = self.get_query_argument("cursor", "0") or "0"
        limit_raw = self.get_query_argument("limit", "100")
        page_max = self.gw.config.gateway.kv_page_max
        limit = plain_int(limit_raw)
        if limit is None or not 1 <= limit <= page_max:
            raise InvalidInputError(f"limit: expected 1..{page_max}")
        if plain_int(cursor, 20) is None:
            raise InvalidInputError("cursor: not a cursor this API returned")
        try:
            nxt, keys = await self.gw.store.scan(PREFIX + prefix, cursor, int(limit_raw))
        except CommandError as e:
            if "invalid cursor" in e.message:
                raise InvalidInputError("cursor: unknown or already used; start the listing again") from None
            raise
        names = [k[len(PREFIX):].decode(errors="replace") for k in keys]
        self.write_json({"keys": names, "cursor": None if nxt == "0" else nxt})
