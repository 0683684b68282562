"""The OpenAPI 3.1 document of the gateway, built from the route table.

Paths, methods, path parameters, security and the permission each operation
needs come from the handlers themselves (`route`, `needs`); this module adds
what code cannot say: summaries, bodies and response shapes.  Building the
document fails if a handler method has no entry here or an entry has no
handler, so the document and the routes cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson

from helios_core import __version__
from helios_core.gateway.base import BaseHandler

__all__ = ["document", "build", "OPERATIONS"]

JSON = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Any], required: Iterable[str] = (), extra: bool = False) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": extra}


STR: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
NSTR: dict[str, Any] = {"type": ["string", "null"]}
STRS: dict[str, Any] = {"type": "array", "items": STR}
POLICY = obj({"limit": {"type": "integer", "minimum": 1}, "window": {"type": "integer", "minimum": 1}},
             ["limit", "window"])

SCHEMAS: dict[str, Any] = {
    "Error": obj({"error": obj({"code": STR, "message": STR, "request_id": STR},
                               ["code", "message", "request_id"])}, ["error"]),
    "Credentials": obj({"username": STR, "password": STR}, ["username", "password"]),
    "TokenPair": obj({"access_token": STR, "token_type": {"const": "Bearer"}, "expires_in": INT,
                      "refresh_token": STR, "refresh_expires_in": INT, "session_id": STR},
                     ["access_token", "token_type", "expires_in", "refresh_token", "refresh_expires_in",
                      "session_id"]),
    "User": obj({"id": STR, "username": STR, "created_ms": INT, "updated_ms": INT, "disabled": BOOL,
                 "roles": STRS, "password": {**STR, "description": "Only when generated: shown once."}},
                ["id", "username", "created_ms", "updated_ms", "disabled"]),
    "Me": obj({"id": STR, "username": STR, "created_ms": INT, "updated_ms": INT, "disabled": BOOL,
               "roles": STRS, "permissions": STRS, "session_id": NSTR},
              ["id", "username", "roles", "permissions"]),
    "Session": obj({"id": STR, "created_ms": INT, "last_used_ms": INT, "expires_ms": INT, "client": NSTR,
                    "user_agent": NSTR, "current": BOOL}, ["id", "created_ms", "last_used_ms", "expires_ms"]),
    "Sessions": obj({"sessions": {"type": "array", "items": ref("Session")}}, ["sessions"]),
    "Role": obj({"name": STR, "description": STR, "permissions": STRS, "builtin": BOOL},
                ["name", "description", "permissions", "builtin"]),
    "RoleInput": obj({"name": STR, "description": STR,
                      "permissions": {**STRS, "description": "e.g. kv:read, kv:write@users/{user}/, admin:*"}}),
    "KvWritten": obj({"key": STR, "etag": STR, "size": INT, "ttl_seconds": {"type": ["integer", "null"]}},
                     ["key", "etag", "size", "ttl_seconds"]),
    "KvList": obj({"keys": STRS, "cursor": NSTR}, ["keys", "cursor"]),
    "RateLimitSettings": obj({"default": POLICY, "roles": {"type": "object", "additionalProperties": POLICY},
                              "clients": {"type": "object", "additionalProperties": POLICY}},
                             ["default", "roles", "clients"]),
    "RateLimitChange": obj({
        "default": {"oneOf": [POLICY, {"type": "null"}]},
        "roles": {"type": "object", "additionalProperties": {"oneOf": [POLICY, {"type": "null"}]}},
        "clients": {"type": "object", "additionalProperties": {"oneOf": [POLICY, {"type": "null"}]},
                    "propertyNames": {"pattern": "^(user|ip):"}}}),
    "RateLimit": obj({"enabled": BOOL, "effective": ref("RateLimitSettings"),
                      "overrides": {"type": "object"}}, ["enabled", "effective", "overrides"]),
    "AuditEvent": obj({"id": STR, "time_ms": INT, "action": STR, "actor": NSTR, "actor_id": NSTR, "client": NSTR,
                       "target": NSTR, "result": STR, "detail": {"type": "object"}},
                      ["id", "time_ms", "action", "result"]),
    "Snapshot": obj({"path": STR, "version": INT, "seq": INT, "created_ms": INT, "keys": INT, "bytes": INT,
                     "seconds": {"type": "number"}}, ["path", "seq", "keys", "bytes"]),
}


def body(schema: dict[str, Any], ctype: str = JSON, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {ctype: {"schema": schema}}}


def resp(description: str, schema: dict[str, Any] | None = None, ctype: str = JSON) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {ctype: {"schema": schema}}
    return out


def query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or STR}


def header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description, "schema": STR}


def op(summary: str, tag: str, responses: dict[str, Any], *, request: dict[str, Any] | None = None,
       params: list[dict[str, Any]] | None = None, description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        out["description"] = description
    if request is not None:
        out["requestBody"] = request
    if params:
        out["parameters"] = params
    return out


NO_CONTENT = {"204": resp("Done.")}
RAW = {"type": "string", "format": "binary"}
OK_OBJECT = resp("OK", {"type": "object"})

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("/healthz", "get"): op("Liveness probe", "ops", {"200": resp("The process answers.", {"type": "object"})}),
    ("/readyz", "get"): op("Readiness probe", "ops", {
        "200": resp("Ready.", {"type": "object"}), "503": resp("Not ready (store read-only, shutting down).",
                                                               {"type": "object"})}),
    ("/metrics", "get"): op("Prometheus metrics", "ops", {"200": resp("Text exposition format.", STR,
                                                                      "text/plain")}),
    ("/api/v1/openapi.json", "get"): op("This document", "ops", {"200": resp("OpenAPI 3.1.", {"type": "object"})}),
    ("/api/v1/auth/register", "post"): op(
        "Create an account (when auth.open_registration is true)", "auth",
        {"201": resp("Created.", ref("User"))}, request=body(ref("Credentials"))),
    ("/api/v1/auth/login", "post"): op(
        "Log in: an access token (JWT) and a refresh token", "auth", {"200": resp("Logged in.", ref("TokenPair"))},
        request=body(ref("Credentials")),
        description="Failed logins are throttled per username and per client address (429 with Retry-After)."),
    ("/api/v1/auth/logout", "post"): op("Log out: revoke this session's tokens", "auth", NO_CONTENT),
    ("/api/v1/auth/refresh", "post"): op(
        "Exchange a refresh token for a new pair", "auth", {"200": resp("New tokens.", ref("TokenPair"))},
        request=body(obj({"refresh_token": STR}, ["refresh_token"])),
        description="Refresh tokens rotate; presenting a used one again revokes the whole session."),
    ("/api/v1/auth/me", "get"): op("Who am I", "auth", {"200": resp("The caller.", ref("Me"))}),
    ("/api/v1/auth/password", "post"): op(
        "Change my password (revokes all my sessions)", "auth",
        {"200": resp("Changed.", obj({"sessions_revoked": INT}, ["sessions_revoked"]))},
        request=body(obj({"current_password": STR, "new_password": STR}, ["current_password", "new_password"]))),
    ("/api/v1/auth/sessions", "get"): op("My sessions", "auth", {"200": resp("Sessions.", ref("Sessions"))}),
    ("/api/v1/auth/sessions/{session_id}", "delete"): op("Revoke one of my sessions", "auth", NO_CONTENT),
    ("/api/v1/kv", "get"): op(
        "List keys by prefix", "kv", {"200": resp("A page of keys.", ref("KvList"))},
        params=[query("prefix", "Only keys starting with this."),
                query("cursor", "From the previous page; absent for the first.", {"type": "string",
                                                                                  "pattern": "^[0-9]+$"}),
                query("limit", "Keys examined per page (1..gateway.kv_page_max).", {"type": "string",
                                                                                    "pattern": "^[0-9]+$"})]),
    ("/api/v1/kv/{key}", "get"): op(
        "Read a value", "kv", {"200": resp("The value, as stored.", RAW, "application/octet-stream"),
                               "304": resp("Not modified (If-None-Match).")},
        params=[header("If-None-Match", "ETag(s) the caller has.")]),
    ("/api/v1/kv/{key}", "put"): op(
        "Write a value", "kv", {"200": resp("Replaced.", ref("KvWritten")), "201": resp("Created.", ref("KvWritten")),
                                "412": resp("A precondition failed.", ref("Error")),
                                "413": resp("Too large.", ref("Error"))},
        request=body(RAW, "application/octet-stream", required=False),
        params=[query("ttl", "Expire after this many seconds; absent: never.", {"type": "string",
                                                                               "pattern": "^[0-9]+$"}),
                header("If-Match", "Write only if the current value has this ETag ('*': if it exists)."),
                header("If-None-Match", "'*': write only if the key does not exist.")]),
    ("/api/v1/kv/{key}", "delete"): op(
        "Delete a value", "kv", {**NO_CONTENT, "412": resp("If-Match failed.", ref("Error"))},
        params=[header("If-Match", "Delete only if the current value has this ETag.")]),
    ("/admin/users", "get"): op("List users", "admin", {"200": resp("Users.", obj(
        {"users": {"type": "array", "items": ref("User")}}, ["users"]))}),
    ("/admin/users", "post"): op(
        "Create a user (a password is generated when none is given)", "admin",
        {"201": resp("Created.", ref("User"))},
        request=body(obj({"username": STR, "password": STR, "roles": STRS}, ["username"]))),
    ("/admin/users/{username}", "get"): op("Show a user", "admin", {"200": resp("The user.", ref("User"))}),
    ("/admin/users/{username}", "patch"): op(
        "Disable or enable a user (disabling revokes their sessions)", "admin",
        {"200": resp("The user.", ref("User"))}, request=body(obj({"disabled": BOOL}, ["disabled"]))),
    ("/admin/users/{username}", "delete"): op("Remove a user", "admin", NO_CONTENT),
    ("/admin/users/{username}/password", "post"): op(
        "Set a user's password (generated when none is given); revokes their sessions", "admin",
        {"200": resp("The user (with the generated password).", ref("User"))},
        request=body(obj({"password": STR}), required=False)),
    ("/admin/users/{username}/roles/{role}", "put"): op("Grant a role", "admin", {"200": OK_OBJECT}),
    ("/admin/users/{username}/roles/{role}", "delete"): op("Revoke a role", "admin", {"200": OK_OBJECT}),
    ("/admin/users/{username}/sessions", "get"): op("A user's sessions", "admin",
                                                    {"200": resp("Sessions.", ref("Sessions"))}),
    ("/admin/users/{username}/sessions", "delete"): op(
        "Revoke all of a user's sessions", "admin",
        {"200": resp("Revoked.", obj({"sessions_revoked": INT}, ["sessions_revoked"]))}),
    ("/admin/users/{username}/sessions/{session_id}", "delete"): op("Revoke one session", "admin", NO_CONTENT),
    ("/admin/roles", "get"): op("List roles", "admin", {"200": resp("Roles.", obj(
        {"roles": {"type": "array", "items": ref("Role")}}, ["roles"]))}),
    ("/admin/roles", "post"): op("Create a role", "admin", {"201": resp("Created.", ref("Role"))},
                                 request=body(ref("RoleInput"))),
    ("/admin/roles/{role}", "get"): op("Show a role", "admin", {"200": resp("The role.", ref("Role"))}),
    ("/admin/roles/{role}", "put"): op("Create or replace a role", "admin",
                                       {"200": resp("Replaced.", ref("Role")), "201": resp("Created.", ref("Role"))},
                                       request=body(ref("RoleInput"))),
    ("/admin/roles/{role}", "delete"): op("Delete a custom role", "admin", NO_CONTENT),
    ("/admin/ratelimit", "get"): op("Rate-limit settings", "admin", {"200": resp("Settings.", ref("RateLimit"))}),
    ("/admin/ratelimit", "put"): op(
        "Change rate-limit overrides (null removes one)", "admin", {"200": resp("Settings.", ref("RateLimit"))},
        request=body(ref("RateLimitChange"))),
    ("/admin/snapshot", "post"): op("Take a snapshot (and prune the AOF)", "admin",
                                    {"200": resp("The snapshot.", ref("Snapshot"))}),
    ("/admin/aof-rewrite", "post"): op(
        "Compact the AOF", "admin", {"200": resp("The snapshot that replaced the old AOF parts.", ref("Snapshot"))},
        description="ATLAS compacts its AOF by snapshotting: the AOF parts the snapshot covers are deleted."),
    ("/admin/stats", "get"): op("Store and process statistics", "admin", {"200": OK_OBJECT}),
    ("/admin/audit", "get"): op(
        "The audit log, newest first", "admin",
        {"200": resp("Events.", obj({"events": {"type": "array", "items": ref("AuditEvent")}, "cursor": NSTR},
                                    ["events", "cursor"]))},
        params=[query("limit", "1..1000 (default 100).", {"type": "string", "pattern": "^[0-9]+$"}),
                query("cursor", "From the previous page."),
                query("since_ms", "Only events at or after this time.", {"type": "string", "pattern": "^[0-9]+$"}),
                query("action", "e.g. auth.login, user.create"), query("actor", "Username."),
                query("result", "ok, failed, throttled, reuse_detected ...")]),
}


def build(handlers: Iterable[type[BaseHandler]]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    for h in handlers:
        item = paths.setdefault(h.route, {})
        names = re.findall(r"\{([a-z_]+)\}", h.route)
        if names:
            item["parameters"] = [{"name": n, "in": "path", "required": True, "schema": STR} for n in names]
        for method, need in h.needs.items():
            key = (h.route, method.lower())
            spec = OPERATIONS.get(key)
            if spec is None:
                raise KeyError(f"{method} {h.route} ({h.__name__}) is not described in OPERATIONS")
            seen.add(key)
            operation = {**spec, "operationId": f"{h.__name__.removesuffix('Handler')}_{method.lower()}",
                         "responses": {**spec["responses"], "default": resp("An error.", ref("Error"))}}
            if not need.authenticate:
                operation["security"] = []
            if need.permission is not None:
                operation["x-permission"] = need.permission
            item[method.lower()] = operation
    extra = set(OPERATIONS) - seen
    if extra:
        raise KeyError(f"described but not routed: {sorted(extra)}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "HELIOS gateway", "version": __version__,
                 "description": "Errors are always {\"error\": {\"code\", \"message\", \"request_id\"}}. "
                                "Rate-limited responses carry RateLimit-Policy, RateLimit and X-RateLimit-* "
                                "headers; 429 carries Retry-After."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearer": []}],
    }


@lru_cache(maxsize=4)
def _cached(handlers: tuple[type[BaseHandler], ...]) -> bytes:
    return orjson.dumps(build(handlers))


def document(handlers: Iterable[type[BaseHandler]]) -> bytes:
    return _cached(tuple(handlers))
