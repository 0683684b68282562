"""Probes, metrics and the API document: open to anyone, never rate-limited."""

from __future__ import annotations

from helios_core.gateway.base import PROBE, BaseHandler
from helios_core.observability import metrics

__all__ = ["HealthHandler", "ReadyHandler", "MetricsHandler", "OpenApiHandler"]


class HealthHandler(BaseHandler):
    """Liveness: the process answers."""

    route = "/healthz"
    needs = {"GET": PROBE}

    def get(self) -> None:
        self.write_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    """Readiness: the store takes writes and the gateway is not shutting down."""

    route = "/readyz"
    needs = {"GET": PROBE}

    def get(self) -> None:
        ok, reason = self.gw.ops.ready()
        if self.gw.draining:
            ok, reason = False, "shutting down"
        self.write_json({"status": "ready" if ok else "unavailable", "reason": reason}, 200 if ok else 503)


class MetricsHandler(BaseHandler):
    route = "/metrics"
    needs = {"GET": PROBE}

    def get(self) -> None:
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(metrics.render())


class OpenApiHandler(BaseHandler):
    route = "/api/v1/openapi.json"
    needs = {"GET": PROBE}

    def get(self) -> None:
        from helios_core.gateway.openapi import document

        self.set_header("Content-Type", "application/json")
        self.finish(document(self.application.settings["routes"]))
