"""reqhead: the forwarded header block, the refusals, and a reused HeadInfo giving fresh ids."""

from __future__ import annotations

import pytest

from helios_core.proxy.reqhead import BadRequest, apply, derive, retrace
from helios_core.proxy.server import Request

TP = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _lines(fwd: bytes) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for line in fwd.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b": ")
            out.setdefault(name.lower(), []).append(value)
    return out


def _req(headers: list[tuple[bytes, bytes]], *, trusted: bool = False, upgrade: bool = False) -> Request:
    req = Request()
    req.headers = headers
    apply(derive(headers, upgrade, True, b"10.0.0.9", trusted, b"http"), req)
    return req


def test_forwarded_block() -> None:
    req = _req([(b"Host", b"example.org"), (b"Connection", b"keep-alive, X-Drop"), (b"X-Drop", b"1"),
                (b"X-Keep", b"yes"), (b"Proxy-Authorization", b"x"), (b"X-Forwarded-For", b"1.2.3.4"),
                (b"Via", b"1.0 other"), (b"Content-Length", b"5"), (b"TE", b"trailers")])
    h = _lines(req.fwd)
    assert h[b"host"] == [b"example.org"] and h[b"x-keep"] == [b"yes"]
    assert b"x-drop" not in h and b"proxy-authorization" not in h and b"te" not in h and b"connection" not in h
    assert h[b"x-forwarded-for"] == [b"10.0.0.9"]  # the client is not a trusted proxy
    assert h[b"x-forwarded-proto"] == [b"http"] and h[b"x-forwarded-host"] == [b"example.org"]
    assert h[b"via"] == [b"1.0 other, 1.1 helios"]
    assert h[b"content-length"] == [b"5"] and req.length == 5
    assert h[b"x-request-id"] == [req.request_id.encode()]
    assert h[b"traceparent"][0].startswith(b"00-" + req.trace_id.encode() + b"-")

    trusted = _lines(_req([(b"Host", b"a"), (b"X-Forwarded-For", b"1.2.3.4"), (b"X-Forwarded-Proto", b"https")],
                          trusted=True).fwd)
    assert trusted[b"x-forwarded-for"] == [b"1.2.3.4, 10.0.0.9"] and trusted[b"x-forwarded-proto"] == [b"https"]


def test_client_ids_are_kept() -> None:
    req = _req([(b"Host", b"a"), (b"X-Request-Id", b"abc"), (b"traceparent", TP)])
    h = _lines(req.fwd)
    assert req.request_id == "abc" and h[b"x-request-id"] == [b"abc"]
    assert req.trace_id == "0af7651916cd43dd8448eb211c80319c" and h[b"traceparent"] == [TP]
    # An empty or oversize id is not used, nor doubled.
    for rid in (b"", b"x" * 300):
        req = _req([(b"Host", b"a"), (b"X-Request-Id", rid)])
        assert req.request_id != rid.decode() and len(_lines(req.fwd)[b"x-request-id"]) == 1


def test_a_reused_head_gives_fresh_ids_and_the_same_block() -> None:
    headers = [(b"Host", b"a"), (b"Accept", b"*/*")]
    info = derive(headers, False, True, b"127.0.0.1", False, b"http")
    assert info.matches(list(headers), False, True) and not info.matches(headers + [(b"X", b"1")], False, True)
    seen = set()
    for _ in range(3):
        req = Request()
        apply(info, req)
        seen.add((req.request_id, req.trace_id))
        h = _lines(req.fwd)
        assert h[b"accept"] == [b"*/*"] and h[b"x-request-id"] == [req.request_id.encode()]
    assert len(seen) == 3


def test_upgrade_lines_only_when_the_parser_saw_an_upgrade() -> None:
    headers = [(b"Host", b"a"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    h = _lines(_req(headers, upgrade=True).fwd)
    assert h[b"upgrade"] == [b"websocket"] and h[b"connection"] == [b"Upgrade"]
    assert b"upgrade" not in _lines(_req(headers).fwd)


@pytest.mark.parametrize("headers, status", [
    ([(b"Host", b"a"), (b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")], 400),
    ([(b"Host", b"a"), (b"Content-Length", b"3"), (b"Content-Length", b"4")], 400),
    ([(b"Host", b"a"), (b"Transfer-Encoding", b"gzip")], 400),
    ([(b"Host", b"a"), (b"Content-Length", b"-1")], 400),
    ([(b"Accept", b"*/*")], 400),
])
def test_refusals(headers: list[tuple[bytes, bytes]], status: int) -> None:
    with pytest.raises(BadRequest) as e:
        derive(headers, False, True, b"127.0.0.1", False, b"http")
    assert e.value.status == status


def test_retrace_sends_this_hops_span_instead() -> None:
    """Tracing on: the same block, the span's traceparent in place of the client's (its tracestate kept)."""
    ours = "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01"
    headers = [(b"Host", b"a"), (b"traceparent", TP), (b"tracestate", b"k=v"), (b"Content-Length", b"3")]
    info = derive(headers, False, True, b"10.0.0.9", False, b"http")
    assert info.parent == TP.decode()
    req = Request()
    apply(info, req)
    retrace(info, req, ours)
    h = _lines(req.fwd)
    assert h[b"traceparent"] == [ours.encode()] and h[b"tracestate"] == [b"k=v"]
    assert h[b"x-request-id"] == [req.request_id.encode()] and h[b"content-length"] == [b"3"]
    assert req.trace_id == "0af7651916cd43dd8448eb211c80319c"
    # Without a valid client traceparent: no parent, no tracestate, the span's traceparent all the same.
    info = derive([(b"Host", b"a"), (b"traceparent", b"junk"), (b"tracestate", b"k=v")], False, True,
                  b"10.0.0.9", False, b"http")
    req = Request()
    apply(info, req)
    retrace(info, req, ours)
    h = _lines(req.fwd)
    assert info.parent == "" and h[b"traceparent"] == [ours.encode()] and b"tracestate" not in h
    assert len(h[b"x-request-id"]) == 1
