"""Prometheus metrics shared by every HELIOS service.

One `CollectorRegistry` per process (`REGISTRY`), not prometheus-client's
global default, so importing a library that registers its own metrics never
changes what ``/metrics`` shows.  `counter`, `gauge` and `histogram` are
get-or-create: a service built twice in one process (tests do that) reuses
the metric instead of failing on a duplicate name.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

__all__ = ["REGISTRY", "counter", "gauge", "histogram", "render", "CONTENT_TYPE", "LATENCY_BUCKETS"]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Seconds; finer than the client default at the low end, where a gateway lives.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

M = TypeVar("M", Counter, Gauge, Histogram)
_made: dict[str, Any] = {}
_lock = threading.Lock()


def _get_or_create(cls: type[M], name: str, doc: str, labels: Sequence[str], **kw: Any) -> M:
    with _lock:
        metric = _made.get(name)
        if metric is None:
            metric = _made[name] = cls(name, doc, labelnames=tuple(labels), registry=REGISTRY, **kw)
        elif not isinstance(metric, cls) or tuple(metric._labelnames) != tuple(labels):
            raise ValueError(f"metric {name} exists with another type or labels")
        return metric


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    return _get_or_create(Counter, name, doc, labels)


def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return _get_or_create(Gauge, name, doc, labels)


def histogram(name: str, doc: str, labels: Sequence[str] = (),
              buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
    return _get_or_create(Histogram, name, doc, labels, buckets=tuple(buckets))


def render() -> bytes:
    """The text exposition format of every HELIOS metric in this process."""
    return generate_latest(REGISTRY)
