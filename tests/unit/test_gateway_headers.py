"""helios_core.gateway.headers reads and writes HTTPHeaders' dict directly: the same results as Tornado's
own methods (pinned here, so a Tornado that keeps its headers otherwise fails this test, not a request)."""

from __future__ import annotations

import pytest
from tornado.httputil import HTTPHeaders, _normalize_header

from helios_core.gateway import headers as hdr

NAMES = ["X-Request-ID", "traceparent", "content-length", "ETag", "RateLimit-Policy", "X-RateLimit-Limit",
         "If-None-Match", "authorization", "WWW-Authenticate", "a", "x--y"]


@pytest.mark.parametrize("name", NAMES)
def test_normalized_as_tornado(name: str) -> None:
    assert hdr.normalized(name) == _normalize_header(name)
    assert hdr.normalized(name) == _normalize_header(name)  # (remembered the second time)


def _parsed() -> HTTPHeaders:
    return HTTPHeaders.parse("Host: a\r\nAuthorization: Bearer t\r\nX-Request-ID: r1\r\n"
                             "If-None-Match: \"a\"\r\nIf-None-Match: \"b\"\r\n")


@pytest.mark.parametrize("name", ["host", "Authorization", "x-request-id", "X-Request-ID", "If-None-Match",
                                  "traceparent", "Content-Length", "nothing"])
def test_get_as_tornado(name: str) -> None:
    h = _parsed()
    assert hdr.get(h, name) == h.get(name)


@pytest.mark.parametrize("name", NAMES)
def test_put_as_setitem(name: str) -> None:
    ours, theirs = _parsed(), _parsed()
    ours["X-Request-ID"], theirs["X-Request-ID"] = "old", "old"
    _ = ours[name] if name in ours else None  # (a combined value cached before the write)
    _ = theirs[name] if name in theirs else None
    hdr.put(ours, name, "v1")
    theirs[name] = "v1"
    assert list(ours.get_all()) == list(theirs.get_all())
    assert ours[name] == theirs[name] == "v1"
    assert ours.get_list(name) == theirs.get_list(name)


def test_fresh_as_tornado() -> None:
    items = {"Content-Type": "text/html; charset=UTF-8", "Date": "Thu, 03 Dec 2026 16:00:00 GMT",
             "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    ours, theirs = hdr.fresh(items), HTTPHeaders(items)
    assert list(ours.get_all()) == list(theirs.get_all())
    ours.add("Cache-Control", "private")
    theirs.add("Cache-Control", "private")
    assert ours["Cache-Control"] == theirs["Cache-Control"] == "no-store,private"
    del ours["Date"], theirs["Date"]
    assert list(ours.get_all()) == list(theirs.get_all())
