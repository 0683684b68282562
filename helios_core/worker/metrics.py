"""The worker's Prometheus metrics, and the tiny HTTP server that exposes them (--metrics-port)."""

from __future__ import annotations

from prometheus_client import start_http_server

from helios_core.observability.metrics import REGISTRY, counter, gauge, histogram

__all__ = ["JOBS", "DURATION", "INFLIGHT", "INFLIGHT_JOBS", "OUTCOMES", "serve_metrics"]

# How a job left this worker: ok (acked), error (the handler failed: nacked), timeout (killed at --timeout:
# nacked), lease_lost (taken over by another worker: dropped), shutdown (given back at SIGTERM: nacked),
# released (leased ahead, but no slot freed for it within a third of its visibility: given back unstarted).
OUTCOMES = ("ok", "error", "timeout", "lease_lost", "shutdown", "released")

JOBS = counter("worker_jobs_total", "Jobs this worker finished, by queue and outcome.", ["queue", "outcome"])
DURATION = histogram("worker_job_duration_seconds", "Time a job's handler ran, by queue.", ["queue"],
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                              300.0, 600.0, 1800.0, 3600.0))
INFLIGHT = gauge("worker_inflight", "Jobs whose handler is running now.")


class InflightCount:
    """worker_inflight's value, read when the gauge is scraped: the workers count with a plain int, which
    costs far less than two locked gauge updates per job (the count is only changed on the loop's thread)."""

    def __init__(self) -> None:
        self.n = 0


INFLIGHT_JOBS = InflightCount()
INFLIGHT.set_function(lambda: INFLIGHT_JOBS.n)


def serve_metrics(port: int, addr: str = "127.0.0.1") -> int:
    """Serve /metrics on addr:port from a daemon thread; returns the port (useful with 0)."""
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return int(server.server_port)
