"""The gateway's access line made in one f-string (`AccessLog.request`) is the very line the
general path (`AccessLog.write`) makes of the same fields, escaping and quoting included."""

from __future__ import annotations

import io
import itertools
import json
import time

import pytest

from helios_core.gateway.accesslog import AccessLog

PATHS = ["/api/v1/kv/bench/key", "/api/v1/kv/a b", '/api/v1/kv/"q"', "/api/v1/kv/x=1", "/api/v1/kv/t:1",
         "/api/v1/kv/eyJhbGciOi", "/api/v1/kv/\x1b[31m", "/api/v1/kv/é", "/api/v1/kv/Bearer abc.def", "",
         "/api/v1/kv/ey", "/api/v1/kv/a\nb"]
USERS = [None, "alice", "", "al ice", "eyJx", 'q"uote']
CLIENTS = ["127.0.0.1", "::1", "2001:db8::5", "unknown"]
IDS = ["0" * 32, "req:1", "abc.def-1", ""]
TRACES = ["4bf92f3577b34da6a3ce929d0e0e4736", ""]
ROUTES = ["/api/v1/kv/{key}", "unmatched", ""]
METHODS = ["GET", "PUT", ""]


def _lines(fmt: str, level: str, calls: list[tuple]) -> tuple[str, str]:
    fast, slow = io.StringIO(), io.StringIO()
    a, b = AccessLog(level, fmt, lambda: fast), AccessLog(level, fmt, lambda: slow)
    keys = ("request_id", "method", "route", "path", "status", "duration_ms", "user", "client", "trace_id")
    for args in calls:
        a.request(*args)
        b.write(dict(zip(keys, args, strict=True)))
    a.writer.flush()
    b.writer.flush()
    return fast.getvalue(), slow.getvalue()


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_request_line_is_writes_line(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.125)
    calls = []
    for rid, method, route, path, user, client, trace in itertools.product(IDS, METHODS, ROUTES, PATHS, USERS,
                                                                            CLIENTS, TRACES):
        calls.append((rid, method, route, path, 200, 1.5, user, client, trace))
    calls += [("r1", "GET", "/api/v1/kv/{key}", "/api/v1/kv/k", status, ms, "bob", "10.0.0.1", "ab" * 16)
              for status in (200, 304, 404, 500) for ms in (0.0, 0.123, 12.0, 1e-05, 123456.789)]
    fast, slow = _lines(fmt, "info", calls)
    assert fast == slow
    assert fast.count("\n") == len(calls)


def test_request_line_dropped_below_info() -> None:
    fast, slow = _lines("console", "warning", [("r1", "GET", "/r", "/p", 200, 1.0, None, "1.2.3.4", "ab")])
    assert fast == slow == ""


def test_plain_request_skips_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    log = AccessLog("info", "console", lambda: out)
    monkeypatch.setattr(log, "write", lambda fields: pytest.fail("took the general path"))
    log.request("0" * 32, "GET", "/api/v1/kv/{key}", "/api/v1/kv/bench/key", 200, 0.25, "admin", "127.0.0.1",
                "ab" * 16)
    log.writer.flush()
    assert out.getvalue().endswith(" INFO  gateway.access request request_id=" + "0" * 32 + " method=GET "
                                   "route=/api/v1/kv/{key} path=/api/v1/kv/bench/key status=200 duration_ms=0.25 "
                                   "user=admin client=127.0.0.1 trace_id=" + "ab" * 16 + "\n")


def test_plain_json_request_skips_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    log = AccessLog("info", "json", lambda: out)
    monkeypatch.setattr(log, "write", lambda fields: pytest.fail("took the general path"))
    log.request("0" * 32, "GET", "/api/v1/kv/{key}", "/api/v1/kv/bench/key", 200, 0.25, None, "127.0.0.1", "ab")
    log.writer.flush()
    line = json.loads(out.getvalue())
    assert {k: line[k] for k in ("level", "component", "message", "path", "status", "user", "trace_id")} == {
        "level": "info", "component": "gateway.access", "message": "request", "path": "/api/v1/kv/bench/key",
        "status": 200, "user": None, "trace_id": "ab"}
