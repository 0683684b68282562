"""One trace through the proxies: client -> helios proxy -> backend, and client -> gateway (proxy.enabled)
-> helios proxy -> backend.

`helios proxy` runs as the operator runs it (``helios proxy --config``) with
``HELIOS_TRACING__EXPORTER=file``; its JSON-lines span file is read back.  The gateway runs in
this process with the SDK's InMemorySpanExporter.  The backend (`tests.proxy_backend`) echoes the
headers it received, so the traceparent each hop sent on is seen as the backend saw it.  Every
wait is for a condition, with a deadline only against a hang.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from helios_core.config import load_config
from helios_core.observability import tracing
from tests.integration.proxy import ProxyProcess, pool, request, route, write_config
from tests.integration.test_gateway_proxy import _setup
from tests.proxy_backend import BackendProcess
from tests.unit.test_gateway_harness import Api, run_gateway

pytestmark = pytest.mark.usefixtures("restore_logging")

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture(scope="module")
def backend() -> Iterator[BackendProcess]:
    with BackendProcess("web1") as b:
        yield b


@pytest.fixture(scope="module")
def traced_proxy(backend: BackendProcess, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[ProxyProcess, Path]]:
    d = tmp_path_factory.mktemp("traced-proxy")
    spans = d / "proxy-spans.jsonl"
    cfg = write_config(d / "proxy.yaml", {"web": pool([("web1", backend.url)])}, [route("edge", "/", "web")])
    with ProxyProcess(cfg, cli=True, env={"HELIOS_TRACING__EXPORTER": "file",
                                          "HELIOS_TRACING__FILE": str(spans)}) as p:
        yield p, spans


def _file_spans(path: Path, name: str, n: int = 1) -> list[dict[str, Any]]:
    """The spans called `name` in a span file, once there are `n` (a span is written as it ends)."""
    deadline = time.monotonic() + 15
    while True:
        found = []
        if path.exists():
            found = [s for s in (json.loads(line) for line in path.read_text().splitlines() if line.strip())
                     if s["name"] == name]
        if len(found) >= n or time.monotonic() > deadline:
            assert len(found) >= n, (name, path.read_text() if path.exists() else "no span file")
            return found
        time.sleep(0.02)


def _ids(span: dict[str, Any]) -> tuple[str, str]:
    """(trace id, span id) of a span from the file, in hex without 0x."""
    return span["context"]["trace_id"].removeprefix("0x"), span["context"]["span_id"].removeprefix("0x")


def _seen_by_backend(body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


def test_helios_proxy_continues_the_callers_trace(traced_proxy: tuple[ProxyProcess, Path]) -> None:
    proxy, span_file = traced_proxy
    status, headers, body = request(proxy.port, "GET", "/echo/a?x=1",
                                    headers={"traceparent": CALLER, "tracestate": "k=v"})
    assert status == 200, body
    seen = _seen_by_backend(body)
    (span,) = [s for s in _file_spans(span_file, "GET edge") if _ids(s)[0] == CALLER_TRACE]
    trace_id, span_id = _ids(span)
    assert span["kind"] == "SpanKind.SERVER"
    assert span["parent_id"].removeprefix("0x") == CALLER_SPAN
    # The backend's parent is the proxy's span, in the caller's trace; tracestate goes on with it.
    assert seen["traceparent"] == f"00-{CALLER_TRACE}-{span_id}-01"
    assert seen["tracestate"] == "k=v"
    attrs = span["attributes"]
    assert attrs["http.request.method"] == "GET" and attrs["http.route"] == "edge"
    assert attrs["url.path"] == "/echo/a"
    assert attrs["http.response.status_code"] == 200
    assert attrs["helios.proxy.backend"] == "web1"
    assert span["resource"]["attributes"]["service.name"] == "helios-proxy"


def test_helios_proxy_starts_a_trace_without_one(traced_proxy: tuple[ProxyProcess, Path]) -> None:
    proxy, span_file = traced_proxy
    status, _, body = request(proxy.port, "GET", "/echo/new", headers={"traceparent": "00-garbage"})
    assert status == 200, body
    tp = _seen_by_backend(body)["traceparent"].split("-")
    found = [s for s in _file_spans(span_file, "GET edge") if _ids(s) == (tp[1], tp[2])]
    assert len(found) == 1, tp
    assert found[0]["parent_id"] is None
    # An error answer of the proxy's own (the backend fails) is on the span too.  (The proxy is shared
    # by this module's tests, which xdist may run in any process and order: count from here.)
    before = len(_file_spans(span_file, "GET edge"))
    status, _, _ = request(proxy.port, "GET", "/status/503")
    assert status == 503
    assert any(s["attributes"].get("http.response.status_code") == 503 and s["status"]["status_code"] == "ERROR"
               for s in _file_spans(span_file, "GET edge", before + 1))


def test_one_trace_client_gateway_proxy_backend(tmp_path: Path, traced_proxy: tuple[ProxyProcess, Path]) -> None:
    proxy, span_file = traced_proxy
    exporter = InMemorySpanExporter()
    tracing.configure(load_config(env={}), "helios-gateway", exporter=exporter)

    async def body(api: Api) -> None:
        await _setup(api, proxy.url, [{"id": "via-proxy", "prefix": "/hop/", "pool": "web"}])
        deadline = time.monotonic() + 10
        while True:  # the route and the backend's first health check, within a second or so
            r = await api.call("GET", "/hop/echo", headers={"traceparent": CALLER})
            if r.code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert r.code == 200, r.body
        seen = {k.lower(): v for k, v in r.json()["headers"]}
        # The gateway's span: a child of the caller's, named by the matched route.
        while not [s for s in exporter.get_finished_spans() if s.name == "GET via-proxy"]:
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.01)
        gw = [s for s in exporter.get_finished_spans() if s.name == "GET via-proxy"][-1]
        assert gw.kind is SpanKind.SERVER and gw.context is not None and gw.parent is not None
        assert f"{gw.context.trace_id:032x}" == CALLER_TRACE and f"{gw.parent.span_id:016x}" == CALLER_SPAN
        gw_span = f"{gw.context.span_id:016x}"
        assert r.headers["traceparent"] == f"00-{CALLER_TRACE}-{gw_span}-01"
        assert (gw.attributes or {})["http.response.status_code"] == 200
        # helios proxy's span: a child of the gateway's; the backend's parent is the proxy's span.
        (px,) = [s for s in _file_spans(span_file, "GET edge")
                 if _ids(s)[0] == CALLER_TRACE and s["parent_id"].removeprefix("0x") == gw_span]
        assert seen["traceparent"] == f"00-{CALLER_TRACE}-{_ids(px)[1]}-01"

    try:
        run_gateway(tmp_path, body, **{"proxy.enabled": True})
    finally:
        tracing.shutdown()
