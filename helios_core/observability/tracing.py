"""OpenTelemetry tracing for every HELIOS daemon, and the only module that touches the SDK.

`configure(config, service)` reads the ``tracing`` section once at a daemon's
start.  With ``exporter: none`` (the default) nothing is installed: the SDK is
not even imported, `state.on` stays False, and every hot path that could make a
span checks that one attribute first, so a request costs what it did before
tracing existed (the gateway then still keeps or starts a W3C ``traceparent``
with its own ids, as it always did).  Otherwise an SDK `TracerProvider` is
built with the ``service.name`` resource of the daemon, a
``ParentBased(TraceIdRatioBased(sample_ratio))`` sampler and the exporter:

- ``console``: JSON to stderr, each span as it ends;
- ``file``: one JSON object per line appended to ``tracing.file``, each span as
  it ends (what the cross-process tests read; handy without a collector);
- ``otlp``: OTLP/HTTP to ``tracing.endpoint``, batched (the optional extra
  ``helios[otlp]``).

The provider is flushed and shut down at interpreter exit (an atexit hook; a
daemon stopped by SIGTERM exits normally and so runs it), and by `shutdown()`.

The rest of HELIOS works with W3C ``traceparent`` strings and HTTP headers:
`context_from_traceparent`, `context_from_headers`, `traceparent_of`, `inject`
and `link` convert with the API's `TraceContextTextMapPropagator`, so no other
module imports the SDK.  Spans HELIOS makes (names are what a trace viewer
lists):

- gateway: one SERVER span per request, ``GET /api/v1/kv/{key}`` (the route
  template), child of the caller's ``traceparent``;
- RemoteStore: a CLIENT span per round trip, ``atlas GET`` / ``atlas
  transaction``, only inside a traced operation (the gateway's background
  reaper is not traced: it would make a trace a second);
- atlasd: a SERVER span per command batch (``atlasd GET``, ``atlasd
  pipeline``); Redis has no carrier for a context, so these are roots;
- worker: a CONSUMER span ``job <queue>`` per delivery, child of the span that
  enqueued the job (the job record's ``trace``); the handler runs inside it.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from helios_core.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from helios_core.config import HeliosConfig

__all__ = [
    "SERVICES", "SpanKind", "StatusCode", "state", "configure", "shutdown", "force_flush", "enabled", "tracer",
    "current_span",
    "start_span", "use", "activate", "client_span", "context_from_traceparent", "context_from_headers",
    "traceparent_of", "ids_of", "inject", "link", "add_links", "set_error", "command_batch_span",
]

SERVICES = ("helios-gateway", "helios-atlasd", "helios-worker", "helios-proxy")
_INSTRUMENTATION = "helios"
_PROPAGATOR = TraceContextTextMapPropagator()


class _State:
    """What `configure` installed.  Hot paths read `on` and nothing else when tracing is off."""

    __slots__ = ("on", "provider", "tracer", "service")

    def __init__(self) -> None:
        self.on = False
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        self.service = ""


state = _State()
_lock = threading.Lock()


class _Delegate(trace.TracerProvider):
    """The process's global provider once tracing is on: hands out tracers of whatever `configure`
    installed last.  The API lets the global be set only once per process, and tests (and a
    daemon reloading) configure more than once; library code calling ``trace.get_tracer`` (a
    worker's Python handler, say) still gets HELIOS's provider."""

    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Any = None) -> trace.Tracer:
        provider = state.provider
        if provider is None:
            return trace.NoOpTracer()
        return provider.get_tracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


_delegate_installed = False


def _file_exporter(path: str) -> SpanExporter:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    class JsonLinesExporter(ConsoleSpanExporter):
        """Each span as one line of JSON, appended (processes sharing the file write whole lines)."""

        def __init__(self, out: IO[str]) -> None:
            super().__init__(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")

        def shutdown(self) -> None:
            self.out.close()

    try:
        out = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by the exporter's shutdown
    except OSError as e:
        raise ConfigError(f"cannot open the span file {path}: {e.strerror or e}", key="tracing.file") from None
    return JsonLinesExporter(out)


def _exporter(config: HeliosConfig) -> tuple[SpanExporter, bool]:
    """The configured exporter, and whether it wants batching (a network one) or each span at once."""
    t = config.tracing
    if t.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr), False
    if t.exporter == "file":
        return _file_exporter(t.file), False
    if t.exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError("tracing.exporter is otlp but the OTLP exporter is not installed: "
                              "pip install 'helios[otlp]' (opentelemetry-exporter-otlp-proto-http)",
                              key="tracing.exporter") from None
        return (OTLPSpanExporter(endpoint=t.endpoint) if t.endpoint else OTLPSpanExporter()), True
    raise ConfigError(f"unknown exporter {t.exporter!r}", key="tracing.exporter")


def configure(config: HeliosConfig, service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Install tracing for this process as `config.tracing` says; True if spans are now recorded.

    `service` is the ``service.name`` resource (one of `SERVICES` for HELIOS's daemons).
    `exporter` replaces the configured one (tests pass the SDK's InMemorySpanExporter) and turns
    tracing on even when ``tracing.exporter`` is none.  Calling it again replaces what the last call
    installed (flushing it first).
    """
    global _delegate_installed
    shutdown()
    t = config.tracing
    if exporter is None and t.exporter == "none":
        return False  # not even an import of the SDK: see the module doc
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    batched = False
    if exporter is None:
        exporter, batched = _exporter(config)
    # shutdown_on_exit=False: one atexit hook of ours flushes whichever provider is current, instead of
    # every provider a test session ever built staying registered (and alive) until exit.
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=ParentBased(TraceIdRatioBased(t.sample_ratio)), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter))
    with _lock:
        state.provider = provider
        state.tracer = provider.get_tracer(_INSTRUMENTATION)
        state.service = service
        state.on = True
        if not _delegate_installed:
            _delegate_installed = True
            trace.set_tracer_provider(_Delegate())
            atexit.register(shutdown)
    return True


def shutdown() -> None:
    """Flush every span not yet exported and turn tracing off (safe to call when it is off)."""
    with _lock:
        provider, state.provider = state.provider, None
        state.on = False
        state.tracer = trace.NoOpTracer()
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_ms: int = 30000) -> bool:
    provider = state.provider
    return provider.force_flush(timeout_ms) if provider is not None else True


def enabled() -> bool:
    return state.on


def current_span() -> Span:
    """The span current here (INVALID_SPAN, which records nothing, when there is none)."""
    return trace.get_current_span()


def tracer() -> trace.Tracer:
    """HELIOS's tracer: the SDK's when tracing is on, else the API's no-op one."""
    return state.tracer


# -- contexts as W3C strings --------------------------------------------------------------------


def context_from_traceparent(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The context a W3C ``traceparent`` names (None when missing or malformed)."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    ctx = _PROPAGATOR.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def context_from_headers(headers: Mapping[str, str]) -> Context | None:
    """The caller's context from HTTP headers (``traceparent``, ``tracestate``), or None."""
    tp = headers.get("traceparent")
    return context_from_traceparent(tp, headers.get("tracestate")) if tp else None


def ids_of(span: Span) -> tuple[str, str, str] | None:
    """(trace id, span id, flags) in hex as a traceparent spells them, or None for an invalid span."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return f"{sc.trace_id:032x}", f"{sc.span_id:016x}", f"{int(sc.trace_flags):02x}"


def traceparent_of(span: Span | None = None) -> str:
    """The W3C traceparent naming `span` (default: the current one) as the parent; "" if there is none."""
    ids = ids_of(span if span is not None else trace.get_current_span())
    return f"00-{ids[0]}-{ids[1]}-{ids[2]}" if ids else ""


def inject(carrier: dict[str, str], span: Span | None = None) -> None:
    """Put `span`'s (default: the current span's) ``traceparent`` and ``tracestate`` into `carrier`."""
    ctx = trace.set_span_in_context(span) if span is not None else None
    _PROPAGATOR.inject(carrier, context=ctx)


def link(traceparent: str | None, **attributes: Any) -> Link | None:
    """A span link to the span a traceparent names (None when there is none)."""
    ctx = context_from_traceparent(traceparent)
    if ctx is None:
        return None
    return Link(trace.get_current_span(ctx).get_span_context(), attributes or None)


def add_links(span: Span, traceparents: Iterable[str | None]) -> None:
    """Link `span` to every span named (a lease to the jobs' enqueue spans); no-op unless recording."""
    if not span.is_recording():
        return
    for tp in traceparents:
        lk = link(tp)
        if lk is not None:
            span.add_link(lk.context)


# -- making spans --------------------------------------------------------------------------------


def start_span(name: str, *, kind: SpanKind = SpanKind.INTERNAL, parent: Context | str | None = None,
               attributes: Mapping[str, Any] | None = None, links: Iterable[Link | None] = ()) -> Span:
    """Start a span (not made current; end it yourself).  `parent`: a context, a traceparent string,
    or None for the current context.  INVALID_SPAN when tracing is off."""
    if not state.on:
        return INVALID_SPAN
    ctx = context_from_traceparent(parent) if isinstance(parent, str) else parent
    if ctx is None and isinstance(parent, str):
        ctx = Context()  # a malformed traceparent starts a new trace, never continues the current one
    return state.tracer.start_span(name, context=ctx, kind=kind, attributes=dict(attributes or {}),
                                   links=[lk for lk in links if lk is not None])


def use(span: Span, *, end_on_exit: bool = False) -> contextlib.AbstractContextManager[Span]:
    """Make `span` current inside a ``with`` block (an exception is recorded on it)."""
    return trace.use_span(span, end_on_exit=end_on_exit)


def activate(span: Span) -> None:
    """Make `span` current for the rest of the running task, without a matching detach.

    For a Tornado request: the handler runs in a task of its own (a copy of the context), so the
    span stays current from ``prepare()`` through the method and dies with the task; a detach
    from ``on_finish`` could run in another context and would only log an error.
    """
    otel_context.attach(trace.set_span_in_context(span))


@contextlib.contextmanager
def _client_span(name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
    with state.tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=dict(attributes)) as span:
        yield span


_NULL: contextlib.nullcontext[Span] = contextlib.nullcontext(INVALID_SPAN)


def client_span(name: str, attributes: Mapping[str, Any]) -> contextlib.AbstractContextManager[Span]:
    """A CLIENT span around a call to another process, if tracing is on and a traced operation is
    running (a store call outside any request, such as the reaper's ticks, is not traced)."""
    if not state.on or not trace.get_current_span().is_recording():
        return _NULL
    return _client_span(name, attributes)


def _command_name(argv: Any) -> str:
    head = argv[0] if argv else b"?"  # JSON-lines items are argv-like lists too (JsonBatch: [b"multi"])
    return head[:64].decode(errors="replace").upper() if isinstance(head, bytes) else "?"


def command_batch_span(cmds: list[list[bytes]]) -> Span:
    """atlasd's SERVER span for one batch of commands read at once: a root (RESP carries no context)."""
    first = _command_name(cmds[0])
    same = all(_command_name(c) == first for c in cmds[1:8])  # a look, not a scan of a big pipeline
    name = f"atlasd {first}" if len(cmds) == 1 or same else "atlasd pipeline"
    return start_span(name, kind=SpanKind.SERVER, parent=Context(),
                      attributes={"db.system": "redis", "db.operation.name": first,
                                  "db.operation.batch.size": len(cmds)})


def set_error(span: Span, description: str, exc: BaseException | None = None) -> None:
    if span.is_recording():
        if exc is not None:
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, description))

