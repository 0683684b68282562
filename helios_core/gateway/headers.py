"""Header reads and writes on the hot path, without Tornado's per-call name normalization.

Tornado 6.6's `HTTPHeaders` normalizes a name on every get, set and ``in``
(split on "-", capitalize each part, join: not cached), and `Mapping.get` finds
an absent header by raising and catching a KeyError: about a microsecond a
call, and a KV GET made a dozen of them (request id, traceparent,
Content-Length, Authorization, If-None-Match; seven headers of its own).  Here
a name is normalized once (remembered: the gateway's names are a handful of
constants) and the value read from or written to the dict HTTPHeaders keeps,
with the same result as ``headers.get(name)`` and ``headers[name] = value``.
tests/unit/test_gateway_headers.py pins that equivalence against Tornado.
"""

from __future__ import annotations

from tornado.httputil import HTTPHeaders

__all__ = ["normalized", "get", "put", "fresh"]

_NORMALIZED: dict[str, str] = {}


def normalized(name: str) -> str:
    """``name`` in Tornado's Http-Header-Case (``X-Request-ID`` -> ``X-Request-Id``)."""
    norm = _NORMALIZED.get(name)
    if norm is None:
        norm = "-".join([w.capitalize() for w in name.split("-")])
        if len(_NORMALIZED) < 512:  # names come from code (and a proxy's config): never let it grow
            _NORMALIZED[name] = norm
    return norm


def get(headers: HTTPHeaders, name: str) -> str | None:
    """``headers.get(name)``: the values of ``name`` joined by commas, None when absent."""
    values = headers._as_list.get(normalized(name))
    if values is None:
        return None
    return values[0] if len(values) == 1 else ",".join(values)


def put(headers: HTTPHeaders, name: str, value: str) -> None:
    """``headers[name] = value`` (replacing any values; no checks: for values the gateway makes)."""
    norm = normalized(name)
    headers._as_list[norm] = [value]
    headers._combined_cache[norm] = value


def fresh(items: dict[str, str]) -> HTTPHeaders:
    """``HTTPHeaders(items)`` for names already in Http-Header-Case, without its per-item update."""
    h = HTTPHeaders.__new__(HTTPHeaders)  # (its __init__ would only make the two dicts, through update())
    h._as_list = {name: [value] for name, value in items.items()}
    h._combined_cache = dict(items)
    return h
