"""One error hierarchy for HELIOS.

Every error a HELIOS component raises on purpose derives from `HeliosError`.
It carries a stable machine `code`, the HTTP status an edge should map it to,
a human `message` (safe to show a client) and optional structured `detail`
(for logs and JSON output).  `helios_cli` turns these into
`click.ClickException`; the gateway turns them into its JSON error shape.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HeliosError",
    "ConfigError",
    "DataDirLockedError",
    "CorruptFileError",
    "AofWriteError",
    "SnapshotError",
    "CommandError",
    "InvalidInputError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "RateLimitedError",
]


class HeliosError(Exception):
    code = "internal"
    status = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.detail = detail or {}

    def __str__(self) -> str:
        return self.message


class ConfigError(HeliosError):
    """Bad configuration: names the file, line and key when known."""

    code = "bad_config"
    status = 500

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        where = []
        if file:
            where.append(file if line is None else f"{file}:{line}")
        if key:
            where.append(f"key '{key}'")
        text = f"{', '.join(where)}: {message}" if where else message
        super().__init__(text, detail={"file": file, "line": line, "key": key})
        self.file, self.line, self.key = file, line, key


class DataDirLockedError(HeliosError):
    """Another process owns the data directory."""

    code = "data_dir_locked"
    status = 409


class CorruptFileError(HeliosError):
    """An AOF or snapshot file is damaged; names file, byte offset and the fix."""

    code = "corrupt_file"

    def __init__(self, message: str, *, path: str, offset: int | None = None) -> None:
        super().__init__(message, detail={"path": path, "offset": offset})
        self.path, self.offset = path, offset


class AofWriteError(HeliosError):
    """Writing or fsyncing the AOF failed; the engine refuses writes until it recovers."""

    code = "aof_write_failed"
    status = 503


class SnapshotError(HeliosError):
    """A snapshot could not be started or written (fork, rename, disk full); the AOF keeps everything."""

    code = "snapshot_failed"
    status = 503


class CommandError(HeliosError):
    """A command was refused; `message` is the Redis-style error text (e.g. 'WRONGTYPE ...')."""

    code = "command_error"
    status = 400


# Errors of the domain modules (auth, rbac, ratelimit, kv) that an edge maps to HTTP.


class InvalidInputError(HeliosError):
    """The caller sent something unusable; `message` names the field and what is allowed."""

    code = "invalid_input"
    status = 400


class AuthenticationError(HeliosError):
    """Missing, invalid, expired or revoked credentials."""

    code = "unauthorized"
    status = 401


class PermissionDeniedError(HeliosError):
    """Authenticated, but not allowed to do this."""

    code = "forbidden"
    status = 403


class NotFoundError(HeliosError):
    code = "not_found"
    status = 404


class ConflictError(HeliosError):
    """The thing exists already, or the state changed under the caller."""

    code = "conflict"
    status = 409


class RateLimitedError(HeliosError):
    """Too many requests; `retry_after_ms` says when one would be admitted again."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_ms: int, code: str | None = None) -> None:
        super().__init__(message, code=code, detail={"retry_after_ms": retry_after_ms})
        self.retry_after_ms = retry_after_ms
