"""What may reach a log line: credentials cut out, control characters escaped (issue 10, 9b).

Shared by the loguru handler (`observability.logging`) and the fast access-log path
(`observability.accesslog`), so both write the same safe text.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["scrub", "escape", "safe", "safe_fields", "plain"]

# Whatever a caller passes (a message, a field, an error text quoting a header), these are cut
# out before rendering: header values of credential headers, bearer/basic credentials, JWTs, and
# the value Tornado quotes when it refuses a header (it may be a token or a cookie).
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|x-auth-token)"
               r"(\s*[:=]\s*)[^\r\n,;)]*"),
    re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;)]+"),
    re.compile(r"(eyJ)()[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"),
    re.compile(r"(?i)(invalid header (?:value|name) )()(?:'[^']*'|\"[^\"]*\"|\S+)"),
    re.compile(r"(?i)\b(password|passwd|secret|token|refresh_token|access_token)(\s*[:=]\s*)[^\s,;&)]+"),
)
_REDACTED = "[redacted]"
# Control characters (C0, DEL, C1) and the Unicode line/paragraph separators and bidi
# overrides: a logged value must not start a fake line or repaint a terminal.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def scrub(text: str) -> str:
    """`text` with credentials replaced by [redacted]."""
    if not text:
        return text
    for rx in _SECRET_PATTERNS:
        text = rx.sub(lambda m: m.group(1) + m.group(2) + _REDACTED, text)
    return text


def escape(text: str) -> str:
    """`text` scrubbed, with control characters shown as \\xNN / \\uNNNN escapes."""
    text = scrub(text)
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                       else f"\\u{ord(m.group()):04x}", text)


def safe(value: Any) -> Any:
    """A field's value as a line may carry it: strings and bytes escaped; numbers, lists and dicts
    as they are (orjson and repr escape their control characters)."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, bytes):
        return escape(value.decode("utf-8", "backslashreplace"))
    return value


def plain(text: str) -> bool:
    """True when no secret pattern nor unsafe character can be in `text`: printable ASCII without
    a space, ':' or '=' (every credential pattern needs one of them) and without a JWT's "eyJ".
    Checked first on the access logs' fast path, so a usual path costs a few C-level scans
    instead of six regular expressions."""
    return (text.isascii() and text.isprintable() and " " not in text and "=" not in text and ":" not in text
            and "eyJ" not in text)


def safe_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with every value made `safe`; plain strings are let through unscanned."""
    out = {}
    for k, v in fields.items():
        if type(v) is str:
            if not plain(v):
                v = escape(v)
        elif v is not None and type(v) not in (int, float, bool):
            v = safe(v)
        out[k] = v
    return out
