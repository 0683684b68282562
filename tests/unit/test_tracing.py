"""helios_core.observability.tracing: configuration, exporters, W3C helpers, sampling.

Spans are read back with the SDK's InMemorySpanExporter (or the JSON-lines file exporter); the
"none" exporter is checked in a fresh interpreter, where nothing else configured tracing first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from helios_core.config import load_config
from helios_core.errors import ConfigError
from helios_core.observability import tracing

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(load_config(env={}), "helios-gateway", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def test_none_installs_no_sdk_provider_and_loads_no_sdk() -> None:
    code = textwrap.dedent("""
        import sys
        from opentelemetry import trace
        from helios_core.config import load_config
        from helios_core.observability import tracing
        assert tracing.configure(load_config(env={}), "helios-gateway") is False
        assert not tracing.enabled() and tracing.state.provider is None
        assert not any(m.startswith("opentelemetry.sdk") for m in sys.modules), "the SDK was imported"
        assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
        span = tracing.start_span("x")
        assert not span.is_recording() and tracing.traceparent_of(span) == ""
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_configure_installs_a_provider_named_for_the_daemon(spans: InMemorySpanExporter) -> None:
    assert tracing.enabled()
    span = tracing.start_span("work")
    span.end()
    (done,) = spans.get_finished_spans()
    assert done.resource.attributes["service.name"] == "helios-gateway"
    # Library code using the global API gets HELIOS's provider too (a worker's Python handler, say).
    with trace.get_tracer("someone.else").start_as_current_span("theirs"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["work", "theirs"]


def test_shutdown_turns_tracing_off(spans: InMemorySpanExporter) -> None:
    tracing.shutdown()
    assert not tracing.enabled()
    assert not tracing.start_span("after").is_recording()


def test_otlp_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    config = load_config(env={}, overrides={"tracing.exporter": "otlp"})
    with pytest.raises(ConfigError) as err:
        tracing.configure(config, "helios-worker")
    assert "pip install 'helios[otlp]'" in err.value.message
    assert err.value.key == "tracing.exporter"
    assert not tracing.enabled()


def test_otlp_when_installed() -> None:
    config = load_config(env={}, overrides={"tracing.exporter": "otlp",
                                            "tracing.endpoint": "http://127.0.0.1:9/v1/traces"})
    try:
        assert tracing.configure(config, "helios-proxy")
    finally:
        tracing.shutdown()  # nothing recorded: nothing sent to the (closed) port


def test_file_exporter_writes_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    config = load_config(env={"HELIOS_TRACING__EXPORTER": "file", "HELIOS_TRACING__FILE": str(path)})
    assert tracing.configure(config, "helios-worker")
    try:
        span = tracing.start_span("job emails", kind=tracing.SpanKind.CONSUMER, parent=CALLER)
        span.end()
        tracing.start_span("second").end()
    finally:
        tracing.shutdown()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["name"] for d in lines] == ["job emails", "second"]
    first = lines[0]
    assert first["context"]["trace_id"] == "0x" + CALLER_TRACE
    assert first["parent_id"] == "0x" + CALLER_SPAN
    assert first["kind"] == "SpanKind.CONSUMER"
    assert first["resource"]["attributes"]["service.name"] == "helios-worker"


def test_file_exporter_unwritable_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(env={}, overrides={"tracing.exporter": "file",
                                            "tracing.file": str(tmp_path / "missing" / "spans.jsonl")})
    with pytest.raises(ConfigError) as err:
        tracing.configure(config, "helios-gateway")
    assert err.value.key == "tracing.file"


@pytest.mark.parametrize(("overrides", "key"), [
    ({"tracing.sample_ratio": "1.5"}, "tracing.sample_ratio"),
    ({"tracing.sample_ratio": "-0.1"}, "tracing.sample_ratio"),
    ({"tracing.sample_ratio": "half"}, "tracing.sample_ratio"),
    ({"tracing.exporter": "jaeger"}, "tracing.exporter"),
    ({"tracing.exporter": "file"}, "tracing.file"),
    ({"tracing.endpoint": "127.0.0.1:4318"}, "tracing.endpoint"),
])
def test_config_is_validated(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(env={}, overrides=overrides)
    assert err.value.key == key


def test_config_from_yaml_and_env(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("tracing:\n  exporter: console\n  sample_ratio: 1\n")
    cfg = load_config(f, env={"HELIOS_TRACING__ENDPOINT": "https://otel.example/v1/traces"})
    assert cfg.tracing.exporter == "console"
    assert cfg.tracing.sample_ratio == 1.0 and isinstance(cfg.tracing.sample_ratio, float)
    assert cfg.tracing.endpoint == "https://otel.example/v1/traces"
    f.write_text("tracing:\n  sample_ratio: true\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert err.value.key == "tracing.sample_ratio" and err.value.line == 2
    assert load_config("configs/default.yaml", env={}).tracing == load_config(env={}).tracing


def test_traceparent_helpers(spans: InMemorySpanExporter) -> None:
    assert tracing.context_from_traceparent(None) is None
    assert tracing.context_from_traceparent("garbage") is None
    assert tracing.context_from_traceparent(f"00-{'0' * 32}-{CALLER_SPAN}-01") is None
    assert tracing.context_from_headers({"traceparent": CALLER, "tracestate": "k=v"}) is not None
    span = tracing.start_span("child", parent=CALLER)
    ids = tracing.ids_of(span)
    assert ids is not None and ids[0] == CALLER_TRACE and ids[1] != CALLER_SPAN and ids[2] == "01"
    assert tracing.traceparent_of(span) == f"00-{ids[0]}-{ids[1]}-01"
    carrier: dict[str, str] = {}
    tracing.inject(carrier, span)
    assert carrier["traceparent"] == tracing.traceparent_of(span)
    with tracing.use(span, end_on_exit=True):
        assert tracing.traceparent_of() == carrier["traceparent"]  # the current span
    # A malformed parent starts a new trace instead of continuing whatever is current.
    with tracing.use(tracing.start_span("outer"), end_on_exit=True):
        fresh = tracing.start_span("new", parent="00-nothex")
        assert tracing.ids_of(fresh)[0] != tracing.ids_of(tracing.current_span())[0]  # type: ignore[index]
        fresh.end()
    lk = tracing.link(CALLER, why="test")
    assert lk is not None and f"{lk.context.span_id:016x}" == CALLER_SPAN
    assert tracing.link("nope") is None


def test_links(spans: InMemorySpanExporter) -> None:
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    span = tracing.start_span("lease")
    tracing.add_links(span, [other, None, "bad", CALLER])
    span.end()
    (done,) = spans.get_finished_spans()
    assert [f"{lk.context.trace_id:032x}" for lk in done.links] == ["1" * 32, CALLER_TRACE]


def test_client_spans_only_inside_a_traced_operation(spans: InMemorySpanExporter) -> None:
    with tracing.client_span("atlas GET", {"db.system": "redis"}) as span:
        assert not span.is_recording()  # no parent: a background call is not traced
    with tracing.use(tracing.start_span("request"), end_on_exit=True):
        with tracing.client_span("atlas GET", {"db.system": "redis"}) as span:
            assert span.is_recording()
    names = [(s.name, s.kind, s.parent is not None) for s in spans.get_finished_spans()]
    assert names == [("atlas GET", trace.SpanKind.CLIENT, True), ("request", trace.SpanKind.INTERNAL, False)]


def test_command_batch_span_names(spans: InMemorySpanExporter) -> None:
    batches: list[list[list[bytes]]] = [[[b"get", b"k"]], [[b"SET", b"a", b"1"], [b"set", b"b", b"2"]],
                                         [[b"GET", b"a"], [b"SET", b"b", b""]], [[]]]
    for cmds in batches:
        tracing.command_batch_span(cmds).end()
    got = [(s.name, (s.attributes or {})["db.operation.batch.size"], s.parent) for s in spans.get_finished_spans()]
    assert got == [("atlasd GET", 1, None), ("atlasd SET", 2, None), ("atlasd pipeline", 2, None),
                   ("atlasd ?", 1, None)]


def test_sampling_follows_the_caller_and_the_ratio() -> None:
    exporter = InMemorySpanExporter()
    tracing.configure(load_config(env={}, overrides={"tracing.sample_ratio": "0"}), "helios-gateway",
                      exporter=exporter)
    try:
        root = tracing.start_span("new trace")
        # Not recorded, but still a valid context to pass on, with the sampled bit clear (the SDK may
        # set W3C level 2's "random trace id" bit, 02).
        assert not root.is_recording() and int(tracing.traceparent_of(root)[-2:], 16) & 1 == 0
        sampled = tracing.start_span("continued", parent=CALLER)  # the caller sampled it: so do we
        assert sampled.is_recording()
        unsampled = tracing.start_span("continued", parent=CALLER[:-2] + "00")
        assert not unsampled.is_recording()
        for s in (root, sampled, unsampled):
            s.end()
    finally:
        tracing.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["continued"]


def test_otlp_spans_are_flushed_when_the_process_exits() -> None:
    """The OTLP exporter batches: what is pending at exit is still sent (the atexit hook)."""
    import http.server
    import threading

    got: list[tuple[str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server spelling
            got.append((self.path, self.rfile.read(int(self.headers["Content-Length"] or 0))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        code = textwrap.dedent(f"""
            from helios_core.config import load_config
            from helios_core.observability import tracing
            config = load_config(env={{}}, overrides={{"tracing.exporter": "otlp",
                "tracing.endpoint": "http://127.0.0.1:{server.server_address[1]}/v1/traces"}})
            assert tracing.configure(config, "helios-atlasd")
            tracing.start_span("flushed at exit").end()
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert [path for path, _ in got] == ["/v1/traces"]
    assert b"flushed at exit" in got[0][1] and b"helios-atlasd" in got[0][1]


@pytest.mark.parametrize("sync", [True, False])
def test_a_python_handler_runs_inside_the_current_span(spans: InMemorySpanExporter, sync: bool) -> None:
    import asyncio

    from helios_core.worker.handlers import JobContext, PythonRunner

    def seen(payload: object) -> str:
        return tracing.traceparent_of()  # what the handler's own spans would continue

    async def aseen(payload: object) -> str:
        return tracing.traceparent_of()

    runner = PythonRunner(seen if sync else aseen)

    async def main() -> tuple[str, str]:
        span = tracing.start_span("job emails", kind=tracing.SpanKind.CONSUMER, parent=CALLER)
        with tracing.use(span, end_on_exit=True):
            outcome = await runner.run({}, JobContext(id="j", queue="emails", attempt=1, max_attempts=1))
        assert outcome.ok
        return str(outcome.result), tracing.traceparent_of(span)

    got, expected = asyncio.run(main())
    assert got == expected and got.startswith(f"00-{CALLER_TRACE}-")
