"""The per-request shortcuts of the proxy give the same answers as the slow paths they replace."""

from __future__ import annotations

import os

from helios_core.proxy.proxymetrics import ProxyMetrics
from helios_core.proxy.reqhead import next_random_hex as _next_random_hex


def _lines(text: str, route: str) -> list[str]:
    return sorted(line for line in text.splitlines()
                  if f'route="{route}"' in line and "_created" not in line)


def test_answered_counts_like_upstream_and_request() -> None:
    metrics = ProxyMetrics()
    tag = os.urandom(4).hex()
    fast, slow = f"fast-{tag}", f"slow-{tag}"
    for seconds in (0.0, 0.0004, 0.003, 0.003, 0.7, 100.0, -1.0):
        metrics.answered(fast, "b1", 200, seconds)
        metrics.upstream(slow, "b1", 200, seconds)
        metrics.request(slow, "b1", 200)
    metrics.answered(fast, "b1", 502, 0.01)
    metrics.upstream(slow, "b1", 502, 0.01)
    metrics.request(slow, "b1", 502)
    text = metrics.render().decode()
    got = [line.replace(fast, "R") for line in _lines(text, fast)]
    want = [line.replace(slow, "R") for line in _lines(text, slow)]
    assert got == want
    assert any(line.startswith("proxy_upstream_duration_seconds_count") and line.endswith(" 8.0") for line in got)


def test_random_ids_are_fresh_hex() -> None:
    seen = {_next_random_hex() for _ in range(1000)}  # crosses several refills of the buffer
    assert len(seen) == 1000
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in seen)
