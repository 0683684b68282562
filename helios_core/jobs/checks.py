"""Input checks of the job queue: each names the field and what is allowed.

The domain validates its own input (the gateway and the CLI pass values
through), with explicit raises, never `assert`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from helios_core.errors import InvalidInputError
from helios_core.jobs.errors import PayloadTooLargeError
from helios_core.jobs.model import QUEUE_NAME_RE

__all__ = ["int_field", "queue_name", "json_size", "dedup_id", "producer", "text_field"]

MAX_DEDUP_ID_CHARS = 128
_PRODUCER_RE = re.compile(r"[A-Za-z0-9_.-]{0,64}")


def int_field(value: Any, field: str, lo: int, hi: int | None = None, unit: str = "") -> int:
    allowed = f"{lo}..{hi}" if hi is not None else f">= {lo}"
    if unit:
        allowed += f" {unit}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInputError(f"{field} must be an integer {allowed}, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise InvalidInputError(f"{field} must be {allowed}, got {value}")
    return value


def queue_name(value: Any, field: str = "queue") -> str:
    if not isinstance(value, str) or not QUEUE_NAME_RE.fullmatch(value):
        raise InvalidInputError(f"{field} must be a queue name of 1-80 characters among A-Z, a-z, 0-9, '_' "
                                f"and '-', got {value!r}")
    return value


def json_size(value: Any, field: str, limit: int) -> int:
    """The size of `value` encoded as JSON; InvalidInputError if it cannot be, 413 over `limit`."""
    try:
        n = len(orjson.dumps(value))
    except TypeError as e:  # orjson.JSONEncodeError: a set, bytes, a non-str key, an int over 64 bits, ...
        raise InvalidInputError(f"{field} must be JSON-serialisable: {e}") from None
    if n > limit:
        raise PayloadTooLargeError(f"{field} is {n} bytes as JSON; the limit is {limit} bytes "
                                   f"(jobs.max_payload_bytes)", detail={"bytes": n, "limit": limit})
    return n


def dedup_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_DEDUP_ID_CHARS or not value.isprintable():
        raise InvalidInputError(f"dedup_id must be 1-{MAX_DEDUP_ID_CHARS} printable characters, got {value!r}")
    return value


def producer(value: Any) -> str:
    """Who enqueues (a user id; "" for the local CLI): part of the dedup key, so no ':' in it."""
    if not isinstance(value, str) or not _PRODUCER_RE.fullmatch(value):
        raise InvalidInputError(f"producer must be at most 64 of A-Z a-z 0-9 _ . -, got {value!r}")
    return value


def text_field(value: Any, field: str, max_chars: int, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise InvalidInputError(f"{field} must be a string of at most {max_chars} characters")
    return value
