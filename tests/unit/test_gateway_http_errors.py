"""Requests Tornado's HTTP layer refuses get the gateway's JSON error too, and the connection closes.

Raw sockets against a real gateway: an HTTP client library would refuse to
send most of these requests.  These tests also pin the Tornado internals
`helios_core.gateway.limits` hooks into (see its docstring).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.unit.test_gateway_harness import Api, run_gateway


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes
    rest: bytes  # anything after the first response (there must be nothing)

    def error(self) -> dict[str, Any]:
        doc = orjson.loads(self.body)
        assert set(doc) == {"error"}
        assert set(doc["error"]) == {"code", "message", "request_id"}
        return doc["error"]  # type: ignore[no-any-return]


def parse(data: bytes) -> Raw:
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response: {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    n = int(headers["content-length"])
    return Raw(status, headers, rest[:n], rest[n:])


async def exchange(api: Api, *parts: bytes, pause: float = 0) -> Raw:
    """Send the parts, then read until the server closes (failing if it does not within 5 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        data = await asyncio.wait_for(reader.read(), 5)  # b"" ... only once the server closed
    finally:
        writer.close()
    return parse(data)


def assert_refused(r: Raw, status: int, code: str, message: str) -> None:
    err = r.error()
    assert r.status == status, (r.status, err)
    assert err["code"] == code
    assert message in err["message"], err["message"]
    assert r.headers["content-type"] == "application/json"
    assert r.headers["connection"] == "close"
    assert r.headers["x-request-id"] == err["request_id"]
    assert r.rest == b""  # one answer, nothing after it


CASES = [
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: bad host\r\n\r\n",
                 400, "malformed_request", "malformed Host header", id="malformed-host"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                 400, "malformed_request", "more than one host", id="two-hosts"),
    pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n",
                 400, "malformed_request", "missing Host header", id="missing-host"),
    pytest.param(b"\x16\x03\x01 garbage\r\nHost: x\r\n\r\n",
                 400, "malformed_request", "malformed request line", id="garbage-request-line"),
    pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                 400, "malformed_request", "malformed request line", id="http2-preface"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
                 400, "malformed_request", "malformed header line", id="header-without-colon"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
                 400, "malformed_request", "malformed header line", id="folded-header"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
                 431, "headers_too_large", "larger than gateway.max_header_bytes (2048 bytes)", id="oversized-head"),
    pytest.param(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                 400, "malformed_request", "Transfer-Encoding", id="unsupported-transfer-encoding"),
    pytest.param(b"POST /api/v1/auth/login HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 3\r\n\r\nabc", 400, "malformed_request", "Transfer-Encoding", id="http10-te-and-cl"),
    pytest.param(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"zz\r\nabc\r\n0\r\n\r\n", 400, "malformed_request", "malformed chunked body: invalid chunk size",
                 id="invalid-chunk-size"),
    pytest.param(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabcXX0\r\n\r\n", 400, "malformed_request", "malformed chunked body", id="unterminated-chunk"),
]


@pytest.mark.parametrize(("raw", "status", "code", "message"), CASES)
def test_malformed_request_gets_the_json_error_and_the_connection_closes(
        tmp_path: Path, raw: bytes, status: int, code: str, message: str) -> None:
    async def body(api: Api) -> None:
        assert_refused(await exchange(api, raw), status, code, message)
        # The gateway is unharmed.
        assert (await api.call("GET", "/healthz")).code == 200

    run_gateway(tmp_path, body, **{"gateway.max_header_bytes": 2048})


@pytest.mark.parametrize("length", [b"12abc", b"-1", b"5\r\nContent-Length: 6"], ids=["text", "negative", "unequal"])
def test_bad_content_length_is_answered_once(tmp_path: Path, length: bytes) -> None:
    # The handler sees the header first (bodies are streamed) and answers; Tornado's
    # own complaint about the same header must not follow as a second response.
    async def body(api: Api) -> None:
        r = await exchange(api, b"PUT /api/v1/kv/x HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
        assert r.status == 400
        assert r.error()["code"] == "invalid_input"
        assert "Content-Length" in r.error()["message"]
        assert r.rest == b""

    run_gateway(tmp_path, body)


def test_bad_chunk_after_the_handler_answered_sends_no_second_response(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        r = await exchange(api, b"POST /admin/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                           b"zz\r\n", pause=0.2)
        assert r.status == 401  # no token: answered before the body, and only that
        assert r.error()["code"] == "unauthenticated"
        assert r.rest == b""

    run_gateway(tmp_path, body)


def test_the_callers_request_id_is_kept_when_the_head_parsed(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        r = await exchange(api, b"GET /healthz HTTP/1.1\r\nHost: a/b\r\nX-Request-ID: trace-me-42\r\n\r\n")
        assert_refused(r, 400, "malformed_request", "Host")
        assert r.error()["request_id"] == "trace-me-42"
        r = await exchange(api, b"GET /healthz HTTP/1.1\r\nHost: a/b\r\nX-Request-ID: bad\x01id\r\n\r\n")
        assert r.error()["request_id"] != "bad\x01id"

    run_gateway(tmp_path, body)


def test_a_malformed_request_after_a_good_one_on_a_keep_alive_connection(tmp_path: Path) -> None:
    async def body(api: Api) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x y\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        first = parse(data)
        assert first.status == 200
        assert_refused(parse(first.rest), 400, "malformed_request", "Host")

    run_gateway(tmp_path, body)


def test_pipelined_requests_are_all_answered_in_order_and_do_not_hold_up_another_connection(tmp_path: Path) -> None:
    """The request loop does not yield between requests (limits._ServerConnection): each request's
    handler task is what lets other connections in, while a pipelining client is answered in order."""
    async def body(api: Api) -> None:
        n = 300
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"".join(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: p%d\r\n\r\n" % i
                              for i in range(n)))
        await writer.drain()
        other_r, other_w = await asyncio.open_connection("127.0.0.1", api.port)
        other_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: other\r\n\r\n")
        await other_w.drain()
        head = await asyncio.wait_for(other_r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"x-request-id: other" in head.lower()
        other_w.close()
        ids = []
        for _ in range(n):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:] if line)
            await reader.readexactly(int(fields[b"content-length"]))
            ids.append(fields[b"x-request-id"])
        writer.close()
        assert ids == [b"p%d" % i for i in range(n)]

    run_gateway(tmp_path, body)


def test_a_head_beyond_what_the_server_reads_is_still_cut_off(tmp_path: Path) -> None:
    # Past max_header_bytes + 64 KiB Tornado's stream closes the socket by itself (see
    # limits._HEAD_SLACK): no answer, but never a served request either.
    async def body(api: Api) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (200 << 10) + b"\r\n\r\n")
        try:
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            data = b""
        writer.close()
        assert not data.startswith(b"HTTP/1.1 200")

    run_gateway(tmp_path, body, **{"gateway.max_header_bytes": 2048})


@pytest.mark.parametrize("raw", [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nNoColon-SECRET-aGVsbG8\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n SECRET-aGVsbG8\r\n\r\n",
    b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: SECRET-aGVsbG8\r\n\r\n",
], ids=["no-colon", "folded", "transfer-encoding"])
def test_a_refusal_does_not_echo_what_was_sent(tmp_path: Path, raw: bytes) -> None:
    """The 400 names what was wrong; the client's bytes (a token, a cookie) are not sent back."""
    async def body(api: Api) -> None:
        r = await exchange(api, raw)
        assert r.status == 400
        assert b"SECRET" not in r.body and b"aGVsbG8" not in r.body, r.body

    run_gateway(tmp_path, body)
