"""`helios worker`: lease jobs over the gateway's HTTP API and run them (see runtime.py for the design)."""

from helios_core.worker.client import (
    AckRequest,
    AckResult,
    Enqueued,
    GatewayUnavailableError,
    JobsClient,
    Page,
    enqueue_body,
    is_transient,
)
from helios_core.worker.config import WorkerConfig, parse_duration
from helios_core.worker.handlers import (
    ExecRunner,
    HandlerLoadError,
    JobContext,
    Outcome,
    PythonRunner,
    Runner,
    load_handler,
)
from helios_core.worker.runtime import Worker

__all__ = [
    "JobsClient", "Enqueued", "Page", "AckRequest", "AckResult", "GatewayUnavailableError", "is_transient",
    "enqueue_body", "WorkerConfig", "parse_duration", "Worker", "Runner", "PythonRunner", "ExecRunner",
    "JobContext", "Outcome", "HandlerLoadError", "load_handler",
]
