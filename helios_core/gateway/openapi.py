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
    "Session": obj({"id": STR, "kind": {"enum": ["login", "api_token"]}, "label": NSTR, "created_ms": INT,
                    "last_used_ms": INT, "expires_ms": INT, "client": NSTR, "user_agent": NSTR, "current": BOOL},
                   ["id", "created_ms", "last_used_ms", "expires_ms"]),
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
        description="Failed logins of a username from one address wait 1 s, 2, 4 ... after "
                    "auth.login_failures_per_user; per username over all addresses only addresses that failed "
                    "wait (a correct password from a new address gets in); per address over all usernames, "
                    "auth.login_failures_per_client (429 with Retry-After). A disabled account answers like a "
                    "wrong password. Usernames over 128 characters and passwords over 72 bytes get 400."),
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
        request=body(obj({"username": STR, "password": STR, "roles": STRS}, ["username"])),
        description="Grant only what you hold: every permission of the roles given must be covered by the "
                    "caller's own (403 exceeds_own_grants). Acting on a user (password, disable, remove, "
                    "sessions, tokens) needs every permission that user holds. The last enabled user holding "
                    "'*' cannot be disabled, removed or demoted (409 last_superuser)."),
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
    ("/admin/users/{username}/tokens", "post"): op(
        "Issue an API token: a long-lived access token for the user", "admin",
        {"201": resp("The token (shown only now).", obj({"token": STR, "expires_ms": INT, "session_id": STR},
                                                        ["token", "expires_ms", "session_id"]))},
        request=body(obj({"ttl_seconds": {"type": "integer", "minimum": 1,
                                          "description": "Lifetime, up to auth.api_token_max_seconds."},
                          "label": {**STR, "maxLength": 100, "description": "What the token is for."}},
                         ["ttl_seconds"])),
        description="The token is a session of the user's with no refresh token: it shows in their session "
                    "list and ends when that session is revoked, their password changes or they are disabled "
                    "or removed. Only for users whose permissions the caller holds too."),
    ("/admin/roles", "get"): op("List roles", "admin", {"200": resp("Roles.", obj(
        {"roles": {"type": "array", "items": ref("Role")}}, ["roles"]))}),
    ("/admin/roles", "post"): op("Create a role", "admin", {"201": resp("Created.", ref("Role"))},
                                 request=body(ref("RoleInput")),
                                 description="Creating, changing, deleting, granting or revoking a role needs "
                                             "every permission it holds (before and after), scope included "
                                             "(403 exceeds_own_grants)."),
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


# ---- jobs: /api/v1/jobs (the handlers: handlers/jobs.py) ----------------

QUEUE = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,80}$"}
ANY: dict[str, Any] = {}  # any JSON value


def _opt(kind: str, **bounds: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **bounds}


def _located(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {**resp(description, schema),
            "headers": {"Location": {"description": "The job's URL.", "required": True, "schema": STR}}}


VISIBILITY = _opt("integer", minimum=1, maximum=43200, description="Lease length in seconds.")
LEASE_TOKEN = {"type": "string", "minLength": 1, "maxLength": 200}
_ENQUEUE = obj({
    "queue": QUEUE, "payload": ANY,
    "dedup_id": _opt("string", minLength=1, maxLength=128,
                     description="Within jobs.dedup_window_seconds, the same id from the same user on the "
                                 "same queue returns the job it first made (another user's id makes a new job)."),
    "delay_seconds": _opt("number", minimum=0, maximum=31622400, description="At most 366 days."),
    "run_at_ms": _opt("integer", minimum=0, maximum=(1 << 42) - 1,
                      description="When the job is due (ms since the epoch), at most 366 days ahead."),
    "priority": _opt("integer", minimum=-1000, maximum=1000, description="Higher runs first (default 0)."),
    "max_attempts": _opt("integer", minimum=1, maximum=1000), "visibility_timeout": VISIBILITY,
}, ["queue", "payload"])
_ACK_OK = obj({"id": STR, "ok": {"const": True}, "state": STR}, ["id", "ok", "state"])
_ACK_FAILED = obj({"id": STR, "ok": {"const": False},
                   "error": obj({"code": STR, "message": STR}, ["code", "message"])}, ["id", "ok", "error"])

SCHEMAS.update({
    "JobLease": obj({"token": {**STR, "description": "Only in lease answers."}, "worker": STR,
                     "deadline_ms": INT}, ["worker", "deadline_ms"]),
    "Job": obj({
        "id": STR, "queue": STR, "payload": ANY,
        "state": {"enum": ["PENDING", "IN_PROGRESS", "DONE", "FAILED", "CANCELLED"]},
        "created_ms": INT, "available_ms": INT, "max_attempts": INT, "visibility_timeout_s": INT,
        "priority": INT, "attempts": INT, "lease": {"anyOf": [ref("JobLease"), {"type": "null"}]},
        "last_error": NSTR, "result": ANY, "dedup_id": NSTR, "trace": NSTR,
        "finished_ms": {"type": ["integer", "null"]}, "updated_ms": INT,
    }, ["id", "queue", "payload", "state", "created_ms", "available_ms", "max_attempts", "visibility_timeout_s",
        "priority", "attempts", "lease", "last_error", "result", "dedup_id", "trace", "finished_ms", "updated_ms"]),
    "JobEnvelope": obj({"job": ref("Job")}, ["job"]),
    "JobPage": obj({"jobs": {"type": "array", "items": ref("Job")}, "cursor": NSTR}, ["jobs", "cursor"]),
    "EnqueueInput": {**_ENQUEUE, "not": {"required": ["delay_seconds", "run_at_ms"]},
                     "description": "delay_seconds or run_at_ms, not both."},
    "Enqueued": obj({"job": ref("Job"), "created": BOOL}, ["job", "created"]),
    "LeaseInput": obj({
        "queues": {"type": "array", "items": QUEUE, "minItems": 1, "maxItems": 10},
        "max": _opt("integer", minimum=1, maximum=100, description="Most jobs to lease (default 1)."),
        "visibility_timeout": VISIBILITY,
        "wait_seconds": _opt("number", minimum=0, maximum=20,
                             description="Long poll: wait this long for a job (default 0)."),
        "worker": _opt("string", minLength=1, maxLength=200, description="Default: the caller's username."),
    }, ["queues"]),
    "AckInput": obj({"lease_token": LEASE_TOKEN, "result": ANY}, ["lease_token"]),
    "NackInput": obj({"lease_token": LEASE_TOKEN, "error": NSTR,
                      "retry_delay_seconds": _opt("number", minimum=0, maximum=31622400,
                                                  description="Default: backoff with full jitter."),
                      "release": {"type": ["boolean", "null"], "description":
                                  "The job never started: due at once, and this delivery is not counted "
                                  "as an attempt (a worker shutting down)."}},
                     ["lease_token"]),
    "ExtendInput": obj({"lease_token": LEASE_TOKEN, "visibility_timeout": VISIBILITY}, ["lease_token"]),
    "AckBatchInput": obj({"acks": {"type": "array", "minItems": 1, "maxItems": 100, "items": obj(
        {"id": {"type": "string", "minLength": 1, "maxLength": 64}, "lease_token": LEASE_TOKEN, "result": ANY},
        ["id", "lease_token"])}}, ["acks"]),
    "AckBatchResults": obj({"results": {"type": "array", "items": {"oneOf": [_ACK_OK, _ACK_FAILED]}}},
                           ["results"]),
    "QueueStats": obj({"queue": STR, "pending": INT, "delayed": INT, "in_progress": INT, "done": INT,
                       "failed": INT, "oldest_pending_age_seconds": {"type": ["number", "null"]}},
                      ["queue", "pending", "delayed", "in_progress", "done", "failed", "oldest_pending_age_seconds"]),
})

_JOB = {"200": resp("The job.", ref("JobEnvelope"))}
_LEASE_LOST = {"409": resp("lease_lost: the token is not the job's current lease; nothing changed.", ref("Error"))}
_TOO_LARGE = {"413": resp("payload_too_large: over jobs.max_payload_bytes.", ref("Error"))}
_NOT_FOUND = {"404": resp("job_not_found (also for a job on a queue the caller's permission scope does not "
                          "cover).", ref("Error"))}
_TOO_MANY_QUEUES = {"429": resp("too_many_queues: a new queue beyond jobs.max_queues (or rate_limited).",
                                ref("Error"))}
_PAGE_PARAMS = [query("cursor", "From the previous page; absent for the first."),
                query("limit", "1..1000 (default 100).", {"type": "string", "pattern": "^[0-9]+$"})]
_QUEUE_PARAM = {**query("queue", "The queue.", QUEUE), "required": True}

OPERATIONS.update({
    ("/api/v1/jobs", "post"): op(
        "Enqueue a job", "jobs",
        {"201": _located("Created.", ref("Enqueued")),
         "200": _located("A dedup hit: the job the dedup_id first made, unchanged.", ref("Enqueued")),
         "404": resp("queue_not_found (jobs.strict_queues).", ref("Error")), **_TOO_LARGE, **_TOO_MANY_QUEUES},
        request=body(ref("EnqueueInput"))),
    ("/api/v1/jobs", "get"): op(
        "List a queue's jobs", "jobs", {"200": resp("A page of jobs.", ref("JobPage"))},
        params=[_QUEUE_PARAM, query("state", "Only jobs in this state.",
                                    {"enum": ["PENDING", "IN_PROGRESS", "DONE", "FAILED", "CANCELLED"]}),
                *_PAGE_PARAMS]),
    ("/api/v1/jobs/batch", "post"): op(
        "Enqueue up to 100 jobs in one transaction", "jobs",
        {"201": resp("Created (or dedup hits), in order.", obj(
            {"jobs": {"type": "array", "items": ref("Enqueued")}}, ["jobs"])), **_TOO_LARGE, **_TOO_MANY_QUEUES},
        request=body(obj({"jobs": {"type": "array", "items": ref("EnqueueInput"), "minItems": 1, "maxItems": 100}},
                         ["jobs"]))),
    ("/api/v1/jobs/lease", "post"): op(
        "Lease jobs (long poll with wait_seconds)", "jobs",
        {"200": resp("Leased jobs with their lease tokens; empty when none came within the wait.", obj(
            {"jobs": {"type": "array", "items": ref("Job")}}, ["jobs"])),
         "404": resp("queue_not_found (jobs.strict_queues; otherwise a lease on a queue with no jobs yet "
                     "waits for its first one).", ref("Error"))},
        request=body(ref("LeaseInput")),
        description="Queues are tried in the order given. A long poll ends early, with what it has, when "
                    "the gateway shuts down."),
    ("/api/v1/jobs/ack", "post"): op(
        "Acknowledge up to 100 jobs in one transaction", "jobs",
        {"200": resp("One result per ack, in order.", ref("AckBatchResults"))}, request=body(ref("AckBatchInput"))),
    ("/api/v1/jobs/dlq", "get"): op(
        "List a queue's dead-letter queue (FAILED jobs)", "jobs", {"200": resp("A page of jobs.", ref("JobPage"))},
        params=[_QUEUE_PARAM, *_PAGE_PARAMS]),
    ("/api/v1/jobs/dlq/redrive", "post"): op(
        "Move FAILED jobs back to PENDING (one queue, or all)", "jobs",
        {"200": resp("How many moved.", obj({"redriven": INT}, ["redriven"]))},
        request=body(obj({"queue": {"anyOf": [QUEUE, {"type": "null"}]}}), required=False)),
    ("/api/v1/jobs/stats", "get"): op(
        "Queue depths", "jobs",
        {"200": resp("Per queue.", obj({"queues": {"type": "array", "items": ref("QueueStats")}}, ["queues"]))},
        params=[query("queue", "Only this queue (default: all).", QUEUE)]),
    ("/api/v1/jobs/{id}", "get"): op("Show a job", "jobs", {**_JOB, **_NOT_FOUND}),
    ("/api/v1/jobs/{id}/ack", "post"): op(
        "Acknowledge a job: DONE", "jobs", {**_JOB, **_NOT_FOUND, **_LEASE_LOST, **_TOO_LARGE},
        request=body(ref("AckInput"))),
    ("/api/v1/jobs/{id}/nack", "post"): op(
        "Give a job back: retried later, or FAILED into the DLQ when out of attempts", "jobs",
        {**_JOB, **_NOT_FOUND, **_LEASE_LOST}, request=body(ref("NackInput"))),
    ("/api/v1/jobs/{id}/extend", "post"): op(
        "Extend a lease (heartbeat)", "jobs", {**_JOB, **_NOT_FOUND, **_LEASE_LOST},
        request=body(ref("ExtendInput")),
        description="The deadline becomes now + visibility_timeout (default: the job's own)."),
    ("/api/v1/jobs/{id}/cancel", "post"): op(
        "Cancel a PENDING job", "jobs",
        {**_JOB, **_NOT_FOUND, "409": resp("job_state: the job is not PENDING.", ref("Error"))}),
    ("/api/v1/jobs/{id}/retry", "post"): op(
        "Retry a FAILED job (attempts reset)", "jobs",
        {**_JOB, **_NOT_FOUND, "409": resp("job_state: the job is not FAILED.", ref("Error"))}),
})

# ---- end of jobs -------------------------------------------------------------------------------------

# ---- proxy: /admin/proxy (the handlers: handlers/proxy_admin.py; the records: proxy/store_config.py) ----

PROXY_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
DURATION = {"type": ["number", "string"], "description": "Seconds, or a string such as '500ms', '2s', '1m'."}
_ROUTE_PROPS: dict[str, Any] = {
    "id": PROXY_ID, "prefix": {"type": "string", "pattern": "^/", "description": "Longest prefix wins."},
    "pool": PROXY_ID, "hosts": {**STRS, "description": "Exact or '*.example.com'; empty: any host."},
    "methods": {**STRS, "description": "Empty: any method."}, "strip_prefix": BOOL,
    "rewrite": {**NSTR, "description": "Replaces the prefix (not with strip_prefix)."},
    "timeouts": obj({"connect": DURATION, "read": DURATION, "total": DURATION}),
    "retries": {"type": "integer", "minimum": 0, "maximum": 10}, "require_auth": BOOL, "permissions": STRS,
    "rate_limit": NSTR,
}
_BACKEND_PROPS: dict[str, Any] = {
    "id": PROXY_ID, "pool": PROXY_ID, "url": {**STR, "description": "http://host:port[/base]"},
    "weight": {"type": "integer", "minimum": 1},
}
_POOL_PROPS: dict[str, Any] = {
    "id": PROXY_ID, "balancer": {"enum": ["round_robin", "least_conn", "weighted", "p2c"]},
    "health": obj({"enabled": BOOL, "path": STR, "interval": DURATION, "timeout": DURATION,
                   "expect": {"type": "array", "items": {"type": ["integer", "string"]},
                              "description": "Statuses: 200, '200-399' or '2xx'."},
                   "rise": INT, "fall": INT}),
    "outlier": obj({"enabled": BOOL, "consecutive_failures": INT, "base_ejection": DURATION,
                    "max_ejection": DURATION, "max_ejected_share": {"type": "number"}}),
    "breaker": obj({"enabled": BOOL, "failures": INT, "error_ratio": {"type": "number"}, "window": DURATION,
                    "min_requests": INT, "cooldown": DURATION, "half_open_probes": INT}),
    "max_connections": {"type": "integer", "minimum": 1, "description": "Per backend."},
    "idle_timeout": DURATION,
}
SCHEMAS.update({
    "ProxyRouteInput": obj(_ROUTE_PROPS, ["prefix", "pool"]),
    "ProxyRoute": obj(_ROUTE_PROPS, ["id", "prefix", "pool"], extra=True),
    "ProxyBackendInput": obj(_BACKEND_PROPS, ["pool", "url"]),
    "ProxyBackend": obj(_BACKEND_PROPS, ["id", "pool", "url"], extra=True),
    "ProxyPoolInput": obj(_POOL_PROPS),
    "ProxyPool": obj({**_POOL_PROPS, "backends": {**STRS, "description": "Ids of its backends (read-only: a "
                                                  "backend names its pool)."}}, ["id", "backends"], extra=True),
})

_PROXY_INVALID = {"400": resp("invalid_proxy_config: the whole config would not load (the message names the "
                              "record and field); nothing was written.", ref("Error"))}
_PROXY_404 = {"404": resp("not_found.", ref("Error"))}
_PROXY_DESCRIPTION = ("Applied by every proxy watching the store within a second. Each change is validated "
                      "against the whole resulting config; at most 1000 routes, 1000 backends and 1000 pools "
                      "(409 too_many_*).")


def _proxy_ops(kind: str, plural: str, noun: str) -> dict[tuple[str, str], dict[str, Any]]:
    schema, given = ref(f"Proxy{kind}"), ref(f"Proxy{kind}Input")
    base, item = f"/admin/proxy/{plural}", f"/admin/proxy/{plural}/{{id}}"
    return {
        (base, "get"): op(f"List the proxy's {plural}", "proxy", {"200": resp(f"{kind}s.", obj(
            {plural: {"type": "array", "items": schema}}, [plural]))}),
        (base, "post"): op(f"Add {noun}", "proxy", {
            "201": resp("Added.", schema), **_PROXY_INVALID,
            "409": resp("exists, or too_many_*: the cap is reached.", ref("Error"))},
            request=body({"allOf": [given, {"required": ["id"]}]}), description=_PROXY_DESCRIPTION),
        (item, "get"): op(f"Show {noun}", "proxy", {"200": resp(f"The {kind.lower()}.", schema), **_PROXY_404}),
        (item, "put"): op(f"Create or replace {noun}", "proxy", {
            "200": resp("Replaced.", schema), "201": resp("Created.", schema), **_PROXY_INVALID},
            request=body(given), description=_PROXY_DESCRIPTION + " The id is the path's."),
        (item, "delete"): op(f"Remove {noun}", "proxy", {"204": resp("Removed."), **_PROXY_INVALID, **_PROXY_404},
                             description="Refused (400) when what is left would not load, e.g. a route "
                                         "still uses the pool of the last backend."),
    }


OPERATIONS.update(_proxy_ops("Route", "routes", "a route"))
OPERATIONS.update(_proxy_ops("Backend", "backends", "a backend (its record names its pool)"))
OPERATIONS.update(_proxy_ops("Pool", "pools", "a pool's settings"))

# ---- end of proxy ------------------------------------------------------------------------------------

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
