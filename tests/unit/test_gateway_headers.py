"""helios_core.gateway.headers reads and writes HTTPHeaders' dict directly: the same results as Tornado's
own methods (pinned here, so a Tornado that keeps its headers otherwise fails this test, not a request)."""

from __future__ import annotations

import asyncio

import pytest
from tornado.httputil import HTTPHeaders, _normalize_header

from helios_core.gateway import headers as hdr
from tests.unit.test_gateway_write_headers import _Stream

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


HEADS = [
    b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\n\r\n",
    b"GET /b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\n\r\n",  # same lines, another path
    b"\r\nPUT /c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\n\r\n",  # (a stray CRLF before it)
    b"GET /d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer xyz\r\n\r\n",  # another token
    b"GET /e HTTP/1.1\nHost: x\nX-A: 1\nX-A: 2\n\n",
    b"GET /f HTTP/1.1\nHost: x\nX-A: 1\nX-A: 2\n\n",
    b"GET /g HTTP/1.1\r\nHost: x\r\n\r\n",
]


def test_a_connection_parses_each_head_as_tornado_even_when_the_lines_repeat() -> None:
    """_Connection remembers the last header lines of its TCP connection; each request still gets
    what Tornado's parser makes of its head, in an HTTPHeaders of its own."""
    from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters

    from helios_core.gateway.limits import _Connection

    async def main() -> None:  # (an HTTP1Connection makes futures: it wants a loop)
        memo: list[object] = []
        for head in HEADS:
            ours = _Connection(_Stream(), HTTP1ConnectionParameters(), None, 65536, memo)  # type: ignore[arg-type]
            theirs = HTTP1Connection(_Stream(), False, HTTP1ConnectionParameters(), None)  # type: ignore[arg-type]
            line, headers = ours._parse_headers(head)
            line_t, headers_t = theirs._parse_headers(head)
            assert line == line_t
            assert list(headers.get_all()) == list(headers_t.get_all())
            assert headers.get("X-A") == headers_t.get("X-A")
            headers["Authorization"] = "changed by a handler"  # never seen by the next request
            headers.add("X-A", "3")

    asyncio.run(main())


def test_a_malformed_head_after_a_remembered_one_is_still_refused() -> None:
    from tornado.http1connection import HTTP1ConnectionParameters

    from helios_core.gateway.limits import _Connection, _Refused

    async def main() -> None:
        memo: list[object] = []
        conn = _Connection(_Stream(), HTTP1ConnectionParameters(), None, 65536, memo)  # type: ignore[arg-type]
        conn._parse_headers(HEADS[0])
        with pytest.raises(_Refused) as e:
            conn._parse_headers(b"GET /a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nBad header\r\n\r\n")
        assert e.value.status == 400 and "no colon in header line" in e.value.message
        with pytest.raises(_Refused):
            conn._parse_headers(b"GET /a HTTP/1.1\r\n Host: x\r\nAuthorization: Bearer abc\r\n\r\n")

    asyncio.run(main())
