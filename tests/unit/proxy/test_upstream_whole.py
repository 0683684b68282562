"""UpstreamConnection's shortcut for a whole simple response in one read gives what llhttp's parse gives."""

from __future__ import annotations

from typing import Any

import pytest

from helios_core.proxy.upstream import UpstreamConnection, UpstreamPool


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def response_head(self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], framing: str) -> None:
        self.events.append(("head", status, reason, [tuple(h) for h in headers], framing))

    def response_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def response_end(self) -> None:
        self.events.append(("end",))

    def upstream_failed(self, exc: BaseException) -> None:
        self.events.append(("failed",))

    def upstream_upgraded(self, rest: bytes) -> None:
        self.events.append(("upgraded", rest))

    def upstream_pause_writing(self) -> None:
        pass

    def upstream_resume_writing(self) -> None:
        pass

    def flush(self) -> None:
        pass


def _run(data: bytes, *, shortcut: bool, head: bool = False) -> tuple[list[tuple[Any, ...]], bool]:
    pool = UpstreamPool("127.0.0.1", 1)
    conn = UpstreamConnection(pool)
    sink = Sink()
    conn.begin(sink, head=head)
    conn.request_done = True
    if not shortcut:
        conn._fed = True  # as if a first part had gone to llhttp: the whole parse is llhttp's
    conn.data_received(data)
    return sink.events, conn in pool.idle


BODY = b"<!doctype html>" + b"x" * 1000
NGINX = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 15:00:00 GMT\r\n"
         b"Content-Type: text/html\r\nContent-Length: %d\r\nLast-Modified: Wed, 02 Dec 2026 14:00:00 GMT\r\n"
         b"Connection: keep-alive\r\nETag: \"abc-3f8\"\r\nAccept-Ranges: bytes\r\n\r\n%b" % (len(BODY), BODY))
CASES = {
    "nginx static": NGINX,
    "empty body": b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    "no reason": b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok",
    "spaces around values": b"HTTP/1.1 503 Busy\r\nX-A:  padded  \r\ncontent-length:3\r\n\r\nabc",
    "connection close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    "split body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    "HTTP/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "no length": b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nsome",
    "304": b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    "NUL in a value": b"HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 2\r\n\r\nok",
    "garbage": b"HTTP/1.1 abc nonsense\r\n\x00\x01garbage\r\n\r\n",
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_shortcut_answers_as_llhttp_does(name: str) -> None:
    fast = _run(CASES[name], shortcut=True)
    slow = _run(CASES[name], shortcut=False)
    assert fast == slow


def test_the_shortcut_takes_the_common_response() -> None:
    pool = UpstreamPool("127.0.0.1", 1)
    conn = UpstreamConnection(pool)
    conn.begin(Sink())
    conn.request_done = True
    conn.data_received(NGINX)
    assert not conn._fed and conn in pool.idle  # answered without llhttp, and kept for the next request


def test_a_head_answer_is_llhttps() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    assert _run(data, shortcut=True, head=True) == _run(data, shortcut=False, head=True)
