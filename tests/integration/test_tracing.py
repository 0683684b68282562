"""One trace across processes: client -> gateway -> (store, atlasd) and client -> gateway -> job -> worker.

In-process parts read spans with the SDK's InMemorySpanExporter; other processes (atlasd, a
`helios gateway`, a `helios worker`) are started with ``HELIOS_TRACING__EXPORTER=file`` and their
JSON-lines span files are parsed.  Every wait is for a condition, with a deadline only against a hang.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tornado.testing import bind_unused_port

from helios_core.config import load_config
from helios_core.gateway import GatewayService
from helios_core.observability import tracing
from helios_core.store import RemoteStore, Txn
from tests.integration.test_atlasd_support import Daemon
from tests.integration.test_worker_process import GATEWAY_ENV, HELIOS, call, clean_env, wait_for
from tests.unit.test_gateway_harness import SECRET, Api, Clock, run_gateway, test_config

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(load_config(env={}), "helios-gateway", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _hex_span(s: ReadableSpan) -> str:
    assert s.context is not None
    return f"{s.context.span_id:016x}"


def _hex_trace(s: ReadableSpan) -> str:
    assert s.context is not None
    return f"{s.context.trace_id:032x}"


async def _span_named(spans: InMemorySpanExporter, name: str, n: int = 1) -> list[ReadableSpan]:
    """The finished spans called `name`, once there are `n` of them (a span ends as its response goes out)."""
    deadline = time.monotonic() + 10
    while True:
        found = [s for s in spans.get_finished_spans() if s.name == name]
        if len(found) >= n or time.monotonic() > deadline:
            assert len(found) >= n, (name, [s.name for s in spans.get_finished_spans()])
            return found
        await asyncio.sleep(0.01)


# -- the gateway's request span -----------------------------------------------------------------


def test_a_request_with_a_traceparent_continues_that_trace(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        assert (await api.call("PUT", "/api/v1/kv/greeting", token=token, body=b"hi")).code in (200, 201, 204)
        spans.clear()
        r = await api.call("GET", "/api/v1/kv/greeting", token=token, headers={"traceparent": CALLER})
        assert r.code == 200
        (span,) = await _span_named(spans, "GET /api/v1/kv/{key}")
        assert span.kind is SpanKind.SERVER
        assert _hex_trace(span) == CALLER_TRACE
        assert span.parent is not None and f"{span.parent.span_id:016x}" == CALLER_SPAN
        # The response names this span, so the caller can find it.
        assert r.headers["traceparent"] == f"00-{CALLER_TRACE}-{_hex_span(span)}-01"
        attrs = dict(span.attributes or {})
        assert attrs["http.request.method"] == "GET"
        assert attrs["http.route"] == "/api/v1/kv/{key}"
        assert attrs["http.response.status_code"] == 200
        assert attrs["enduser.id"]  # the user id ...
        assert not any(token in str(v) for v in attrs.values())  # ... never the token
        assert span.resource.attributes["service.name"] == "helios-gateway"

    run_gateway(tmp_path, body)


def test_a_request_without_one_starts_a_trace_and_errors_are_marked(tmp_path: Path,
                                                                     spans: InMemorySpanExporter) -> None:
    async def body(api: Api) -> None:
        spans.clear()
        r = await api.call("GET", "/api/v1/kv/nothing", headers={"traceparent": "00-garbage"})
        assert r.code == 401
        (span,) = await _span_named(spans, "GET /api/v1/kv/{key}")
        assert span.parent is None
        tp = r.headers["traceparent"].split("-")
        assert tp[1] == _hex_trace(span) and tp[2] == _hex_span(span)
        assert (span.attributes or {})["http.response.status_code"] == 401
        assert "enduser.id" not in (span.attributes or {})

    run_gateway(tmp_path, body)


def test_enqueue_lease_and_ack_carry_the_enqueue_span(tmp_path: Path, spans: InMemorySpanExporter) -> None:
    async def body(api: Api) -> None:
        token = await api.admin_token()
        r = await api.call("POST", "/api/v1/jobs", token=token, headers={"traceparent": CALLER},
                           json={"queue": "traced", "payload": {"n": 1}})
        assert r.code == 201, r.body
        job = r.json()["job"]
        (enqueue,) = await _span_named(spans, "POST /api/v1/jobs")
        # The job record carries the enqueuing span's context: that is what the worker continues.
        assert job["trace"] == r.headers["traceparent"] == f"00-{CALLER_TRACE}-{_hex_span(enqueue)}-01"
        lease = await api.call("POST", "/api/v1/jobs/lease", token=token, json={"queues": ["traced"]})
        leased = lease.json()["jobs"][0]
        ack = await api.call("POST", f"/api/v1/jobs/{job['id']}/ack", token=token,
                             json={"lease_token": leased["lease"]["token"], "result": 1})
        assert ack.code == 200, ack.body
        for name in ("POST /api/v1/jobs/lease", "POST /api/v1/jobs/{id}/ack"):
            (span,) = await _span_named(spans, name)
            assert _hex_trace(span) != CALLER_TRACE  # the worker's own trace ...
            assert [(f"{lk.context.trace_id:032x}", f"{lk.context.span_id:016x}") for lk in span.links] == [
                (CALLER_TRACE, _hex_span(enqueue))]  # ... linked to the job's

    run_gateway(tmp_path, body)


# -- store calls that cross a process ------------------------------------------------------------


def _file_spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def traced_atlasd(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    span_file = tmp_path / "atlasd-spans.jsonl"
    d = Daemon(tmp_path / "atlas", "--appendfsync", "everysec",
               env={"HELIOS_TRACING__EXPORTER": "file", "HELIOS_TRACING__FILE": str(span_file)}).start()
    try:
        yield d, span_file
    finally:
        d.stop()


def test_remote_store_calls_are_client_spans_and_atlasd_spans_its_batches(
        traced_atlasd: tuple[Daemon, Path], spans: InMemorySpanExporter) -> None:
    daemon, span_file = traced_atlasd
    url = f"atlas://127.0.0.1:{daemon.port}" + (f"?password={daemon.password}" if daemon.password else "")

    async def main() -> None:
        store = RemoteStore(url)
        try:
            await store.get("outside")  # no traced operation around it: no span
            with tracing.use(tracing.start_span("request", kind=SpanKind.SERVER), end_on_exit=True):
                async def bump(txn: Txn) -> int:
                    n = int(await txn.get("counter") or 0) + 1
                    txn.set("counter", str(n))
                    return n

                assert await store.transact(bump) == 1  # type: ignore[arg-type]  # mypy: Awaitable[T] | T
                assert await store.get("counter") == b"1"
        finally:
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    by_name = {s.name: s for s in spans.get_finished_spans()}
    request = by_name["request"]
    for name, op in (("atlas transaction", "MULTI"), ("atlas GET", "GET")):
        s = by_name[name]
        assert s.kind is SpanKind.CLIENT
        assert s.parent is not None and s.parent.span_id == request.context.span_id
        attrs = dict(s.attributes or {})
        assert attrs["db.system"] == "redis" and attrs["db.operation.name"] == op
        assert attrs["server.port"] == daemon.port
        assert not any("password" in str(v) for v in attrs.values())
    assert len([s for s in spans.get_finished_spans() if s.name == "atlas GET"]) == 1  # not the untraced one
    # atlasd's own spans, one per batch it read (roots: RESP carries no trace context).
    got = wait_for(lambda: [d for d in _file_spans(span_file) if d["name"] in ("atlasd EXEC", "atlasd pipeline")],
                   "atlasd's span for the transaction")
    assert got[0]["resource"]["attributes"]["service.name"] == "helios-atlasd"
    assert got[0]["kind"] == "SpanKind.SERVER" and got[0]["parent_id"] is None


def test_a_gateway_on_atlasd_traces_its_store_calls_under_the_request(
        tmp_path: Path, traced_atlasd: tuple[Daemon, Path], spans: InMemorySpanExporter) -> None:
    daemon, _ = traced_atlasd
    url = f"atlas://127.0.0.1:{daemon.port}" + (f"?password={daemon.password}" if daemon.password else "")

    async def main() -> None:
        config = test_config()
        store = RemoteStore(url)
        service = GatewayService(config, store, key_specs=[SECRET], clock=Clock())
        sock, port = bind_unused_port()
        api = None
        try:
            password = await service.start()
            assert password is not None
            service.listen([sock])
            api = Api(f"http://127.0.0.1:{port}", port, service, store, password, Clock())  # type: ignore[arg-type]
            token = await api.admin_token()
            spans.clear()
            r = await api.call("GET", "/api/v1/kv/absent", token=token, headers={"traceparent": CALLER})
            assert r.code == 404
            (server,) = await _span_named(spans, "GET /api/v1/kv/{key}")
            children = [s for s in spans.get_finished_spans()
                        if s.parent is not None and s.parent.span_id == server.context.span_id]
            assert children and all(s.kind is SpanKind.CLIENT and s.name.startswith("atlas ") for s in children)
            assert all(_hex_trace(s) == CALLER_TRACE for s in children)
            assert "atlas GET" in {s.name for s in children}  # the key's read
        finally:
            if api is not None:
                api.client.close()
            await service.shutdown(1)
            await store.close()

    asyncio.run(asyncio.wait_for(main(), 90))


# -- client -> gateway process -> worker process --------------------------------------------------


class _GatewayProc:
    def __init__(self, tmp: Path, span_file: Path) -> None:
        self.data = tmp / "data"
        env = clean_env(**GATEWAY_ENV, HELIOS_TRACING__EXPORTER="file", HELIOS_TRACING__FILE=str(span_file))
        self.proc = subprocess.Popen([HELIOS, "gateway", "--data", str(self.data), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.proc.stdout is not None
        self.url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.url:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"gateway exited: {self.proc.wait()}")
            if "listening on" in line:
                self.url = line.split("listening on ")[1].split()[0]
        assert self.url, "gateway did not start"
        password = (self.data / "initial_admin_password").read_text().strip()
        code, out = call(f"{self.url}/api/v1/auth/login", "POST", {"username": "admin", "password": password})
        assert code == 200, out
        self.token = str(out["access_token"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.slow
def test_one_trace_from_the_client_through_the_gateway_to_a_worker_process(tmp_path: Path) -> None:
    import urllib.request

    gw_spans, worker_spans = tmp_path / "gateway-spans.jsonl", tmp_path / "worker-spans.jsonl"
    gw = _GatewayProc(tmp_path, gw_spans)
    worker: subprocess.Popen[bytes] | None = None
    try:
        req = urllib.request.Request(f"{gw.url}/api/v1/jobs", method="POST", data=json.dumps(
            {"queue": "traced", "payload": {"n": 1}}).encode(), headers={
            "Authorization": f"Bearer {gw.token}", "Content-Type": "application/json", "traceparent": CALLER})
        with urllib.request.urlopen(req, timeout=30) as r:
            job = json.loads(r.read())["job"]
            response_tp = r.headers["traceparent"]
        assert job["trace"] == response_tp and response_tp.startswith(f"00-{CALLER_TRACE}-")

        # A shell handler: TRACEPARENT in its environment is the worker's span for the job.
        env = clean_env(HELIOS_URL=gw.url, HELIOS_TOKEN=gw.token, HELIOS_TRACING__EXPORTER="file",
                        HELIOS_TRACING__FILE=str(worker_spans))
        with open(tmp_path / "worker.log", "w") as log:
            worker = subprocess.Popen([HELIOS, "worker", "-q", "traced", "--exec", 'printf "%s" "$TRACEPARENT"',
                                       "--burst"], stdout=log, stderr=log, env=env, cwd=tmp_path)
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()

        def done() -> dict[str, Any] | None:
            code, out = call(f"{gw.url}/api/v1/jobs/{job['id']}", token=gw.token)
            return out["job"] if code == 200 and out["job"]["state"] == "DONE" else None

        finished: dict[str, Any] = wait_for(done, "the job DONE")
        gateway_doc = next(d for d in wait_for(lambda: _file_spans(gw_spans), "gateway spans")
                           if d["name"] == "POST /api/v1/jobs")
        job_spans = [d for d in _file_spans(worker_spans) if d["name"] == "job traced"]
        assert len(job_spans) == 1, _file_spans(worker_spans)
        consumer = job_spans[0]
        # client -> gateway: the caller's trace, the caller's span as parent.
        assert gateway_doc["context"]["trace_id"] == "0x" + CALLER_TRACE
        assert gateway_doc["parent_id"] == "0x" + CALLER_SPAN
        assert gateway_doc["resource"]["attributes"]["service.name"] == "helios-gateway"
        # gateway -> worker: the same trace, the enqueue span as parent.
        assert consumer["context"]["trace_id"] == "0x" + CALLER_TRACE
        assert consumer["parent_id"] == gateway_doc["context"]["span_id"]
        assert consumer["kind"] == "SpanKind.CONSUMER"
        assert consumer["attributes"]["messaging.message.id"] == job["id"]
        assert consumer["resource"]["attributes"]["service.name"] == "helios-worker"
        # The handler ran inside the job's span.
        assert finished["result"] == f"00-{CALLER_TRACE}-{consumer['context']['span_id'][2:]}-01"
        # The worker's lease and ack, on the gateway, link back to the job's trace.
        worker_calls = ("POST /api/v1/jobs/lease", "POST /api/v1/jobs/ack", "POST /api/v1/jobs/{id}/ack")
        linked = wait_for(lambda: [d for d in _file_spans(gw_spans) if d["name"] in worker_calls and d["links"]],
                          "the lease and ack spans")
        assert {d["name"] for d in linked} >= {"POST /api/v1/jobs/lease"}
        assert all(lk["context"]["trace_id"] == "0x" + CALLER_TRACE for d in linked for lk in d["links"])
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
            worker.wait()
        gw.stop()

