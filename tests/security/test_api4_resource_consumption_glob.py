"""API4:2023 Unrestricted Resource Consumption: glob patterns cost bounded time.

A regex translation of `*` backtracks: KEYS with 11 stars against one
40-byte key ran 8 s with every other atlasd client blocked, and 20 stars
never finished (issue 10, 9c).  The matcher (helios_core/atlas/glob.py) is
linear in each segment it searches; these tests check that it answers
hostile patterns at all, and that it answers exactly as redis-server does.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helios_core.atlas.glob import compile_glob, glob_match
from tests.integration.test_atlasd_support import running_daemon
from tests.redis_server import RedisServer, redis_server  # noqa: F401
from tests.unit.atlas_harness import Atlas

HOSTILE = [
    b"*a" * 11 + b"b",                      # the 11-star pattern from the issue
    b"*a" * 20 + b"b",                      # 20 stars: never finished before
    b"a*" * 30 + b"?" * 5 + b"[^a]",
    b"*" + b"?*" * 40 + b"z",
    b"*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*[a-b]*c",
]
KEY = b"a" * 40


@pytest.mark.timeout(60)
def test_hostile_patterns_answer_and_do_not_match() -> None:
    for pattern in HOSTILE:
        assert not glob_match(pattern, KEY), pattern
        assert not glob_match(pattern, b"a" * 4000), pattern
    assert glob_match(b"*a" * 20, KEY)


@pytest.mark.timeout(60)
def test_keys_with_a_hostile_pattern_does_not_block_atlasd(tmp_path: Path) -> None:
    """Over the real daemon: the 20-star KEYS answers, and another client is served meanwhile."""
    with running_daemon(tmp_path) as d:
        path = str(d.socket_path)
        with redis.Redis(unix_socket_path=path, socket_timeout=30) as r:
            r.mset({KEY + b"%d" % i: b"v" for i in range(200)})
            pings: list[bool] = []

            def other() -> None:
                with redis.Redis(unix_socket_path=path, socket_timeout=30) as o:
                    pings.append(bool(o.ping()))

            t = threading.Thread(target=other)
            t.start()
            assert r.keys(b"*a" * 20 + b"b") == []
            assert r.scan(0, match=b"*a" * 20 + b"b", count=1000) == (0, [])
            t.join(30)
            assert pings == [True]
        assert d.stop() == 0  # SIGTERM is heard


# -- the same answers as redis-server ------------------------------------------------------

_ALPHABET = [b"a", b"b", b"A", b"-", b"]", b"^", b"\\", b"\xe9"]
_TOKENS = st.sampled_from([b"*", b"?", b"[", b"]", b"^", b"-", b"\\", b"a", b"b", b"A", b"z", b"\xe9", b"[a-b]",
                           b"[^a]", b"[b-a]", b"[a-]", b"\\*", b"[\\]]"])
_patterns = st.lists(_TOKENS, max_size=8).map(b"".join)
_keys = st.lists(st.lists(st.sampled_from(_ALPHABET), min_size=1, max_size=7).map(b"".join),
                 min_size=1, max_size=12, unique=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=_patterns, keys=_keys)
def test_keys_matches_redis(redis_server: RedisServer, tmp_path: Path,  # noqa: F811
                            pattern: bytes, keys: list[bytes]) -> None:
    r = redis.Redis(port=redis_server.port)
    r.flushall()
    r.mset({k: b"v" for k in keys})
    want = sorted(r.keys(pattern))
    got = sorted(k for k in keys if compile_glob(pattern).match(k)) if pattern != b"*" else sorted(keys)
    assert got == want, pattern


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pattern=_patterns, keys=_keys)
def test_config_get_style_nocase_matches_redis(redis_server: RedisServer,  # noqa: F811
                                               pattern: bytes, keys: list[bytes]) -> None:
    """COMMAND LIST FILTERBY PATTERN matches case-insensitively in Redis (stringmatchlen nocase)."""
    conn = redis.Connection(port=redis_server.port)  # raw replies: redis-py reshapes COMMAND's

    def command_list(*args: bytes) -> list[bytes]:
        conn.send_command("COMMAND", "LIST", *args)
        return list(conn.read_response())

    names = command_list()
    want = sorted(command_list(b"FILTERBY", b"PATTERN", pattern))
    conn.disconnect()
    got = sorted(n for n in names if compile_glob(pattern, nocase=True).match(n))
    assert got == want, pattern


def test_keys_command_uses_the_bounded_matcher(tmp_path: Path) -> None:
    a = Atlas(tmp_path / "d")
    a("SET", KEY, "v")
    a("SET", b"x" * 40, "v")
    assert a("KEYS", b"*a" * 20 + b"b") == []
    assert a("KEYS", b"*a" * 20) == [KEY]
    assert a("SCAN", 0, "MATCH", b"*a" * 20 + b"b", "COUNT", 100) == [b"0", []]
    assert a("CONFIG", "GET", b"*a" * 20 + b"b") == {}
