"""The gateway's response head (limits._Connection.write_headers) is byte for byte Tornado's.

The gateway builds the head as one string and checks it for line breaks once; Tornado
(HTTP1Connection.write_headers, 6.6) encodes and checks each line.  Same input, same bytes,
same refusal of a header value with a line break in it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tornado.concurrent import Future
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import HTTPHeaders, RequestStartLine, ResponseStartLine

from helios_core.gateway.limits import _Connection


class _Stream:
    def __init__(self) -> None:
        self.sent = b""
        self.max_buffer_size = 1 << 20

    def closed(self) -> bool:
        return False

    def write(self, data: bytes) -> Future[None]:
        self.sent += data
        f: Future[None] = Future()
        f.set_result(None)
        return f

    def set_close_callback(self, cb: Any) -> None:
        pass


def _head(cls: type, request: RequestStartLine, request_headers: dict[str, str], code: int, reason: str,
          headers: list[tuple[str, str]], body: bytes | None, disconnect: bool) -> tuple[bytes, Any, HTTPHeaders]:
    stream = _Stream()
    params = HTTP1ConnectionParameters()
    conn = (_Connection(stream, params, None, 65536) if cls is _Connection  # type: ignore[arg-type]
            else HTTP1Connection(stream, False, params, None))  # type: ignore[arg-type]
    conn._request_start_line = request
    conn._request_headers = HTTPHeaders(request_headers)
    conn._disconnect_on_finish = disconnect
    h = HTTPHeaders()
    for name, value in headers:
        if name in h:
            h.add(name, value)
        else:
            h[name] = value  # (unchecked, as set by the handler: add() would refuse a line break itself)
    conn.write_headers(ResponseStartLine("HTTP/1.1", code, reason), h, body)
    return stream.sent, (conn._chunking_output, conn._expected_content_remaining), h


CASES = [
    (RequestStartLine("GET", "/a", "HTTP/1.1"), {}, 200, "OK",
     [("Content-Type", "application/octet-stream"), ("ETag", '"abc"'), ("Content-Length", "3"),
      ("X-Request-ID", "r1"), ("RateLimit", '"default";r=9;t=1')], b"abc", False),
    (RequestStartLine("PUT", "/a", "HTTP/1.1"), {}, 201, "Created", [("Content-Type", "application/json")],
     b'{"k":1}', False),
    (RequestStartLine("GET", "/a", "HTTP/1.1"), {}, 304, "Not Modified", [("ETag", '"x"')], None, False),
    (RequestStartLine("HEAD", "/a", "HTTP/1.1"), {}, 200, "OK", [("Content-Length", "10")], None, False),
    (RequestStartLine("DELETE", "/a", "HTTP/1.1"), {}, 204, "No Content", [], None, True),
    (RequestStartLine("GET", "/a", "HTTP/1.0"), {"Connection": "keep-alive"}, 200, "OK",
     [("Content-Length", "2"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")], b"hi", False),
    (RequestStartLine("GET", "/a", "HTTP/1.0"), {}, 404, "Not Found", [("Content-Length", "0")], None, True),
]


@pytest.mark.parametrize("case", CASES)
def test_the_same_head_as_tornados(case: tuple[Any, ...]) -> None:
    async def main() -> None:
        ours = _head(_Connection, *case)
        theirs = _head(HTTP1Connection, *case)
        assert ours[0] == theirs[0]
        assert ours[1] == theirs[1]
        assert list(ours[2].get_all()) == list(theirs[2].get_all())

    asyncio.run(main())


@pytest.mark.parametrize("value", ["a\r\nInjected: 1", "a\nb", "a\rb"])
def test_a_line_break_in_a_header_is_refused_as_tornado_refuses_it(value: str) -> None:
    async def main() -> None:
        args: tuple[Any, ...] = (RequestStartLine("GET", "/a", "HTTP/1.1"), {}, 200, "OK",
                                 [("X-A", "1"), ("X-B", value)], b"", False)
        with pytest.raises(ValueError) as ours:
            _head(_Connection, *args)
        with pytest.raises(ValueError) as theirs:
            _head(HTTP1Connection, *args)
        assert str(ours.value) == str(theirs.value)

    asyncio.run(main())
